"""Where a parity row goes wrong: the first layer of ``model.onnx`` whose output leaves its
tolerance, named by ONNX node and PyTorch module.

`localize` runs the graph with every intermediate tensor exposed (`exposed`; the shipped model is
never changed) on the row's provider and compares each tensor, in the graph's topological order,
with its reference (`layer_compare`: judged against the tensor's own scale): golden layers
stored in the bundle, the same graph on another provider, another of the bundle's models, or
PyTorch live (`layer_reference`).

A variant's graph keeps the tensor names of ``model.onnx`` where it computes the same tensor
(onnxruntime's quantisation inserts Q/DQ pairs beside them, and its pre-processing fuses a
convolution with its ReLU, the fused node keeping the convolution's name and making the ReLU's
tensor); tensors with no counterpart in the reference are listed as having none, and a fused
node is named by both modules (``conv1 + relu1``).

Exposing outputs can change which fusions onnxruntime applies, so each `Localization` also says
whether the localizing run reproduced the row's failure, judged as the row was; the row's verdict
stays the normal run's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from onnxedge.runtime.bundle.outputs import (
    BINARY_KINDS,
    PROBABILITIES,
    SIGMOID_PROBABILITY,
    centred_logits,
    probabilities,
)
from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.errors import BundleError, OnnxEdgeError, first_line
from onnxedge.runtime.lines import fit
from onnxedge.runtime.parity.error_share import ErrorShare, error_shares
from onnxedge.runtime.parity.exposed import ExposedModel, run_exposed
from onnxedge.runtime.parity.layer_compare import (
    LayerResult,
    TensorRecords,
    compare_layer,
    layer_tolerance,
)
from onnxedge.runtime.parity.layer_reference import LayerReference, describe_target
from onnxedge.runtime.parity.layers import ModuleRef, layer_modules
from onnxedge.runtime.parity.reference import Reference
from onnxedge.runtime.parity.rounding import Judge
from onnxedge.runtime.parity.rows import FAILED, PASSED, ParityRow
from onnxedge.runtime.parity.tolerances import Target
from onnxedge.runtime.parity.variant_judge import judge_variant, reduced_precision
from onnxedge.runtime.variants.manifest import FP32

LOCALIZE_WHEN = ("failed", "always")
LOCALIZED, NOT_LOCALIZED = "LOCALIZED", "NOT LOCALIZED"


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
    # A variant in fewer bits: every compared tensor's share of the error, largest first
    # (`onnxedge.runtime.parity.error_share`); empty for fp32, which names its first divergent.
    shares: tuple[ErrorShare, ...] = ()

    def __bool__(self) -> bool:
        if self.shares:
            return self.shares[0].share > 0
        return self.first_divergent is not None

    @property
    def first_divergent(self) -> LayerResult | None:
        return next((layer for layer in self.layers if layer.failed), None)

    def largest(self, count: int = 3) -> tuple[LayerResult, ...]:
        """The ``count`` compared tensors with the largest error over their scale, largest first
        (an int8 variant against fp32: where quantisation costs most)."""
        compared = [layer for layer in self.layers if layer.compared]
        return tuple(sorted(compared, key=lambda x: -x.scaled_error)[:count])

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
        if self.shares:
            return f"{LOCALIZED if self else NOT_LOCALIZED} | {head} | {self._ranking()} | " + (
                self.reproduction()
            )
        first = self.first_divergent
        if first is None:
            compared = sum(1 for layer in self.layers if layer.compared)
            what = (
                f"every one of {compared} tensors compared is within its tolerance"
                if compared
                else "no tensor of the graph has a reference to compare with"
            )
            return f"{NOT_LOCALIZED} | {head} | {what} | {self.reproduction()}"
        what = f"first divergent: {first.label()}, tensor {first.tensor.name!r}: {first.errors()}"
        return f"{LOCALIZED} | {head} | {what} | {self.reproduction()}"

    def _ranking(self) -> str:
        """The layers that add most of the error: ``largest share of the error: Conv 'c1'
        (module conv1 ...) adds 0.11 of 0.27 error/scale (41%); then ... 30%, ... 12%``."""
        top, *rest = self.shares
        total = sum(s.added for s in self.shares)
        if top.share <= 0:
            return "no layer adds error: every tensor is as its reference"
        text = (
            f"largest share of the error: {top.layer.label()} adds {top.added:.2g} of "
            f"{total:.2g} error/scale ({100 * top.share:.0f}%)"
        )
        then = [f"{s.layer.label()} {100 * s.share:.0f}%" for s in rest[:2] if s.share > 0]
        return text + (f"; then {', '.join(then)}" if then else "")

    def table(self) -> list[str]:
        """Every exposed tensor in graph order, aligned for the terminal."""
        if self.shares:
            return self._share_table()
        header = ("#", "node", "op", "module", "max_abs", "max_rel", "err/scale", "tol", "status")
        rows = [header]
        for layer in self.layers:
            if not layer.compared:
                continue  # listed by `lines` (and in the JSON)
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
        return _aligned(rows)

    def _share_table(self) -> list[str]:
        """A variant's compared tensors in graph order, with the error each adds and its share."""
        header = ("#", "node", "op", "module", "max_abs", "err/scale", "added", "share")
        by_tensor = {s.layer.tensor.name: s for s in self.shares}
        rows = [header]
        for layer in self.layers:
            s = by_tensor.get(layer.tensor.name)
            if s is None:
                continue
            rows.append(
                (
                    str(layer.tensor.index),
                    layer.tensor.node,
                    layer.tensor.op_type,
                    str(layer.module) if layer.module else "-",
                    f"{layer.max_abs_error:.2g}",
                    f"{layer.scaled_error:.2g}",
                    f"{s.added:.2g}",
                    f"{100 * s.share:.0f}%",
                )
            )
        return _aligned(rows)

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
        missing = [layer.tensor.name for layer in self.layers if not layer.compared]
        if missing:
            shown = ", ".join(missing[:6]) + (
                f", and {len(missing) - 6} more" if len(missing) > 6 else ""
            )
            notes.append(f"  (no reference for {len(missing)} tensors, not in the table: {shown})")
        largest = [layer for layer in self.largest() if layer.scaled_error > 0]
        if self.layers and largest:
            notes.append(
                "  largest error/scale: "
                + "; ".join(f"{layer.label()} {layer.scaled_error:.2g}" for layer in largest)
            )
        # Each line within LINE_WIDTH columns (wrapped); the table's rows are narrower already.
        return [fit(str(self)), *map(fit, notes), *(self.table() if self.layers else [])]

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
            "ranking": [s.to_dict() for s in self.shares],
            "largest": [layer.tensor.name for layer in self.largest()],
            "layers": [layer.to_dict() for layer in self.layers],
            "unexposed": list(self.unexposed),
            "reason": self.reason,
        }


def _aligned(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]


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
    modules = _modules(bundle, exposed)
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
            why = (
                f"the row runs on {describe_target(target)}, the reference; "
                "choose another with --against"
            )
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
    if strange and layers.complete and exposed.variant == FP32:
        raise BundleError(
            "the layer reference holds tensors that model.onnx does not make: "
            + ", ".join(strange[:5])
            + (", ..." if len(strange) > 5 else "")
        )
    actual = run_exposed(session, exposed.bundle.input.name, inputs)
    judged = _row_judges(exposed, row)
    # Golden layers may judge a tensor at another scale, and record PyTorch's own float32 error
    # at it: the bound is the layer check's (`layer_compare.layer_bound`).
    records = TensorRecords.of(layers)
    rtol, factor = row.tolerances.logits.rtol, row.tolerances.rounding_factor
    results = tuple(
        compare_layer(
            t,
            actual[t.name],
            expected.get(t.name),
            tolerance=records.bound(
                t.name,
                layer_tolerance(rtol, t.depth, exposed.max_depth),
                expected.get(t.name),
                factor,
            ),
            row_judge=judged.get(t.name),
            module=modules.get(t.name),
            scale=records.scales.get(t.name),
        )
        for t in exposed.tensors
    )
    status, detail = _judge_outputs(actual, inputs, batch, exposed, reference, row)
    if (
        status == PASSED
        and getattr(row.layers, "status", None) == FAILED
        and any(r.failed for r in results if r.row_judge is None)
    ):  # the row failed its layer check: judged again on this run
        status, detail = FAILED, f"{detail}, a layer outside its bound"
    ranked = reduced_precision(exposed.bundle.variants.get(exposed.variant))
    return Localization(
        row=row,
        batch=batch,
        reference=layers.description,
        layers=results,
        localizing_run=status,
        localizing_detail=detail,
        unexposed=exposed.unexposed,
        shares=error_shares(results) if ranked else (),
    )


def _modules(bundle: Bundle, exposed: ExposedModel) -> dict[str, ModuleRef]:
    """The tensor -> module map for ``exposed``: the manifest's (recorded for ``model.onnx``);
    in a variant, a node that kept its name but makes another module's tensor (a convolution
    fused with its ReLU) is named by both."""
    modules = layer_modules(bundle.manifest)
    if exposed.variant == FP32:
        return modules
    try:
        original = onnx.load(str(bundle.model_path), load_external_data=False)
    except Exception as e:  # verified by Bundle.open; a file changed since is the bundle's error
        raise BundleError(f"{bundle.model_path} is not an ONNX model: {first_line(e)}") from None
    first = {n.name: modules.get(n.output[0]) for n in original.graph.node if n.name and n.output}
    named = dict(modules)
    for t in exposed.tensors:
        was, own = first.get(t.node), modules.get(t.name)
        if was is not None and own is not None and was.name != own.name:
            named[t.name] = ModuleRef(f"{was.name} + {own.name}", f"{was.cls} + {own.cls}")
    return named


def _row_judges(exposed: ExposedModel, row: ParityRow) -> dict[str, Judge]:
    """The tensors the row judges, with the row's judge for each: the output (probabilities or
    logits, as its kind says) and the logits tensor. A variant's row (judged as a variant) judges
    none of its layers: they are ranked by their share of the error instead."""
    if row.variant is not None or row.prob_check is None or row.logits_check is None:
        return {}
    logits = row.logits_check.judge
    sigmoid_or_softmax = exposed.kind in (SIGMOID_PROBABILITY, PROBABILITIES)
    on_output = row.prob_check.judge if sigmoid_or_softmax else logits
    return {exposed.logits_name: logits, exposed.output_name: on_output}


def _judge_outputs(
    actual: Mapping[str, np.ndarray],
    inputs: np.ndarray,
    batch: int,
    exposed: ExposedModel,
    reference: Reference | None,
    row: ParityRow,
) -> tuple[str, str]:
    """The localizing run's outputs judged as the row's were: probabilities and logits within
    the row's bounds of the parity reference (``""`` and why where that cannot be done)."""
    if reference is None or batch not in reference.batches:
        return "", f"the parity reference has no batch of {batch}"
    ref = reference.batches[batch]
    if not np.array_equal(ref.inputs, inputs):
        return "", f"the layer reference's batch {batch} has other inputs than the parity one"
    kind = exposed.kind
    if row.variant is not None:  # judged again as the variant's row was
        threshold = exposed.bundle.threshold if kind in BINARY_KINDS else None
        verdict = judge_variant(
            row.variant.bounds,
            probabilities(actual[exposed.output_name], kind),
            ref.prob,
            ref.kinds,
            fp32_guard=row.tolerances.prob,
            threshold=threshold,
        )
        if verdict.failures:
            return FAILED, verdict.failures[0]
        return PASSED, "within the variant's bounds"
    if row.prob_check is None or row.logits_check is None:
        return "", "the row has no bounds to judge by"
    checks = {
        "prob": row.prob_check.judge.check(
            probabilities(actual[exposed.output_name], kind), ref.prob
        ),
        "logits": row.logits_check.judge.check(
            centred_logits(actual[exposed.logits_name], kind), centred_logits(ref.logits, kind)
        ),
    }
    failing = [name for name, c in checks.items() if not c]
    if failing:
        return FAILED, f"{' and '.join(failing)} outside the row's bound"
    return PASSED, "prob and logits within the row's bounds"
