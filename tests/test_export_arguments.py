"""`export_bundle` and `import_bundle` given arguments of the wrong kind, as the library API can
be: each is an `ArgumentError` (a `ValueError`) or an `OnnxEdgeError` that says what was expected
and what was found, raised before the model or the file is touched (None and a missing file
stand for them here), where each was a TypeError or a ValueError from deep inside or, for a str
of labels, NaN budgets and an empty preprocessing resize, no error at all."""

from __future__ import annotations

import re

import pytest

from onnxedge.export import export_bundle, import_bundle
from onnxedge.runtime.errors import OnnxEdgeError

SHARED = [
    ({"golden_batch_sizes": []}, "golden_batch_sizes: expected one or more integers >= 1"),
    ({"golden_batch_sizes": "1,2"}, "golden_batch_sizes: expected one or more integers >= 1"),
    ({"golden_batch_sizes": [1.5]}, "found [1.5]"),
    ({"golden_batch_sizes": [True]}, "found [True]"),
    ({"golden_layers_budget_mb": float("nan")}, "golden_layers_budget_mb: expected a finite"),
    ({"golden_layers_budget_mb": -1}, "golden_layers_budget_mb: expected a finite number >= 0"),
    ({"golden_layers_budget_mb": "5"}, "found '5'"),
    ({"labels": "ab"}, "labels: expected a sequence of class names, such as"),
    ({"preprocessing": 3}, "preprocessing: expected a mapping of keys to replace"),
    (
        {"input_shape": "3,64,64"},
        "input_shape: expected C, H, W as three integers, found '3,64,64'",
    ),
    ({"input_shape": (3, 64.5, 64)}, "found (3, 64.5, 64)"),
]
PREPROCESSING = [
    ({"preprocessing": {"resize": "x"}}, "resize: expected [height, width], two integers >= 1"),
    ({"preprocessing": {"resize": [64]}}, "found [64]"),
    ({"preprocessing": {"mean": ["a", 0, 0]}}, "mean: expected finite numbers, found ['a', 0, 0]"),
    ({"preprocessing": {"std": [1, float("nan"), 1]}}, "std: expected finite numbers"),
    ({"preprocessing": {"pad_value": "x"}}, "pad_value: expected a finite number, found 'x'"),
]


@pytest.mark.parametrize(("arguments", "message"), SHARED + PREPROCESSING)
def test_export_bundle_refuses_arguments_of_the_wrong_kind(tmp_path, arguments, message):
    given = {"input_shape": (3, 64, 64), "out": tmp_path / "b", **arguments}
    with pytest.raises(OnnxEdgeError, match=re.escape(message)):
        export_bundle(None, **given)  # the module is not touched before the arguments are checked
    assert not (tmp_path / "b").exists()


IMPORT_ONLY = [
    ({"reference_budget_s": float("nan")}, "reference_budget_s: expected a finite number >= 0"),
    ({"reference_budget_s": -1}, "reference_budget_s: expected a finite number >= 0, found -1"),
    ({"reference_budget_s": "x"}, "found 'x'"),
]


@pytest.mark.parametrize(("arguments", "message"), SHARED + IMPORT_ONLY)
def test_import_bundle_refuses_arguments_of_the_wrong_kind(tmp_path, arguments, message):
    with pytest.raises(OnnxEdgeError, match=re.escape(message)):  # not "found nothing at"
        import_bundle(tmp_path / "missing.onnx", out=tmp_path / "b", **arguments)
    assert not (tmp_path / "b").exists()


def test_the_checks_take_numpy_integers_lists_and_none():
    """What the checks let through: numpy integers, a list of dims, a None budget where optional."""
    import numpy as np

    from onnxedge.export.arguments import check_budget, check_golden_batch_sizes, check_shape

    assert check_golden_batch_sizes((np.int64(1), 2)) == (1, 2)
    assert check_shape([np.int32(3), 64, 64]) == (3, 64, 64)
    assert check_budget(None, "x", optional=True) is None and check_budget(0, "x") == 0.0
