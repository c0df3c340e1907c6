"""`onnxedge parity --engines openvino`: the same golden data and tolerance policy as ONNX Runtime,
rows named by engine, and it bites as the ONNX Runtime rows do; an OpenVINO that cannot run is
SKIPPED (FAILED where required), never passed."""

from __future__ import annotations

import json

import pytest
from openvino_support import requires_openvino
from test_parity import edit_model, first_conv_weight, invoke, library_run, row_lines

from onnxedge.runtime.engines.openvino import loader
from onnxedge.runtime.parity import DEFAULT_BATCH_SIZES, Target, Tolerance, make_targets
from onnxedge.runtime.parity.tolerances import DEFAULT_TOLERANCES, OPENVINO_TOLERANCES

OV_F32 = Target("cpu", engine="openvino", precision="f32")


def test_targets_by_engine_and_precision():
    assert make_targets(("cpu",), engines=("openvino",)) == [OV_F32]
    both = make_targets(("cpu",), engines=("onnxruntime", "openvino"), precisions=("f32", "bf16"))
    assert [t.label for t in both] == ["cpu", "openvino cpu f32", "openvino cpu bf16"]
    # f32 holds the CPU EP's tolerances: the same policy, the same arithmetic
    assert OPENVINO_TOLERANCES["f32"] == DEFAULT_TOLERANCES[("cpu", None)]
    assert OV_F32.tolerances().basis == "default for openvino cpu f32"
    assert OPENVINO_TOLERANCES["bf16"][0] == Tolerance(2e-2, 4e-2)


@requires_openvino
def test_openvino_passes_on_the_golden_data_with_rows_named_by_engine(smile_bundle, tmp_path):
    out = tmp_path / "p.json"
    result = invoke(
        "parity", smile_bundle, "--providers", "cpu", "--engines", "onnxruntime,openvino",
        "--json", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = row_lines(result.output)
    ov = [line for line in rows if line.split(" | ")[1] == "openvino cpu f32"]
    ort = [line for line in rows if line.split(" | ")[1] == "cpu"]
    assert len(ov) == len(ort) == len(DEFAULT_BATCH_SIZES)
    assert all(line.startswith("PASSED | openvino cpu f32 | batch ") for line in ov)
    assert "error/bound prob " in ov[0] and len(ov[0]) <= 120
    report = json.loads(out.read_text())
    engines = {(r["engine"], r["precision"]) for r in report["rows"]}
    assert engines == {("onnxruntime", None), ("openvino", "f32")}


@requires_openvino
def test_openvino_bf16_is_its_own_row_with_its_own_tolerances(smile_bundle):
    if loader.unavailable_reason(loader.OpenVinoConfig(precision="bf16")):
        pytest.skip("this CPU cannot run OpenVINO in bf16")
    report = library_run(smile_bundle, targets=[Target("cpu", engine="openvino", precision="bf16")])
    assert report, report.lines()
    row = report.rows[0]
    assert row.label == "openvino cpu bf16" and row.tolerances.prob == Tolerance(2e-2, 4e-2)
    # bf16 is really another arithmetic: it misses the f32 tolerances
    assert row.logits.max_abs_error > DEFAULT_TOLERANCES[("cpu", None)][1].atol


@requires_openvino
def test_a_nudged_weight_fails_on_openvino_too(bundle_copy):
    def nudge(w):
        w.flat[0] += 0.01

    edit_model(bundle_copy, first_conv_weight(bundle_copy), nudge)
    result = invoke("parity", bundle_copy, "--engines", "openvino", "--batch-sizes", "7")
    assert result.exit_code == 1, result.output
    (line,) = row_lines(result.output)
    assert line.startswith("FAILED | openvino cpu f32 | batch 7")
    assert "logits outside " in line


def test_missing_openvino_is_skipped_never_passed(no_openvino, smile_bundle):
    result = invoke("parity", smile_bundle, "--engines", "openvino", "--batch-sizes", "1,2")
    assert result.exit_code == 1, result.output  # nothing ran
    (line,) = row_lines(result.output)  # one line for the engine that cannot run, not per batch
    assert line.startswith("SKIPPED | openvino cpu f32 | batch 1, 2 | ")
    assert "pip install 'onnxedge[openvino]'" in line
    assert "parity: 0 passed, 0 failed, 2 skipped" in result.output
    assert "nothing ran, which is not a pass" in result.output


def test_required_openvino_that_cannot_run_fails(no_openvino, smile_bundle):
    result = invoke(
        "parity", smile_bundle, "--providers", "cpu", "--require", "openvino",
        "--batch-sizes", "1",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    rows = row_lines(result.output)
    assert rows[0].startswith("PASSED | cpu | batch 1")
    assert rows[1].startswith("FAILED | openvino cpu f32 | batch 1") and "required" in rows[1]


def test_precision_without_openvino_is_a_usage_error(smile_bundle):
    result = invoke("parity", smile_bundle, "--precision", "bf16")
    assert result.exit_code == 2
    assert "--precision is OpenVINO's inference precision" in result.output
