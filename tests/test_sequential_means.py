"""export/sequential_means.py: the float32 run whose global means are summed in sequence is ONNX
Runtime's `GlobalAveragePool` rounding, the golden layers record it, and the layer bound takes four
times it."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from onnxedge.export.layers import capture_layers, float32_errors
from onnxedge.export.sequential_means import sequential_mean, sequential_means
from onnxedge.runtime.parity.exposed import ExposedTensor
from onnxedge.runtime.parity.layer_compare import SEQUENCE_FACTOR, compare_layer, layer_bound


def _ort_global_average_pool(x: np.ndarray, threads: int = 1) -> np.ndarray:
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["x"], ["y"])],
        "gap",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, {"x": x})[0].reshape(x.shape[:2])


@pytest.fixture(scope="module")
def big_map() -> torch.Tensor:
    """A squeeze-excitation's first map in efficientnet_b0: 112 x 112, positive (after a SiLU)."""
    return torch.from_numpy(np.random.default_rng(0).random((2, 16, 112, 112), dtype=np.float32))


def test_sequential_mean_bounds_onnxruntimes_global_average_pool(big_map):
    exact = big_map.double().mean((2, 3)).numpy()
    ours = sequential_mean(big_map, (2, 3)).numpy()
    theirs = _ort_global_average_pool(big_map.numpy())

    def error(values: np.ndarray, channels: slice = slice(None)) -> float:
        return float(np.abs(values - exact[:, channels]).max())

    # 16 channels fill an AVX-512 block of ONNX Runtime's NCHWc kernel, which sums each channel in
    # sequence (the same bits here); PyTorch's own mean is far nearer float64.
    assert error(theirs) <= error(ours)
    assert error(theirs) > 2 * error(big_map.mean((2, 3)).numpy())
    # 8 channels (and 2 threads) take its other kernel, nearer float64: still within the bound.
    part = big_map[:, :8].numpy()
    for threads in (1, 2):
        assert error(_ort_global_average_pool(part, threads), channels=slice(0, 8)) <= error(ours)


def test_every_way_a_module_writes_a_global_mean_is_summed_in_sequence(big_map):
    x = big_map
    expected = sequential_mean(x, (2, 3))
    calls = {
        "AdaptiveAvgPool2d(1)": lambda: nn.AdaptiveAvgPool2d(1)(x).flatten(1),
        "AdaptiveAvgPool2d((1, 1))": lambda: nn.AdaptiveAvgPool2d((1, 1))(x).flatten(1),
        "AvgPool2d over the map": lambda: nn.AvgPool2d(112)(x).flatten(1),
        "Tensor.mean": lambda: x.mean((2, 3)),
        "torch.mean, keywords": lambda: torch.mean(x, dim=(2, 3), keepdim=True).flatten(1),
        "negative dims": lambda: x.mean(dim=[-1, -2]),
    }
    for name, call in calls.items():
        before = call()
        with sequential_means():
            inside = call()
        after = call()
        assert torch.equal(inside, expected) and torch.equal(before, after), name
        if name != "AvgPool2d over the map":  # PyTorch's pooling kernel sums in sequence itself
            assert not torch.equal(before, expected), name
    # Not a global float32 mean: as PyTorch computes it, inside or out.
    others = {
        "float64": lambda: x.double().mean((2, 3)),
        "the mean of everything": lambda: x.mean(),
        "a 2x2 pool": lambda: nn.AvgPool2d(2)(x),
        "a 7x7 adaptive pool": lambda: nn.AdaptiveAvgPool2d(7)(x),
    }
    for name, call in others.items():
        outside = call()
        with sequential_means():
            assert torch.equal(call(), outside), name


class _Gate(nn.Module):
    """A squeeze-excitation gate's start: a mean over a large map, then a 1x1 convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(x)).flatten(1)


def test_the_golden_layers_record_the_rounding_of_a_mean_summed_in_sequence(big_map):
    torch.manual_seed(0)
    module32 = _Gate().eval()
    module64 = _Gate().double().eval()
    module64.load_state_dict({k: v.double() for k, v in module32.state_dict().items()})
    outputs = {"pool": "pooled", "fc": "gated"}
    x = big_map.numpy()
    layers = capture_layers(module64, x, outputs)
    default = capture_layers(module32, x, outputs, np.float32)
    errors, in_sequence = float32_errors(module32, x, outputs, layers)

    def error(values: np.ndarray, tensor: str) -> float:
        return float(np.abs(values.astype(np.float64) - layers[tensor]).max())

    assert errors == {t: error(default[t], t) for t in outputs.values()}
    # At the mean and after it, the run in sequence rounds far more, as ONNX Runtime does.
    assert set(in_sequence) == {"pooled", "gated"}
    assert in_sequence["pooled"] > 5 * errors["pooled"]
    assert in_sequence["gated"] > errors["gated"]
    onnxruntime_mean = _ort_global_average_pool(x).reshape(layers["pooled"].shape)
    assert error(onnxruntime_mean, "pooled") <= in_sequence["pooled"]


def test_the_layer_bound_takes_four_times_the_rounding_in_sequence():
    expected = np.ones((2, 4))  # RMS 1
    tolerance = 1e-4
    assert layer_bound(tolerance, expected, float32_error=1e-7, factor=100) == tolerance
    widened = layer_bound(tolerance, expected, float32_error=1e-7, factor=100, sequence_error=1e-4)
    assert widened == pytest.approx(SEQUENCE_FACTOR * 1e-4)
    # ... so an error of five times that rounding still fails, as one of three times passes.
    for times, verdict in ((3, "passed"), (5, "failed")):
        actual = expected + times * 1e-4
        tensor = ExposedTensor("t", "n", "Conv", 1, 1)
        result = compare_layer(tensor, actual, expected, tolerance=widened)
        assert result.status == verdict
    # Not where the row has no rounding factor (TF32, bf16, tolerances set by hand).
    assert layer_bound(tolerance, expected, sequence_error=1e-3, factor=None) == tolerance
