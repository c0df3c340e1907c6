"""The accuracy gate (`onnxedge.runtime.variants.gate.judge`): each criterion passes at its bound
and fails just past it, saying by how much; outputs that are not probabilities never pass."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from onnxedge.runtime.lines import LINE_WIDTH
from onnxedge.runtime.variants.gate import GateCriteria, judge
from onnxedge.runtime.variants.optimize_result import VariantOutcome

N = 200


def _case(flip: int = 0, wrong_before: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """fp32 probabilities, a variant's and the truth for N images: fp32 right except on
    ``wrong_before`` images; the variant flips the label of ``flip`` images fp32 got right."""
    rng = np.random.default_rng(0)
    truth = np.arange(N) % 2
    fp32 = np.where(truth == 1, 0.9, 0.1) + rng.uniform(-0.05, 0.05, N)
    fp32[:wrong_before] = 1.0 - fp32[:wrong_before]
    variant = fp32 + 0.001
    variant[wrong_before : wrong_before + flip] = 1.0 - fp32[wrong_before : wrong_before + flip]
    return fp32, variant, truth


def test_an_identical_variant_passes_with_zero_errors():
    fp32, _, truth = _case()
    result = judge("int8", fp32, fp32, truth, threshold=0.5)
    assert result and result.agreement == 1.0 and result.max_prob_error == 0.0
    assert result.accuracy == result.fp32_accuracy == 1.0
    assert result.line().startswith("PASSED | int8 | agreement 100.00%")


def test_agreement_at_the_bound_passes_and_one_flip_more_fails():
    fp32, variant, truth = _case(flip=1)  # 199 / 200 = 99.5 %
    criteria = GateCriteria(min_agreement=0.995, max_accuracy_drop_pp=100.0)
    assert judge("int8", fp32, variant, truth, threshold=0.5, criteria=criteria)
    fp32, variant, truth = _case(flip=2)  # 99.0 %
    result = judge("int8", fp32, variant, truth, threshold=0.5, criteria=criteria)
    assert not result and result.flips == 2
    (miss,) = result.misses
    assert "label agreement 99.00% < 99.50% (missed by 0.50 pp: 2 of 200" in miss
    assert result.line().startswith("FAILED | int8 |")
    assert result.line(enforced=False).startswith("UNGATED | int8 |")


def test_accuracy_drop_fails_alone_and_says_by_how_much():
    fp32, variant, truth = _case(flip=2)  # accuracy 100 % -> 99 %: a drop of 1.00 pp
    criteria = GateCriteria(min_agreement=0.0, max_accuracy_drop_pp=0.5)
    result = judge("fp16", fp32, variant, truth, threshold=0.5, criteria=criteria)
    assert not result
    (miss,) = result.misses
    assert miss == "accuracy drop 1.00 pp > 0.50 pp (missed by 0.50 pp)"


def test_a_variant_more_accurate_than_fp32_is_no_drop():
    fp32, _, truth = _case(wrong_before=3)
    fixed = np.where(truth == 1, 0.8, 0.2)  # right everywhere, so 3 labels differ from fp32
    result = judge("int8", fp32, fixed, truth, threshold=0.5, criteria=GateCriteria(0.98, 0.5))
    assert result and result.accuracy_drop_pp < 0 and result.flips == 3


def test_the_error_figures_are_against_fp32():
    fp32, _, truth = _case()
    variant = fp32.copy()
    variant[:100] += 0.01
    variant[0] += 0.04  # one error of 0.05, 99 of 0.01, 100 of 0
    result = judge("int8", fp32, variant, truth, threshold=0.5)
    assert result.max_prob_error == pytest.approx(0.05)
    assert result.p99_prob_error == pytest.approx(np.percentile(np.abs(variant - fp32), 99))
    assert result.mean_prob_error == pytest.approx((0.05 + 99 * 0.01) / 200)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -0.5, 1.5])
def test_outputs_that_are_not_probabilities_disagree_and_are_wrong(bad):
    fp32, _, truth = _case()
    variant = fp32.copy()
    variant[:2] = bad
    result = judge("int8", fp32, variant, truth, threshold=0.5)
    assert not result
    assert result.not_probabilities == 2 and result.flips == 2
    assert result.accuracy == pytest.approx(198 / 200)
    assert math.isinf(result.max_prob_error)
    assert "2 outputs not probabilities" in result.line()
    assert result.to_dict()["max_prob_error"] == "inf"


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="as many fp32 outputs"):
        judge("int8", [0.1, 0.2], [0.1], [0, 1], threshold=0.5)


@pytest.mark.parametrize(
    "kwargs", [{"min_agreement": 1.5}, {"min_agreement": -0.1}, {"max_accuracy_drop_pp": -1}]
)
def test_criteria_out_of_range_are_refused(kwargs):
    with pytest.raises(ValueError, match="expected"):
        GateCriteria(**kwargs)


def test_a_k_class_variant_is_judged_by_its_top_class():
    """[N, K] probabilities: the label is the top class, the error an image's largest."""
    fp32 = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.3, 0.5], [0.4, 0.35, 0.25]])
    variant = fp32.copy()
    variant[3] = [0.3, 0.45, 0.25]  # the top class moves from 0 to 1
    truth = np.array([0, 1, 2, 0])
    result = judge("int8", fp32, variant, truth, threshold=None)
    assert result.flips == 1 and result.agreement == 0.75
    assert result.fp32_accuracy == 1.0 and result.accuracy == 0.75
    assert result.max_prob_error == pytest.approx(0.1)
    assert not result and result.threshold is None
    variant[3] = [0.41, 0.34, 0.25]  # the same top class: passes
    assert judge("int8", fp32, variant, truth, threshold=None)
    variant[0] = [np.nan, 0.2, 0.1]  # not a probability: wrong and disagreeing
    bad = judge("int8", fp32, variant, truth, threshold=None)
    assert bad.not_probabilities == 1 and bad.flips == 1 and math.isinf(bad.max_prob_error)


def test_optimize_lines_fit_120_columns_without_verbose_and_keep_every_figure_with_it():
    fp32, variant, truth = _case(flip=2)
    cpu = "CPUExecutionProvider"
    name = "int8-conv1-fp32"
    good = dataclasses.replace(judge(name, fp32, fp32, truth, threshold=0.5), provider=cpu)
    bad = dataclasses.replace(judge(name, fp32, variant, truth, threshold=0.5), provider=cpu)
    passed = VariantOutcome(name, good, written=True, bytes=2**20, enforced=True)
    failed = VariantOutcome(name, bad, written=False, bytes=2**20, enforced=True, reason="gate")
    for outcome in (passed, failed):
        short = outcome.line()
        assert all(len(x) <= LINE_WIDTH for x in short.splitlines()), short
        assert "cpu | 1.05 MB" in short and cpu not in short
        full = outcome.line(verbose=True)
        assert "\n" not in full and cpu in full and "p99 " in full
    # The shorter line keeps the verdict and the figures that decided it; where it is too long
    # for one line, the provider and size go to the next.
    assert passed.line().startswith(f"PASSED | {name} | agreement 100.00% (0/200)")
    assert passed.line().splitlines()[1] == "    cpu | 1.05 MB", passed.line()
    short = VariantOutcome(
        "int8",
        dataclasses.replace(good, variant="int8", accuracy=0.9, fp32_accuracy=0.9),
        written=True,
        bytes=2**20,
        enforced=True,
    )
    assert "\n" not in short.line() and short.line().endswith(" | cpu | 1.05 MB"), short.line()
    assert failed.line().startswith(f"FAILED | {name} | agreement 99.00% (2/200)")
    assert "missed: label agreement 99.00% < 99.50%" in failed.line().replace("\n    ", " ")
    decode = VariantOutcome("decode-fast", bad, written=False, bytes=0, enforced=True)
    assert decode.decode_line().endswith("not recorded: missed its gate")


def test_the_kernels_error_is_against_the_float_reference_and_named_where_it_fails():
    """An int8 variant's outputs beside those of its own file's float reference: the largest
    difference is reported in every form, and a FAILED line names the kernels as the cause only
    where they are more than `KERNEL_NOTE` from it."""
    from onnxedge.runtime.variants.gate import KERNEL_NOTE

    fp32, variant, truth = _case(flip=5)
    by_float = fp32 + 0.001  # the file itself agrees: the kernels flipped the 5 labels
    result = judge("int8", fp32, variant, truth, threshold=0.5, float_reference=by_float)
    assert not result and result.kernel_error == pytest.approx(np.abs(variant - by_float).max())
    assert result.kernel_error > KERNEL_NOTE
    assert "kernels vs float reference |Δp| max 0.8" in result.summary()
    assert result.to_dict()["kernel_prob_error"] == result.kernel_error
    assert "this CPU's int8 kernels differ from the file's float reference" in result.line()
    assert "--int8-7-bit-weights all keeps them in range" in result.line()
    every = judge(
        "int8", fp32, variant, truth, threshold=0.5, float_reference=by_float, weights_7_bit="all"
    )  # the remedy already taken is not offered again
    assert "--int8-7-bit-weights" not in every.line()
    assert "every weight is in 7 bits already" in every.line()
    close = judge(
        "int8", fp32, variant, truth, threshold=0.5, float_reference=variant + KERNEL_NOTE / 2
    )
    assert not close and close.kernel_error == pytest.approx(KERNEL_NOTE / 2)
    assert "int8 kernels" not in close.line()  # missed, but not because of the kernels
    passed = judge("int8", fp32, fp32 + 0.001, truth, threshold=0.5, float_reference=fp32)
    assert passed and "int8 kernels differ" not in passed.line()
    plain = judge("fp16", fp32, variant, truth, threshold=0.5)
    assert plain.kernel_error is None and plain.to_dict()["kernel_prob_error"] is None
    assert "float reference" not in plain.line()
    nan = judge("int8", fp32, np.full(N, np.nan), truth, threshold=0.5, float_reference=fp32)
    assert math.isinf(nan.kernel_error) and nan.to_dict()["kernel_prob_error"] == "inf"
