"""The layer check of parity's verdict: the intermediate tensors of ``model.onnx`` against the
bundle's golden layers, each within its layer bound.

An output check cannot see a change whose effect on the outputs is within what healthy engines
round (a 1% change of a squeeze-excitation gate's 1x1 convolution moves the logits of a random
mobilenetv3_small by 2-27 times PyTorch's float32 spread, as much as a healthy engine's rounding),
but the changed layer's own output moves by about 1e-2 of its scale, far above float32 rounding.
So `judge_layers`:

1. loads the golden layers (`load_golden_layers`): where the bundle has none (exported without
   them, a batch over the budget, packed with ``--no-golden``), it says so in one line
   (`LayerJudgement.line`) and the outputs alone are judged;
2. runs the exposed graph (`ExposedModel`: every intermediate tensor an output) once per target
   at the golden layers' batch (they hold one: a row of another batch size is judged there);
3. compares every tensor the golden layers hold, except the ones the row judges itself (the
   graph's output and the logits), with `compare_layer` against `layer_bound`: its largest
   error over the reference's RMS within ``CREST x rtol`` of the row's logits tolerance, scaled by
   its depth (`layer_tolerance`, the tolerance `parity --localize` uses), or where wider, the
   row's rounding factor times PyTorch's own float32 error at that tensor over its scale (the
   golden layers record it; the export verifies them against the same bound);
4. puts the result (`LayerCheck`) on each row of the target that ran in float32 arithmetic and
   is judged as fp32 (its tolerances carry a rounding factor: not TF32, bf16 or tolerances set by
   hand, where the guard alone judges the outputs; not a variant in fewer bits, which keeps its
   own judge): a tensor outside its bound fails the row, and the row names the first such layer.
   Where the exposed graph cannot run on the engine, the row says so and keeps its outputs'
   verdict.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.errors import BundleError, OnnxEdgeError
from onnxedge.runtime.parity.exposed import ExposedModel, run_exposed
from onnxedge.runtime.parity.golden import NoGoldenData
from onnxedge.runtime.parity.layer_compare import (
    LayerResult,
    TensorRecords,
    compare_layer,
    json_float,
    layer_tolerance,
)
from onnxedge.runtime.parity.layer_reference import GoldenLayerReference
from onnxedge.runtime.parity.layers import (
    GOLDEN_LAYERS,
    ModuleRef,
    NoGoldenLayers,
    layer_modules,
    load_golden_layers,
)
from onnxedge.runtime.parity.report import ParityReport
from onnxedge.runtime.parity.rows import FAILED, PASSED, ParityRow
from onnxedge.runtime.parity.tolerances import Target

NOT_RUN = "not run"


def layer_ratio(layer: LayerResult) -> float:
    """A tensor's error/scale over its layer bound (passes at 1 or less)."""
    if layer.tolerance > 0:
        return layer.scaled_error / layer.tolerance
    return 0.0 if layer.scaled_error == 0 else math.inf


@dataclasses.dataclass(frozen=True)
class LayerCheck:
    """3. for one target: every judged tensor at the golden layers' ``batch``, in graph order.
    Truthy when it ran and no tensor left its bound; ``reason``: why it could not run."""

    batch: int
    layers: tuple[LayerResult, ...] = ()
    reason: str = ""

    def __bool__(self) -> bool:
        return not self.reason and not self.failed

    @property
    def status(self) -> str:
        return NOT_RUN if self.reason else (FAILED if self.failed else PASSED)

    @property
    def failed(self) -> tuple[LayerResult, ...]:
        return tuple(layer for layer in self.layers if layer.failed)

    @property
    def worst(self) -> LayerResult | None:
        return max(self.layers, key=layer_ratio, default=None)

    @property
    def ratio(self) -> float:
        """The largest error/bound over the judged tensors (0 where none was judged)."""
        worst = self.worst
        return 0.0 if worst is None else layer_ratio(worst)

    def part(self, *, verbose: bool = False) -> str:
        """The row line's part: ``layers 0.031`` (its largest error/bound), every figure with
        ``verbose``."""
        if self.reason:
            return f"layers not checked: {self.reason}" if verbose else "layers not checked"
        if not verbose:
            return f"layers {_ratio(self.ratio)}"
        worst = self.worst
        text = f"layers: {len(self.layers)} tensors at batch {self.batch}"
        if worst is None:
            return text
        return (
            f"{text}, largest error/bound {_ratio(layer_ratio(worst))}: {worst.label()} "
            f"{worst.errors()}"
        )

    def failure(self) -> str:
        """Why the row fails on its layers: the first tensor (in graph order) outside its bound."""
        first = self.failed[0]
        count = len(self.failed)
        more = f", {count} of {len(self.layers)} outside" if count > 1 else ""
        return (
            f"layer {first.label()} error/bound {_ratio(layer_ratio(first))} at batch "
            f"{self.batch}: error/scale {first.scaled_error:.2g} > {first.tolerance:.2g}{more}"
        )

    def to_dict(self) -> dict[str, Any]:
        worst = self.worst
        return {
            "status": self.status,
            "batch": self.batch,
            "tensors": len(self.layers),
            "ratio": json_float(self.ratio),
            "worst": None if worst is None else worst.to_dict(),
            "failed": [layer.to_dict() for layer in self.failed],
            "reason": self.reason,
        }


def _ratio(value: float) -> str:
    """An error/bound as printed: two digits, whole numbers from 100 (``0.0097``, ``260``)."""
    return f"{value:.2g}" if value < 100 else f"{value:.0f}"


@dataclasses.dataclass(frozen=True)
class LayerJudgement:
    """What `judge_layers` did: the report with each judged row's `LayerCheck`, and one line on
    the layer check (what was judged, or why nothing was)."""

    report: ParityReport
    checked: bool
    line: str

    def to_dict(self) -> dict[str, Any]:
        return {"checked": self.checked, "line": self.line}


def golden_layers_or_none(bundle: Bundle) -> tuple[GoldenLayerReference | None, str]:
    """1. The bundle's golden layers, or None and why there are none."""
    try:
        return GoldenLayerReference(load_golden_layers(bundle)), ""
    except (NoGoldenLayers, NoGoldenData) as e:
        return None, str(e)


def judge_layers(
    bundle: Bundle,
    report: ParityReport,
    *,
    model: Path | None = None,
    golden: GoldenLayerReference | None = None,
) -> LayerJudgement:
    """1.-4. on ``report``'s rows of ``model`` (default: ``model.onnx``, whose tensors the golden
    layers hold; another file of the same graph, such as a changed copy, may be given)."""
    if golden is None:
        golden, why = golden_layers_or_none(bundle)
        if golden is None:
            return LayerJudgement(report, False, f"layers: not checked, {why}; outputs only")
    exposed = ExposedModel.of(bundle, path=model)
    judged = {exposed.output_name, exposed.logits_name}
    modules = layer_modules(bundle.manifest)
    checks: dict[tuple[Target, int], LayerCheck] = {}
    rows = []
    for row in report.rows:
        if not _float32_row(row):
            rows.append(row)
            continue
        target = Target(row.provider, row.tf32, engine=row.engine, precision=row.precision)
        batch = golden.batch_for(row.batch)
        if (target, batch) not in checks:
            judge = (row.tolerances.logits.rtol, row.tolerances.rounding_factor)
            checks[(target, batch)] = _check(exposed, target, golden, batch, judge, judged, modules)
        rows.append(with_layer_check(row, checks[(target, batch)]))
    tensors = sum(1 for t in golden.layers.tensors if t not in judged)
    sizes = ", ".join(map(str, golden.layers.batch_sizes))
    line = (
        f"layers: {tensors} intermediate tensors of {GOLDEN_LAYERS} (batch {sizes}) judged on "
        "each target (--no-layers: outputs only)"
    )
    return LayerJudgement(dataclasses.replace(report, rows=tuple(rows)), True, line)


def _float32_row(row: ParityRow) -> bool:
    """4.: a row that ran and is judged as float32 arithmetic is (its tolerances carry a rounding
    factor): not a variant in fewer bits, not TF32 or bf16, not tolerances set by hand."""
    return (
        row.ran
        and row.variant is None
        and row.logits_check is not None
        and row.tolerances.rounding_factor is not None
    )


def with_layer_check(row: ParityRow, check: LayerCheck) -> ParityRow:
    """4.: ``row`` with ``check``; failed, with the first layer outside its bound, where a tensor
    left its bound."""
    if check.status != FAILED:
        return dataclasses.replace(row, layers=check)
    reason = "; ".join(r for r in (row.reason, check.failure()) if r)
    return dataclasses.replace(row, layers=check, status=FAILED, reason=reason)


def _check(
    exposed: ExposedModel,
    target: Target,
    golden: GoldenLayerReference,
    batch: int,
    judge: tuple[float, float | None],
    judged: set[str],
    modules: dict[str, ModuleRef],
) -> LayerCheck:
    """2. and 3. for one target at ``batch``; ``judge``: the row's relative logits tolerance and
    rounding factor."""
    rtol, factor = judge
    expected = golden.tensors(batch)
    made = {t.name for t in exposed.tensors} | set(exposed.unexposed)
    strange = sorted(set(expected) - made)
    if strange:
        raise BundleError(
            f"{GOLDEN_LAYERS} holds tensors that {exposed.model_path.name} does not make: "
            + ", ".join(strange[:5])
            + (", ..." if len(strange) > 5 else "")
        )
    try:
        actual = run_exposed(
            exposed.session(target), exposed.bundle.input.name, golden.inputs(batch)
        )
    except OnnxEdgeError as e:
        if isinstance(e, BundleError):
            raise
        return LayerCheck(batch, reason=str(e))
    records = TensorRecords.of(golden)
    results = tuple(
        compare_layer(
            t,
            actual[t.name],
            expected[t.name],
            tolerance=records.bound(
                t.name, layer_tolerance(rtol, t.depth, exposed.max_depth), expected[t.name], factor
            ),
            module=modules.get(t.name),
            scale=records.scales.get(t.name),
        )
        for t in exposed.tensors
        if t.name in expected and t.name not in judged
    )
    return LayerCheck(batch, results)
