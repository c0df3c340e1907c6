"""The onnx package's test classifiers (`make testdata-zoo`): their weights made random, each
kind of row on tiny files (a pass, an expected refusal, a refusal where none was expected, an
import where a refusal was), and GoogLeNet itself (its padded 7x7 head) through import and
parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.checker
import onnx.parser
import onnxruntime as ort
import pytest

from onnxedge.export import testdata_zoo
from onnxedge.export.testdata_zoo import TestdataEntry, random_weights, run_entry
from onnxedge.runtime.errors import OnnxEdgeError

# Written as the light files write weights: ConstantOfShape of 0.02, IR 3 (every initializer is
# a graph input too). `head` pools [1, 4, 6, 6] into the classifier, as GoogLeNet's (`_GAP`)
# or through a max-pool and a fully connected layer (`_FC`).
_TINY = """
<ir_version: 3, opset_import: ["" : 9]>
tiny (float[1,3,6,6] data_0, int64[4] wshape, int64[1] bshape, int64[2] fcshape, int64[1] fcbshape)
    => (float[1,2] prob) <int64[4] wshape = {{4, 3, 3, 3}}, int64[1] bshape = {{4}},
                          int64[2] fcshape = {{2, {fc_in}}},
                          int64[1] fcbshape = {{2}}> {{
    w = ConstantOfShape<value = float[1] {{0.02}}>(wshape)
    b = ConstantOfShape<value = float[1] {{0.02}}>(bshape)
    fc = ConstantOfShape<value = float[1] {{0.02}}>(fcshape)
    fcb = ConstantOfShape<value = float[1] {{0.02}}>(fcbshape)
    c = Conv<pads = [1, 1, 1, 1]>(data_0, w, b)
    r = Relu(c)
    {head}
    logits = Gemm<transB = 1>(flat, fc, fcb)
    prob = Softmax(logits)
}}
"""
_GAP = "p = AveragePool<kernel_shape = [7, 7], pads = [0, 0, 1, 1]>(r)\n    flat = Flatten(p)"
_FC = "p = MaxPool<kernel_shape = [2, 2], strides = [2, 2]>(r)\n    flat = Flatten(p)"


def _tiny(folder: Path, name: str, head: str, fc_in: int) -> TestdataEntry:
    model = onnx.parser.parse_model(_TINY.format(head=head, fc_in=fc_in))
    onnx.save(model, folder / f"light_{name}.onnx")
    return TestdataEntry(name, "tiny")


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"data_0": x})[0]


def test_random_weights_replace_every_constant_of_shape() -> None:
    model = onnx.parser.parse_model(_TINY.format(head=_GAP, fc_in=4))
    weighted = random_weights(model)
    onnx.checker.check_model(weighted, full_check=True)
    assert "ConstantOfShape" not in {n.op_type for n in weighted.graph.node}
    names = {i.name for i in weighted.graph.initializer}
    assert {"w", "b", "fc"} <= names
    assert {"w", "b", "fc"} <= {i.name for i in weighted.graph.input}  # IR 3
    x = np.random.default_rng(0).random((1, 3, 6, 6), dtype=np.float32)
    flat, random = _run(model, x), _run(weighted, x)
    assert np.ptp(flat) == pytest.approx(0.0, abs=1e-7)  # every class the same, as shipped
    assert np.ptp(random) > 1e-3
    again = random_weights(model)
    other = random_weights(model, seed=1)
    assert _run(again, x).tolist() == random.tolist()
    assert not np.allclose(_run(other, x), random)


def test_random_weights_are_scaled_for_their_readers() -> None:
    model = onnx.parser.parse_model(_TINY.format(head=_GAP, fc_in=4))
    weighted = random_weights(model, unit_rms=False)
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in weighted.graph.initializer}
    assert weights["w"].std() == pytest.approx(np.sqrt(2 / 27), rel=0.5)  # He: fan-in 3x3x3
    assert np.abs(weights["b"]).max() < 0.1  # a bias: small


def test_unit_rms_scales_each_layer_and_centres_the_classifier() -> None:
    model = onnx.parser.parse_model(_TINY.format(head=_GAP, fc_in=4))
    rng = np.random.default_rng(7)
    inputs = [rng.standard_normal((1, 3, 6, 6)).astype(np.float32) for _ in range(32)]

    def outputs(weighted: onnx.ModelProto) -> tuple[np.ndarray, np.ndarray]:
        for name in ("c", "logits"):  # the convolution's and the classifier's, to look at
            weighted.graph.output.append(onnx.helper.make_tensor_value_info(name, 1, None))
        session = ort.InferenceSession(
            weighted.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        runs = [session.run(["c", "logits"], {"data_0": x}) for x in inputs]
        return np.concatenate([c for c, _ in runs]), np.concatenate([z for _, z in runs])

    conv, logits = outputs(random_weights(model))
    assert np.sqrt(np.mean(conv**2)) == pytest.approx(1.0, rel=0.3)
    assert np.sqrt(np.mean(logits**2)) == pytest.approx(1.0, rel=0.5)
    # Centred: no class wins every input (without it the pooled ReLUs' mean picks one).
    assert np.abs(logits.mean(axis=0)).max() < 0.5
    assert len(set(logits.argmax(axis=1).tolist())) == 2
    _, plain_logits = outputs(random_weights(model, unit_rms=False))
    assert len(set(plain_logits.argmax(axis=1).tolist())) == 1


def test_a_model_without_constant_of_shape_weights_is_an_error() -> None:
    model = onnx.parser.parse_model(
        '<ir_version: 8, opset_import: ["" : 13]> g (float[1,2] x) => (float[1,2] y) '
        "{ y = Relu(x) }"
    )
    with pytest.raises(OnnxEdgeError, match="expected weights written as ConstantOfShape"):
        random_weights(model)


def test_each_kind_of_row(tmp_path: Path) -> None:
    said: list[str] = []
    gap = _tiny(tmp_path, "tiny_gap", _GAP, 4)
    fc = _tiny(tmp_path, "tiny_fc", _FC, 36)
    out = tmp_path / "out"

    passed = run_entry(gap, out, said.append, tmp_path)
    assert passed.status == "passed", passed.reason
    assert passed.head.endswith("(kernel 7x7, pads [0, 0, 1, 1] outside the 6x6 map, not counted)")
    assert passed.parity_prob is not None

    refused = run_entry(
        TestdataEntry("tiny_fc", "tiny", refused=testdata_zoo._NO_GAP), out, said.append, tmp_path
    )
    assert refused.status == "refused"
    assert "with MaxPool" in refused.reason

    wrongly_refused = run_entry(fc, out, said.append, tmp_path)
    assert wrongly_refused.status == "failed"
    assert wrongly_refused.reason.startswith("import: ")
    assert "gap_head" in wrongly_refused.reason

    wrongly_taken = run_entry(
        TestdataEntry("tiny_gap", "tiny", refused=testdata_zoo._NO_GAP), out, said.append, tmp_path
    )
    assert wrongly_taken.status == "failed"
    assert "expected a refusal" in wrongly_taken.reason

    missing = run_entry(TestdataEntry("absent", "tiny"), out, said.append, tmp_path)
    assert missing.status == "skipped"

    text = testdata_zoo.render(
        [passed, refused, wrongly_refused, wrongly_taken, missing],
        command="cmd",
        machine="m",
        date="d",
    )
    assert "| tiny_gap | tiny |" in text
    assert "REFUSED: " in text and "FAILED: import: " in text and "SKIPPED: " in text
    assert "2 of 5 rows as expected." in text


@pytest.mark.slow
def test_googlenet_from_the_onnx_package_imports_and_passes_parity(tmp_path: Path) -> None:
    """Caffe's GoogLeNet pools its 6x6 map with a 7x7 kernel padded at the end, the padding
    left out of the mean: import refused it before that pool was taken for a global average."""
    (entry,) = (e for e in testdata_zoo.TESTDATA_ZOO if e.name == "inception_v1")
    if not entry.path().is_file():
        pytest.skip(f"{entry.path()} is not in this onnx package")
    row = run_entry(entry, tmp_path, lambda _: None)
    assert row.status == "passed", row.reason
    assert row.head == (
        "AveragePool 'n138' -> GlobalAveragePool "
        "(kernel 7x7, pads [0, 0, 1, 1] outside the 6x6 map, not counted)"
    )
