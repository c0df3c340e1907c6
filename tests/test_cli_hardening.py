"""The command line against hostile input: every numeric option of every command refuses
NaN and the infinities as a usage error; a path named on the command line that cannot be read is
a per-file ERROR line while the others are classified; PIL's warnings about a damaged file do not
spill into the output."""

from __future__ import annotations

import builtins
import io
import os
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from onnxedge.runtime.cli import main
from onnxedge.runtime.cli.options import FiniteFloatRange, finite_numbers
from onnxedge.runtime.engines.onnxruntime.session import MAX_THREADS


def all_commands() -> list[tuple[list[str], click.Command]]:
    """(the words that invoke it, the command) for every command of the group, subcommands of
    groups (`onnxedge data ...`) included."""
    ctx = click.Context(main)
    found: list[tuple[list[str], click.Command]] = []

    def visit(words: list[str], command: click.Command) -> None:
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                visit([*words, name], command.get_command(ctx, name))
        else:
            found.append((words, command))

    for name in main.list_commands(ctx):
        visit([name], main.get_command(ctx, name))
    return found


def numeric_options() -> list[tuple[list[str], click.Command, click.Option]]:
    return [
        (words, command, param)
        for words, command in all_commands()
        for param in command.params
        if isinstance(param, click.Option)
        and not param.is_flag
        and not param.count  # -v, -q: counted, take no value
        and isinstance(param.type, (click.types.FloatParamType, click.types.IntParamType))
    ]


def test_the_commands_have_numeric_options_to_test():
    names = {(words[0], p.opts[0]) for words, _, p in numeric_options()}
    assert {("parity", "--atol"), ("predict", "--threshold"), ("bench", "--seconds")} <= names
    assert {("predict", "--threads"), ("bench", "--warmup")} <= names


@pytest.mark.parametrize("bad", ["nan", "NaN", "inf", "-inf", "Infinity", "1e999"])
def test_every_numeric_option_refuses_nan_and_infinities(tmp_path, bad):
    """Each option of each command, given ``bad``: exit 2 with click's usage error naming that
    option (so the refusal is the option's, not a missing argument's)."""
    for words, command, option in numeric_options():
        # The bad option first: click converts in the order given, so it fails before any other
        # parameter is looked at. The dummies only complete the command line.
        args = [*words, option.opts[0], bad]
        dummy = str(tmp_path / "nothing")
        for p in command.params:
            if p.required and p is not option:
                args += [p.opts[0], dummy] if isinstance(p, click.Option) else [dummy]
        result = CliRunner().invoke(main, args)
        where = f"onnxedge {' '.join(words)} {option.opts[0]} {bad}"
        assert result.exit_code == 2, f"{where}: {result.output}"
        assert f"Invalid value for '{option.opts[0]}'" in result.output, f"{where}: {result.output}"
        assert "Traceback" not in result.output


def test_every_float_option_has_the_finite_type():
    for words, _, option in numeric_options():
        if isinstance(option.type, click.types.FloatParamType):
            assert isinstance(option.type, FiniteFloatRange), (words, option.opts)


def test_finite_float_range_keeps_the_range_and_refuses_what_click_lets_through():
    @click.command()
    @click.option("--x", type=click.FloatRange(0.0, 1.0))
    @click.option("--y", type=float)
    @click.option("--z", type=click.FloatRange(min=0, min_open=True))
    def cmd(x, y, z):
        click.echo(repr((x, y, z)))

    assert CliRunner().invoke(cmd, ["--x", "nan", "--z", "inf"]).exit_code == 0  # click alone
    finite_numbers(finite_numbers(cmd))  # idempotent
    ok = CliRunner().invoke(cmd, ["--x", "0.5", "--y", "-3", "--z", "2"])
    assert ok.output.strip() == "(0.5, -3.0, 2.0)"
    for args, message in [
        (["--x", "nan"], "expected a finite number, found 'nan'"),
        (["--y", "-inf"], "expected a finite number, found '-inf'"),
        (["--z", "inf"], "expected a finite number, found 'inf'"),
        (["--x", "1.5"], "expected a number 0 to 1, found 1.5"),
        (["--z", "0"], "expected a number above 0, found 0"),
        (["--y", "abc"], "'abc' is not a valid float"),
    ]:
        result = CliRunner().invoke(cmd, args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)


def _thread_options() -> list[tuple[str, click.Option]]:
    """Every option of every command (subcommands included) that sets a number of threads."""
    ctx = click.Context(main)
    found = []
    for name in main.list_commands(ctx):
        command = main.get_command(ctx, name)
        subs = command.commands.items() if isinstance(command, click.Group) else [(name, command)]
        for sub_name, sub in subs:
            for param in sub.params:
                if isinstance(param, click.Option) and "thread" in (param.name or ""):
                    found.append((f"{name} {sub_name}" if sub_name != name else name, param))
    return found


def test_every_threads_option_is_bounded_as_sessions_are():
    """Found from the group, so a new command's --threads cannot forget the bound."""
    options = _thread_options()
    assert {"predict", "bench", "evaluate", "optimize", "tune"} <= {name for name, _ in options}
    for name, option in options:
        if (name, option.name) in THREAD_LISTS:  # comma-separated: their callback bounds them
            continue
        assert isinstance(option.type, click.IntRange), (name, option.name)
        assert (option.type.min, option.type.max) == (1, MAX_THREADS), (name, option.name)


# Options that take several thread counts; `test_thread_lists_are_bounded` runs each.
THREAD_LISTS = {("tune", "thread_counts")}


def test_thread_lists_are_bounded(smile_bundle):
    """tune --threads 100000 was a traceback (the session's ValueError)."""
    for value in (str(MAX_THREADS + 1), f"1,{MAX_THREADS + 1}", "0"):
        result = CliRunner().invoke(main, ["tune", str(smile_bundle), "--threads", value])
        assert result.exit_code == 2, result.output
        assert f"expected comma-separated integers from 1 to {MAX_THREADS} such as" in (
            result.output.replace("\n", " ")
        )


@pytest.mark.parametrize("command", ["predict", "bench", "evaluate"])
def test_threads_are_bounded_as_sessions_are(smile_bundle, tmp_path, command):
    extra = {"predict": [str(tmp_path)], "evaluate": ["--data", str(tmp_path)]}.get(command, [])
    result = CliRunner().invoke(
        main, [command, str(smile_bundle), *extra, "--threads", str(MAX_THREADS + 1)]
    )
    assert result.exit_code == 2, result.output
    assert f"expected a number 1 to {MAX_THREADS}, found {MAX_THREADS + 1}" in result.output


# -- paths named on the command line --------------------------------------------------------------


def png(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(path)
    return path


def refuse(monkeypatch, func: str, target: Path, module=os) -> None:
    """``module.func`` raises PermissionError for ``target`` (as for a user without the right)."""
    real = getattr(module, func)

    def guarded(path, *args, **kwargs):
        if not isinstance(path, int) and os.fspath(path) == os.fspath(target):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(module, func, guarded)


@pytest.mark.parametrize(
    "how,message",
    [
        ("stat", "cannot read: Permission denied"),
        ("open", "Permission denied"),
        ("scandir", "cannot list the directory: Permission denied"),
    ],
)
def test_a_named_path_that_cannot_be_read_is_one_error_line(
    smile_bundle, tmp_path, monkeypatch, how, message
):
    first, last = png(tmp_path / "first.png", 1), png(tmp_path / "last.png", 2)
    if how == "scandir":
        locked = tmp_path / "locked"
        locked.mkdir()
        png(locked / "inside.png", 3)
        refuse(monkeypatch, "scandir", locked)
    else:
        locked = png(tmp_path / "locked.png", 3)
        refuse(monkeypatch, *(("stat", locked) if how == "stat" else ("open", locked, builtins)))
    result = CliRunner().invoke(
        main,
        ["predict", str(smile_bundle), str(first), str(locked), str(last), "--providers", "cpu"],
    )
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(first), str(locked), str(last)]
    assert lines[1].split("\t")[1] == "ERROR" and message in lines[1], lines[1]
    assert all(line.split("\t")[1] != "ERROR" for line in (lines[0], lines[2]))
    assert result.stderr.strip() == "3 files: 2 classified, 1 failed (CPUExecutionProvider)"


def test_pil_warnings_about_a_damaged_file_stay_out_of_the_output(smile_bundle, tmp_path):
    """A TIFF cut short: PIL warns "Truncated File Read" while reading it. The file gets its
    ERROR line, the other its prediction, and stderr holds the summary only."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(buffer, format="TIFF")
    (tmp_path / "cut.tif").write_bytes(buffer.getvalue()[:139])
    good = png(tmp_path / "good.png", 1)
    result = CliRunner().invoke(
        main,
        ["predict", str(smile_bundle), str(tmp_path / "cut.tif"), str(good), "--providers", "cpu"],
    )
    assert result.exit_code == 1
    assert len(result.stdout.splitlines()) == 2 and "\tERROR\t" in result.stdout.splitlines()[0]
    assert result.stderr.strip() == "2 files: 1 classified, 1 failed (CPUExecutionProvider)"


@pytest.mark.parametrize(
    "args",
    [
        ["data", "synth", "--out", "", "--count", "10"],
        ["export", "--out", ""],
        ["train", "--data", ".", "--out", ""],
        ["check", ""],
        ["predict", "b", ""],
    ],
    ids=["synth-out", "export-out", "train-out", "check", "predict"],
)
def test_an_empty_path_is_a_usage_error(args):
    """``--out ""`` was the current folder: ". exists: give --force to replace the bundle"."""
    from onnxedge.runtime.cli import main

    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "expected a path, found an empty string" in result.output
