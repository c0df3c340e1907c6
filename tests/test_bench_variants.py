"""`onnxedge bench --variants` and `--images`: one row per model x engine x batch size with its
``variant``, the models' sizes on disk, each model and engine against ORT fp32, a variant the
bundle lacks refused, and the from-files rows (predict's code over image files) checked against a
serial decode before they are timed. Tiny iteration counts: no timing is asserted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_assertions import assert_one_line_error
from click.testing import CliRunner
from openvino_support import requires_openvino
from PIL import Image
from test_optimize import trained_bundle, write_data  # noqa: F401 (a fixture)

from onnxedge.runtime.bench import (
    E2E,
    FILES,
    ORT,
    BenchModel,
    BenchRow,
    BenchSettings,
    EngineInfo,
    LatencyStats,
    SkippedEngine,
    TimingPlan,
    bench_models,
    compute_engine_ratios,
    evaluate_target,
    files_engines,
    fp32_model,
    ort_engines,
    parse_target,
    run_benchmark,
)
from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.cli import main

SHORT = ["--batch-sizes", "1,2", "--iters", "2", "--warmup", "1", "--no-progress"]
CPU_ONLY = ["--providers", "cpu", "--peers", "none"]
PLAN = TimingPlan(warmup=1, iters=2, seconds=None)


def _bench(*args: object):
    return CliRunner().invoke(main, ["bench", *map(str, args)])


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six JPEGs of two sizes in a folder with a subfolder, as a user's photos are."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(6):
        size = (40, 48) if i % 2 else (64, 64)
        pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        folder = root / ("more" if i >= 4 else "")
        folder.mkdir(exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def edge(trained_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """test_optimize's trained bundle with the int8 variant and the ORT-format files (ungated:
    speed only)."""
    root = tmp_path_factory.mktemp("bench_edge")
    data = write_data(root / "data", per_class=4)
    bundle = root / "bundle"
    result = CliRunner().invoke(
        main,
        ["optimize", str(trained_bundle), "--data", str(data), "--out", str(bundle), "--int8",
         "--ort", "--no-gate", "--calibration-size", "4"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return bundle


def test_one_row_per_variant_engine_and_batch_with_sizes_on_disk(edge, tmp_path):
    out, md = tmp_path / "b.json", tmp_path / "b.md"
    result = _bench(
        edge, *SHORT, *CPU_ONLY, "--engines", "onnxruntime",
        "--variants", "fp32,int8,int8-ort", "--json", out, "--markdown", md,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    rows = [(r["variant"], r["batch_size"], r["status"]) for r in report["rows"]]
    assert sorted(rows) == sorted(
        (v, b, "ok") for v in ("fp32", "int8", "int8-ort") for b in (1, 2)
    )
    assert report["settings"]["variants"] == ["fp32", "int8", "int8-ort"]
    # every model with its size on disk, as the files are
    models = {m["variant"]: m for m in report["bundle"]["models"]}
    assert list(models) == ["fp32", "int8", "int8-ort"]
    for m in models.values():
        assert m["bytes"] == (edge / m["file"]).stat().st_size
    assert models["int8"]["file"] == "variants/int8.onnx" and models["int8"]["gated"] is False
    assert models["int8"]["bytes"] < models["fp32"]["bytes"] / 2  # int8 weights
    text = md.read_text()
    assert "## Models" in text and "| int8 | `variants/int8.onnx` | onnx |" in text
    # each row is checked against the first on the same numerics: int8-ort against ORT's int8
    # (how far int8 is from fp32 is its gate's business, on real images, not random inputs)
    checks = {(r["variant"], r["batch_size"]): r["check"] for r in report["rows"]}
    assert checks["fp32", 1] == "reference" and checks["int8", 1] == "reference for int8 models"
    assert checks["int8-ort", 2].startswith("PASSED vs onnxruntime cpu end-to-end int8: ")
    assert checks["int8-ort", 2].endswith("(atol 0.01)")
    ratios = {(q["row"], q["batch_size"]) for q in report["engine_ratios"]}
    assert ratios == {
        (f"onnxruntime cpu end-to-end {v}", b) for v in ("int8", "int8-ort") for b in (1, 2)
    }
    assert "| 1 | onnxruntime int8 | cpu | end-to-end |" in result.output


def test_default_variants_are_fp32_and_int8_where_the_bundle_has_them(edge, smile_bundle):
    assert [m.variant for m in bench_models(Bundle.open(edge))] == ["fp32", "int8"]
    assert [m.variant for m in bench_models(Bundle.open(smile_bundle))] == ["fp32"]


def test_a_variant_the_bundle_lacks_is_a_clear_error(smile_bundle):
    result = _bench(smile_bundle, *SHORT, *CPU_ONLY, "--variants", "fp32,int8")
    assert_one_line_error(result, "has no 'int8' variant; it has: fp32")


def test_an_unknown_variant_is_a_usage_error(smile_bundle):
    result = _bench(smile_bundle, *SHORT, *CPU_ONLY, "--variants", "int4")
    assert result.exit_code == 2
    assert "unknown variant 'int4'; expected some of: fp32, int8, fp16" in result.output


def test_int8_is_checked_against_int8_and_fp16_against_fp32():
    def model(name, precision):
        return BenchModel(name, Path("m.onnx"), "onnx", precision, ("cpu",), True, 1)

    keys = {m.variant: (m.reference_key, m.check_atol) for m in (
        model("int8", "int8"), model("int8-ort", "int8"), model("fp16", "fp16"),
        model("fp32-ort", "fp32"),
    )}  # fmt: skip
    assert keys == {
        "int8": ("int8", 1e-2),
        "int8-ort": ("int8", 1e-2),
        "fp16": ("fp32", 1e-2),
        "fp32-ort": ("fp32", None),
    }


def test_a_variant_not_made_for_a_provider_is_skipped_with_the_reason(smile_bundle):
    model = fp32_model(smile_bundle / "model.onnx")
    fp16 = BenchModel("fp16", model.path, "onnx", "fp16", ("cuda",), True, 1)
    (engine,) = ort_engines(fp16, ("cpu",), threads=1, tf32=False)
    assert isinstance(engine, SkippedEngine)
    assert engine.reason == (
        "the fp16 variant is made for the cuda execution provider, not CPUExecutionProvider"
    )
    assert engine.info.label == "onnxruntime cpu end-to-end fp16"


@requires_openvino
def test_openvino_runs_the_int8_variant_and_skips_the_ort_format(edge, tmp_path):
    out = tmp_path / "b.json"
    result = _bench(
        edge, *SHORT, *CPU_ONLY, "--engines", "onnxruntime,openvino",
        "--variants", "fp32,int8,fp32-ort", "--json", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    status = {(r["engine"], r["variant"]): r["status"] for r in rows if r["batch_size"] == 1}
    assert status == {
        ("onnxruntime", "fp32"): "ok",
        ("onnxruntime", "int8"): "ok",
        ("onnxruntime", "fp32-ort"): "ok",
        ("openvino", "fp32"): "ok",
        ("openvino", "int8"): "ok",
        ("openvino", "fp32-ort"): "skipped",
    }
    (skipped,) = [r for r in rows if r["status"] == "skipped" and r["batch_size"] == 1]
    assert skipped["reason"] == "OpenVINO reads ONNX files, not the ORT format"


@requires_openvino
def test_a_classifier_on_openvino_refuses_an_ort_variant_naming_its_source(edge):
    """OpenVINO's reader tried every frontend on a .ort file and its message was cut to
    "Exception from src/inference/src/cpp/core.cpp:84:"."""
    from onnxedge.runtime.classifier.classifier import Classifier
    from onnxedge.runtime.errors import OnnxEdgeError

    with pytest.raises(OnnxEdgeError, match=r"ORT format; use --variant fp32 \("):
        Classifier.from_bundle(edge, engine="openvino", variant="fp32-ort")


def test_a_librarys_message_starts_where_it_says_something():
    from onnxedge.runtime.errors import first_line

    openvino = (
        "Exception from src/inference/src/cpp/core.cpp:84:\n"
        "Exception from src/inference/src/model_reader.cpp:148:\n"
        "Unable to read the model: x.ort Please check that model format\n\n"
    )
    assert first_line(RuntimeError(openvino)) == (
        "Unable to read the model: x.ort Please check that model format"
    )
    assert first_line(RuntimeError("Check 'rank' failed at src/core/a.cpp:9:\nbad rank")) == (
        "bad rank"
    )
    assert first_line(RuntimeError("one\ntwo")) == "one"
    assert first_line(RuntimeError("")) == "RuntimeError"


# ------------------------------------------------------------------------------------------------
# Targets and ratios over variants, from made-up rows


def _row(engine, mode, batch, mean_ms, variant="fp32", runs=10, images=None):
    info = EngineInfo(engine, ORT, "cpu", mode, "test", variant=variant)
    stats = LatencyStats.from_seconds(
        [mean_ms / 1e3] * runs, batch_size=batch, images_per_call=images
    )
    return BenchRow(info, batch, "ok", stats=stats)


def test_a_variant_target_is_judged_from_its_own_rows_and_can_fail():
    rows = [
        _row(ORT, E2E, 64, 30.0),
        _row(ORT, E2E, 64, 12.0, "int8"),
        _row("openvino", E2E, 64, 9.0, "int8"),
    ]
    met = evaluate_target(parse_target("openvino[int8]/onnxruntime>=3@64"), rows)
    missed = evaluate_target(parse_target("onnxruntime[int8]/onnxruntime>=3@64"), rows)
    assert met.status == "met" and met.measured == pytest.approx(30 / 9)
    assert missed.status == "missed" and missed.measured == pytest.approx(2.5)
    absent = evaluate_target(parse_target("onnxruntime[int8-ort]/onnxruntime>=1@64"), rows)
    assert absent.status == "not measured"
    assert "no onnxruntime cpu end-to-end int8-ort row" in absent.detail
    assert "this run timed no int8-ort model (the bundle has no int8-ort variant" in absent.detail


def test_engine_ratios_are_against_ort_fp32_in_the_same_mode_and_batch():
    rows = [
        _row(ORT, E2E, 64, 30.0),
        _row(ORT, E2E, 64, 10.0, "int8"),
        _row(ORT, FILES, 32, 2000.0, images=1000),
        _row(ORT, FILES, 32, 1000.0, "int8", images=1000),
    ]
    ratios = {(q.mode, q.row): q.ratio for q in compute_engine_ratios(rows)}
    assert ratios == {
        (E2E, "onnxruntime cpu end-to-end int8"): pytest.approx(3.0),
        (FILES, "onnxruntime cpu from-files int8"): pytest.approx(2.0),
    }


def test_a_from_files_row_counts_images_not_calls():
    s = LatencyStats.from_seconds([2.0, 2.0], batch_size=32, images_per_call=1000)
    assert s.throughput == pytest.approx(500.0) and s.images_per_call == 1000
    assert LatencyStats.from_seconds([0.5], batch_size=4).throughput == pytest.approx(8.0)


# ------------------------------------------------------------------------------------------------
# From image files


def test_from_files_rows_run_predicts_code_on_every_file(smile_bundle, images, tmp_path):
    out, md = tmp_path / "b.json", tmp_path / "b.md"
    result = _bench(
        smile_bundle, *SHORT, *CPU_ONLY, "--engines", "onnxruntime", "--images", images,
        "--images-batch-size", 4, "--json", out, "--markdown", md,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    rows = [r for r in report["rows"] if r["mode"] == FILES]
    assert [r["decode"] for r in rows] == ["exact", "fast"]  # one row per decode
    for row in rows:
        assert (row["status"], row["batch_size"], row["variant"]) == ("ok", 4, "fp32")
        assert row["stats"]["images_per_call"] == 6 and row["files"] == 6
        assert row["stats"]["throughput"] == pytest.approx(6 / (row["stats"]["mean_ms"] / 1e3))
        assert row["check"].startswith("PASSED: 6 files classified, probabilities as a serial")
    # the files' batch size joins the run for these rows only
    assert sorted({r["batch_size"] for r in report["rows"] if r["mode"] == E2E}) == [1, 2]
    assert report["settings"]["images"] == {
        "source": str(images),
        "files": 6,
        "batch_size": 4,
        "decodes": ["exact", "fast"],
        "pools": ["predict's default"],
        "unreadable": 0,
        "unreadable_first": [],
    }
    assert not report["warnings"] or "cannot be read" not in " ".join(report["warnings"])
    text = md.read_text()
    assert "## From image files (decode + preprocess + inference)" in text
    # beside no model-only row at batch 4 (not among --batch-sizes): n/a, never a made-up ratio
    assert "| 4 | onnxruntime exact | 6 |" in text and "| n/a |" in text


def test_decode_pool_gives_a_row_per_pool(smile_bundle, images, tmp_path):
    out = tmp_path / "b.json"
    result = _bench(
        smile_bundle, *SHORT, *CPU_ONLY, "--engines", "onnxruntime", "--images", images,
        "--images-batch-size", 4, "--decode", "fast", "--decode-pool", "processes",
        "--decode-pool", "threads", "--json", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # the one vocabulary's comma list gives the same rows (it was refused: BENCHMARKS.md's
    # `--decode exact,fast`)
    comma = tmp_path / "c.json"
    again = _bench(
        smile_bundle, *SHORT, *CPU_ONLY, "--engines", "onnxruntime", "--images", images,
        "--images-batch-size", 4, "--decode", "fast", "--decode-pool", "processes,threads",
        "--json", comma,
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    assert [(r["mode"], r["engine"]) for r in json.loads(comma.read_text())["rows"]] == [
        (r["mode"], r["engine"]) for r in json.loads(out.read_text())["rows"]
    ]
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    rows = [r for r in report["rows"] if r["mode"] == FILES]
    assert [r["decode"] for r in rows] == ["fast processes", "fast threads"]
    assert all(r["status"] == "ok" and r["check"].startswith("PASSED: 6 files") for r in rows)
    assert report["settings"]["images"]["pools"] == ["processes", "threads"]


def test_batch_processes_with_threads_given_are_a_skipped_row_and_rows_name_their_pool(
    smile_bundle, images, monkeypatch
):
    from onnxedge.runtime.bench.engines import SkippedEngine
    from onnxedge.runtime.classifier import decode

    monkeypatch.setattr(decode, "usable_cpus", lambda: 2)
    bundle = Bundle.open(smile_bundle)
    paths = [str(p) for p in sorted(images.glob("*.jpg"))]
    kwargs = {"batch_size": 2, "decodes": ("fast",), "pools": ("batches", "processes")}
    models = [m for m in bench_models(bundle) if m.variant == "fp32"]
    given = files_engines(bundle.path, models, ["onnxruntime"], paths, threads=1, **kwargs)
    assert isinstance(given[0], SkippedEngine)
    assert given[0].reason.endswith("for batch_processes; found one with its threads given")
    assert given[1].info.settings["pool"] == "1 decoder process"
    default = files_engines(bundle.path, models, ["onnxruntime"], paths, threads=None, **kwargs)
    assert [e.info.settings["pool"] for e in default] == ["2 batch processes", "1 decoder process"]
    (row,) = files_engines(bundle.path, models, ["onnxruntime"], paths, threads=None, **{
        **kwargs, "pools": ()})  # fmt: skip
    assert row.info.settings["pool"] == "2 batch processes"  # predict's default, named
    assert "batches" not in row.info.settings  # batch processes run their own
    (decoder,) = files_engines(bundle.path, models, ["onnxruntime"], paths, threads=None, **{
        **kwargs, "pools": ("processes",)})  # fmt: skip
    assert decoder.info.settings["batches"] == (
        "2 batches at once on one ONNX Runtime CPU session of 1 intra-op thread, 8 images a call"
    )


def test_a_file_that_cannot_be_read_fails_the_row_untimed(smile_bundle, images, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for f in sorted(images.glob("*.jpg")):
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    bundle = Bundle.open(smile_bundle)
    settings = BenchSettings(providers=("cpu",), batch_sizes=(1,), peers=(), plan=PLAN)
    paths = [str(p) for p in sorted(folder.iterdir())]
    engines = files_engines(
        bundle.path,
        bench_models(bundle),
        ["onnxruntime"],
        paths,
        batch_size=2,
        threads=1,
        decodes=("exact",),
    )
    (row,) = run_benchmark(engines, (3, 64, 64), settings)
    assert row.status == "failed" and row.stats is None
    assert row.reason.startswith("1 of 5 files not classified (5 results); first: ")
    assert "broken.jpg" in row.reason


def test_bench_leaves_out_a_file_that_cannot_be_read_and_names_it(smile_bundle, images, tmp_path):
    """One bad file in the folder does not cost the run its from-files rows: it is left out of
    every row before timing (as predict writes an ERROR line for it and goes on) and named in
    the report, its JSON and a warning."""
    folder = tmp_path / "photos"
    shutil.copytree(images, folder)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "b.json"
    result = _bench(
        smile_bundle, *SHORT, *CPU_ONLY, "--engines", "onnxruntime", "--images", folder,
        "--images-batch-size", 4, "--decode", "exact", "--json", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    (row,) = [r for r in report["rows"] if r["mode"] == FILES]
    assert row["status"] == "ok" and row["files"] == 6, row
    assert row["check"].startswith("PASSED: 6 files classified")
    images_settings = report["settings"]["images"]
    assert images_settings["files"] == 6 and images_settings["unreadable"] == 1
    (first,) = images_settings["unreadable_first"]
    assert first.startswith(f"{folder / 'broken.jpg'}: expected an image file")
    (warning,) = [w for w in report["warnings"] if w.startswith("--images:")]
    assert warning.startswith("--images: 1 of 7 image files cannot be read and are left out")
    assert "broken.jpg" in result.output


def test_bench_with_no_readable_file_is_a_one_line_error(smile_bundle, tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "b.png").write_bytes(b"")
    result = _bench(smile_bundle, *SHORT, *CPU_ONLY, "--images", tmp_path, "--decode", "exact")
    assert_one_line_error(
        result, "--images: expected image files that can be read, found none of 2 (first: "
    )


def test_from_files_pixels_that_change_fail_the_check(smile_bundle, images, monkeypatch):
    """The check bites: a file path whose probabilities differ from a serial decode's (say, a
    decoder that resized differently) is not timed."""
    from onnxedge.runtime.classifier import classifier as classifier_module

    real = classifier_module.Classifier.predict_files

    def shifted(self, paths, **kw):
        for r in real(self, paths, **kw):
            p = r.prediction
            yield type(r)(r.file, type(p)(**{**p.__dict__, "probability": p.probability + 1e-4}))

    monkeypatch.setattr(classifier_module.Classifier, "predict_files", shifted)
    bundle = Bundle.open(smile_bundle)
    settings = BenchSettings(providers=("cpu",), batch_sizes=(1,), peers=(), plan=PLAN)
    paths = [str(p) for p in sorted(images.rglob("*.jpg"))]
    engines = files_engines(
        bundle.path,
        bench_models(bundle),
        ["onnxruntime"],
        paths,
        batch_size=4,
        threads=1,
        decodes=("fast",),
    )
    (row,) = run_benchmark(engines, (3, 64, 64), settings)
    assert row.status == "failed" and row.stats is None
    assert "probabilities differ from a serial decode of the same files" in row.reason


def test_images_without_any_image_is_an_error(smile_bundle, tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    result = _bench(smile_bundle, *SHORT, *CPU_ONLY, "--images", tmp_path)
    assert_one_line_error(result, "--images: expected image files")
