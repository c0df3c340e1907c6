"""`onnxedge import`: a bundle of an ONNX classifier exported elsewhere. The command parses
options and calls `onnxedge.export.importer.import_bundle`, the Python API; torch is not needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from onnxedge.export.annotations import dropped_line
from onnxedge.export.cli.preprocessing_options import (
    echo_written,
    golden_images_option,
    golden_layers_options,
    preprocessing_from,
    preprocessing_options,
    read_labels,
)
from onnxedge.export.layouts import LAYOUTS
from onnxedge.runtime.cli.heartbeat import Heartbeat
from onnxedge.runtime.cli.output import force_option, refuse_existing, verbosity
from onnxedge.runtime.deps import require_modules

REFERENCES = ("auto", "float64", "float32")


@click.command("import")
@click.argument("src", type=click.Path(path_type=Path))
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="The bundle directory to write."
)
@preprocessing_options(
    "C,H,W of one input image, where the graph leaves them symbolic (C 1 or 3).",
)
@click.option(
    "--input-layout",
    type=click.Choice(LAYOUTS),
    default="auto",
    show_default=True,
    help="The input's layout: NCHW, or NHWC (TensorFlow's and Keras's, via tf2onnx: the bundle's "
    "input is made NCHW, a Transpose put first, verified); auto: NHWC where only the last dim "
    "is 1 or 3 channels.",
)
@click.option(
    "--output-name",
    default=None,
    metavar="NAME",
    help="The output that holds the class scores, where the file has several (the others, and "
    "what only they need, are dropped; verified).",
)
@click.option(
    "--output-kind",
    type=click.Choice(["probabilities", "logits", "sigmoid"]),
    default=None,
    help="What the output is, where the graph does not say: softmax probabilities (the graph "
    "must end in its Softmax), logits, or one sigmoid probability; an error where the graph "
    "says otherwise.",
)
@golden_images_option
@click.option(
    "--reference",
    type=click.Choice(REFERENCES),
    default="auto",
    show_default=True,
    help="The golden data's reference, the original file: float64 (onnx's reference "
    "evaluator), float32 (ONNX Runtime CPU), or auto: float64 where the evaluator runs the "
    "graph within --reference-budget, else float32.",
)
@click.option(
    "--reference-budget",
    type=click.FloatRange(min=0.0, min_open=True),
    default=120.0,
    show_default=True,
    metavar="SECONDS",
    help="With --reference auto: the most the float64 reference may take, estimated from one row.",
)
@force_option("a bundle")
@golden_layers_options
def import_cmd(
    src: Path,
    out: Path,
    input_shape: tuple[int, int, int] | None,
    input_layout: str,
    output_name: str | None,
    labels_file: Path | None,
    resize: tuple[int, int] | None,
    resize_mode: str | None,
    pad_value: float | None,
    crop: str | None,
    crop_fraction: float | None,
    interpolation: str | None,
    scale: float | None,
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
    channel_order: str | None,
    output_kind: str | None,
    images: Path | None,
    reference: str,
    reference_budget: float,
    golden_layers: bool,
    golden_layers_budget: float,
    force: bool,
) -> None:
    """Make a bundle of SRC, an ONNX image classifier exported elsewhere.

    SRC takes one float32 image [N, C, H, W] (C 1 or 3) and outputs [N, K]: one sigmoid
    probability, one logit, K logits or K softmax probabilities. It is simplified, its fixed
    batch made dynamic, its GAP head lowered (each step verified) and checked; the golden data's
    reference is SRC itself. Nothing is written where any step fails.
    """
    params: dict[str, Any] = dict(locals())
    labels = read_labels(labels_file) if labels_file is not None else None
    refuse_existing(out, force, "the bundle")
    require_modules("onnxscript", "onnx_ir", "onnxsim", needed_by="onnxedge import")
    from onnxedge.export.importer import import_bundle

    with Heartbeat.running() as heartbeat:
        result = import_bundle(
            src,
            out=out,
            input_shape=input_shape,
            input_layout=input_layout,
            output_name=output_name,
            preprocessing=preprocessing_from(params),
            labels=labels,
            output_kind=output_kind,
            images=images,
            reference=reference,
            reference_budget_s=reference_budget,
            golden_layers_budget_mb=golden_layers_budget if golden_layers else None,
            progress=heartbeat,
            replace=force,
        )
    if line := dropped_line(result.manifest["imported"]["annotations_dropped"]):
        click.echo(line)
    for rewrite in result.lowering.batch_rewrites:
        click.echo(f"batch: rewrote {rewrite}")
    for rewrite in result.rewrites:
        click.echo(f"rewrote {rewrite}")
    for step in result.verifications:
        batches = ", ".join(str(b) for b, _ in step.comparisons)
        click.echo(
            f"verified {step.step} at batch {batches}: max abs error {step.max_abs_error:.3g}"
        )
    for item in result.lowering.check.items:
        click.echo(item.line(verbose=verbosity() > 0))
    manifest = result.manifest
    click.echo(
        f"input {manifest['input']['name']!r} {manifest['input']['shape']}, output "
        f"{manifest['output']['name']!r} {manifest['output']['shape']}: {result.output_kind}"
    )
    ref = result.reference
    click.echo(f"reference: {ref.description}" + (f" ({ref.reason})" if ref.reason else ""))
    echo_written(result.out, manifest)
