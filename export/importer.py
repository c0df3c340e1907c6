"""`onnxedge import`: a bundle of an ONNX image classifier exported elsewhere (PaddlePaddle,
tf2onnx, Keras, an older PyTorch export, a model zoo).

``import_bundle`` (the Python API): the file is read and refused with one line where it is not
a classifier onnxedge can ship (`_inspect`: not ONNX, external data outside its folder, ONNX
Runtime cannot load it, several inputs, an input that is not an image, no ``[N, K]`` output, an
output kind that contradicts the graph); then the graph steps of `onnxedge export` (onnxsim, the
fixed batch made symbolic, the GAP lowering, each verified; `onnxedge check`); then golden data
whose reference is the original file (`onnxedge.export.onnx_reference`: float64 with onnx's
reference evaluator where its ops allow, else ONNX Runtime CPU in float32); then the bundle,
written atomically. Nothing is written where any step fails.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from onnxedge.export.arguments import (
    check_budget,
    check_golden_batch_sizes,
    check_names,
    check_overrides,
    check_shape,
)
from onnxedge.export.import_file import dropped_outputs, inspect_file, logits_name
from onnxedge.export.import_golden import golden_rows, imported_golden, imported_golden_layers
from onnxedge.export.interface import (
    NCHW,
    NHWC,
    flatten_output,
)
from onnxedge.export.lowering import LoweringResult, lower_graph
from onnxedge.export.onnx_reference import (
    DEFAULT_BUDGET_S,
    FLOAT64,
    OnnxReference,
    float32_reference,
    make_reference,
)
from onnxedge.export.pipeline import io_spec, labels_for
from onnxedge.export.verify import (
    StepVerification,
    verify_input_layout,
    verify_kept_output,
    verify_output_flatten,
)
from onnxedge.models.registry import image_preprocessing
from onnxedge.runtime.bundle.reader import MODEL
from onnxedge.runtime.bundle.write import BundleWriter
from onnxedge.runtime.check.check import default_opset
from onnxedge.runtime.errors import OnnxEdgeError
from onnxedge.runtime.parity import (
    DEFAULT_BATCH_SIZES,
    GOLDEN,
)
from onnxedge.runtime.parity.layers import (
    DEFAULT_GOLDEN_LAYERS_BUDGET_MB,
    GOLDEN_LAYERS,
)

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class ImportResult:
    """A written bundle: where, its manifest, what the graph steps did, and the reference."""

    out: Path
    manifest: dict[str, Any]
    lowering: LoweringResult
    output_kind: str
    reference: OnnxReference

    @property
    def rewrites(self) -> tuple[str, ...]:
        return self.lowering.rewrites

    @property
    def verifications(self) -> tuple[StepVerification, ...]:
        return self.lowering.verifications


def import_bundle(
    src: str | Path,
    *,
    out: str | Path,
    input_shape: Sequence[int] | None = None,
    input_layout: str = "auto",
    output_name: str | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    labels: Sequence[str] | None = None,
    output_kind: str | None = None,
    images: str | Path | None = None,
    reference: str = "auto",
    reference_budget_s: float = DEFAULT_BUDGET_S,
    golden_batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    golden_layers_budget_mb: float | None = DEFAULT_GOLDEN_LAYERS_BUDGET_MB,
    progress: Progress | None = None,
    replace: bool = True,
) -> ImportResult:
    """Make a bundle at ``out`` of the ONNX classifier ``src``.

    ``input_shape``: C, H, W, needed where the graph leaves H and W symbolic (and only agreeing
    with it elsewhere). ``input_layout``: ``NCHW``, ``NHWC`` (the input is then made NCHW,
    `onnxedge.export.interface`) or ``auto`` (`input_layout`). ``output_name``: the output to
    keep where the file has several (the class scores). ``preprocessing``: keys that replace
    those of the default
    (`onnxedge.models.registry.image_preprocessing`: no crop, resize to H x W, scaled to [0, 1];
    one channel is grayscale). ``labels``: class names. ``output_kind``: ``probabilities``,
    ``logits`` or ``sigmoid``, where the graph does not say (an error where it says otherwise).
    ``images``: a directory of images for the golden data. ``reference``: ``auto``, ``float64``
    or ``float32`` (`onnxedge.export.onnx_reference.make_reference`).
    ``golden_layers_budget_mb``: golden layers for `onnxedge parity --localize`, every tensor of
    the bundle's graph in float64 for the largest golden batch that fits (None: none stored);
    only with a float64 reference. ``replace``: False where ``out`` must still be missing or
    empty when the bundle is written (`BundleWriter`'s 4.: ``--force`` not given).
    """
    say = progress or (lambda _msg: None)
    if input_shape is not None:
        input_shape = check_shape(input_shape)
    labels = check_names(labels)
    golden_batch_sizes = check_golden_batch_sizes(golden_batch_sizes)
    reference_budget_s = check_budget(reference_budget_s, "reference_budget_s")
    golden_layers_budget_mb = check_budget(
        golden_layers_budget_mb, "golden_layers_budget_mb", optional=True
    )
    overrides = check_overrides(preprocessing)
    src = Path(src)
    if images is not None and not Path(images).is_dir():
        raise OnnxEdgeError(
            f"--images: expected a directory of images, found no directory at {images}"
        )
    BundleWriter(out).check_target()  # before the slow part, not after it
    say(f"reading {src}")
    found = inspect_file(src, input_shape, output_kind, input_layout, output_name)
    channels, height, width = found.shape
    if channels == 1:
        overrides.setdefault("color", "L")
    spec = image_preprocessing(height, width, **overrides)
    if list(spec["resize"]) != [height, width]:
        raise OnnxEdgeError(
            f"the preprocessing resizes to {spec['resize']}, the model's input is "
            f"{list(found.shape)}: expected the same H, W"
        )
    if (spec["color"] == "L") != (channels == 1):
        raise OnnxEdgeError(
            f"the model takes {channels} channel(s); expected preprocessing color "
            f"{'L' if channels == 1 else 'RGB'}, found {spec['color']}"
        )
    labels_block = labels_for(labels, found.classes)

    steps: tuple[StepVerification, ...] = ()
    if found.channels_last is not None:
        step = verify_input_layout(found.channels_last, found.model, (height, width))
        step.raise_if_failed()
        steps = (step,)
    if found.several_outputs is not None:
        kept = found.model.graph.output[0].name
        step = verify_kept_output(found.several_outputs, found.model, kept, (height, width))
        step.raise_if_failed()
        steps = (*steps, step)
    if found.flatten:
        say("flattening the output [N, K, 1, 1] to [N, K]")
        flat = flatten_output(found.model)
        step = verify_output_flatten(found.model, flat)
        step.raise_if_failed()
        found, steps = dataclasses.replace(found, model=flat), (*steps, step)
    named: tuple[str, ...] = ()
    if found.fixed_batch is None:  # dynamic: named where the file leaves it unnamed (-1, no name)
        from onnxedge.export.batch import name_batch_dim

        model, named = name_batch_dim(found.model)
        found = dataclasses.replace(found, model=model)
    for line in found.annotations_dropped:
        log.info("import: dropped the shape annotation %s", line)
    lowering = lower_graph(found.model, dynamic_batch=found.fixed_batch is not None, progress=say)
    lowering = dataclasses.replace(
        lowering,
        verifications=(*steps, *lowering.verifications),
        batch_rewrites=(*named, *lowering.batch_rewrites),
    )
    if not lowering.check:
        (first, *_) = lowering.check.failures
        raise OnnxEdgeError(f"the imported graph fails onnxedge check, no bundle written: {first}")

    say("computing the reference on the original file")
    rows, skipped = golden_rows(spec, images, golden_batch_sizes)
    logits = logits_name(found.model, found.kind)
    ref = make_reference(
        found.model,
        rows[max(rows)][0][:1],
        outputs=[logits] if logits else [],
        fixed=found.fixed_batch,
        choice=reference,
        rows=sum(len(x) for x, _ in rows.values()),
        budget_s=reference_budget_s,
    )
    golden = imported_golden(ref, spec, rows, found.kind, lowering.model, skipped)
    if golden.disagreement:
        # A reference that is not the file's computation would widen parity's bound to itself
        # (an imported model's rounding is measured against it) and fail healthy devices.
        if reference == FLOAT64:
            raise OnnxEdgeError(
                f"--reference float64: {golden.disagreement} (--reference float32 takes ONNX "
                "Runtime's)"
            )
        ref = float32_reference(
            ref.run_f32, f"{golden.disagreement}; taking ONNX Runtime's", ref.run_f32_unfused
        )
        golden = imported_golden(ref, spec, rows, found.kind, lowering.model, skipped)
    say("computing the golden layers for `onnxedge parity --localize`")
    layers, layers_block = imported_golden_layers(
        ref, lowering.model, rows, golden_layers_budget_mb
    )

    io = io_spec(lowering.model)
    io["output"]["kind"] = found.kind
    manifest: dict[str, Any] = {
        "model": src.stem,
        "exporter": "import",
        "opset": default_opset(lowering.model),
        **io,
        "preprocessing": spec,
        "labels": labels_block,
        "weights": {"source": "onnx", "file": src.name, "sha256": found.sha256},
        "imported": {
            "file": src.name,
            "sha256": found.sha256,
            "producer": " ".join(
                p for p in (found.model.producer_name, found.model.producer_version) if p
            ),
            "opset": default_opset(found.model),
            "fixed_batch": found.fixed_batch,
            "input_layout": NCHW if found.channels_last is None else NHWC,
            "outputs_dropped": dropped_outputs(found),
            "annotations_dropped": list(found.annotations_dropped),
            "output_flattened": found.flatten,
            "batch_rewrites": list(lowering.batch_rewrites),
            "reference": {
                "precision": ref.precision,
                "description": ref.description,
                "reason": ref.reason,
            },
        },
        "graph": {
            "nodes": [n.op_type for n in lowering.model.graph.node],
            "gap_rewrites": list(lowering.rewrites),
            "verified_steps": [v.to_dict() for v in lowering.verifications],
        },
        "check": lowering.check.to_dict(),
        "versions": _versions(),
    }
    data = lowering.model.SerializeToString(deterministic=True)
    say(f"writing the bundle to {out}")
    with BundleWriter(out, replace=replace) as writer:
        writer.write_bytes(MODEL, data)
        writer.write_bytes(GOLDEN, golden.data)
        manifest["golden"] = {"file": GOLDEN, **golden.block}
        if layers is not None:
            writer.write_bytes(GOLDEN_LAYERS, layers)
        manifest["layers"] = layers_block
        writer.manifest.update(manifest)
    return ImportResult(
        out=Path(out),
        manifest=writer.manifest,
        lowering=lowering,
        output_kind=found.kind,
        reference=ref,
    )


def _versions() -> dict[str, str]:
    from onnxedge.export.pipeline import package_versions

    return {k: v for k, v in package_versions().items() if k != "torch"}


# --- golden data ----------------------------------------------------------------------------
