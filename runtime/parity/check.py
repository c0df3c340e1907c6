"""`check_parity`: `onnxedge parity` as a function. It opens the bundle, picks the model (the
bundle's model.onnx or one of its variants) and the reference (golden data or PyTorch live), runs
`run_parity` on the targets, adds the rows of targets a variant is not made for, and localizes the
rows asked for; it returns a `ParityResult` and prints nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.classifier.args import check_batch_size
from onnxedge.runtime.classifier.loader import warn_if_8_bit_image_conv
from onnxedge.runtime.engines.base import ONNXRUNTIME, OPENVINO, check_engine
from onnxedge.runtime.errors import ArgumentError, OnnxEdgeError, first_line
from onnxedge.runtime.parity.golden import load_golden
from onnxedge.runtime.parity.layer_check import golden_layers_or_none, judge_layers
from onnxedge.runtime.parity.layer_reference import GoldenLayerReference
from onnxedge.runtime.parity.reference import DEFAULT_BATCH_SIZES, Reference
from onnxedge.runtime.parity.report import ParityReport
from onnxedge.runtime.parity.rows import FAILED, SKIPPED, ParityRow
from onnxedge.runtime.parity.run import run_parity
from onnxedge.runtime.parity.tolerances import (
    PARITY_PROVIDERS,
    Target,
    ToleranceOverrides,
    make_targets,
)
from onnxedge.runtime.parity.variant_judge import VariantBounds
from onnxedge.runtime.variants.manifest import (
    FP32,
    FP32_U8,
    INT8,
    INT8_U8,
    provider_for,
    variant_key,
)

# The bundle's models ``against`` runs on the CPU as the reference: ONNX files (a .ort file cannot
# be exposed) that the CPU EP runs as made (fp16 is made for the CUDA EP).
REFERENCE_VARIANTS = (FP32, INT8)
LOCALIZE_WHEN = ("failed", "always")
REFERENCES = ("golden", "live")


@dataclasses.dataclass(frozen=True)
class ParityResult:
    """What `check_parity` found: the report (true when parity holds), the model file checked
    and its variant, and, when localization was asked for, each localized row."""

    report: ParityReport
    variant: str
    model: Path
    bundle: Path
    localized: bool = False
    localizations: tuple[Any, ...] = ()  # `onnxedge.runtime.parity.localize.Localization`
    # How the variant is judged: its bounds (`VariantBounds`) where it is judged as a variant,
    # else None (fp32, or a variant in fewer bits whose manifest records no gate figures).
    bounds: VariantBounds | None = None
    # The layer check (`onnxedge.runtime.parity.layer_check`): whether the rows' intermediate
    # tensors were judged, and one line saying what was judged or why nothing was ("" for a
    # variant, which keeps its own judge).
    layers_checked: bool = False
    layers_line: str = ""

    @property
    def judged_as(self) -> str:
        """One line on how the rows were judged, for a variant."""
        if self.bounds is not None:
            return f"judged as a variant: {self.bounds.describe()}"
        if self.variant == FP32:
            return "judged as fp32: PyTorch's float32 rounding of the model"
        return f"judged as fp32: the manifest records no gate figures for {self.variant}"

    def __bool__(self) -> bool:
        return bool(self.report)

    def to_dict(self) -> dict[str, Any]:
        payload = {
            "variant": self.variant,
            "judged_as": self.judged_as,
            "variant_bounds": None if self.bounds is None else self.bounds.to_dict(),
            **self.report.to_dict(),
        }
        if self.layers_line:
            payload["layers"] = {"checked": self.layers_checked, "line": self.layers_line}
        if self.localized:
            payload["localization"] = [loc.to_dict() for loc in self.localizations]
        return payload


def check_parity(
    bundle: str | Path,
    *,
    providers: Sequence[str] = PARITY_PROVIDERS,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    engines: Sequence[str] = (ONNXRUNTIME,),
    precisions: Sequence[str] = ("f32",),
    require: Sequence[str] = (),
    tf32: str = "off",
    tolerances: ToleranceOverrides | None = None,
    reference: str = "golden",
    checkpoint: Path | None = None,
    variant: str = FP32,
    localize: str | None = None,
    against: str | None = None,
    layers: bool | None = None,
) -> ParityResult:
    """Does BUNDLE's model compute under ONNX Runtime (and OpenVINO, in ``engines``) what the
    PyTorch model computed? One row per provider (or engine) x batch size, as `onnxedge parity`.

    ``providers``: ``cpu``, ``cuda`` (one that cannot run here gives SKIPPED rows); ``require``:
    providers (or ``openvino``) whose skipped rows are failures. ``tf32``: ``off``, ``on`` or
    ``both`` on the CUDA EP. ``tolerances`` overrides the defaults (`ToleranceOverrides`).
    ``reference``: ``golden`` (the bundle's golden data, no torch) or ``live`` (PyTorch, from
    ``checkpoint``). ``variant``:
    one of the models `onnxedge optimize` added, instead of model.onnx. ``localize``: ``failed``
    or ``always``: the first layer that leaves its tolerance, per failed (or every) row, against
    the golden layers, the same graph on the provider ``against``, another variant (``against``
    ``fp32`` or ``int8``), or PyTorch live. ``layers``: judge model.onnx's intermediate tensors
    against the bundle's golden layers too (`onnxedge.runtime.parity.layer_check`): None where it
    has them (else the outputs alone, and a line says why), True always (an error where it has
    none), False never; a variant keeps its own judge (True is an error there).
    """
    sequences = {"providers": providers, "engines": engines, "precisions": precisions}
    for name, names in {**sequences, "require": require}.items():
        if isinstance(names, str):  # taken letter by letter: "no tolerances for provider 'c'"
            raise ArgumentError(f"{name}: expected a sequence such as ({names!r},), got a str")
        if not isinstance(names, Iterable):
            raise ArgumentError(f"{name}: expected a sequence of names, got {names!r}")
    batch_sizes = tuple(check_batch_size(b) for b in batch_sizes or ())  # none: the reference's
    if reference not in REFERENCES:  # a typo ran the golden check as if asked for
        raise ArgumentError(
            f"reference: expected one of {', '.join(REFERENCES)}, got {reference!r}"
        )
    if checkpoint is not None and reference != "live":
        raise OnnxEdgeError("a checkpoint is for the live reference (--reference live)")
    if localize is not None and localize not in LOCALIZE_WHEN:
        raise OnnxEdgeError(
            f"localize: expected one of {', '.join(LOCALIZE_WHEN)}, got {localize!r}"
        )
    if against is not None and localize is None:  # it would be ignored
        raise ArgumentError(f"against ({against!r}) goes with localize; got localize None")
    variant = variant_key(variant)
    tolerances = tolerances or ToleranceOverrides()
    engines = tuple(check_engine(e) for e in engines)  # an unknown one would run nothing
    if OPENVINO in require:
        engines = (*engines, OPENVINO)
    if OPENVINO not in engines and tuple(precisions) != ("f32",):
        raise OnnxEdgeError("precisions are OpenVINO's inference precisions (add engine openvino)")
    targets = make_targets(
        tuple(dict.fromkeys(p for p in (*providers, *require) if p != OPENVINO)),
        tf32,
        engines=engines,
        precisions=tuple(precisions),
    )
    opened = Bundle.open(bundle)
    model = _variant_model(opened, variant)
    golden_layers, no_layers = _golden_layers(opened, variant, layers, tolerances)
    if reference == "live":
        ref = _live_reference(opened.manifest, batch_sizes, checkpoint)
    else:
        ref = load_golden(opened)
    if localize is not None:  # before the run: a bundle without its reference fails fast
        from onnxedge.runtime.parity.exposed import ExposedModel

        exposed = ExposedModel.of(opened, variant)
        layers = layer_reference(
            opened,
            ref,
            exposed,
            against=against,
            live=reference == "live",
            checkpoint=checkpoint,
        )
    targets, not_for = _targets_for_variant(opened, variant, targets)
    bounds = VariantBounds.of(opened.variants.get(variant))
    report = run_parity(
        opened,
        ref,
        targets=targets,
        batch_sizes=batch_sizes,
        overrides=tolerances,
        required=require,
        model=model,
        variant=bounds,
    )
    if not_for:  # the targets the variant is not made for, SKIPPED (FAILED where required)
        sizes = batch_sizes or ref.batch_sizes
        skipped = [_not_run(t, why, sizes, tolerances, require) for t, why in not_for]
        report = dataclasses.replace(report, rows=(*[r for g in skipped for r in g], *report.rows))
    layers_line = ""
    if golden_layers is not None:
        judgement = judge_layers(opened, report, golden=golden_layers)
        report, layers_line = judgement.report, judgement.line
    elif variant == FP32:
        layers_line = f"layers: not checked, {no_layers}; outputs only"
    found: tuple[Any, ...] = ()
    if localize is not None:
        from onnxedge.runtime.parity.localize import localize as localize_rows

        found = localize_rows(
            opened, report.rows, layers, reference=ref, when=localize, exposed=exposed
        )
    return ParityResult(
        report=report,
        variant=variant,
        model=model,
        bundle=opened.path,
        localized=localize is not None,
        localizations=found,
        bounds=bounds,
        layers_checked=golden_layers is not None,
        layers_line=layers_line,
    )


def _golden_layers(
    bundle: Any,
    variant: str,
    layers: bool | None,
    overrides: ToleranceOverrides | None = None,
) -> tuple[GoldenLayerReference | None, str]:
    """The golden layers the rows' layers are judged against, or None and why not. Where the
    tolerances or the rounding factor are set on the command line, the user decides how far the
    outputs may be, and the layers are judged only where ``layers`` asks for it."""
    if variant != FP32:
        if layers:
            raise OnnxEdgeError(
                f"--layers judges model.onnx's layers against its golden layers; --variant "
                f"{variant} is judged by its own bounds (leave --layers out)"
            )
        return None, "a variant is judged by its own bounds"
    if layers is False:
        return None, "--no-layers was given"
    if layers is None and overrides:
        return None, "tolerances set on the command line judge the outputs alone (--layers: both)"
    golden, why = golden_layers_or_none(bundle)
    if golden is None and layers:
        raise OnnxEdgeError(
            f"--layers: {why}; re-export with --golden-layers (a --golden-layers-budget that fits "
            "a golden batch), or leave --layers out"
        )
    return golden, why


def _targets_for_variant(
    bundle: Any, variant: str, targets: Sequence[Target]
) -> tuple[list[Target], list[tuple[Target, str]]]:
    """The targets ``variant`` runs on, and those it is not made for with why: fp16 is made for
    the CUDA EP, and onnxruntime's CPU EP has no float16 convolutions (`provider_for`, the rule
    predict and evaluate follow)."""
    runs, not_for = [], []
    for target in targets:
        try:
            if target.engine == ONNXRUNTIME:
                provider_for(bundle.variants, variant, target.provider)
            runs.append(target)
        except OnnxEdgeError as e:
            not_for.append((target, str(e)))
    return runs, not_for


def _not_run(
    target: Target,
    why: str,
    sizes: Sequence[int],
    overrides: ToleranceOverrides,
    require: Sequence[str],
) -> list[ParityRow]:
    required = target.provider in require
    return [
        ParityRow(
            target.provider,
            size,
            FAILED if required else SKIPPED,
            target.tolerances(overrides),
            tf32=target.tf32,
            reason=f"required, but it did not run: {why}" if required else why,
            required=required,
            engine=target.engine,
            precision=target.precision,
        )
        for size in sizes
    ]


def _variant_model(bundle: Any, variant: str) -> Path:
    """The verified file of ``variant``; an ORT-format one is refused: parity also reads the
    logits, from a copy of the graph with them exposed, and a .ort file cannot be rewritten."""
    path = bundle.variant_model(variant)
    entry = bundle.variants.get(variant)
    if entry is not None and entry.format != "onnx":
        source = variant.removesuffix("-ort")
        raise OnnxEdgeError(
            f"parity --variant {variant}: {entry.file} is in the ORT format, from which parity "
            f"cannot read the logits; check the model it was converted from: --variant {source}"
        )
    if variant in (FP32_U8, INT8_U8):
        source = variant.removesuffix("-u8")
        raise OnnxEdgeError(
            f"parity --variant {variant}: expected a model of the float input the golden data "
            f"holds, found one that takes the decoded uint8 pixels [N, H, W, C] (its gate "
            f"compared it with fp32 on real images); check the model it was made from: "
            f"--variant {source}"
        )
    warn_if_8_bit_image_conv(bundle, variant)
    return path


def _live_reference(
    manifest: Mapping[str, Any], batch_sizes: Sequence[int], checkpoint: Path | None
) -> Reference:
    try:
        from onnxedge.export.golden import live_reference
    except (ImportError, OSError) as e:
        raise live_needs_torch(e) from None
    return live_reference(manifest, batch_sizes, checkpoint=checkpoint)


def layer_reference(
    bundle: Any,
    reference: Any,
    exposed: Any,
    *,
    against: str | None,
    live: bool,
    checkpoint: Path | None,
) -> Any:
    """What the layers of ``exposed`` (the model checked) are compared with: ``--against`` a
    provider or another variant, else PyTorch live with ``--reference live``, else the bundle's
    golden layers (an error naming the other references where it has none)."""
    from onnxedge.runtime.parity import make_targets
    from onnxedge.runtime.parity.layer_reference import (
        against_provider,
        against_variant,
        golden_layer_reference,
    )

    if against is not None and against.lower() in REFERENCE_VARIANTS:
        return against_variant(bundle, against.lower(), reference)
    if against is not None:
        (target,) = make_targets([against.lower()])
        return against_provider(exposed, reference, target)
    if live:
        return _live_layers(bundle, reference, checkpoint)
    return golden_layer_reference(bundle)


def _live_layers(bundle: Any, reference: Any, checkpoint: Path | None) -> Any:
    import onnx

    from onnxedge.runtime.parity.layers import layer_modules

    if not layer_modules(bundle.manifest):
        raise OnnxEdgeError(
            f"{bundle.path}: its manifest records no map from tensors to modules (exported by "
            "an onnxedge that did not record one): re-export it, or use --against"
        )
    try:
        from onnxedge.export.layers import live_layer_reference
        from onnxedge.models.weights import module_from_manifest
    except (ImportError, OSError) as e:
        raise live_needs_torch(e) from None
    module = module_from_manifest(bundle.manifest, checkpoint)
    final = onnx.load(str(bundle.model_path), load_external_data=False)
    return live_layer_reference(module, bundle.manifest, final, reference)


def live_needs_torch(e: BaseException) -> OnnxEdgeError:
    """The error of ``--reference live`` where torch cannot be imported: ``e`` is the ImportError,
    or the OSError of a torch installed without its native libraries (a Jetson wheel without its
    CUDA libraries, a CUDA build on a machine without them)."""
    return OnnxEdgeError(
        f"--reference live needs torch, which cannot be imported here ({first_line(e)}); "
        "install onnxedge[export], or use the golden reference (the default)"
    )
