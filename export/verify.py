"""Numerical verification of each export step: the graph after a step computes what it did before.

Every transform (simplify, the GAP lowering) is checked against its input graph, and the final graph
against PyTorch, under ONNX Runtime's CPU EP on the same random inputs at batch 1 and a batch > 1.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx

from onnxedge.runtime.check.check import graph_inputs
from onnxedge.runtime.compare import Comparison, compare_arrays
from onnxedge.runtime.engines.onnxruntime.session import SessionConfig, make_session
from onnxedge.runtime.errors import OnnxEdgeError, first_line

DEFAULT_BATCHES = (1, 5)
BATCH_STEP_BATCHES = (1, 2, 7)  # a fixed batch made symbolic is verified at these


@dataclasses.dataclass(frozen=True)
class StepVerification:
    """The outcome of comparing a graph after a step with its reference, per batch size."""

    step: str
    comparisons: tuple[tuple[int, Comparison], ...]

    def __bool__(self) -> bool:
        return all(c for _, c in self.comparisons)

    @property
    def max_abs_error(self) -> float:
        return max((c.max_abs_error for _, c in self.comparisons), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "passed": bool(self),
            "batches": [b for b, _ in self.comparisons],
            "max_abs_error": self.max_abs_error,
        }

    def raise_if_failed(self) -> None:
        if not self:
            failed = [(b, c) for b, c in self.comparisons if not c]
            batch, worst = max(failed, key=lambda bc: bc[1].max_abs_error)
            raise OnnxEdgeError(
                f"{self.step} changed the model's output: at batch {batch} max abs error "
                f"{worst.max_abs_error:.3g} exceeds atol {worst.atol:g} + rtol {worst.rtol:g}"
                + (f" ({worst.detail})" if worst.detail else "")
            )


def concrete_shape(
    value: onnx.ValueInfoProto, batch: int, fill: int = 224, spatial: Sequence[int] | None = None
) -> list[int]:
    """A shape to feed: static dims as they are, a free dim 0 -> ``batch``, free dims 2 and 3 ->
    ``spatial`` (H, W) where given, other free dims -> ``fill`` (an image side, for classifiers
    exported with dynamic H and W)."""
    dims = []
    for i, d in enumerate(value.type.tensor_type.shape.dim):
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(d.dim_value)  # a static dim, the batch too, is fed as it is
        elif i == 0:
            dims.append(batch)
        elif spatial is not None and i in (2, 3):
            dims.append(int(spatial[i - 2]))
        else:
            dims.append(fill)
    return dims


def random_inputs(
    model: onnx.ModelProto, batch: int, seed: int = 0, spatial: Sequence[int] | None = None
) -> dict[str, np.ndarray]:
    """Random values for every graph input, each of its own element type: floats in [0, 1),
    integers in [0, 4), booleans. ``spatial``: H, W for inputs whose H and W are free."""
    inputs = graph_inputs(model.graph)
    if not inputs:
        raise OnnxEdgeError("the model has no graph inputs to feed")
    rng = np.random.default_rng(seed + batch)
    feeds = {}
    for value in inputs:
        shape = concrete_shape(value, batch, spatial=spatial)
        elem_type = value.type.tensor_type.elem_type
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
        except (KeyError, TypeError, ValueError):
            dtype = None
        if dtype is not None and dtype.kind == "f":
            feeds[value.name] = rng.random(shape).astype(dtype)
        elif dtype is not None and dtype.kind in "iu":
            feeds[value.name] = rng.integers(0, 4, shape).astype(dtype)
        elif dtype is not None and dtype.kind == "b":
            feeds[value.name] = rng.random(shape) < 0.5
        else:
            type_name = onnx.TensorProto.DataType.Name(elem_type) if elem_type else "no type"
            raise OnnxEdgeError(
                f"cannot make test inputs for input {value.name!r}: expected a float, integer "
                f"or bool tensor, found {type_name}"
            )
    return feeds


# A step is verified as a graph: ONNX Runtime's basic optimizations only (constant folding,
# fusions that keep the semantics). The extended level's kernels are the engine's choice, judged by
# parity: a quantized graph's DequantizeLinear, GlobalAveragePool and QuantizeLinear fuse into
# QLinearGlobalAveragePool there, which rounds in int8 where the ReduceMean it replaced did not.
_VERIFY_OPTIMIZATION = "basic"


def run_cpu(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    config = SessionConfig(provider="cpu", graph_optimization=_VERIFY_OPTIMIZATION)
    session = make_session(model.SerializeToString(), config)
    try:
        return session.run(None, feeds)
    except Exception as e:  # ORT's own error types
        shapes = ", ".join(f"{k} {v.dtype}{list(v.shape)}" for k, v in feeds.items())
        raise OnnxEdgeError(
            f"onnxruntime cannot run the model on random inputs ({shapes}) to verify it: "
            f"{first_line(e)}"
        ) from None


def in_chunks(
    run: Callable[[np.ndarray], list[np.ndarray]], fixed: int | None
) -> Callable[[np.ndarray], list[np.ndarray]]:
    """``run`` on any number of rows: in chunks of ``fixed`` rows (the last padded with copies of
    its first row, the padding dropped from the outputs) where the model fixes its batch."""

    def chunked(x: np.ndarray) -> list[np.ndarray]:
        if fixed is None:
            return run(x)
        parts: list[list[np.ndarray]] = []
        for start in range(0, len(x), fixed):
            chunk = x[start : start + fixed]
            rows = len(chunk)
            if rows < fixed:
                chunk = np.concatenate([chunk, np.repeat(chunk[:1], fixed - rows, axis=0)])
            parts.append([out[:rows] for out in run(chunk)])
        return [np.concatenate(outs) for outs in zip(*parts, strict=True)]

    return chunked


def _scale(expected: np.ndarray) -> float:
    """The output's largest magnitude, at least 1: ``atol`` is relative to it. Float32 rounding
    grows with the values a graph sums, so a logit of 30 carries thirty times the error of a
    probability; an absolute 1e-5 would fail deep networks' logits for rounding alone, while a
    probability output (<= 1) keeps the plain ``atol``."""
    values = np.abs(np.asarray(expected, dtype=np.float64))
    finite = values[np.isfinite(values)]
    return max(1.0, float(finite.max())) if finite.size else 1.0


def _verify_step(
    step: str,
    model: onnx.ModelProto,
    outputs: Callable[[dict[str, np.ndarray]], tuple[list[np.ndarray], list[np.ndarray]]],
    batches: Sequence[int],
    atol: float,
    rtol: float,
    spatial: Sequence[int] | None = None,
) -> StepVerification:
    """At each batch size, feed the same random inputs to both sides (``outputs`` returns
    (actual, expected)) and keep the worst output's comparison; ``atol`` is scaled by each
    output's largest magnitude when that is above 1 (`_scale`)."""
    results = []
    for batch in batches:
        feeds = random_inputs(model, batch, spatial=spatial)
        fed = int(next(iter(feeds.values())).shape[0])  # a fixed batch is fed as it is
        actual, expected = outputs(feeds)
        if len(actual) != len(expected):
            raise OnnxEdgeError(
                f"{step} changed the number of outputs: {len(expected)} -> {len(actual)}"
            )
        worst = max(
            (
                compare_arrays(a, e, atol=atol * _scale(e), rtol=rtol)
                for a, e in zip(actual, expected, strict=True)
            ),
            key=lambda c: (not c.passed, c.max_abs_error),
        )
        results.append((fed, worst))
    return StepVerification(step, tuple(results))


def verify_onnx_step(
    step: str,
    before: onnx.ModelProto,
    after: onnx.ModelProto,
    *,
    batches: Sequence[int] = DEFAULT_BATCHES,
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> StepVerification:
    """Compare every output of ``after`` with ``before`` on the same random inputs."""
    return _verify_step(
        step,
        before,
        lambda feeds: (run_cpu(after, feeds), run_cpu(before, feeds)),
        batches,
        atol,
        rtol,
    )


def verify_batch_step(
    original: onnx.ModelProto,
    dynamic: onnx.ModelProto,
    fixed: int,
    *,
    batches: Sequence[int] = BATCH_STEP_BATCHES,
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> StepVerification:
    """Compare ``dynamic`` (the batch made symbolic) at each of ``batches`` with the ``original``,
    which fixes its batch at ``fixed``, run on the same rows ``fixed`` at a time."""

    def outputs(feeds: dict[str, np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        ((name, x),) = feeds.items()
        expected = in_chunks(lambda chunk: run_cpu(original, {name: chunk}), fixed)(x)
        return run_cpu(dynamic, feeds), expected

    return _verify_step("batch made dynamic", dynamic, outputs, batches, atol, rtol)


def verify_output_flatten(
    original: onnx.ModelProto, flattened: onnx.ModelProto, *, batches: Sequence[int] = (1, 2)
) -> StepVerification:
    """``flattened``'s output [N, K] against ``original``'s [N, K, 1, 1] reshaped, exactly (a
    reshape changes no number)."""

    def outputs(feeds: dict[str, np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        (expected,) = run_cpu(original, feeds)[:1]
        return run_cpu(flattened, feeds)[:1], [expected.reshape(len(expected), -1)]

    return _verify_step("output flattened to [N, K]", original, outputs, batches, 0.0, 0.0)


def verify_input_layout(
    original: onnx.ModelProto,
    nchw: onnx.ModelProto,
    spatial: Sequence[int],
    *,
    batches: Sequence[int] = (1, 2),
) -> StepVerification:
    """``nchw`` (the input made channels-first, `onnxedge.export.interface.nchw_input`) on random
    NCHW images against ``original`` fed the same images channels-last, exactly (a transpose
    changes no number). ``spatial``: H, W where the input leaves them symbolic."""
    from onnxedge.export.interface import TO_NHWC

    def outputs(feeds: dict[str, np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        ((name, x),) = feeds.items()
        return run_cpu(nchw, feeds), run_cpu(original, {name: x.transpose(TO_NHWC)})

    return _verify_step("input made NCHW", nchw, outputs, batches, 0.0, 0.0, spatial)


def verify_kept_output(
    several: onnx.ModelProto,
    kept: onnx.ModelProto,
    name: str,
    spatial: Sequence[int],
    *,
    batches: Sequence[int] = (1, 2),
) -> StepVerification:
    """``kept`` (one output of ``several`` kept, `onnxedge.export.interface.kept_output`) against
    that output of ``several`` on the same random inputs, exactly."""
    names = [o.name for o in several.graph.output]

    def outputs(feeds: dict[str, np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        return run_cpu(kept, feeds), [run_cpu(several, feeds)[names.index(name)]]

    return _verify_step(
        f"outputs other than {name!r} dropped", kept, outputs, batches, 0.0, 0.0, spatial
    )


def verify_against_torch(
    module: Any,
    model: onnx.ModelProto,
    *,
    batches: Sequence[int] = DEFAULT_BATCHES,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    spatial: Sequence[int] | None = None,
    step: str = "export (ONNX Runtime CPU vs PyTorch)",
) -> StepVerification:
    """Compare the ONNX graph's first output under ORT's CPU EP with the eval-mode torch module
    (``spatial``: the H, W to feed a graph whose H and W are free)."""
    import torch

    def outputs(feeds: dict[str, np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        (x,) = feeds.values()
        with torch.no_grad():
            expected = module(torch.from_numpy(x)).numpy()
        return run_cpu(model, feeds)[:1], [expected]

    return _verify_step(step, model, outputs, batches, atol, rtol, spatial)
