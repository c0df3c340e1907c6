"""What the tensors of a localized graph are compared with (`LayerReference`), for
`onnxedge.runtime.parity.localize`:

1. golden layers stored in the bundle at export (`golden_layer_reference`): no torch needed;
2. the same exposed graph run elsewhere (`run_layer_reference`): on another execution provider
   (`against_provider`, ``--against cpu``) or another model of the bundle (`against_variant`,
   ``--variant int8 --against fp32``); no golden data needed;
3. PyTorch itself, live (``onnxedge.export.layers.live_layer_reference``, where torch is), a
   `ComputedLayerReference` too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.deps import module_available
from onnxedge.runtime.errors import OnnxEdgeError
from onnxedge.runtime.parity.exposed import ExposedModel, run_exposed
from onnxedge.runtime.parity.layers import GoldenLayers, NoGoldenLayers, load_golden_layers
from onnxedge.runtime.parity.reference import Reference
from onnxedge.runtime.parity.tolerances import Target


class LayerReference(Protocol):
    """What the exposed tensors are compared with, for the batches it can give. ``complete``:
    it holds tensors of ``model.onnx`` only (golden layers), so one that ``model.onnx`` does not
    make is a bundle error; another model's tensors may have no counterpart."""

    description: str
    complete: bool

    def batch_for(self, batch: int) -> int:
        """The batch size it compares a row of ``batch`` at."""
        ...

    def inputs(self, batch: int) -> np.ndarray: ...

    def tensors(self, batch: int) -> Mapping[str, np.ndarray]: ...


@dataclasses.dataclass(frozen=True)
class GoldenLayerReference:
    """1. Golden layers stored in the bundle: a row is localized at its own batch size where
    they hold it, else at the largest they hold (on that batch's inputs)."""

    layers: GoldenLayers
    complete: bool = True

    @property
    def description(self) -> str:
        return self.layers.description

    def batch_for(self, batch: int) -> int:
        return batch if batch in self.layers.batches else max(self.layers.batch_sizes)

    def inputs(self, batch: int) -> np.ndarray:
        return self.layers.inputs[batch]

    def tensors(self, batch: int) -> Mapping[str, np.ndarray]:
        return self.layers.batches[batch]

    @property
    def scales(self) -> Mapping[str, float]:
        """The scale a tensor is judged at where not its own RMS (`GoldenLayers.scales`)."""
        return self.layers.scales

    @property
    def float32_errors(self) -> Mapping[str, float]:
        """PyTorch's own float32 error at each tensor (`GoldenLayers.float32_errors`)."""
        return self.layers.float32_errors

    @property
    def sequence_errors(self) -> Mapping[str, float]:
        """The same with global means summed in sequence (`GoldenLayers.sequence_errors`)."""
        return self.layers.sequence_errors


class ComputedLayerReference:
    """2. and 3.: layers computed on the parity reference's inputs (``compute``: inputs ->
    tensor -> array), at any batch size it holds, each batch once. ``target`` is where they are
    computed when that is the only difference from the row (the bundle's own graph on another
    provider): a row on that same target is not compared with it."""

    def __init__(
        self,
        compute: Callable[[np.ndarray], Mapping[str, np.ndarray]],
        reference: Reference,
        *,
        description: str,
        target: Target | None = None,
    ) -> None:
        self.compute = compute
        self.reference = reference
        self.description = description
        self.target = target
        self.complete = False
        self._done: dict[int, Mapping[str, np.ndarray]] = {}

    def batch_for(self, batch: int) -> int:
        return batch

    def inputs(self, batch: int) -> np.ndarray:
        return self.reference.batch(batch).inputs

    def tensors(self, batch: int) -> Mapping[str, np.ndarray]:
        if batch not in self._done:
            self._done[batch] = self.compute(self.inputs(batch))
        return self._done[batch]


def run_layer_reference(
    session: Any,
    reference: Reference,
    *,
    input_name: str,
    description: str,
    target: Target | None = None,
) -> ComputedLayerReference:
    """2. An exposed graph run by another session (another provider, or another model of the same
    graph: a variant against its original) as the reference."""
    return ComputedLayerReference(
        lambda inputs: run_exposed(session, input_name, inputs),
        reference,
        description=description,
        target=target,
    )


def golden_layer_reference(bundle: Bundle) -> GoldenLayerReference:
    """1. The bundle's golden layers; where it has none, the error says which references to use
    instead (and whether torch, for ``--reference live``, is here)."""
    try:
        return GoldenLayerReference(load_golden_layers(bundle))
    except NoGoldenLayers as e:
        live = "--reference live" + (
            "" if module_available("torch") else " (needs torch: pip install 'onnxedge[export]')"
        )
        raise NoGoldenLayers(
            f"cannot localize: {e}; try --against cpu (a cuda row) or fp32 (a variant), "
            f"re-export with --golden-layers (a --golden-layers-budget that fits a golden row), "
            f"or {live}"
        ) from None


def against_provider(
    exposed: ExposedModel, reference: Reference, target: Target
) -> ComputedLayerReference:
    """2. The bundle's exposed graph on another provider (``--against cpu``) as the reference; a
    provider that cannot run here is an error naming it."""
    try:
        session = exposed.session(target)
    except OnnxEdgeError as e:
        raise OnnxEdgeError(f"--against {describe_target(target)}: {e}") from None
    return run_layer_reference(
        session,
        reference,
        input_name=exposed.bundle.input.name,
        description=f"the same graph on {describe_target(target)}",
        target=target,
    )


def against_variant(bundle: Bundle, variant: str, reference: Reference) -> ComputedLayerReference:
    """2. Another model of the bundle (``--against fp32`` for an int8 row: ``model.onnx``) on the
    CPU as the reference."""
    exposed = ExposedModel.of(bundle, variant)
    return run_layer_reference(
        exposed.session(Target("cpu")),
        reference,
        input_name=bundle.input.name,
        description=f"the {exposed.variant} model ({exposed.model_path.name}) on cpu",
    )


def describe_target(target: Target) -> str:
    """``cpu``, ``cuda with tf32 off``: a target as the localisation names it."""
    return target.label + (f" with tf32 {target.tf32}" if target.tf32 else "")
