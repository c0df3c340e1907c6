"""A slice of `make parity-matrix` (export/parity_matrix.py): a healthy small family passes
parity on every row (no false alarm, with the head's mean lowered and with every mean), and every
perturbation of smile_cnn fails every golden batch size (no miss)."""

from __future__ import annotations

import numpy as np
import pytest
from test_parity import library_run

from onnxedge.export import parity_matrix as matrix
from onnxedge.export import parity_rows as rows
from onnxedge.export.zoo import ZooEntry
from onnxedge.runtime.errors import OnnxEdgeError

TINY_SE = ZooEntry(
    "tiny_se",
    "onnxedge.models.families:squeeze_excite",
    (3, 32, 32),
    "SE blocks",
    args=(("width", 4),),
)


def test_a_healthy_family_raises_no_false_alarm(tmp_path):
    rows = [
        row
        for row, _ in matrix.alarm_rows(
            TINY_SE,
            tmp_path,
            engines=["onnxruntime"],
            say=lambda _msg: None,
            exporters=[("dynamo", 18)],
        )
    ]
    # Its squeeze-excitation means stay ReduceMean by default, so every mean is tried too.
    keys = [(r.preprocessing, r.gap) for r in rows]
    assert keys == [
        ("default", "head"), ("imagenet", "head"), ("default", "all"), ("imagenet", "all")
    ]  # fmt: skip
    for row in rows:
        assert not row.error and not row.false_alarm, row
        (verdict,) = row.verdicts
        assert verdict.status == "passed" and verdict.ratio <= 1
        assert verdict.decided_by in ("float32", "floor") and verdict.float32_multiple > 0


def test_every_perturbation_of_smile_cnn_fails_every_batch_size(smile_bundle):
    misses = list(matrix.miss_rows(smile_bundle, "smile_cnn", lambda _msg: None))
    kinds = [m.kind for m in misses]
    assert kinds == ["scale"] * 5 + ["bias"] * 2 + ["swap", "mean"]
    for miss in misses:
        assert miss.rows == 4 and miss.caught, miss
        assert miss.weakest > 1


def test_a_healthy_run_counts_as_a_miss_so_the_check_can_fail(smile_bundle):
    report = library_run(smile_bundle, batch_sizes=(1, 7))
    miss = matrix._miss("smile_cnn", "scale", "nothing changed", report)
    assert miss.rows == 2 and miss.rows_failed == 0 and not miss.caught
    assert 0 < miss.weakest < 1


def test_perturbations_scale_each_layer_and_move_one_bias_element():
    import onnx

    w = np.arange(8, dtype=np.float32).reshape(2, 1, 2, 2)
    b = np.array([0.0, 0.0], dtype=np.float32)  # constant: moved by 1e-3 of the weights' range
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Conv", ["x", "w", "b"], ["y"])],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 2, 2])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2, 1, 1])],
        [onnx.numpy_helper.from_array(w, "w"), onnx.numpy_helper.from_array(b, "b")],
    )
    model = onnx.helper.make_model(graph)
    edits = {(kind, target): edit for kind, target, edit in matrix.perturbations(model)}
    assert set(edits) == {("scale", "w"), ("bias", "b"), ("swap", "w channels 0, 1")}
    for (kind, _), edit in edits.items():
        changed = onnx.ModelProto()
        changed.CopyFrom(model)
        edit(changed)
        arrays = {i.name: onnx.numpy_helper.to_array(i) for i in changed.graph.initializer}
        if kind == "scale":
            np.testing.assert_allclose(arrays["w"], w * 1.01, rtol=1e-6)
        elif kind == "bias":
            assert arrays["b"][0] == pytest.approx(1e-3 * 7) and arrays["b"][1] == 0
        else:
            np.testing.assert_array_equal(arrays["w"], w[[1, 0]])


def test_the_matrix_replaces_only_its_part_of_the_document():
    doc = f"before\n{rows.BEGIN}\nstale figures\n{rows.END}\nafter\n"
    alarm = rows.AlarmRow("m", "dynamo", "default", "head", "random", error="export: boom")
    text = rows.render(
        [alarm], [], engines=["onnxruntime cpu"], command="c", machine="cpu", date="d", commit="x"
    )
    spliced = rows.splice(doc, text)
    assert (
        spliced.startswith("before\n") and spliced.endswith("\nafter\n") and "stale" not in spliced
    )
    assert "**False alarms: 1 of 1 healthy exports**" in spliced and "export: boom" in spliced
    with pytest.raises(OnnxEdgeError, match="expected the markers"):
        rows.splice("no markers", text)
