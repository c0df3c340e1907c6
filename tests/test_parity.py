"""`onnxedge parity`: passes on the default bundle, and bites: a nudged weight, a changed
preprocessing, a saturated sigmoid hiding an error, a provider that cannot run, a bad bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_assertions import assert_one_line_error
from click.testing import CliRunner
from onnx import numpy_helper
from torchless import run_without_torch

from onnxedge.runtime import parity
from onnxedge.runtime.bundle import Bundle
from onnxedge.runtime.cli import main
from onnxedge.runtime.errors import OnnxEdgeError
from onnxedge.runtime.hashing import sha256_file
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
from onnxedge.runtime.session import ort_complaint

# Where a GPU might be, the CUDA rows may run: the no-GPU expectations are checked only without one.
NO_GPU = not Path("/dev/nvidiactl").exists()
CPU = [Target("cpu")]


def invoke(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def row_lines(output: str) -> list[str]:
    return [
        line
        for line in output.splitlines()
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
    if name == "model.onnx":
        manifest["model_sha256"] = digest
    if name == GOLDEN:
        manifest["golden"]["sha256"] = digest
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


def library_run(bundle: Path, **kw) -> parity.ParityReport:
    opened = Bundle.open(bundle)
    kw.setdefault("targets", CPU)
    return run_parity(opened, load_golden(opened), **kw)


# --- the golden data ----------------------------------------------------------------------------


def test_golden_data_is_in_the_bundle_and_the_manifest(smile_bundle):
    manifest = manifest_of(smile_bundle)
    block = manifest["golden"]
    assert block["file"] == GOLDEN
    assert (
        block["sha256"] == manifest["files"][GOLDEN]["sha256"] == sha256_file(smile_bundle / GOLDEN)
    )
    assert block["batch_sizes"] == list(DEFAULT_BATCH_SIZES)
    assert set(block["inputs"]) == {*STRUCTURED_KINDS, "random"}
    assert block["preprocessing_sha256"] == parity.preprocessing_sha256(manifest["preprocessing"])
    model = onnx.load(str(smile_bundle / "model.onnx"))
    assert block["logits"] == parity.find_logits_tensor(model)
    assert len(model.graph.output) == 1  # the shipped graph keeps its one output
    assert (smile_bundle / GOLDEN).stat().st_size < 8 * 2**20


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
    assert b7.inputs[5].min() >= 0.0 and b7.inputs[5].max() < 1.0
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


# --- it passes ----------------------------------------------------------------------------------


def test_parity_passes_on_cpu_at_every_default_batch_size(smile_bundle):
    result = invoke("parity", smile_bundle, "--providers", "cpu")
    assert result.exit_code == 0, result.output
    rows = row_lines(result.output)
    assert [line.split(" | ")[:3] for line in rows] == [
        ["PASSED", "cpu", f"batch {b}"] for b in DEFAULT_BATCH_SIZES
    ]
    for line in rows:
        assert "prob max_abs" in line and "(atol 1e-05, rtol 0.0001)" in line
        assert "logits max_abs" in line and "tf32 n/a" in line
    assert "PASSED | preprocessing |" in result.output
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
    assert len(cuda) == len(DEFAULT_BATCH_SIZES)
    for line in cuda:
        assert line.startswith("SKIPPED | cuda | batch ")
        assert "tf32 off" in line and "requested CUDAExecutionProvider" in line
    assert "parity: 4 passed, 0 failed, 4 skipped" in result.output


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
    real = parity.make_session

    def no_cuda(model, config=None):
        if config is not None and config.provider == "cuda":
            raise OnnxEdgeError("requested CUDAExecutionProvider, available: CPUExecutionProvider")
        return real(model, config)

    monkeypatch.setattr(parity, "make_session", no_cuda)
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


# --- it bites -----------------------------------------------------------------------------------


def test_a_nudged_convolution_weight_fails(bundle_copy):
    def nudge(w):
        w.flat[0] += 0.01  # one of 864 weights, by a tenth of the layer's weight spread

    edit_model(bundle_copy, first_conv_weight(bundle_copy), nudge)
    result = invoke("parity", bundle_copy, "--providers", "cpu", "--json", bundle_copy / "p.json")
    assert result.exit_code == 1, result.output
    rows = row_lines(result.output)
    assert any(line.startswith("FAILED | cpu") for line in rows), result.output
    assert "logits outside the tolerance" in result.output
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
    assert "scale 1.0 (reference 0.00392156862745098)" in result.output


def test_preprocessing_that_computes_differently_fails(smile_bundle, monkeypatch):
    """Same spec, but the runtime's preprocess_image no longer makes the reference's inputs."""
    real = parity.preprocess_image

    def nearest(image, spec):
        return real(image, {**spec, "interpolation": "nearest"})

    monkeypatch.setattr(parity, "preprocess_image", nearest)
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
    ("actual", "expected", "agree", "flips"),
    [
        ([0.9, 0.1], [0.9, 0.1], 2, []),
        ([0.4, 0.1], [0.6, 0.1], 1, [0]),  # a flip far from 0.5 fails
        ([0.499999, 0.1], [0.500001, 0.1], 1, []),  # a flip within the tolerance of 0.5 does not
    ],
)
def test_label_agreement(actual, expected, agree, flips):
    labels = label_agreement(
        np.array(actual), np.array(expected), threshold=0.5, tolerance=Tolerance(1e-5, 1e-4)
    )
    assert (labels.agree, list(labels.flips_outside_tolerance)) == (agree, flips)
    assert bool(labels) == (not flips)


# --- the report ---------------------------------------------------------------------------------


def test_json_holds_the_printed_rows(smile_bundle, tmp_path):
    out = tmp_path / "parity.json"
    result = invoke("parity", smile_bundle, "--batch-sizes", "1,7", "--json", out)
    report = json.loads(out.read_text())
    assert [r["line"] for r in report["rows"]] == row_lines(result.output)
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
