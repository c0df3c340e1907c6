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
from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.errors import OnnxEdgeError
from onnxedge.runtime.parity.layers import load_golden_layers

TINY_SE = ZooEntry(
    "tiny_se",
    "onnxedge.models.families:squeeze_excite",
    (3, 32, 32),
    "SE blocks",
    args=(("width", 4),),
)


def test_a_healthy_family_raises_no_false_alarm(tmp_path):
    made = list(
        matrix.alarm_rows(
            TINY_SE,
            tmp_path,
            engines=["onnxruntime"],
            say=lambda _msg: None,
            exporters=[("dynamo", 18)],
        )
    )
    rows = [row for row, _ in made]
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
    # Its golden layers record the rounding of its means summed in sequence, where it is larger
    # than the default run's: at the means and after them.
    golden = load_golden_layers(Bundle.open(made[0][1]))
    assert golden.sequence_errors and all(
        e > golden.float32_errors[t] for t, e in golden.sequence_errors.items()
    )


def test_every_perturbation_of_smile_cnn_fails_every_batch_size(smile_bundle):
    misses = list(matrix.miss_rows(smile_bundle, "smile_cnn", lambda _msg: None))
    kinds = [m.kind for m in misses]
    assert kinds == ["scale"] * 5 + ["bias"] * 2 + ["swap", "mean"]
    for miss in misses:
        assert miss.rows == 4 and miss.caught, miss
        assert miss.weakest > 1
    # The layer check ran on each (the default bundle has golden layers); a convolution's change
    # leaves its own layer bound, a change of the final layer shows in the outputs only.
    assert all(m.layers_ratio is not None and m.caught_outputs for m in misses)
    assert all(m.layers_ratio > 1 for m in misses if m.target.startswith("conv"))


def test_a_miss_is_measured_against_float32_resolution(smile_bundle):
    """A perturbation's float64 effect over PyTorch's float32 spread: far above 1 for a 1% change
    of conv1, at most 1 for the final bias moved by one float32 step, None for a
    change that maps to no parameter of the module."""
    import json

    import onnx

    from onnxedge.export.parity_effect import float64_effect
    from onnxedge.models.weights import module_from_manifest
    from onnxedge.runtime.bundle.reader import Bundle
    from onnxedge.runtime.parity import load_golden

    manifest = json.loads((smile_bundle / "manifest.json").read_text())
    module = module_from_manifest(manifest)
    reference = load_golden(Bundle.open(smile_bundle))
    original = onnx.load(str(smile_bundle / "model.onnx"))
    kind = manifest["output"]["kind"]

    def effect(name, change):
        changed = onnx.ModelProto()
        changed.CopyFrom(original)
        matrix._edit(changed, name, change)
        return float64_effect(module, original, changed, reference, kind)

    scaled = effect("conv1.weight", lambda a: a * 1.01)
    assert sorted(scaled) == sorted(reference.batches) and min(scaled.values()) > 100
    tiny = effect("fc.bias", lambda a: np.nextafter(a, np.float32(np.inf)))
    assert tiny is not None and max(tiny.values()) <= 1
    assert effect("conv1.weight", lambda a: a[::-1].copy()) is not None  # by amounts, not scale
    with_unknown = onnx.ModelProto()
    with_unknown.CopyFrom(original)
    with_unknown.graph.initializer.append(onnx.numpy_helper.from_array(np.ones(2, np.float32), "x"))
    changed = onnx.ModelProto()
    changed.CopyFrom(with_unknown)
    matrix._edit(changed, "x", lambda a: a * 2)
    assert float64_effect(module, with_unknown, changed, reference, kind) is None
    below = rows.MissRow("m", "bias", "b", 0, 3, 0.1, effect=0.5)
    above = rows.MissRow("m", "bias", "b", 0, 3, 0.1, effect=3.0)
    assert below.below_resolution and not above.below_resolution
    assert "below float32 resolution" in below.missed_note() and "×3" in above.missed_note()


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


@pytest.mark.parametrize("content", [None, "a document without the markers\n"])
def test_an_out_file_it_cannot_splice_into_is_refused_before_the_run(tmp_path, capsys, content):
    out = tmp_path / "PARITY.md"
    if content is not None:
        out.write_text(content)
    with pytest.raises(SystemExit) as stop:
        matrix.main(["--out", str(out), "--bundles", str(tmp_path / "b"), "--only", "smile_cnn"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "--out: expected a Markdown file with the matrix's markers" in err
    assert not (tmp_path / "b").exists()  # nothing was exported


def test_a_perturbation_the_outputs_miss_is_caught_by_the_layers(bundle_copy):
    """conv1's channel 0 up 1% and conv2's weights on it down as much: the outputs are the same,
    the layers are not. Counted as caught with the layer check and missed by the outputs alone."""
    from test_parity_layers import rescale_channel

    from onnxedge.runtime.bundle.reader import Bundle
    from onnxedge.runtime.parity.layer_check import judge_layers

    rescale_channel(bundle_copy)
    report = library_run(bundle_copy, batch_sizes=(1, 7))
    judged = judge_layers(Bundle.open(bundle_copy), report).report
    miss = matrix._miss("smile_cnn", "scale", "conv1 channel 0", report, judged)
    assert miss.rows == 2 and miss.caught and not miss.caught_outputs, miss
    assert miss.outputs_failed == 0 and miss.layers_ratio > 1 and miss.weakest < 1
    text = rows.render(
        [], [miss], engines=["onnxruntime cpu"], command="c", machine="cpu", date="d", commit="x"
    )
    assert "**Misses: 0 of 1 perturbations with the layer check, 1 with the outputs alone**" in text
    assert "| 1/1 | 0/1 |" in text and "caught by the layers only: conv1 channel 0" in text
    alone = matrix._miss("smile_cnn", "scale", "conv1 channel 0", report)
    assert not alone.caught and alone.layers_ratio is None
