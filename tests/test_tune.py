"""`onnxedge tune` and ``--tuned``: every candidate that may run here timed with bench's loop, a
failing one listed and never chosen, an ungated variant never a candidate, the tuning file beside
the bundle; predict, evaluate and `Classifier.from_bundle` run its winner for their batch size,
and a file for another machine, engine version or bundle, a corrupt one, or one naming a variant
the bundle lacks is ignored with one line saying why. Tiny timing budgets: no figure is
asserted."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_optimize import data, edge, trained_bundle  # noqa: F401 (fixtures)

from onnxedge.runtime.bench import EngineInfo, LatencyStats
from onnxedge.runtime.bundle.reader import MANIFEST, Bundle
from onnxedge.runtime.classifier.classifier import Classifier
from onnxedge.runtime.cli import main
from onnxedge.runtime.tune import (
    TunedSetup,
    TuneResult,
    TuneRow,
    TuneSettings,
    candidate_models,
    default_tuning_path,
    machine_fingerprint,
    manifest_sha256,
    nearest_batch,
    read_tuning,
    runoff_setups,
    tune,
)
from onnxedge.runtime.tune import run as tune_run

FAST = ["--batch-sizes", "1,2", "--threads", "1", "--seconds", "0.01", "--no-progress"]


def _cli(*args: object):
    return CliRunner().invoke(main, [*map(str, args)])


@pytest.fixture(scope="module")
def tuned_edge(edge: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """A copy of the gated edge bundle, tuned on ONNX Runtime (tuning file beside it)."""
    bundle = tmp_path_factory.mktemp("tuned") / "edge"
    shutil.copytree(edge, bundle)
    result = _cli("tune", bundle, *FAST, "--engines", "onnxruntime")
    assert result.exit_code == 0, result.output
    return bundle


def _tuning(bundle: Path) -> dict:
    return json.loads(default_tuning_path(bundle).read_text())


def test_tune_times_every_gated_cpu_model_and_writes_the_file_beside_the_bundle(tuned_edge):
    tuning = _tuning(tuned_edge)
    assert default_tuning_path(tuned_edge) == tuned_edge.parent / "edge.tuning.json"
    rows = {(r["variant"], r["engine"], r["threads"], r["batch_size"]) for r in tuning["rows"]}
    assert rows == {
        (v, "onnxruntime", 1, b) for v in ("fp32", "int8", "fp32-ort", "int8-ort") for b in (1, 2)
    }
    assert all(r["status"] == "ok" and r["check"] for r in tuning["rows"])
    # fp16 is made for CUDA: listed with the reason, not timed
    assert {"what": "fp16", "reason": "made for the cuda execution provider"} in tuning["excluded"]
    # the winner at each batch size is the fastest row of the runoff where there was one (the
    # setups within RUNOFF_MARGIN of the fastest), else of the first pass
    result_rows = [TuneRow(TunedSetup(r["variant"], r["engine"], r["precision"], r["threads"]),
                           r["batch_size"], r["status"], stats=_stats(r))
                   for r in tuning["rows"]]  # fmt: skip
    for batch in (1, 2):
        close = {(r.setup.variant, r.setup.threads) for r in runoff_setups(result_rows, batch)}
        runoff = [r for r in tuning["runoff"] if r["batch_size"] == batch]
        assert {(r["variant"], r["threads"]) for r in runoff} == close
        pool = runoff or [r for r in tuning["rows"] if r["batch_size"] == batch]
        best = max(pool, key=lambda r: r["throughput"])
        winner = tuning["winners"][str(batch)]
        assert (winner["variant"], winner["threads"]) == (best["variant"], best["threads"])
    assert tuning["bundle"]["manifest_sha256"] == manifest_sha256(Bundle.open(tuned_edge))
    here = machine_fingerprint()
    assert {k: tuning["machine"][k] for k in here} == here
    assert read_tuning(default_tuning_path(tuned_edge)).winners


def _stats(row: dict) -> LatencyStats | None:
    if row["throughput"] is None:
        return None
    ms = 1e3 * row["batch_size"] / row["throughput"]
    return LatencyStats.from_seconds([ms / 1e3], batch_size=row["batch_size"])


@pytest.mark.parametrize(
    ("throughputs", "close"),
    [
        ([100, 90, 86, 50], [100, 90, 86]),  # within 15 % of the fastest
        ([100, 80], []),  # none close: no runoff
        ([100, 99, 98, 97, 96], [100, 99, 98, 97]),  # at most four
        ([100], []),
    ],
)
def test_the_runoff_takes_the_setups_close_to_the_fastest(throughputs, close):
    rows = [
        TuneRow(TunedSetup(threads=i + 1), 8, "ok",
                stats=LatencyStats.from_seconds([8 / t], batch_size=8))
        for i, t in enumerate(throughputs)
    ]  # fmt: skip
    rows.append(TuneRow(TunedSetup(threads=99), 8, "failed", reason="output differs"))
    got = [round(r.stats.throughput) for r in runoff_setups(rows, 8)]
    assert got == close


def test_a_candidate_with_other_outputs_fails_and_is_never_chosen(edge, monkeypatch):  # noqa: F811
    """A setup that would be the fastest by far (it computes nothing) but gives other outputs."""
    real = tune_run.build_candidates
    wrong = TunedSetup("fp32", "onnxruntime", "f32", 7)

    class Runner:
        def __init__(self, x):
            self.extras: dict = {}
            self.out = np.zeros((len(x), 1), np.float32)

        def run(self):
            pass

        def output(self):
            return self.out

        def close(self):
            pass

    class Wrong:
        info = EngineInfo("onnxruntime", "onnxruntime", "cpu", "end-to-end", "fake")

        def prepare(self, x):
            return Runner(x)

        def close(self):
            pass

    def with_wrong(*args, **kwargs):
        found = real(*args, **kwargs)
        engine = Wrong()
        found.setups[id(engine.info)] = wrong
        return type(found)((*found.engines, engine), found.setups, found.models, found.excluded)

    monkeypatch.setattr(tune_run, "build_candidates", with_wrong)
    result = tune(edge, TuneSettings(batch_sizes=(2,), threads=(1,), engines=("onnxruntime",),
                                     variants=("fp32",), seconds=0.01))  # fmt: skip
    rows = {r.setup: r for r in result.rows}
    assert rows[wrong].status == "failed" and "output differs" in rows[wrong].reason
    assert result.winners[2].setup == TunedSetup("fp32", "onnxruntime", "f32", 1)


def test_an_ungated_variant_is_never_a_candidate(edge, tmp_path):  # noqa: F811
    bundle = tmp_path / "edge"
    shutil.copytree(edge, bundle)
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["variants"]["int8"]["gated"] = False
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    models, excluded = candidate_models(Bundle.open(bundle))
    assert "int8" not in [m.variant for m in models]
    assert [e.what for e in excluded if "not gated" in e.reason] == ["int8"]
    # asked for by name, it is still left out
    models, _ = candidate_models(Bundle.open(bundle), ["fp32", "int8"])
    assert [m.variant for m in models] == ["fp32"]


@pytest.mark.parametrize(("batch", "nearest"), [(1, 1), (2, 1), (7, 1), (8, 64), (32, 64),
                                                (64, 64), (500, 64)])  # fmt: skip
def test_the_winner_used_is_the_one_at_the_nearest_batch_size(batch, nearest):
    assert nearest_batch({1: None, 64: None}, batch) == nearest


def _write(bundle: Path, tuning: dict, name: str = "t.json") -> Path:
    path = bundle.parent / name
    path.write_text(json.dumps(tuning))
    return path


def _hand_made(bundle: Path) -> dict:
    """The bundle's tuning file with winners chosen by hand: int8-ort at 1, int8 at 64."""
    tuning = copy.deepcopy(_tuning(bundle))
    tuning["winners"] = {
        "1": {"variant": "int8-ort", "engine": "onnxruntime", "precision": "f32", "threads": 1},
        "64": {"variant": "int8", "engine": "onnxruntime", "precision": "f32", "threads": 1},
    }
    return tuning


@pytest.mark.parametrize(("batch", "variant"), [(1, "int8-ort"), (32, "int8")])
def test_the_classifier_runs_the_winner_for_its_batch_size(tuned_edge, batch, variant):
    path = _write(tuned_edge, _hand_made(tuned_edge))
    clf = Classifier.from_bundle(tuned_edge, tuned=path, batch_size=batch)
    assert clf.variant == variant and clf.tuned and clf.tuned.setup.variant == variant
    assert "CPUExecutionProvider" in clf.provider
    # True: the file beside the bundle, as tune wrote it
    clf = Classifier.from_bundle(tuned_edge, tuned=True, batch_size=batch)
    assert clf.tuned and clf.variant == clf.tuned.setup.variant


def _spoil(tuning: dict, how: str) -> dict:
    tuning = copy.deepcopy(tuning)
    if how == "bundle":
        tuning["bundle"]["manifest_sha256"] = "0" * 64
    elif how == "missing-variant":
        tuning["winners"]["64"]["variant"] = "int8-pad4"
    else:
        tuning["machine"][how] = "something else"
    return tuning


IGNORED = [
    ("cpu", "another machine: CPU model"),
    ("cpu_flags_sha256", "another machine: CPU flags"),
    ("usable_cores", "another machine: usable cores"),
    ("onnxruntime", "another machine: onnxruntime version"),
    ("openvino", "another machine: openvino version"),
    ("bundle", "another bundle"),
    ("missing-variant", "names the variant 'int8-pad4', which"),
]


@pytest.mark.parametrize(("how", "reason"), IGNORED)
def test_a_tuning_file_that_does_not_hold_here_is_ignored_and_the_defaults_run(
    tuned_edge, how, reason, caplog
):
    good = _hand_made(tuned_edge)
    # the same file unspoilt is used: the check is what refuses the spoilt one
    assert Classifier.from_bundle(tuned_edge, tuned=_write(tuned_edge, good)).variant == "int8"
    path = _write(tuned_edge, _spoil(good, how), "spoilt.json")
    with caplog.at_level("WARNING"):
        clf = Classifier.from_bundle(tuned_edge, tuned=path)
    assert clf.variant == "fp32" and clf.tuned is not None and not clf.tuned
    assert reason in clf.tuned.reason
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and reason in warnings[0] and "running the defaults" in warnings[0]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "is not JSON"),
        ('{"format": "something"}', "expected format 'onnxedge-tuning'"),
        ("[1, 2]", "expected format 'onnxedge-tuning'"),
        (None, "no tuning file at"),
    ],
)
def test_a_corrupt_or_missing_tuning_file_is_ignored(tuned_edge, tmp_path, text, reason):
    path = tmp_path / "t.json"
    if text is not None:
        path.write_text(text)
    clf = Classifier.from_bundle(tuned_edge, tuned=path)
    assert clf.variant == "fp32" and reason in clf.tuned.reason


def test_predict_and_evaluate_take_tuned(tuned_edge, data):  # noqa: F811
    path = _write(tuned_edge, _hand_made(tuned_edge))
    images = data / "test" / "light"
    result = _cli("predict", tuned_edge, images, f"--tuned={path}", "--batch-size", "1")
    assert result.exit_code == 0, result.output
    assert "onnxedge: tuned: onnxruntime int8-ort, 1 thread (fastest at batch 1" in result.output
    assert result.output.count("\tsmiling") == len(list(images.iterdir()))
    result = _cli("evaluate", tuned_edge, "--data", data, "--tuned", path)  # batch 64
    assert result.exit_code == 0, result.output
    assert "variant int8" in result.output and "onnxedge: tuned: onnxruntime int8," in result.output
    # spoilt: one line says why, the defaults run, exit 0
    spoilt = _write(tuned_edge, _spoil(_hand_made(tuned_edge), "bundle"), "spoilt.json")
    result = _cli("evaluate", tuned_edge, "--data", data, "--tuned", spoilt)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "tuning file ignored" in line]
    assert len(lines) == 1 and "another bundle" in lines[0] and "variant fp32" in result.output
    assert lines[0].startswith("onnxedge: warning: tuning file ignored: ")  # a warning's format


def test_a_tuned_onnxruntime_choice_keeps_batch_processes_for_files(
    tuned_edge,
    data,  # noqa: F811
    monkeypatch,
):
    """Tune's thread count is for the model alone: the classifier's own session takes it, and
    files still go through batch processes of one thread each (docs/RUNTIME.md)."""
    from onnxedge.runtime.classifier import decode

    monkeypatch.setattr(decode, "usable_cpus", lambda: 2)
    path = _write(tuned_edge, _hand_made(tuned_edge))
    clf = Classifier.from_bundle(tuned_edge, tuned=path, batch_size=1)
    assert clf.tuned and clf.variant == "int8-ort" and clf.file_pool().batches
    assert not Classifier.from_bundle(tuned_edge, threads=1).file_pool().batches  # the user's
    seen = []
    real = Classifier.from_bundle.__func__
    spy = classmethod(lambda c, *a, **k: seen.append(k) or real(c, *a, **k))
    monkeypatch.setattr(Classifier, "from_bundle", spy)
    images = data / "test" / "light"
    result = _cli("predict", tuned_edge, images, f"--tuned={path}", "--batch-size", "1")
    assert result.exit_code == 0, result.output
    assert result.output.count("\tsmiling") == len(list(images.iterdir()))
    given = seen[-1]
    assert (given["tuned"], given.get("threads"), given["batch_size"]) == (str(path), None, 1)


def test_tuned_with_an_option_it_replaces_is_a_usage_error(tuned_edge, data):  # noqa: F811
    result = _cli("predict", tuned_edge, data / "test", "--tuned", "--variant", "int8")
    assert result.exit_code == 2 and "drop --variant" in result.output
    with pytest.raises(ValueError, match="tuned chooses"):
        Classifier.from_bundle(tuned_edge, tuned=True, variant="int8")


def test_tuned_given_an_image_or_a_folder_is_a_usage_error(tmp_path):
    """``predict B --tuned a.jpg b.jpg`` took a.jpg for the tuning file and dropped it from the
    run with a warning (exit 0); an image or a folder is never a tuning file."""
    (tmp_path / "imgs").mkdir()
    for given in (tmp_path / "a.jpg", tmp_path / "imgs"):
        result = _cli("predict", tmp_path / "b", "--tuned", given, tmp_path / "b.jpg")
        assert result.exit_code == 2, result.output
        assert "expected a tuning file, found a" in result.output
        assert "put --tuned last, or write --tuned=FILE" in result.output


def test_bench_tuned_adds_the_chosen_setup_as_a_row_at_each_batch_size(tuned_edge, tmp_path):
    path = _write(tuned_edge, _hand_made(tuned_edge))
    out = tmp_path / "b.json"
    args = ["--providers", "cpu", "--peers", "none", "--engines", "onnxruntime", "--batch-sizes",
            "1,2", "--iters", "2", "--warmup", "1", "--no-progress", "--json", out]  # fmt: skip
    result = _cli("bench", tuned_edge, f"--tuned={path}", *args)
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    tuned = [(r["label"], r["batch_size"], r["status"]) for r in rows if "tuned" in r["label"]]
    # batch 2 is nearer 1 than 64: int8-ort at both
    label = "onnxruntime cpu end-to-end int8-ort tuned (1 thread)"
    assert tuned == [(label, 1, "ok"), (label, 2, "ok")]
    ratios = json.loads(out.read_text())["engine_ratios"]
    assert {(q["row"], q["reference"]) for q in ratios if "tuned" in q["row"]} == {
        (label, "onnxruntime cpu end-to-end")
    }
    # a file that does not hold here: one line, no tuned row, the usual ones
    spoilt = _write(tuned_edge, _spoil(_hand_made(tuned_edge), "cpu"), "spoilt.json")
    result = _cli("bench", tuned_edge, f"--tuned={spoilt}", *args)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "tuning file ignored" in line]
    assert len(lines) == 1 and "CPU model" in lines[0]
    assert lines[0].startswith("onnxedge: warning: tuning file ignored: ")
    assert not [r for r in json.loads(out.read_text())["rows"] if "tuned" in r["label"]]


def test_the_verdict_lines_fit_120_columns_without_verbose():
    from onnxedge.runtime.cli.tune import format_table
    from onnxedge.runtime.tune.candidates import Excluded

    reason = "takes the decoded uint8 pixels (--uint8-input): timed from files by bench " * 2
    result = TuneResult(
        bundle=Path("edge"),
        manifest_sha256="0" * 64,
        machine={},
        settings=TuneSettings(batch_sizes=(1,)),
        rows=(),
        excluded=(Excluded("fp32-u8", reason),),
        default=TunedSetup(),
        date="2026-12-05T00:00:00+00:00",
    )
    short = format_table(result)
    assert all(len(line) <= 120 for line in "\n".join(short).splitlines())
    assert "NO WINNER | batch 1 | no setup could be measured" in short
    whole = format_table(result, width=None)  # -v: every line whole
    assert f"not a candidate: fp32-u8: {reason}" in whole
