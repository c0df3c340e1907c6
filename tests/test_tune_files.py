"""`onnxedge tune --images` (`onnxedge.runtime.tune.files`): the fastest models timed from files
through predict's code with each decoding pool, the winner written down, and ``--tuned`` running
it with its pool for predict and evaluate (and not for arrays, or for another decode)."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_uint8_input import data, pixels_bundle, trained_bundle  # noqa: F401 (fixtures)

from onnxedge.runtime.bench import LatencyStats
from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.classifier import decode as decode_module
from onnxedge.runtime.classifier.classifier import Classifier
from onnxedge.runtime.cli import main
from onnxedge.runtime.tune import (
    FILES_MARGIN,
    FilesSetup,
    TunedSetup,
    TuneRow,
    default_tuning_path,
    files_models,
    read_tuning,
)
from onnxedge.runtime.tune import files as tune_files

FAST = ["--batch-sizes", "4", "--threads", "1", "--seconds", "0.01", "--no-progress"]
FILES = ["--images-batch-size", "4", "--images-limit", "12", "--files-seconds", "0.01"]
# --files-seconds 0.01: each setup is its check run and 3 timed runs (2 rounds: 2 + 2)


def _cli(*args: object):
    return CliRunner().invoke(main, [*map(str, args)])


@pytest.fixture(scope="module")
def two_cpus():
    """Pools sized as on a 2-CPU machine, whatever this one has."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(decode_module, "usable_cpus", lambda: 2)
        yield


@pytest.fixture(scope="module")
def files_tuned(pixels_bundle: Path, data: Path, tmp_path_factory, two_cpus) -> Path:  # noqa: F811
    """A copy of the bundle with fp32-u8 and int8-u8, tuned on ONNX Runtime with --images."""
    bundle = tmp_path_factory.mktemp("files") / "edge"
    shutil.copytree(pixels_bundle, bundle)
    result = _cli(
        "tune", bundle, *FAST, *FILES, "--engines", "onnxruntime", "--images", data / "test"
    )
    assert result.exit_code == 0, result.output
    return bundle


def _tuning(bundle: Path) -> dict:
    return json.loads(default_tuning_path(bundle).read_text())


def test_tune_images_times_the_models_with_each_pool_and_writes_the_fastest(files_tuned):
    files = _tuning(files_tuned)["files"]
    assert (files["files"], files["batch_size"], files["decode"]) == (12, 4, "exact")
    setups = {(r["variant"], r["engine"], r["pool"], r["workers"]) for r in files["rows"]}
    # fp32 and int8 (the two fastest on ONNX Runtime), and the uint8-input variant of each
    pools = {("batches", 2), ("processes", 1), ("threads", 2)}
    assert setups == {
        (v, "onnxruntime", p, w) for v in ("fp32", "int8", "fp32-u8", "int8-u8") for p, w in pools
    }
    assert all(r["status"] == "ok" and r["check"].startswith("PASSED") for r in files["rows"])
    # compared with predict's default: ONNX Runtime fp32 with batch processes
    want = FilesSetup("fp32", "onnxruntime", "f32", "batches", 2, "exact")
    assert files["default"] == want.to_dict()
    default = [r for r in files["rows"] if (r["variant"], r["pool"]) == ("fp32", "batches")]
    assert default[0]["vs_default"] == 1.0
    # the winner: the fastest where it gains FILES_MARGIN over the default, else the default
    best = max(files["rows"], key=lambda r: r["throughput"])
    assert files["fastest"] == {k: best[k] for k in files["fastest"]}
    chosen = best if best["vs_default"] >= 1 + FILES_MARGIN else default[0]
    winner = files["winner"]
    assert {k: winner[k] for k in files["fastest"]} == {k: chosen[k] for k in files["fastest"]}
    assert read_tuning(default_tuning_path(files_tuned)).files == FilesSetup.from_dict(winner)


def test_the_table_names_the_files_winner(pixels_bundle, data, tmp_path, two_cpus):  # noqa: F811
    out = tmp_path / "t.json"
    result = _cli(
        "tune", pixels_bundle, *FAST, *FILES, "--engines", "onnxruntime", "--variants", "fp32",
        "--images", data / "test", "--decode", "fast", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "From files: 12 files of" in result.output and "fast decode" in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("WINNER | from files")]
    assert len(lines) == 1 and "fast decode" in lines[0], result.output
    # int8-u8 is made from int8, which --variants left out
    assert "not timed from files: int8-u8: made from int8" in result.output
    assert json.loads(out.read_text())["files"]["decode"] == "fast"


def test_a_files_setup_with_other_outputs_fails_and_is_never_chosen(
    pixels_bundle,  # noqa: F811
    data,  # noqa: F811
    tmp_path,
    monkeypatch,
    two_cpus,
):
    """The fastest setup by far (it classifies nothing) gives other probabilities: its check
    fails, so it is a FAILED row and not the winner."""
    real = tune_files.run_predict

    def run_predict(bundle, setup, paths, batch_size):
        if (setup.variant, setup.pool) == ("int8", "threads"):
            return 0.001, [0.5] * len(paths)
        return real(bundle, setup, paths, batch_size)

    monkeypatch.setattr(tune_files, "run_predict", run_predict)
    out = tmp_path / "t.json"
    result = _cli(
        "tune", pixels_bundle, *FAST, *FILES, "--engines", "onnxruntime", "--variants",
        "fp32,int8", "--images", data / "test", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    files = json.loads(out.read_text())["files"]
    bad = [r for r in files["rows"] if (r["variant"], r["pool"]) == ("int8", "threads")]
    assert bad[0]["status"] == "failed" and "differ from a serial decode" in bad[0]["reason"]
    assert (files["winner"]["variant"], files["winner"]["pool"]) != ("int8", "threads")
    assert (files["fastest"]["variant"], files["fastest"]["pool"]) != ("int8", "threads")
    assert "FAILED: probabilities differ" in result.output


def test_a_timed_run_is_the_predict_command_with_the_setups_options(pixels_bundle, data):  # noqa: F811
    setup = FilesSetup("int8", "onnxruntime", "f32", "processes", 1, "fast")
    paths = sorted(map(str, (data / "test" / "light").iterdir()))[:3]
    command = tune_files.predict_command(Bundle.open(pixels_bundle), setup, paths, 4)
    assert command[: command.index("predict")] == tune_files.onnxedge_command()
    assert tune_files.onnxedge_command() in (
        [str(Path(sys.executable).with_name("onnxedge"))],
        [sys.executable, "-m", "onnxedge.runtime"],
    )
    tail = command[command.index("--") :]
    assert tail == ["--", str(Bundle.open(pixels_bundle).path), *paths]
    want = [("--variant", "int8"), ("--decode", "fast"), ("--engines", "onnxruntime"),
            ("--decode-processes", "1"), ("--batch-size", "4"), ("--json", "-")]  # fmt: skip
    for option, value in want:
        assert command[command.index(option) + 1] == value
    wall, probabilities = tune_files.run_predict(Bundle.open(pixels_bundle), setup, paths, 4)
    assert wall > 0 and len(probabilities) == 3
    # a command that fails is its reason, not figures
    missing = [*paths, str(data / "nothing.jpg")]
    _, outcome = tune_files.run_predict(Bundle.open(pixels_bundle), setup, missing, 4)
    assert isinstance(outcome, str) and "exited 1" in outcome
    # one that cannot start (more names than a command line holds): the reason, no traceback
    too_long = OSError(7, "Argument list too long")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tune_files.subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(too_long))
        _, outcome = tune_files.run_predict(Bundle.open(pixels_bundle), setup, paths, 4)
    assert outcome == "cannot start onnxedge predict over 3 files: [Errno 7] Argument list too long"


@pytest.mark.parametrize(
    ("fastest", "winner"), [(104.9, "fp32 batches"), (105.0, "int8 threads"), (200, "int8 threads")]
)
def test_the_fastest_wins_only_by_the_margin_over_the_default(fastest, winner):
    from onnxedge.runtime.bench import TimingPlan
    from onnxedge.runtime.tune import FilesTune

    default = FilesSetup("fp32", "onnxruntime", "f32", "batches", 2, "exact")
    other = FilesSetup("int8", "onnxruntime", "f32", "threads", 2, "exact")

    def row(setup, throughput):
        stats = LatencyStats.from_seconds([100 / throughput], batch_size=4, images_per_call=100)
        return TuneRow(setup, 4, "ok", stats=stats)

    rows = (row(default, 100.0), row(other, fastest))
    tune = FilesTune(100, "dir", 4, "exact", rows, (), default, TimingPlan())
    assert tune.fastest is rows[1]
    got = tune.winner.setup
    assert f"{got.variant} {got.pool}" == winner
    # the default not measured: the fastest, whatever its gain
    failed = (dataclasses.replace(rows[0], status="failed", stats=None), rows[1])
    assert FilesTune(100, "dir", 4, "exact", failed, (), default, TimingPlan()).winner is rows[1]


def _row(variant: str, engine: str, throughput: float, batch: int = 64) -> TuneRow:
    stats = LatencyStats.from_seconds([batch / throughput], batch_size=batch)
    return TuneRow(TunedSetup(variant, engine, "f32", 2), batch, "ok", stats=stats)


def test_files_models_takes_the_two_fastest_of_each_engine_and_their_uint8_variants(
    pixels_bundle,  # noqa: F811
):
    bundle = Bundle.open(pixels_bundle)
    rows = [
        _row("int8", "openvino", 900),
        _row("fp32", "openvino", 800),
        _row("int8", "onnxruntime", 700),
        _row("int8", "onnxruntime", 5000, batch=1),  # another batch size: not ranked
        _row("fp32", "onnxruntime", 600),
    ]
    chosen, excluded = files_models(bundle, rows, batch_size=32)
    got = [(m.variant, e) for m, e in chosen]
    assert got == [
        ("int8", "openvino"), ("fp32", "openvino"), ("int8", "onnxruntime"),
        ("fp32", "onnxruntime"), ("fp32-u8", "openvino"), ("fp32-u8", "onnxruntime"),
        ("int8-u8", "openvino"), ("int8-u8", "onnxruntime"),
    ]  # fmt: skip
    assert not excluded
    # fp32 on ONNX Runtime (predict's default) is always timed; a u8 variant whose model is not
    # taken is left out with the reason
    chosen, excluded = files_models(bundle, [_row("int8", "openvino", 900)], batch_size=64)
    assert [(m.variant, e) for m, e in chosen] == [
        ("int8", "openvino"), ("fp32", "onnxruntime"), ("fp32-u8", "onnxruntime"),
        ("int8-u8", "openvino"),
    ]  # fmt: skip
    assert excluded == []


def _with_files(bundle: Path, **winner: object) -> dict:
    tuning = copy.deepcopy(_tuning(bundle))
    tuning["winners"] = {
        "4": {"variant": "fp32", "engine": "onnxruntime", "precision": "f32", "threads": 1}
    }
    block = {"variant": "int8", "engine": "onnxruntime", "precision": "f32", "pool": "threads",
             "workers": 2, "decode": "exact", "throughput": 1.0}  # fmt: skip
    tuning["files"]["winner"] = {**block, **winner}
    return tuning


def _write(bundle: Path, tuning: dict, name: str = "t.json") -> Path:
    path = bundle.parent / name
    path.write_text(json.dumps(tuning))
    return path


def test_tuned_for_files_runs_the_files_winner_with_its_pool(files_tuned, two_cpus):
    path = _write(files_tuned, _with_files(files_tuned))
    clf = Classifier.from_bundle(files_tuned, tuned=path, batch_size=4, for_files=True)
    assert clf.variant == "int8" and clf.tuned.files.pool == "threads"
    assert clf.file_pool() == decode_module.DecodePool(2)
    assert "fastest from files, exact decode, at batch 4" in clf.tuned.line()
    # a pool the caller names wins over the tuned one
    assert clf.file_pool(decode_processes=1) == decode_module.DecodePool(1, processes=True)
    # for arrays: the model-only winner
    clf = Classifier.from_bundle(files_tuned, tuned=path, batch_size=4)
    assert clf.variant == "fp32" and clf.tuned.files is None and clf.tuned.setup
    # files decoded otherwise than tune's: the model-only winner, the line says why
    clf = Classifier.from_bundle(
        files_tuned, tuned=path, batch_size=4, for_files=True, decode="fast"
    )
    assert clf.variant == "fp32" and clf.tuned.files is None
    assert "its files stage decoded exact, this run fast" in clf.tuned.line()


def test_a_tuned_pool_the_classifier_cannot_have_falls_back_with_a_warning(
    files_tuned, two_cpus, caplog
):
    path = _write(files_tuned, _with_files(files_tuned, pool="batches"))
    clf = Classifier.from_bundle(files_tuned, tuned=path, for_files=True)
    assert clf.file_pool().batches
    clf.batch_session = None  # as on the CUDA EP: no session of its own in a batch process
    with caplog.at_level("WARNING"):
        pool = clf.file_pool()
    assert pool == decode_module.DecodePool(1, processes=True)
    assert any("the tuned pool" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("winner", "reason"),
    [
        ({"pool": "fibres"}, "expected a pool of batches, processes, threads"),
        ({"workers": 0}, "expected workers from 1 to 64, got 0"),
        ({"variant": "int8-pad4"}, "names the variant 'int8-pad4', which"),
        ({"engine": "tensorrt"}, "tensorrt"),
    ],
)
def test_a_bad_files_winner_makes_the_file_ignored(files_tuned, winner, reason):
    path = _write(files_tuned, _with_files(files_tuned, **winner), "bad.json")
    clf = Classifier.from_bundle(files_tuned, tuned=path, for_files=True)
    assert clf.variant == "fp32" and not clf.tuned and reason in clf.tuned.reason


def test_predict_tuned_runs_the_files_winner(files_tuned, data, two_cpus):  # noqa: F811
    path = _write(files_tuned, _with_files(files_tuned))
    images = data / "test" / "light"
    result = _cli("predict", files_tuned, images, f"--tuned={path}", "--batch-size", "4")
    assert result.exit_code == 0, result.output
    assert "onnxedge: tuned: onnxruntime int8, 2 decoding threads (fastest from files" in (
        result.output
    )
    assert result.output.count("\tsmiling") == len(list(images.iterdir()))
    probabilities = [float(line.split("\t")[1]) for line in result.output.splitlines()
                     if line.endswith("\tsmiling")]  # fmt: skip
    want = Classifier.from_bundle(files_tuned, variant="int8", provider="cpu").predict_files(
        sorted(images.iterdir()), batch_size=4
    )
    assert np.allclose(probabilities, [r.prediction.probability for r in want], atol=5e-5)
    # a pool given wins over the winner's, and the line says so (it named the winner's pool)
    result = _cli("predict", files_tuned, images, f"--tuned={path}", "--decode-processes", "1")
    assert result.exit_code == 0, result.output
    assert "; --decode-processes 1 as given decodes, not tune's pool" in result.output
    result = _cli("evaluate", files_tuned, "--data", data, "--tuned", path)
    assert result.exit_code == 0, result.output
    assert "variant int8" in result.output and "fastest from files" in result.output


def test_tune_refuses_a_folder_without_images(pixels_bundle, tmp_path):  # noqa: F811
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _cli("tune", pixels_bundle, *FAST, "--images", empty, "--out", tmp_path / "t.json")
    assert result.exit_code == 1
    assert "expected image files (.jpg, .png, ...) in" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "t.json").exists()


def test_tune_images_leaves_out_a_file_that_cannot_be_read(
    pixels_bundle,  # noqa: F811
    data,  # noqa: F811
    tmp_path,
    two_cpus,
):
    """A bad file among the images is left out and named, not a reason to skip every setup
    (each setup's check would fail on it: predict writes an ERROR line for it)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for f in sorted((data / "test").rglob("*.png"))[:6]:
        shutil.copy(f, folder / f"{f.parent.name}_{f.name}")
    (folder / "000000_broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "t.json"
    result = _cli(
        "tune", pixels_bundle, *FAST, *FILES, "--engines", "onnxruntime", "--variants", "fp32",
        "--images", folder, "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    files = json.loads(out.read_text())["files"]
    assert files["files"] == 6 and files["unreadable"] == 1
    assert "000000_broken.jpg: expected an image file" in files["unreadable_first"][0]
    assert files["rows"] and all(r["status"] == "ok" for r in files["rows"]), files["rows"]
    assert "1 of 7 image files cannot be read and are left out" in result.output


def test_tune_with_no_readable_image_fails_before_the_model_stage(
    pixels_bundle,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    from onnxedge.runtime.tune import run as tune_run

    def model_stage(*args, **kwargs):
        raise AssertionError("the model stage ran before the files were read")

    monkeypatch.setattr(tune_run, "run_benchmark", model_stage)
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "t.json"
    result = _cli("tune", pixels_bundle, *FAST, "--images", folder, "--out", out)
    assert result.exit_code == 1, result.output
    assert result.output.startswith(
        "onnxedge: error: --images: expected image files that can be read, found none of 1"
    )
    assert "Traceback" not in result.output and not out.exists()


def test_the_files_stage_is_left_out_without_images(files_tuned):
    tuning = _tuning(files_tuned)
    tuning.pop("files")
    path = _write(files_tuned, tuning, "nofiles.json")
    assert read_tuning(path).files is None
    clf = Classifier.from_bundle(files_tuned, tuned=path, for_files=True, batch_size=4)
    assert clf.tuned.files is None and "no files stage for the exact decode" in clf.tuned.line()


def test_the_default_each_row_is_compared_with_is_predicts_pool_for_those_files(tmp_path, two_cpus):
    """tune's baseline is the pool predict would take without --tuned: batch processes for
    many small files, threads for one batch or fewer, or for large ones (`large_files`)."""
    from PIL import Image

    small, large = [], []
    rng = np.random.default_rng(3)
    for i in range(10):
        small.append(str(tmp_path / f"s{i}.png"))
        Image.new("RGB", (30, 30), (i, 2 * i, 3 * i)).save(small[-1])
        large.append(str(tmp_path / f"l{i}.png"))
        Image.fromarray(rng.integers(0, 256, (120, 120, 3), dtype=np.uint8)).save(large[-1])
    assert tune_files.default_setup(small, 4, "fast") == FilesSetup(
        "fp32", "onnxruntime", "f32", "batches", 2, "fast"
    )
    threads = FilesSetup("fp32", "onnxruntime", "f32", "threads", 2, "fast")
    assert tune_files.default_setup(small, 10, "fast") == threads  # one batch
    assert tune_files.default_setup(large, 4, "fast") == threads
