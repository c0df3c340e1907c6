"""Where a parity row goes wrong: the first layer of ``model.onnx`` whose output leaves its
tolerance, named by ONNX node and PyTorch module.

`localize` runs the graph with every intermediate tensor exposed (`exposed`; the shipped model is
never changed) on the row's provider and compares each tensor, in the graph's topological order,
with its reference (`layer_compare`: judged against the tensor's own scale). The references
(`LayerReference`):

1. golden layers stored in the bundle at export (`golden_layer_reference`): no torch needed;
2. the same exposed graph run elsewhere (`run_layer_reference`): on another execution provider
   (`against_provider`, ``--against cpu``) or another model of the same graph (a variant); no
   golden data needed;
3. PyTorch itself, live (``onnxedge.export.layers.live_layer_reference``, where torch is).

Exposing outputs can change which fusions onnxruntime applies, so each `Localization` also says
whether the localizing run reproduced the row's failure, judged as the row was; the row's verdict
stays the normal run's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from onnxedge.runtime.bundle import Bundle
from onnxedge.runtime.compare import compare_arrays
from onnxedge.runtime.deps import module_available
from onnxedge.runtime.errors import BundleError, OnnxEdgeError
from onnxedge.runtime.outputs import (
    PROBABILITIES,
    SIGMOID_PROBABILITY,
    centred_logits,
    probabilities,
)
from onnxedge.runtime.parity.exposed import ExposedModel, run_exposed
from onnxedge.runtime.parity.layer_compare import LayerResult, compare_layer, layer_tolerance
from onnxedge.runtime.parity.layers import (
    GoldenLayers,
    ModuleRef,
    NoGoldenLayers,
    layer_modules,
    load_golden_layers,
)
from onnxedge.runtime.parity.reference import Reference
from onnxedge.runtime.parity.rows import FAILED, PASSED, ParityRow
from onnxedge.runtime.parity.tolerances import Target, Tolerance, Tolerances

LOCALIZE_WHEN = ("failed", "always")
LOCALIZED, NOT_LOCALIZED = "LOCALIZED", "NOT LOCALIZED"


# --- references ---------------------------------------------------------------------------------


class LayerReference(Protocol):
    """What the exposed tensors are compared with, for the batches it can give."""

    description: str

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

    @property
    def description(self) -> str:
        return self.layers.description

    def batch_for(self, batch: int) -> int:
        return batch if batch in self.layers.batches else max(self.layers.batch_sizes)

    def inputs(self, batch: int) -> np.ndarray:
        return self.layers.inputs[batch]

    def tensors(self, batch: int) -> Mapping[str, np.ndarray]:
        return self.layers.batches[batch]


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
        live = (
            "use --reference live (torch is installed here)"
            if module_available("torch")
            else "install torch (pip install 'onnxedge[export]') and use --reference live"
        )
        raise NoGoldenLayers(
            f"cannot localize: {e}. Compare with another execution provider instead "
            "(--against cpu, for a row on cuda) or with another variant of the model, re-export "
            f"with --golden-layers (and a --golden-layers-budget that fits them), or {live}"
        ) from None


def against_provider(
    exposed: ExposedModel, reference: Reference, target: Target
) -> ComputedLayerReference:
    """2. The bundle's exposed graph on another provider (``--against cpu``) as the reference; a
    provider that cannot run here is an error naming it."""
    try:
        session = exposed.session(target)
    except OnnxEdgeError as e:
        raise OnnxEdgeError(f"--against {_where(target)}: {e}") from None
    return run_layer_reference(
        session,
        reference,
        input_name=exposed.bundle.input.name,
        description=f"the same graph on {_where(target)}",
        target=target,
    )


def _where(target: Target) -> str:
    return target.label + (f" with tf32 {target.tf32}" if target.tf32 else "")


# --- the result of one row ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Localization:
    """One parity row localized: every exposed tensor against its reference, in graph order.
    Truthy when a layer diverged. Rows of one target that the reference compares at the same
    batch (golden layers hold one) share a localization: ``also`` holds the others.

    ``localizing_run``: the localizing run's outputs judged as the row's were (passed, failed,
    or "" where the parity reference has no batch to judge them on); ``reproduced`` whether it
    failed as the row did (None where no row of it failed, or it was not judged). The rows'
    verdicts are the normal run's either way."""

    row: ParityRow
    batch: int  # the batch size it was localized at (the golden layers may not hold the row's)
    reference: str
    also: tuple[ParityRow, ...] = ()
    layers: tuple[LayerResult, ...] = ()
    localizing_run: str = ""
    localizing_detail: str = ""
    unexposed: tuple[str, ...] = ()
    reason: str = ""  # why it could not be localized

    def __bool__(self) -> bool:
        return self.first_divergent is not None

    @property
    def first_divergent(self) -> LayerResult | None:
        return next((layer for layer in self.layers if layer.failed), None)

    @property
    def rows(self) -> tuple[ParityRow, ...]:
        return (self.row, *self.also)

    @property
    def row_failed(self) -> bool:
        return any(r.status == FAILED for r in self.rows)

    @property
    def reproduced(self) -> bool | None:
        if not self.row_failed or not self.localizing_run:
            return None
        return self.localizing_run == FAILED

    def reproduction(self) -> str:
        """What the localizing run says about the row's failure, in words."""
        if self.reason:
            return ""
        if not self.localizing_run:
            return f"the localizing run was not judged: {self.localizing_detail}"
        where = "" if self.batch == self.row.batch else f" at batch {self.batch}"
        if not self.row_failed:
            return f"the row passed; the localizing run {self.localizing_run}{where}"
        if self.reproduced:
            return f"the localizing run fails as the row did{where} ({self.localizing_detail})"
        return (
            f"the localizing run passes{where}: with its tensors exposed the engine computed "
            "otherwise (other fusions) than in the normal run, whose FAILED verdict stands"
        )

    def __str__(self) -> str:
        head = f"{self.row.label} | batch {self.batch} | {self.row.tf32_label}"
        if self.reason:
            return f"{NOT_LOCALIZED} | {head} | {self.reason}"
        first = self.first_divergent
        if first is None:
            compared = sum(1 for layer in self.layers if layer.compared)
            what = f"every one of {compared} tensors compared is within its tolerance"
            return f"{NOT_LOCALIZED} | {head} | {what} | {self.reproduction()}"
        what = f"first divergent: {first.label()}, tensor {first.tensor.name!r}: {first.errors()}"
        return f"{LOCALIZED} | {head} | {what} | {self.reproduction()}"

    def table(self) -> list[str]:
        """Every exposed tensor in graph order, aligned for the terminal."""
        header = ("#", "node", "op", "module", "max_abs", "max_rel", "err/scale", "tol", "status")
        rows = [header]
        for layer in self.layers:
            number = (lambda v: f"{v:.2g}") if layer.compared else (lambda _v: "-")
            rows.append(
                (
                    str(layer.tensor.index),
                    layer.tensor.node,
                    layer.tensor.op_type,
                    str(layer.module) if layer.module else "-",
                    number(layer.max_abs_error),
                    number(layer.max_rel_error),
                    number(layer.scaled_error),
                    layer.tolerance_text(),
                    layer.status.upper() if layer.failed else layer.status,
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        return [
            "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows
        ]

    def lines(self) -> list[str]:
        """The status line, notes, and the table."""
        notes = []
        elsewhere = [r.batch for r in self.rows if r.batch != self.batch]
        if elsewhere:
            which = ", ".join(map(str, elsewhere))
            notes.append(
                f"  (for the rows at batch {which} too: the reference holds the layers of batch "
                f"{self.batch} only, so they are compared there)"
            )
        if self.unexposed:
            notes.append(f"  (not compared, element type unknown: {', '.join(self.unexposed)})")
        return [str(self), *notes, *(self.table() if self.layers else [])]

    def to_dict(self) -> dict[str, Any]:
        first = self.first_divergent
        return {
            "line": str(self),
            "label": self.row.label,
            "provider": self.row.provider,
            "engine": self.row.engine,
            "precision": self.row.precision,
            "tf32": self.row.tf32,
            "batch": self.row.batch,
            "rows": [{"batch": r.batch, "status": r.status} for r in self.rows],
            "localized_batch": self.batch,
            "row_status": FAILED if self.row_failed else self.row.status,
            "reference": self.reference,
            "reproduced": self.reproduced,
            "localizing_run": {
                "status": self.localizing_run or None,
                "detail": self.reproduction(),
            },
            "first_divergent": None if first is None else first.to_dict(),
            "layers": [layer.to_dict() for layer in self.layers],
            "unexposed": list(self.unexposed),
            "reason": self.reason,
        }


# --- the run ------------------------------------------------------------------------------------


def localize(
    bundle: Bundle,
    rows: Sequence[ParityRow],
    layers: LayerReference,
    *,
    reference: Reference | None = None,
    when: str = "failed",
    exposed: ExposedModel | None = None,
) -> tuple[Localization, ...]:
    """Localize the rows that failed (``when="always"``: every row that ran) against ``layers``.

    ``reference`` is the parity reference the rows were judged against: the localizing run's
    outputs are judged against it as the row's were, to say whether it reproduced the failure.
    A row that cannot be localized (its engine fails on the exposed graph) says why.
    """
    if when not in LOCALIZE_WHEN:
        raise OnnxEdgeError(f"expected --localize {' or '.join(LOCALIZE_WHEN)}, found {when!r}")
    chosen = [r for r in rows if r.ran and (when == "always" or r.status == FAILED)]
    if not chosen:
        return ()
    exposed = exposed or ExposedModel.of(bundle)
    modules = layer_modules(bundle.manifest)
    groups: dict[tuple[Target, int], list[ParityRow]] = {}
    for row in chosen:
        target = Target(row.provider, row.tf32, engine=row.engine, precision=row.precision)
        groups.setdefault((target, layers.batch_for(row.batch)), []).append(row)
    sessions: dict[Target, Any] = {}
    found = []
    for (target, batch), group in groups.items():
        first = next((r for r in group if r.batch == batch), group[0])
        also = tuple(r for r in group if r is not first)
        not_localized = Localization(first, first.batch, layers.description, also=also)
        if getattr(layers, "target", None) == target:
            why = f"the row runs on {_where(target)}, the reference; choose another with --against"
            found.append(dataclasses.replace(not_localized, reason=why))
            continue
        try:
            if target not in sessions:
                sessions[target] = exposed.session(target)
            one = localize_row(first, sessions[target], exposed, layers, modules, reference)
            found.append(dataclasses.replace(one, also=also))
        except BundleError:
            raise
        except OnnxEdgeError as e:
            found.append(dataclasses.replace(not_localized, reason=str(e)))
    return tuple(found)


def localize_row(
    row: ParityRow,
    session: Any,
    exposed: ExposedModel,
    layers: LayerReference,
    modules: Mapping[str, ModuleRef],
    reference: Reference | None,
) -> Localization:
    """One row: the exposed graph on the reference's inputs, every tensor compared."""
    batch = layers.batch_for(row.batch)
    inputs = layers.inputs(batch)
    expected = layers.tensors(batch)
    made = {t.name for t in exposed.tensors} | set(exposed.unexposed)
    strange = sorted(set(expected) - made)
    if strange:
        raise BundleError(
            "the layer reference holds tensors that model.onnx does not make: "
            + ", ".join(strange[:5])
            + (", ..." if len(strange) > 5 else "")
        )
    actual = run_exposed(session, exposed.bundle.input.name, inputs)
    judged = _row_tolerances(exposed, row.tolerances)
    rtol = row.tolerances.logits.rtol
    results = tuple(
        compare_layer(
            t,
            actual[t.name],
            expected.get(t.name),
            tolerance=layer_tolerance(rtol, t.depth, exposed.max_depth),
            elementwise=judged.get(t.name),
            module=modules.get(t.name),
        )
        for t in exposed.tensors
    )
    status, detail = _judge_outputs(actual, inputs, batch, exposed, reference, row.tolerances)
    return Localization(
        row=row,
        batch=batch,
        reference=layers.description,
        layers=results,
        localizing_run=status,
        localizing_detail=detail,
        unexposed=exposed.unexposed,
    )


def _row_tolerances(exposed: ExposedModel, tolerances: Tolerances) -> dict[str, Tolerance]:
    """The tensors the row judges, with the row's tolerance for each: the output (probabilities
    or logits, as its kind says) and the logits tensor."""
    on_output = (
        tolerances.prob
        if exposed.kind in (SIGMOID_PROBABILITY, PROBABILITIES)
        else tolerances.logits
    )
    return {exposed.logits_name: tolerances.logits, exposed.output_name: on_output}


def _judge_outputs(
    actual: Mapping[str, np.ndarray],
    inputs: np.ndarray,
    batch: int,
    exposed: ExposedModel,
    reference: Reference | None,
    tolerances: Tolerances,
) -> tuple[str, str]:
    """The localizing run's outputs judged as the row's were: probabilities and logits within
    the row's tolerances of the parity reference (``""`` and why where that cannot be done)."""
    if reference is None or batch not in reference.batches:
        return "", f"the parity reference has no batch of {batch}"
    ref = reference.batches[batch]
    if not np.array_equal(ref.inputs, inputs):
        return "", f"the layer reference's batch {batch} has other inputs than the parity one"
    kind = exposed.kind
    checks = {
        "prob": compare_arrays(
            probabilities(actual[exposed.output_name], kind),
            ref.prob,
            atol=tolerances.prob.atol,
            rtol=tolerances.prob.rtol,
        ),
        "logits": compare_arrays(
            centred_logits(actual[exposed.logits_name], kind),
            centred_logits(ref.logits, kind),
            atol=tolerances.logits.atol,
            rtol=tolerances.logits.rtol,
        ),
    }
    failing = [name for name, c in checks.items() if not c]
    if failing:
        return FAILED, f"{' and '.join(failing)} outside the row's tolerance"
    return PASSED, "prob and logits within the row's tolerance"
