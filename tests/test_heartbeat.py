"""The heartbeat of a command's slow steps (`onnxedge.runtime.cli.heartbeat`), driven by a fake
clock: nothing for a short step, one line per ten seconds of a long one off a terminal, a
spinner on one, and through the commands (export, optimize's calibration) whose step is made
slow."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from test_optimize import data, trained_bundle  # noqa: F401 (fixtures)

from onnxedge.runtime.cli import heartbeat as hb
from onnxedge.runtime.cli import main


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Spinner:
    def __init__(self) -> None:
        self.events: list[str] = []

    def update(self, text: str) -> None:
        self.events.append(f"update {text}")

    def start(self) -> None:
        self.events.append("start")

    def stop(self) -> None:
        self.events.append("stop")


def test_off_a_terminal_a_long_step_gets_a_line_every_ten_seconds():
    clock, lines = Clock(), []
    beat = hb.Heartbeat(tty=False, clock=clock, write=lines.append, echo=lambda _m: None)
    beat("exporting with the dynamo exporter")
    for now in (101, 109.9):
        clock.now = now
        beat.tick()
    assert lines == []  # under ten seconds: nothing
    for now in (110, 111, 119, 120.5, 125):
        clock.now = now
        beat.tick()
    assert lines == [
        "onnxedge: still exporting with the dynamo exporter (10 s)",
        "onnxedge: still exporting with the dynamo exporter (20 s)",
    ]
    beat("computing the golden data")  # a new step starts its own count
    clock.now += 5
    beat.tick()
    assert len(lines) == 2
    clock.now += 6
    beat.tick()
    assert lines[-1] == "onnxedge: still computing the golden data (11 s)"
    beat.done()
    clock.now += 60
    beat.tick()
    assert len(lines) == 3  # no step runs: nothing


def test_on_a_terminal_a_step_over_two_seconds_shows_a_spinner():
    clock, spinner, lines = Clock(), Spinner(), []
    beat = hb.Heartbeat(
        tty=True, clock=clock, spinner=spinner, write=lines.append, echo=lambda _m: None
    )
    beat("simplifying with onnxsim")
    clock.now += 1.5
    beat.tick()
    assert spinner.events == []
    clock.now += 1
    beat.tick()
    assert spinner.events == ["update simplifying with onnxsim (2 s)", "start"]
    beat("writing the bundle")
    assert spinner.events[-1] == "stop" and lines == []


def test_quiet_shows_nothing():
    clock, lines = Clock(), []
    beat = hb.Heartbeat(
        tty=False, clock=clock, write=lines.append, enabled=False, echo=lambda _m: None
    )
    beat("calibrating")
    clock.now += 60
    beat.tick()
    assert lines == []


@pytest.mark.slow
def fake_clock(monkeypatch) -> tuple[Clock, list[hb.Heartbeat]]:
    """Every heartbeat a command makes reads ``clock`` and is appended to the list; the thread
    never ticks by itself (a test ticks the last heartbeat where its slow step runs)."""
    clock = Clock()
    beats: list[hb.Heartbeat] = []
    monkeypatch.setattr(hb, "TICK_S", 3600.0)
    real_init = hb.Heartbeat.__init__

    def init(self, **kwargs):
        real_init(self, **{**kwargs, "clock": clock})
        beats.append(self)

    monkeypatch.setattr(hb.Heartbeat, "__init__", init)
    return clock, beats


def test_export_says_what_it_is_doing_during_a_slow_step(monkeypatch, tmp_path):
    """`onnxedge export` off a terminal (CliRunner's stderr is not one), its golden data made
    slow by a fake clock that the step itself moves on: the command prints the line."""
    pytest.importorskip("torch")
    from onnxedge.export import golden

    clock, beats = fake_clock(monkeypatch)
    real_make_golden = golden.make_golden

    def slow_make_golden(*args, **kwargs):
        clock.now += 12  # twelve seconds pass
        beats[-1].tick()
        return real_make_golden(*args, **kwargs)

    monkeypatch.setattr(golden, "make_golden", slow_make_golden)
    result = CliRunner().invoke(
        main, ["export", "--out", str(tmp_path / "b"), "--no-golden-layers"]
    )
    assert result.exit_code == 0, result.output
    assert "onnxedge: still computing the golden data for `onnxedge parity` (12 s)" in (
        result.stderr
    )


def test_optimize_says_it_is_still_calibrating(monkeypatch, tmp_path, trained_bundle, data):  # noqa: F811
    """`onnxedge optimize --int8` off a terminal, its calibration made slow (25 s on the fake
    clock, one tick): the line names the step and how long it has run."""
    from onnxedge.runtime.variants import optimize

    clock, beats = fake_clock(monkeypatch)
    real_quantized = optimize._quantized

    def slow_quantized(*args, **kwargs):
        clock.now += 25
        beats[-1].tick()
        return real_quantized(*args, **kwargs)

    monkeypatch.setattr(optimize, "_quantized", slow_quantized)
    args = ["optimize", trained_bundle, "--data", data, "--int8", "--out", tmp_path / "edge"]
    result = CliRunner().invoke(main, [*map(str, args), "--calibration-size", "8"])
    assert result.exit_code == 0, result.output
    still = [line for line in result.stderr.splitlines() if line.startswith("onnxedge: still")]
    assert still == ["onnxedge: still int8: calibrating on 8 images of the train split (25 s)"]
    assert "int8: calibrating on 8 images" in result.stderr.splitlines()[0]  # each step's line
    # -q: errors only (the steps' lines and 'wrote' were printed), the results the same
    args[-1] = tmp_path / "quiet"
    quiet = CliRunner().invoke(main, ["-q", *map(str, args), "--calibration-size", "8"])
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr == "" and quiet.stdout == result.stdout
