"""Parity catches a 1% change of any layer at every default batch selection (issue 9): each output
is judged against the spread of the reference as well as elementwise
(`onnxedge.runtime.parity.spread`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from test_parity import edit_model, invoke, library_run

from onnxedge.runtime.parity import DEFAULT_BATCH_SIZES, Target, ToleranceOverrides
from onnxedge.runtime.parity.spread import FLOOR_ULPS, check_spread, reference_spread


def layer_weights(bundle: Path) -> list[str]:
    """The weight of every Conv and Gemm (smile_cnn: conv1-conv4 and the Linear), in order."""
    model = onnx.load(str(bundle / "model.onnx"))
    return [n.input[1] for n in model.graph.node if n.op_type in ("Conv", "Gemm")]


def test_the_model_has_the_layers_the_issue_names(smile_bundle):
    names = layer_weights(smile_bundle)
    assert len(names) == 5 and names[-1] == "fc.weight" and names[0] == "conv1.weight"


@pytest.mark.parametrize("factor", [1.01, 0.99])
@pytest.mark.parametrize("layer", range(5))
def test_a_one_percent_change_of_any_layer_fails_every_default_selection(
    bundle_copy, layer, factor
):
    """Every row of the default run fails, so does any selection of default batch sizes: a row
    is judged alone, against the spread of the whole reference whichever rows run (below)."""
    name = layer_weights(bundle_copy)[layer]
    edit_model(bundle_copy, name, lambda w: w.__imul__(np.float32(factor)))
    report = library_run(bundle_copy)
    assert [row.batch for row in report.rows] == list(DEFAULT_BATCH_SIZES)
    for row in report.rows:
        assert row.status == "failed" and "outside" in row.reason, f"{name} x {factor}: {row}"


def test_the_spread_check_is_what_catches_the_first_layer_at_batch_1(bundle_copy):
    """The elementwise tolerance alone lets a 1% change of conv1 through at batch 1 (the logits
    are nearly the final bias, -0.047, and move by 1e-5); the spread check does not."""
    edit_model(bundle_copy, "conv1.weight", lambda w: w.__imul__(np.float32(1.01)))
    elementwise_only = library_run(
        bundle_copy, batch_sizes=(1,), overrides=ToleranceOverrides(spread_rtol=1e9)
    )
    assert elementwise_only, str(elementwise_only.rows[0])
    (row,) = library_run(bundle_copy, batch_sizes=(1,)).rows
    assert row.status == "failed"
    assert "logits outside the spread bound in rows 0 (random)" in row.reason
    assert row.logits_spread is not None and row.logits_spread.scaled_error > 3


def test_the_exported_model_passes_with_a_wide_margin(smile_bundle):
    report = library_run(smile_bundle)
    assert report and len(report.rows) == len(DEFAULT_BATCH_SIZES)
    for row in report.rows:
        assert row.logits_spread.scaled_error < 0.1 and row.prob_spread.scaled_error < 0.1
        assert "error/spread bound prob" in str(row)


def test_a_row_is_the_same_whichever_batches_run_with_it(smile_bundle):
    """The spread is the whole reference's, so batch 1 alone is judged as in the default run."""
    everything = {row.batch: row for row in library_run(smile_bundle).rows}
    for size in DEFAULT_BATCH_SIZES:
        (alone,) = library_run(smile_bundle, batch_sizes=(size,)).rows
        assert alone.logits_spread == everything[size].logits_spread
        assert alone.prob_spread == everything[size].prob_spread
    assert everything[1].logits_spread.bound[0] > 0


def test_tf32_and_bf16_have_no_spread_check_and_the_cpu_has_one():
    assert Target("cpu").tolerances().spread_rtol == 1e-3
    assert Target("cuda", "off").tolerances().spread_rtol == 3e-3
    assert Target("cuda", "on").tolerances().spread_rtol is None
    overridden = Target("cuda", "on").tolerances(ToleranceOverrides(spread_rtol=0.5))
    assert overridden.spread_rtol == 0.5 and "overridden" in overridden.basis


def test_the_command_line_takes_and_reports_the_spread_rtol(bundle_copy, tmp_path):
    edit_model(bundle_copy, "conv1.weight", lambda w: w.__imul__(np.float32(1.01)))
    args = ["parity", bundle_copy, "--providers", "cpu", "--batch-sizes", "1"]
    failed = invoke(*args, "--json", tmp_path / "p.json")
    assert failed.exit_code == 1 and "outside the spread bound" in failed.output
    row = json.loads((tmp_path / "p.json").read_text())["rows"][0]
    assert row["tolerances"]["spread_rtol"] == 1e-3
    assert row["spread"]["logits"]["passed"] is False
    assert invoke(*args, "--spread-rtol", "0.1").exit_code == 0
    assert invoke(*args, "--spread-rtol", "nan").exit_code == 2


# -- the spread check alone -----------------------------------------------------------------------


def test_spread_is_per_column_over_every_row():
    spread = reference_spread([np.array([[0.0, 1.0]]), np.array([[2.0, 1.0], [4.0, 1.0]])])
    assert spread.rows == 3
    assert spread.std == pytest.approx((np.std([0, 2, 4]), 0.0))
    assert spread.rms == pytest.approx((np.sqrt(20 / 3), 1.0))


def test_an_output_that_never_varies_is_held_to_its_rounding_not_to_zero():
    spread = reference_spread([np.full((5, 1), -0.047)])
    floor = FLOOR_ULPS * np.finfo(np.float32).eps * 0.047
    assert spread.bounds(1e-3) == pytest.approx([floor])
    expected = np.full((2, 1), -0.047)
    assert check_spread(expected + floor / 2, expected, spread, 1e-3)
    assert not check_spread(expected + 2 * floor, expected, spread, 1e-3)


def test_a_check_names_the_rows_outside_and_fails_on_non_finite_values():
    spread = reference_spread([np.array([[0.0], [1.0]])])  # std 0.5: bound 5e-4 at 1e-3
    expected = np.array([[0.0], [1.0], [0.5]])
    check = check_spread(expected + np.array([[1e-4], [1e-3], [0.0]]), expected, spread, 1e-3)
    assert not check and check.rows_outside == (1,) and check.scaled_error == pytest.approx(2)
    nan = check_spread(np.array([[np.nan], [1.0], [0.5]]), expected, spread, 1e-3)
    assert not nan and nan.rows_outside == (0,)
    assert check_spread(np.zeros((2, 1)), expected, spread, 1e-3) is None  # shape: elementwise's
    assert dataclasses.asdict(check)["bound"] == (5e-4,)
