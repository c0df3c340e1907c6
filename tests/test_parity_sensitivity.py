"""Parity catches a 1% change of any layer at every default batch selection, and passes the
exported model with a wide margin: each output is judged against PyTorch's own float32 rounding
of the model (`onnxedge.runtime.parity.rounding`), under the fixed tolerances as a guard."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from test_parity import edit_model, invoke, library_run

from onnxedge.runtime.parity import DEFAULT_BATCH_SIZES, Target, Tolerance, ToleranceOverrides
from onnxedge.runtime.parity.rounding import (
    FLOAT32,
    FLOOR,
    FLOOR_ULPS,
    GUARD,
    SPREAD,
    SPREAD_FACTOR,
    Judge,
    Rounding,
    reference_rounding,
)

_EPS32 = float(np.finfo(np.float32).eps)


def layer_weights(bundle: Path) -> list[str]:
    """The weight of every Conv and Gemm (smile_cnn: conv1-conv4 and the Linear), in order."""
    model = onnx.load(str(bundle / "model.onnx"))
    return [n.input[1] for n in model.graph.node if n.op_type in ("Conv", "Gemm")]


def test_the_model_has_four_convolutions_and_a_linear_layer(smile_bundle):
    names = layer_weights(smile_bundle)
    assert len(names) == 5 and names[-1] == "fc.weight" and names[0] == "conv1.weight"


@pytest.mark.parametrize("factor", [1.01, 0.99])
@pytest.mark.parametrize("layer", range(5))
def test_a_one_percent_change_of_any_layer_fails_every_default_selection(
    bundle_copy, layer, factor
):
    """Every row of the default run fails, so does any selection of default batch sizes: a row
    is judged alone, against the rounding of the whole reference whichever rows run (below)."""
    name = layer_weights(bundle_copy)[layer]
    edit_model(bundle_copy, name, lambda w: w.__imul__(np.float32(factor)))
    report = library_run(bundle_copy)
    assert [row.batch for row in report.rows] == list(DEFAULT_BATCH_SIZES)
    for row in report.rows:
        assert row.status == "failed" and "outside" in row.reason, f"{name} x {factor}: {row}"


def test_the_rounding_bound_is_what_catches_the_first_layer_at_batch_1(bundle_copy):
    """The tolerances alone let a 1% change of conv1 through at batch 1 (the logits are nearly
    the final bias, -0.047, and move by 1e-5); the bound from the model's rounding does not."""
    edit_model(bundle_copy, "conv1.weight", lambda w: w.__imul__(np.float32(1.01)))
    cpu = Target("cpu").tolerances()
    by_hand = ToleranceOverrides(logit_atol=cpu.logits.atol, logit_rtol=cpu.logits.rtol)
    tolerances_only = library_run(bundle_copy, batch_sizes=(1,), overrides=by_hand)
    assert tolerances_only, str(tolerances_only.rows[0])
    assert tolerances_only.rows[0].logits_check.decided_by == GUARD
    (row,) = library_run(bundle_copy, batch_sizes=(1,)).rows
    assert row.status == "failed"
    assert "logits outside 100x PyTorch's float32 rounding in rows 0 (random)" in row.reason
    assert row.logits_check.decided_by == FLOAT32 and row.logits_check.ratio > 3


def test_the_exported_model_passes_with_a_wide_margin(smile_bundle):
    report = library_run(smile_bundle)
    assert report and len(report.rows) == len(DEFAULT_BATCH_SIZES)
    for row in report.rows:
        assert row.logits_check.ratio < 0.1 and row.prob_check.ratio < 0.1
        assert row.logits_check.decided_by in (FLOAT32, FLOOR)
        assert "error/bound prob " in row.line()


def test_a_row_is_the_same_whichever_batches_run_with_it(smile_bundle):
    """The rounding is the whole reference's, so batch 1 alone is judged as in the default run."""
    everything = {row.batch: row for row in library_run(smile_bundle).rows}
    for size in DEFAULT_BATCH_SIZES:
        (alone,) = library_run(smile_bundle, batch_sizes=(size,)).rows
        assert alone.logits_check == everything[size].logits_check
        assert alone.prob_check == everything[size].prob_check
    rounding = everything[1].logits_check.judge.rounding
    assert rounding.rows == sum(DEFAULT_BATCH_SIZES) and rounding.float32_error > 0


def test_tf32_and_bf16_are_judged_by_the_tolerances_alone_and_the_cpu_by_its_rounding():
    assert Target("cpu").tolerances().rounding_factor == 100
    assert Target("cpu", engine="openvino", precision="f32").tolerances().rounding_factor == 100
    assert Target("cuda", "off").tolerances().rounding_factor == 300
    assert Target("cuda", "on").tolerances().rounding_factor is None
    assert Target("cpu", engine="openvino", precision="bf16").tolerances().rounding_factor is None
    overridden = Target("cuda", "on").tolerances(ToleranceOverrides(rounding_factor=5))
    assert overridden.rounding_factor == 5 and "overridden" in overridden.basis
    by_hand = Target("cpu").tolerances(ToleranceOverrides(atol=1e-3))
    assert by_hand.rounding_factor is None and by_hand.prob == Tolerance(1e-3, 1e-4)


def test_the_command_line_takes_and_reports_the_rounding_factor(bundle_copy, tmp_path):
    edit_model(bundle_copy, "conv1.weight", lambda w: w.__imul__(np.float32(1.01)))
    args = ["parity", bundle_copy, "--providers", "cpu", "--batch-sizes", "1"]
    failed = invoke(*args, "--json", tmp_path / "p.json")
    assert failed.exit_code == 1 and "logits outside 100x PyTorch's float32" in failed.output
    row = json.loads((tmp_path / "p.json").read_text())["rows"][0]
    assert row["tolerances"]["rounding_factor"] == 100
    logits = row["bound"]["logits"]
    assert logits["passed"] is False and logits["decided_by"] == FLOAT32
    rounding = logits["judge"]["rounding"]
    assert rounding["float32_error"] > 0 and logits["judge"]["factor"] == 100
    assert logits["judge"]["float32_bound"] == pytest.approx(100 * rounding["float32_error"])
    # the export measured the spread of PyTorch's float32 kernels, at least the one run's error:
    # no bound is below 20 times it
    assert rounding["spread"] >= rounding["float32_error"]
    assert logits["judge"]["least"] == pytest.approx(SPREAD_FACTOR * rounding["spread"])
    assert logits["judge"]["floor"] == pytest.approx(
        FLOOR_ULPS * _EPS32 * logits["judge"]["rounding"]["rms"]
    )
    # A factor so large that the guard decides: the tolerances alone, which this change passes.
    assert invoke(*args, "--rounding-factor", "1e9").exit_code == 0
    assert invoke(*args, "--rounding-factor", "nan").exit_code == 2


# -- the judge alone ------------------------------------------------------------------------------


def test_the_rounding_is_pytorchs_float32_error_over_every_row():
    rounding = reference_rounding(
        [np.array([[1.0]]), np.array([[2.0], [-2.0]])],
        [np.array([[1.0 + 1e-6]]), np.array([[2.0], [-2.0 - 3e-6]])],
    )
    assert rounding.rows == 3 and rounding.float32_error == pytest.approx(3e-6)
    assert rounding.rms == pytest.approx(np.sqrt(9 / 3))


def test_each_of_the_three_bounds_can_decide_and_fail():
    guard = Tolerance(1e-5, 1e-4)
    expected = np.array([[1.0], [-1.0]])
    # float32: 10 x 2e-6 = 2e-5, above the floor (100 eps x RMS 1 = 1.2e-5), under the guard
    judge = Judge(guard, Rounding(2e-6, 1.0, 2), 10)
    assert judge.float32_bound == pytest.approx(2e-5) and judge.floor == pytest.approx(
        FLOOR_ULPS * _EPS32
    )
    inside = judge.check(expected + 1.9e-5, expected)
    assert inside and inside.decided_by == FLOAT32 and inside.bound == pytest.approx(2e-5)
    outside = judge.check(expected + np.array([[0.0], [3e-5]]), expected)
    assert not outside and outside.rows_outside == (1,) and outside.ratio == pytest.approx(1.5)
    # floor: PyTorch computed it almost exactly
    exact = Judge(guard, Rounding(1e-12, 1.0, 2), 10)
    assert exact.check(expected + 1e-5, expected).decided_by == FLOOR
    assert not exact.check(expected + 2e-5, expected)
    # guard: 100 x a rounding of 2e-6 is more than the fixed tolerance at the output's size
    # (1.1e-4), which caps it, as it is above 20 x the rounding (4e-5)
    coarse = Judge(guard, Rounding(2e-6, 1.0, 2), 100)
    capped = coarse.check(expected + 5e-4, expected)
    assert not capped and capped.decided_by == GUARD and capped.bound == pytest.approx(1.1e-4)


def test_no_bound_is_below_twenty_times_the_spread_of_pytorchs_kernels():
    """Where PyTorch's own kernels disagree by nearly the fixed tolerance, the guard would fail
    every float32 engine, and where the one run was lucky its rounding would be too tight: the
    bound is at least SPREAD_FACTOR x the spread (the one run's error where none was measured),
    and never more than the factor's own multiple of it."""
    guard = Tolerance(1e-5, 1e-4)
    expected = np.array([[1.0], [-1.0]])
    judge = Judge(guard, Rounding(1e-5, 1.0, 2), 100)  # guard 1.1e-4 < 20 x 1e-5
    assert judge.least == pytest.approx(SPREAD_FACTOR * 1e-5)
    inside = judge.check(expected + 1.5e-4, expected)
    assert inside and inside.decided_by == SPREAD and inside.bound == pytest.approx(2e-4)
    assert not judge.check(expected + 3e-4, expected)
    # a lucky run (2e-8) and a spread of 1e-6: 100 x 2e-8 = 2e-6 is below 20 x 1e-6
    lucky = Judge(Tolerance(1.0, 1.0), Rounding(2e-8, 1.0, 2, spread=1e-6), 100)
    assert lucky.float32_bound == pytest.approx(2e-6)
    assert lucky.check(expected + 1.9e-5, expected).decided_by == SPREAD
    assert not lucky.check(expected + 2.1e-5, expected)
    # never above the factor's own multiple
    small = Judge(guard, Rounding(1e-5, 1.0, 2), 5)
    assert small.least == pytest.approx(5e-5)
    assert small.check(expected + 4e-5, expected) and not small.check(expected + 6e-5, expected)


def test_against_a_float32_reference_the_guard_is_raised_to_twenty_times_its_spread():
    """A float32 reference has no float64 truth (no factor, no float32 bound, no floor), but
    is itself off by about its spread: with `spread_least` the bound is max(guard, 20 x the
    spread); without it (TF32, bf16, tolerances set by hand) or with no spread stored, the
    guard alone."""
    guard = Tolerance(2e-5, 2e-4)
    expected = np.array([[0.5], [0.25]])
    rounding = Rounding(0.0, 0.4, 2, spread=1e-4)
    judge = Judge(guard, rounding, None, spread_least=True)
    assert judge.least == pytest.approx(SPREAD_FACTOR * 1e-4)
    assert judge.float32_bound is None and judge.floor is None
    inside = judge.check(expected + 1.9e-3, expected)
    assert inside and inside.decided_by == SPREAD and inside.bound == pytest.approx(2e-3)
    outside = judge.check(expected + np.array([[0.0], [2.1e-3]]), expected)
    assert not outside and outside.rows_outside == (1,)
    for alone in (Judge(guard, rounding, None), Judge(guard, Rounding(0.0, 0.4, 2), None, True)):
        assert alone.least is None
        assert not alone.check(expected + 1.9e-3, expected)
    # a spread below the guard leaves the guard to decide
    small = Judge(guard, Rounding(0.0, 0.4, 2, spread=1e-7), None, spread_least=True)
    decided = small.check(expected + 1e-4, expected)  # guard at 0.4: 1e-4
    assert decided and decided.decided_by == GUARD
    assert not small.check(expected + 1.3e-4, expected)


def test_the_spread_is_at_least_the_one_run():
    one_run = reference_rounding([np.array([[1.0]])], [np.array([[1.0 + 1e-6]])])
    assert one_run.spread is None and one_run.scale == pytest.approx(1e-6)
    spread = reference_rounding([np.array([[1.0]])], [np.array([[1.0 + 1e-6]])], 4e-6)
    assert spread.scale == pytest.approx(4e-6)


def test_the_guard_takes_a_small_element_at_the_outputs_size():
    """A logit of 0.01 among logits of 30 carries the rounding of 30: the guard's relative part
    is taken at the output's RMS where the element is smaller."""
    judge = Judge(Tolerance(1e-5, 1e-4), Rounding(1e-4, 30.0, 2), None)
    expected = np.array([[30.0, 0.01], [-30.0, 0.02]])
    assert judge.check(expected + 2e-3, expected)  # 1e-5 + 1e-4 x 30 = 3.01e-3
    assert not judge.check(expected + 4e-3, expected)


def test_non_finite_values_and_other_shapes_fail():
    judge = Judge(Tolerance(1.0, 1.0), Rounding(1e-6, 1.0, 2), 10)
    expected = np.array([[0.5], [0.5]])
    nan = judge.check(np.array([[np.nan], [0.5]]), expected)
    assert not nan and nan.rows_outside == (0,) and nan.detail == "non-finite values"
    shape = judge.check(np.zeros((3, 1)), expected)
    assert not shape and shape.detail.startswith("shape")
