"""`onnxedge parity`: passes on the default bundle, and bites: a nudged weight, a changed
preprocessing, a saturated sigmoid hiding an error, a provider that cannot run, a bad bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_assertions import assert_one_line_error, unwrap
from click.testing import CliRunner
from onnx import numpy_helper
from torchless import run_without_torch

from onnxedge.runtime import parity
from onnxedge.runtime.bundle.hashing import sha256_file
from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.classifier.preprocess import normalize, preprocess_image
from onnxedge.runtime.cli import main
from onnxedge.runtime.engines.onnxruntime.session import SessionConfig, ort_complaint
from onnxedge.runtime.errors import OnnxEdgeError, ProviderUnavailable
from onnxedge.runtime.parity import (
    DEFAULT_BATCH_SIZES,
    GOLDEN,
    STRUCTURED_KINDS,
    Target,
    Tolerance,
    label_agreement,
    load_golden,
    make_targets,
    run_parity,
)
from onnxedge.runtime.parity import reference as parity_reference
from onnxedge.runtime.parity import run as parity_run
from onnxedge.runtime.parity.rows import top1_agreement

# Where a GPU might be, the CUDA rows may run: the no-GPU expectations are checked only without one.
NO_GPU = not Path("/dev/nvidiactl").exists()
CPU = [Target("cpu")]


def invoke(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def row_lines(output: str) -> list[str]:
    """The row lines, each wrapped row joined back into one line."""
    return [
        line
        for line in unwrap(output).splitlines()
        if line.split(" | ")[0] in ("PASSED", "FAILED", "SKIPPED") and " | batch " in line
    ]


def manifest_of(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def write_manifest(bundle: Path, manifest: dict) -> None:
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


def rehash(bundle: Path, name: str) -> None:
    """Make the manifest agree with a file we changed on purpose, so only the content is wrong."""
    manifest = manifest_of(bundle)
    digest = sha256_file(bundle / name)
    manifest["files"][name]["sha256"] = digest
    write_manifest(bundle, manifest)


def edit_model(bundle: Path, name: str, change) -> None:
    """Apply ``change`` to the initializer ``name`` of the bundle's model.onnx and rehash it."""
    model = onnx.load(str(bundle / "model.onnx"))
    (init,) = [i for i in model.graph.initializer if i.name == name]
    array = numpy_helper.to_array(init).copy()
    change(array)
    init.CopyFrom(numpy_helper.from_array(array, name))
    onnx.save(model, str(bundle / "model.onnx"))
    rehash(bundle, "model.onnx")


def first_conv_weight(bundle: Path) -> str:
    model = onnx.load(str(bundle / "model.onnx"))
    return next(n.input[1] for n in model.graph.node if n.op_type == "Conv")


def parity_spec() -> dict:
    from onnxedge.models.registry import SQUARE_CROP_64

    return dict(SQUARE_CROP_64)


def library_run(bundle: Path, **kw) -> parity.ParityReport:
    opened = Bundle.open(bundle)
    kw.setdefault("targets", CPU)
    return run_parity(opened, load_golden(opened), **kw)


# --- the golden data ----------------------------------------------------------------------------


def test_golden_data_is_in_the_bundle_and_the_manifest(smile_bundle):
    manifest = manifest_of(smile_bundle)
    block = manifest["golden"]
    assert block["file"] == GOLDEN
    assert manifest["files"][GOLDEN]["sha256"] == sha256_file(smile_bundle / GOLDEN)
    # Recorded once: the file's sha256 in `files` only; the preprocessing in golden.npz's meta.
    assert "sha256" not in block and "preprocessing_sha256" not in block
    assert block["batch_sizes"] == list(DEFAULT_BATCH_SIZES)
    assert set(block["inputs"]) == {*STRUCTURED_KINDS, "random"}
    model = onnx.load(str(smile_bundle / "model.onnx"))
    assert block["logits"] == parity.find_logits_tensor(model)
    assert len(model.graph.output) == 1  # the shipped graph keeps its one output
    assert (smile_bundle / GOLDEN).stat().st_size < 8 * 2**20


def test_a_stale_golden_sha256_of_an_older_export_is_ignored(bundle_copy):
    """Older exports also wrote golden.sha256: the files entry is the one that is verified."""
    manifest = manifest_of(bundle_copy)
    manifest["golden"]["sha256"] = "0" * 64
    write_manifest(bundle_copy, manifest)
    assert library_run(bundle_copy, batch_sizes=(1,))


def test_golden_batches_hold_structured_and_random_rows(smile_bundle):
    ref = load_golden(Bundle.open(smile_bundle))
    assert ref.batch_sizes == DEFAULT_BATCH_SIZES
    assert ref.batch(1).kinds == ("random",)
    assert ref.batch(2).kinds == ("zeros", "random")
    assert ref.batch(7).kinds == (*STRUCTURED_KINDS, "random", "random")
    assert ref.batch(64).kinds[:5] == STRUCTURED_KINDS
    b7 = ref.batch(7)
    assert b7.inputs.dtype == np.float32 and b7.inputs.shape == (7, 3, 64, 64)
    assert np.all(b7.inputs[0] == 0.0) and np.all(b7.inputs[1] == 1.0)  # black, white
    assert np.allclose(b7.inputs[2], 128 / 255)
    assert b7.inputs[5].min() >= 0.0 and b7.inputs[5].max() <= 1.0  # 8-bit levels / 255
    for size in DEFAULT_BATCH_SIZES:
        b = ref.batch(size)
        assert b.prob.dtype == np.float64 and b.logits.dtype == np.float64
        # the logits are the sigmoid's input, and the float32 reference is close to the float64
        np.testing.assert_allclose(b.prob, 1.0 / (1.0 + np.exp(-b.logits)), rtol=0, atol=1e-12)
        np.testing.assert_allclose(b.prob_f32, b.prob, rtol=0, atol=1e-6)


def test_golden_file_is_reproducible():
    from onnxedge.export.golden import compute_reference
    from onnxedge.models import get_model_spec
    from onnxedge.models.weights import seeded

    spec = get_model_spec("smile_cnn")
    module, _ = seeded(spec.build, 0)
    meta = {"format": parity.GOLDEN_FORMAT, "format_version": 1}
    made = [
        parity.golden_npz_bytes(
            compute_reference(module, spec.preprocessing, batch_sizes=(1, 2)), meta
        )
        for _ in range(2)
    ]
    # Equal bytes also show the copies ran in eval mode (dropout would make them differ), and the
    # module itself is left in the mode it was in.
    assert made[0] == made[1]
    assert module.training


def test_random_rows_and_preprocess_image_share_normalize():
    from PIL import Image

    spec = {**parity_spec(), "scale": 1 / 255, "mean": [0.5, 0.25, 0.0], "std": [0.5, 2.0, 1.0]}
    pixels = np.stack(
        [
            np.random.default_rng([parity.GOLDEN_SEED, i]).integers(0, 256, (64, 64, 3), np.uint8)
            for i in range(3)
        ]
    )
    rows = parity.random_rows(3, spec)
    np.testing.assert_array_equal(rows, normalize(pixels, spec))
    expected = (pixels.astype(np.float64) / 255 - [0.5, 0.25, 0.0]) / [0.5, 2.0, 1.0]
    np.testing.assert_allclose(rows, expected.transpose(0, 3, 1, 2), rtol=0, atol=1e-6)
    image = Image.fromarray(pixels[0])
    np.testing.assert_array_equal(preprocess_image(image, spec), rows[0])


# --- it passes ----------------------------------------------------------------------------------


def test_parity_passes_on_cpu_at_every_default_batch_size(smile_bundle):
    result = invoke("parity", smile_bundle, "--providers", "cpu")
    assert result.exit_code == 0, result.output
    rows = row_lines(result.output)
    assert [line.split(" | ")[:3] for line in rows] == [
        ["PASSED", "cpu", f"batch {b}"] for b in DEFAULT_BATCH_SIZES
    ]
    for line in rows:
        assert "error/bound prob " in line and len(line) <= 120
    assert "PASSED | preprocessing |" in result.output
    verbose = row_lines(invoke("-v", "parity", smile_bundle, "--providers", "cpu").output)
    for line in verbose:
        assert "prob max_abs" in line and "(atol 1e-05, rtol 0.0001)" in line
        assert "logits max_abs" in line and "tf32 n/a" in line and "logits bound " in line
    assert "parity: 4 passed, 0 failed, 0 skipped" in result.output


def test_runs_without_torch(smile_bundle):
    result = run_without_torch(["parity", smile_bundle, "--providers", "cpu"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        len([line for line in result.stdout.splitlines() if line.startswith("PASSED | cpu")]) == 4
    )


def test_live_reference_without_torch_is_a_clear_error(smile_bundle):
    result = run_without_torch(["parity", smile_bundle, "--reference", "live"])
    assert result.returncode == 1, result.stdout + result.stderr
    assert "onnxedge: error: --reference live needs torch" in result.stderr
    assert "Traceback" not in result.stderr


def test_live_reference_computes_any_batch_size(smile_bundle):
    result = invoke(
        "parity", smile_bundle, "--reference", "live", "--providers", "cpu", "--batch-sizes", "3,9"
    )
    assert result.exit_code == 0, result.output
    assert [line.split(" | ")[:3] for line in row_lines(result.output)] == [
        ["PASSED", "cpu", "batch 3"],
        ["PASSED", "cpu", "batch 9"],
    ]
    assert "reference: live: smile_cnn (seed 0)" in result.output
    # its rows were made by this runtime's preprocess_image: re-making them checks nothing
    assert "SKIPPED | preprocessing | as the live reference's; live rows are not re-made" in (
        result.output
    )
    assert "PASSED | preprocessing" not in result.output
    assert "preprocessing skipped" in result.output


def test_preprocessing_with_no_structured_rows_is_skipped_not_passed(smile_bundle):
    opened = Bundle.open(smile_bundle)
    only_random = load_golden(opened).select((1,))  # batch 1 is one random row
    report = run_parity(opened, only_random, targets=CPU)
    assert report.preprocessing.status == "skipped" and not report.preprocessing
    assert str(report.preprocessing).startswith("SKIPPED | preprocessing | ")
    assert "holds no structured rows to re-make" in report.preprocessing.detail
    assert report.to_dict()["preprocessing"]["passed"] is False
    assert report, "the rows ran and passed; a check not made fails nothing"


def test_a_changed_preprocessing_fails_with_the_live_reference_too(bundle_copy):
    manifest = manifest_of(bundle_copy)
    manifest["preprocessing"]["interpolation"] = "nearest"
    write_manifest(bundle_copy, manifest)
    result = invoke(
        "parity", bundle_copy, "--reference", "live", "--providers", "cpu", "--batch-sizes", "2"
    )
    assert result.exit_code == 1, result.output
    assert "FAILED | preprocessing | the manifest's preprocessing differs" in result.output


def test_a_torch_that_fails_to_load_is_a_clear_error(smile_bundle, monkeypatch):
    """A torch wheel whose native libraries are missing raises OSError on import, not
    ImportError (Jetson wheels without their CUDA libraries)."""
    import sys

    class BrokenTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "onnxedge.export.golden":
                raise OSError("libcudart.so.12: cannot open shared object file")
            return None

    monkeypatch.delitem(sys.modules, "onnxedge.export.golden", raising=False)
    monkeypatch.setattr(sys, "meta_path", [BrokenTorch(), *sys.meta_path])
    assert_one_line_error(
        invoke("parity", smile_bundle, "--reference", "live"),
        "--reference live needs torch, which cannot be imported here",
        "libcudart.so.12",
    )


def test_live_reference_checks_the_checkpoint(bundle_copy, tmp_path):
    from safetensors.torch import save_file

    from onnxedge.models import get_model_spec
    from onnxedge.models.weights import seeded

    # The seed-0 weights saved as a checkpoint; the manifest then says it was exported from it.
    module, _ = seeded(get_model_spec("smile_cnn").build, 0)
    good, bad = tmp_path / "good.safetensors", tmp_path / "bad.safetensors"
    save_file(module.state_dict(), str(good))
    save_file({k: v + 1 for k, v in module.state_dict().items()}, str(bad))
    manifest = manifest_of(bundle_copy)
    manifest["weights"] = {
        "source": "checkpoint",
        "path": good.name,
        "format": "safetensors",
        "sha256": sha256_file(good),
    }
    write_manifest(bundle_copy, manifest)
    args = [
        "parity",
        bundle_copy,
        "--reference",
        "live",
        "--providers",
        "cpu",
        "--batch-sizes",
        "2",
    ]
    assert invoke(*args, "--checkpoint", good).exit_code == 0
    assert_one_line_error(invoke(*args), "exported from the checkpoint", "--checkpoint PATH")
    assert_one_line_error(invoke(*args, "--checkpoint", bad), "is not the one", "expected sha256")


# --- skipped is never passed ---------------------------------------------------------------------


@pytest.mark.skipif(not NO_GPU, reason="a GPU is present: the CUDA rows may run")
def test_cuda_is_skipped_with_the_reason_without_a_gpu(smile_bundle):
    result = invoke("parity", smile_bundle)
    assert result.exit_code == 0, result.output  # every row that ran passed
    cuda = [line for line in row_lines(result.output) if line.split(" | ")[1] == "cuda"]
    # One line for the provider, its first cause only; every row counted as skipped.
    (line,) = cuda
    batches = ", ".join(map(str, DEFAULT_BATCH_SIZES))
    assert line.startswith(f"SKIPPED | cuda | batch {batches} | tf32 off | CUDA EP: ")
    assert "requested CUDAExecutionProvider" not in line and len(line) < 200
    assert "parity: 4 passed, 0 failed, 4 skipped" in result.output
    # -v: onnxruntime's full message instead.
    verbose = CliRunner().invoke(main, ["-v", "parity", str(smile_bundle), "--tf32", "both"])
    (line,) = [x for x in row_lines(verbose.output) if x.split(" | ")[1] == "cuda"]
    assert line.startswith(f"SKIPPED | cuda | batch {batches} | tf32 off, on | requested ")
    assert "requested CUDAExecutionProvider" in line
    assert "parity: 4 passed, 0 failed, 8 skipped" in verbose.output


@pytest.mark.skipif(not NO_GPU, reason="a GPU is present: CUDA may run")
def test_require_cuda_fails_without_a_gpu(smile_bundle):
    result = invoke("parity", smile_bundle, "--require", "cuda", "--batch-sizes", "1,2")
    assert result.exit_code == 1, result.output
    cuda = [line for line in row_lines(result.output) if line.split(" | ")[1] == "cuda"]
    assert len(cuda) == 2
    assert all(line.startswith("FAILED | cuda") and "required" in line for line in cuda)


@pytest.mark.skipif(not NO_GPU, reason="a GPU is present: CUDA may run")
def test_nothing_ran_is_not_a_pass(smile_bundle):
    result = invoke("parity", smile_bundle, "--providers", "cuda", "--batch-sizes", "1")
    assert result.exit_code == 1, result.output
    assert "nothing ran, which is not a pass" in result.output


def test_a_provider_that_cannot_load_is_skipped_never_passed(smile_bundle, monkeypatch):
    """The same on every machine: CUDA is made to fail to load."""
    real = parity_run.make_session

    def no_cuda(model, config=None):
        if config is not None and config.provider == "cuda":
            raise ProviderUnavailable(
                "requested CUDAExecutionProvider, available: CPUExecutionProvider"
            )
        return real(model, config)

    monkeypatch.setattr(parity_run, "make_session", no_cuda)
    targets = make_targets(["cpu", "cuda"], "both")
    report = library_run(smile_bundle, targets=targets, batch_sizes=(1, 7))
    cuda = [r for r in report.rows if r.provider == "cuda"]
    assert [(r.tf32, r.batch, r.status) for r in cuda] == [
        ("off", 1, "skipped"),
        ("off", 7, "skipped"),
        ("on", 1, "skipped"),
        ("on", 7, "skipped"),
    ]
    assert not any(cuda) and all(r.prob is None for r in cuda)
    assert all("available: CPUExecutionProvider" in r.reason for r in cuda)
    assert report and report.skipped == 4  # the CPU rows ran and passed
    required = library_run(smile_bundle, targets=targets, batch_sizes=(1,), required=("cuda",))
    assert not required and required.failed == 2
    only_cuda = library_run(smile_bundle, targets=make_targets(["cuda"]), batch_sizes=(1,))
    assert not only_cuda and only_cuda.ran == 0


def test_a_model_onnxruntime_cannot_load_fails_never_skipped(bundle_copy):
    """onnx reads it, onnxruntime refuses it: that is a FAILED row (exit 1), not "cannot run
    here"; on a GPU machine a model failing on the CPU and loading on CUDA would otherwise pass."""
    model = onnx.load(str(bundle_copy / "model.onnx"))
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    relu.op_type = "NoSuchOp"
    onnx.save(model, str(bundle_copy / "model.onnx"))
    rehash(bundle_copy, "model.onnx")
    result = invoke("parity", bundle_copy, "--providers", "cpu", "--batch-sizes", "1,7")
    assert result.exit_code == 1, result.output
    rows = row_lines(result.output)
    assert [line.split(" | ")[:3] for line in rows] == [
        ["FAILED", "cpu", "batch 1"],
        ["FAILED", "cpu", "batch 7"],
    ]
    assert all("cannot run the model here" in line and "NoSuchOp" in line for line in rows)
    assert "parity: 0 passed, 2 failed, 0 skipped" in result.output


def test_only_an_unavailable_provider_is_skipped(smile_bundle, monkeypatch):
    """make_session's other errors (a load failure) fail the rows of that provider."""
    real = parity_run.make_session

    def cuda_cannot_load(model, config=None):
        if config is not None and config.provider == "cuda":
            raise OnnxEdgeError("onnxruntime cannot load the model on CUDAExecutionProvider: x")
        return real(model, config)

    monkeypatch.setattr(parity_run, "make_session", cuda_cannot_load)
    report = library_run(smile_bundle, targets=make_targets(["cpu", "cuda"]), batch_sizes=(1,))
    assert [(r.provider, r.status) for r in report.rows] == [("cpu", "passed"), ("cuda", "failed")]
    assert not report and "cannot load the model on CUDAExecutionProvider" in report.rows[1].reason


def to_external_data(bundle: Path) -> None:
    """Move the model's weights to ``weights.bin`` beside it, listed in the manifest."""
    model = onnx.load(str(bundle / "model.onnx"))
    onnx.save(
        model,
        str(bundle / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
    )
    manifest = manifest_of(bundle)
    manifest["files"]["weights.bin"] = {"sha256": sha256_file(bundle / "weights.bin")}
    write_manifest(bundle, manifest)
    rehash(bundle, "model.onnx")


def test_a_bundle_with_external_data_runs(bundle_copy):
    to_external_data(bundle_copy)
    assert (bundle_copy / "model.onnx").stat().st_size < 10_000  # the weights are elsewhere
    result = invoke("parity", bundle_copy, "--providers", "cpu", "--batch-sizes", "1,7")
    assert result.exit_code == 0, result.output
    assert [line.split(" | ")[:3] for line in row_lines(result.output)] == [
        ["PASSED", "cpu", "batch 1"],
        ["PASSED", "cpu", "batch 7"],
    ]


def test_external_data_is_verified_and_confined_to_the_bundle(bundle_copy, tmp_path):
    to_external_data(bundle_copy)
    data = bytearray((bundle_copy / "weights.bin").read_bytes())
    data[0] ^= 1
    (bundle_copy / "weights.bin").write_bytes(bytes(data))
    assert_one_line_error(
        invoke("parity", bundle_copy, "--providers", "cpu"),
        "weights.bin",
        "does not match the manifest",
    )
    # the same weights outside the bundle, named by a path that leaves it
    (bundle_copy / "weights.bin").rename(tmp_path / "weights.bin")
    model = onnx.load(str(bundle_copy / "model.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../weights.bin"
    onnx.save(model, str(bundle_copy / "model.onnx"))
    rehash(bundle_copy, "model.onnx")
    assert_one_line_error(
        invoke("parity", bundle_copy, "--providers", "cpu"), "outside the bundle", "refusing"
    )


# --- TF32: what ran, as onnxruntime reports it ----------------------------------------------------


class _ReportsOptions:
    """A CPU session that reports ``options`` as its CUDA provider options."""

    def __init__(self, session, options):
        self._session = session
        self._options = options

    def run(self, *args, **kw):
        return self._session.run(*args, **kw)

    def get_provider_options(self):
        return {"CUDAExecutionProvider": self._options}


def cuda_on_the_cpu(monkeypatch, report_options) -> None:
    """CUDA targets get CPU sessions whose provider options are ``report_options(requested)``."""
    real = parity_run.make_session

    def fake(model, config=None):
        if config is None or config.provider != "cuda":
            return real(model, config)
        cpu = SessionConfig(provider="cpu", config_entries=config.config_entries)
        return _ReportsOptions(real(model, cpu), report_options(dict(config.provider_options)))

    monkeypatch.setattr(parity_run, "make_session", fake)


@pytest.mark.parametrize(
    ("report_options", "status", "label", "confirmed"),
    [
        (lambda asked: asked, "passed", "tf32 on", True),
        (lambda asked: {}, "passed", "tf32 on (requested, not confirmed by onnxruntime)", False),
        (lambda asked: {"use_tf32": "0"}, "failed", "tf32 on", None),
    ],
    ids=["reported", "not-reported", "reported-otherwise"],
)
def test_tf32_is_labelled_as_onnxruntime_reports_it(
    smile_bundle, monkeypatch, tmp_path, report_options, status, label, confirmed
):
    cuda_on_the_cpu(monkeypatch, report_options)
    out = tmp_path / "p.json"
    result = invoke(
        "-v",
        "parity",
        smile_bundle,
        "--providers",
        "cuda",
        "--tf32",
        "on",
        "--batch-sizes",
        "1",
        "--json",
        out,
    )
    (line,) = row_lines(result.output)
    assert line.startswith(f"{status.upper()} | cuda | batch 1 | {label} |"), line
    (row,) = json.loads(out.read_text())["rows"]
    assert (row["status"], row["tf32"], row["tf32_label"]) == (status, "on", label)
    assert row["tf32_confirmed"] is confirmed
    if status == "failed":
        assert "asked onnxruntime for use_tf32=1 on cuda, it runs with use_tf32=0" in line


# --- it bites -----------------------------------------------------------------------------------


def test_a_nudged_convolution_weight_fails(bundle_copy):
    def nudge(w):
        w.flat[0] += 0.01  # one of 864 weights, by a tenth of the layer's weight spread

    edit_model(bundle_copy, first_conv_weight(bundle_copy), nudge)
    result = invoke("parity", bundle_copy, "--providers", "cpu", "--json", bundle_copy / "p.json")
    assert result.exit_code == 1, result.output
    rows = row_lines(result.output)
    assert any(line.startswith("FAILED | cpu") for line in rows), result.output
    assert "logits outside " in result.output
    report = json.loads((bundle_copy / "p.json").read_text())
    assert report["passed"] is False


def test_a_saturated_sigmoid_hides_what_the_logits_show(bundle_copy):
    """With the classifier's bias raised so every probability is ~1, a weight change that moves
    the logits clearly leaves the probabilities within their tolerance: the logits catch it."""
    model = onnx.load(str(bundle_copy / "model.onnx"))
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    shift = 12.0

    def raise_bias(b):
        b += shift

    edit_model(bundle_copy, gemm.input[2], raise_bias)
    with np.load(bundle_copy / GOLDEN, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for key in [k for k in arrays if k.startswith("logits_")]:
        arrays[key] = arrays[key] + arrays[key].dtype.type(shift)
        prob = key.replace("logits_", "prob_")
        arrays[prob] = (1 / (1 + np.exp(-arrays[key].astype(np.float64)))).astype(
            arrays[prob].dtype
        )
    np.savez(bundle_copy / GOLDEN, **arrays)
    rehash(bundle_copy, GOLDEN)
    assert library_run(bundle_copy), "the shifted golden data matches the shifted model"

    def nudge(w):
        w.flat[0] += 0.5

    edit_model(bundle_copy, first_conv_weight(bundle_copy), nudge)
    report = library_run(bundle_copy)
    assert not report
    for row in report.rows:
        assert row.prob and not row.logits  # the probabilities pass, the logits fail
        assert row.labels.agree == row.labels.total


def test_a_changed_preprocessing_fails(bundle_copy):
    manifest = manifest_of(bundle_copy)
    manifest["preprocessing"]["scale"] = 1.0  # 0-255 instead of 0-1
    write_manifest(bundle_copy, manifest)
    result = invoke("parity", bundle_copy, "--providers", "cpu")
    assert result.exit_code == 1, result.output
    assert "FAILED | preprocessing |" in result.output
    assert "scale 1.0 (reference 0.00392156862745098)" in unwrap(result.output)


def test_preprocessing_that_computes_differently_fails(smile_bundle, monkeypatch):
    """Same spec, but the runtime's preprocess_image no longer makes the reference's inputs."""
    real = parity_reference.preprocess_image

    def nearest(image, spec):
        return real(image, {**spec, "interpolation": "nearest"})

    monkeypatch.setattr(parity_reference, "preprocess_image", nearest)
    report = library_run(smile_bundle, batch_sizes=(1,))
    assert not report and not report.preprocessing
    assert "does not make the reference's 'gradient-" in report.preprocessing.detail


def test_zero_tolerance_fails_so_the_tolerances_are_used(smile_bundle, tmp_path):
    out = tmp_path / "p.json"
    zero = ["--atol", "0", "--rtol", "0", "--logit-atol", "0", "--logit-rtol", "0"]
    result = invoke("parity", smile_bundle, "--providers", "cpu", "--json", out, *zero)
    assert result.exit_code == 1, result.output
    rows = json.loads(out.read_text())["rows"]
    assert all(r["status"] == "failed" for r in rows)
    assert rows[0]["tolerances"]["prob"] == {"atol": 0.0, "rtol": 0.0}
    assert "overridden" in rows[0]["tolerances"]["basis"]


@pytest.mark.parametrize(
    ("actual", "expected", "agree", "flips", "said"),
    [
        ([0.9, 0.1], [0.9, 0.1], 2, [], "labels 2/2 agree"),
        ([0.4, 0.1], [0.6, 0.1], 1, [0], "labels 1/2 agree"),  # a flip far from 0.5 fails
        # a flip within the tolerance of 0.5 does not, and is said to be on a tie
        ([0.499999, 0.1], [0.500001, 0.1], 1, [], "labels 1/2 agree (1 flip on ties)"),
    ],
)
def test_label_agreement(actual, expected, agree, flips, said):
    labels = label_agreement(
        np.array(actual), np.array(expected), threshold=0.5, tolerance=Tolerance(1e-5, 1e-4)
    )
    assert (labels.agree, list(labels.flips_outside_tolerance)) == (agree, flips)
    assert bool(labels) == (not flips)
    assert labels.describe() == said


# --- the report ---------------------------------------------------------------------------------


def test_json_holds_the_printed_rows(smile_bundle, tmp_path):
    out = tmp_path / "parity.json"
    result = invoke("-v", "parity", smile_bundle, "--batch-sizes", "1,7", "--json", out)
    report = json.loads(out.read_text())
    printed = row_lines(result.output)
    # A row that ran is printed with -v as its JSON line; a skipped provider is one line.
    ran = [r["line"] for r in report["rows"] if r["status"] != "skipped"]
    assert ran == [line for line in printed if not line.startswith("SKIPPED")]
    skipped = {(r["provider"], r["reason"]) for r in report["rows"] if r["status"] == "skipped"}
    assert len([line for line in printed if line.startswith("SKIPPED")]) == len(skipped)
    assert report["summary"]["line"] in result.output
    assert report["passed"] == (result.exit_code == 0)
    cpu = report["rows"][0]
    assert (cpu["provider"], cpu["batch"], cpu["status"], cpu["tf32"]) == ("cpu", 1, "passed", None)
    for key in ("max_abs_error", "max_rel_error", "mean_abs_error", "atol", "rtol"):
        assert key in cpu["prob"] and key in cpu["logits"]
    assert cpu["labels"] == {"threshold_agree": 1, "total": 1, "flips_outside_tolerance": []}
    assert cpu["tolerances"]["basis"] == "default for cpu"
    cuda = [r for r in report["rows"] if r["provider"] == "cuda"]
    assert cuda and all(r["tf32"] == "off" for r in cuda)
    assert all(r["status"] == "passed" or (r["status"] == "skipped" and r["reason"]) for r in cuda)


# --- a bad bundle is a clear error --------------------------------------------------------------


def test_a_model_that_differs_from_the_manifest_is_an_error(bundle_copy):
    with open(bundle_copy / "model.onnx", "ab") as f:
        f.write(b"\0")
    assert_one_line_error(
        invoke("parity", bundle_copy), "model.onnx", "does not match the manifest"
    )


def _drop_key(bundle: Path) -> None:
    with np.load(bundle / GOLDEN, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "prob_b7_f64"}
    np.savez(bundle / GOLDEN, **arrays)
    rehash(bundle, GOLDEN)


def _garbage(bundle: Path) -> None:
    (bundle / GOLDEN).write_bytes(b"not a zip archive")
    rehash(bundle, GOLDEN)


def _no_block(bundle: Path) -> None:
    manifest = manifest_of(bundle)
    del manifest["golden"]
    write_manifest(bundle, manifest)


@pytest.mark.parametrize(
    ("spoil", "fragments"),
    [
        (lambda b: (b / GOLDEN).unlink(), ("golden.npz is missing",)),
        (lambda b: (b / GOLDEN).write_bytes(b"x"), ("golden.npz", "does not match the manifest")),
        (_garbage, ("cannot read", "expected a numpy .npz archive")),
        (_drop_key, ("lacks 'prob_b7_f64'",)),
        (_no_block, ("has no golden data", "--reference live")),
    ],
    ids=["missing", "altered", "unreadable", "incomplete", "unrecorded"],
)
def test_bad_golden_data_is_a_clear_error(bundle_copy, spoil, fragments):
    spoil(bundle_copy)
    assert_one_line_error(invoke("parity", bundle_copy, "--providers", "cpu"), *fragments)


def test_a_batch_size_the_golden_data_lacks_is_a_clear_error(smile_bundle):
    result = invoke("parity", smile_bundle, "--batch-sizes", "1,5")
    assert_one_line_error(result, "no batch of 5", "holds batch sizes 1, 2, 7, 64")


@pytest.mark.parametrize(
    "args",
    [
        ["--batch-sizes", "0"],
        ["--batch-sizes", "two"],
        ["--providers", "tpu"],
        ["--require", "tpu"],
        ["--tf32", "maybe"],
        ["--atol", "-1"],
        ["--checkpoint", "w.safetensors"],
    ],
)
def test_usage_errors_exit_2(smile_bundle, args):
    result = invoke("parity", smile_bundle, *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_onnxruntimes_reason_for_not_loading_a_provider_is_kept():
    log = [
        "\x1b[1;31m2026-11-24 14:11:31.5 [E:onnxruntime:Default, provider_bridge_ort.cc:2458 "
        "operator()] /src/provider_bridge_ort.cc:2043 onnxruntime::ProviderLibrary::Get() "
        "[ONNXRuntimeError] : 1 : FAIL : Failed to load library /x/capi/"
        "libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: cannot open shared "
        "object file: No such file or directory\x1b[m",
        "2026-11-24 14:11:31.5 [W:onnxruntime:Default, onnxruntime_pybind_state.cc:1295 "
        "CreateExecutionProviderFactoryInstance] Failed to create CUDAExecutionProvider. "
        "Require cuDNN 9.* and CUDA 13.*. Please install all dependencies as mentioned in ...",
    ]
    assert ort_complaint(log) == (
        "Failed to load library libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: "
        "cannot open shared object file: No such file or directory; Failed to create "
        "CUDAExecutionProvider. Require cuDNN 9.* and CUDA 13.*."
    )


@pytest.mark.gpu
@pytest.mark.skipif(NO_GPU, reason="needs an NVIDIA GPU")
def test_cuda_passes_with_tf32_off_and_on(smile_bundle, tmp_path):
    out = tmp_path / "p.json"
    result = invoke("parity", smile_bundle, "--require", "cuda", "--tf32", "both", "--json", out)
    assert result.exit_code == 0, result.output
    rows = [r for r in json.loads(out.read_text())["rows"] if r["provider"] == "cuda"]
    assert sorted({r["tf32"] for r in rows}) == ["off", "on"]
    assert all(r["status"] == "passed" for r in rows)
    # onnxruntime's CUDA EP reports use_tf32 in its provider options: the setting is confirmed
    assert all(r["tf32_confirmed"] is True for r in rows), [r["line"] for r in rows]


def test_find_logits_tensor_on_a_cycle_is_an_error_not_a_hang():
    model = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        cyclic (float[N, 1] x) => (float[N, 1] y) {
            a = Identity (y)
            y = Identity (a)
        }
        """
    )
    with pytest.raises(OnnxEdgeError, match="the graph has a cycle through Identity node"):
        parity.find_logits_tensor(model)
    relu = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        relu (float[N, 1] x) => (float[N, 1] y) { y = Relu (x) }
        """
    )
    with pytest.raises(OnnxEdgeError, match="come from a Sigmoid, found Relu node"):
        parity.find_logits_tensor(relu)


@pytest.mark.parametrize(
    ("bounds", "flips"),
    [
        (None, [0]),  # 0.1 from the threshold: outside the tolerance
        ([0.05, 0.05], [0]),  # and outside a bound of 0.05
        ([0.15, 0.05], []),  # within a bound of 0.15: a probability may cross 0.5 there
    ],
)
def test_label_agreement_ties_within_the_rows_bounds(bounds, flips):
    labels = label_agreement(
        np.array([0.4, 0.1]),
        np.array([0.6, 0.1]),
        threshold=0.5,
        tolerance=Tolerance(1e-5, 1e-4),
        bounds=None if bounds is None else np.array(bounds),
    )
    assert list(labels.flips_outside_tolerance) == flips


@pytest.mark.parametrize(
    ("bounds", "flips"),
    [
        (None, [0]),  # the lead of 0.2 is over twice the tolerance
        ([[0.09, 0.1]], [0]),  # and over the two classes' bounds together
        ([[0.1, 0.1]], []),  # within them: both moved less than their bounds, and swapped
    ],
)
def test_top1_agreement_ties_within_the_rows_bounds(bounds, flips):
    labels = top1_agreement(
        np.array([[0.4, 0.6]]),
        np.array([[0.6, 0.4]]),
        tolerance=Tolerance(1e-5, 1e-4),
        bounds=None if bounds is None else np.array(bounds),
    )
    assert list(labels.flips_outside_tolerance) == flips


class _Fixed:
    """An engine session whose run returns fixed arrays."""

    def __init__(self, array):
        self._array = np.asarray(array, dtype=np.float32)

    def run(self, names, feeds):
        return [self._array]


def _softmax(logits):
    e = np.exp(logits - np.max(logits, axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize(
    ("engine_logits", "status", "reason"),
    [
        # The engine flips the top class as PyTorch's own float32 run does (random weights, large
        # logits): within the rounding bounds, a tie, not a failure (menet108_8x1_g3 at batch 64).
        ([[0.6, 1.0]], parity_run.PASSED, ""),
        # Far beyond where float32 went (20 times its spread): the row fails on its logits.
        ([[-50.0, 50.0]], parity_run.FAILED, "logits outside"),
    ],
)
def test_a_top1_flip_that_float32_itself_makes_is_a_tie(engine_logits, status, reason):
    logits64 = np.array([[1.0, 0.6]])
    logits32 = np.array([[0.6, 1.0]])
    ref = parity_reference.ReferenceBatch(
        inputs=np.zeros((1, 3, 4, 4), np.float32),
        kinds=("random",),
        prob=_softmax(logits64),
        logits=logits64,
        prob_f32=_softmax(logits32).astype(np.float32),
        logits_f32=logits32.astype(np.float32),
    )
    roundings = (
        parity.rounding.reference_rounding([ref.prob], [ref.prob_f32]),
        parity.rounding.reference_rounding([ref.logits], [ref.logits_f32]),
    )
    engine = _Fixed(engine_logits)
    row = parity_run._run_row(
        Target("cpu"),
        parity_run._Sessions(engine, engine, None),
        ref,
        input_name="x",
        logits_name="logits",
        tolerances=parity.tolerances.Tolerances(
            Tolerance(1e-5, 1e-4), Tolerance(1e-5, 1e-4), "default for cpu", rounding_factor=100.0
        ),
        kind="logits",
        threshold=None,
        required=True,
        roundings=roundings,
    )
    assert row.status == status, row.reason
    assert row.reason.startswith(reason)
    assert row.labels.agree == 0 and not row.labels.flips_outside_tolerance
