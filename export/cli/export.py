"""`onnxedge export`: a registered model, or the user's own factory, to a bundle. Torch is imported
only when it runs; the command parses options and calls `onnxedge.export.pipeline.export_model`,
which calls `export_bundle`, the Python API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from onnxedge.export.cli.preprocessing_options import (
    echo_written,
    golden_images_option,
    golden_layers_options,
    preprocessing_from,
    preprocessing_options,
    read_labels,
)
from onnxedge.runtime.cli.heartbeat import Heartbeat
from onnxedge.runtime.cli.options import SEED
from onnxedge.runtime.cli.output import force_option, refuse_existing, verbosity
from onnxedge.runtime.deps import require_modules
from onnxedge.runtime.errors import OnnxEdgeError


def _model_args(items: tuple[str, ...]) -> dict[str, Any]:
    from onnxedge.models.loader import parse_model_args

    try:
        return parse_model_args(items)
    except OnnxEdgeError as e:
        raise click.BadParameter(str(e).removeprefix("--model-arg: ")) from None


gap_option = click.option(
    "--gap",
    type=click.Choice(["head", "all"]),
    default="head",
    show_default=True,
    help="Which global means become GlobalAveragePool: the classifier head's only, or every one "
    "(squeeze-excitation blocks too; ONNX Runtime's CPU pool is less precise over large maps).",
)


@click.command("export")
@click.option(
    "--model",
    "model_name",
    default="smile_cnn",
    show_default=True,
    help="A registered model, or your own: pkg.module:factory or path/to/file.py:factory.",
)
@click.option(
    "--model-arg",
    "model_args",
    multiple=True,
    callback=lambda ctx, param, value: _model_args(value),
    metavar="KEY=VALUE",
    help="Keyword argument for the factory (repeatable); VALUE is a Python literal, else a string.",
)
@preprocessing_options(
    "C,H,W of one input image (needed with a factory; C is 3, or 1 for grayscale).",
)
@click.option(
    "--head", default=None, help="smile_cnn's GAP head: avgpool (default), adaptive, mean."
)
@click.option(
    "--exporter",
    type=click.Choice(["dynamo", "torchscript"]),
    default="dynamo",
    show_default=True,
    help="torch.onnx's exporter: dynamo (torch.export) or the older torchscript tracer.",
)
@click.option(
    "--opset",
    type=click.IntRange(min=7),
    default=18,
    show_default=True,
    callback=lambda ctx, param, value: _known_opset(value),
    help="The ONNX opset to export to (7 to the installed onnx's newest).",
)
@click.option(
    "--dynamic-spatial",
    is_flag=True,
    help="Make H and W dynamic too (verified at a second size); fails where the graph cannot.",
)
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    default=None,
    help="Weights: .safetensors or a state_dict (.pt/.pth, loaded with weights_only=True).",
)
@click.option(
    "--seed",
    type=SEED,
    default=0,
    show_default=True,
    help="Init seed without a checkpoint.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Bundle directory [default: build/smile_cnn, or build/FACTORY for a factory].",
)
@force_option("a bundle")
@golden_images_option
@golden_layers_options
@gap_option
def export_cmd(
    model_name: str,
    model_args: dict[str, Any],
    input_shape: tuple[int, int, int] | None,
    head: str | None,
    exporter: str,
    opset: int,
    dynamic_spatial: bool,
    checkpoint: Path | None,
    seed: int,
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
    out: Path | None,
    images: Path | None,
    golden_layers: bool,
    golden_layers_budget: float,
    gap: str,
    force: bool,
) -> None:
    """Export a model to a bundle: simplified, GAP head lowered, checked, with a manifest.

    MODEL is a registered name (smile_cnn) or your own factory, pkg.module:factory or
    path/to/file.py:factory, returning an nn.Module that maps [batch, C, H, W] to [batch, K]:
    one sigmoid probability, one logit, K logits or K softmax probabilities.
    """
    from onnxedge.models.loader import is_factory_reference

    factory = is_factory_reference(model_name)
    if factory and input_shape is None:  # a usage error: the command line lacks an option
        raise click.UsageError(f"--model {model_name} (a factory) needs --input-shape C,H,W")
    if factory and head is not None:
        raise click.UsageError("--head applies to registered models; pass --model-arg instead")
    if not factory:
        from onnxedge.models import get_model_spec

        get_model_spec(model_name).resolve_head(head)  # fail fast on a typo, before torch loads
    labels = read_labels(labels_file) if labels_file is not None else None
    preprocessing = preprocessing_from(locals())
    if out is None:
        out = Path("build") / (model_name.rpartition(":")[2] if factory else model_name)
    refuse_existing(out, force, "the bundle")
    require_modules("torch", "onnxscript", "onnx_ir", "onnxsim", needed_by="onnxedge export")
    from onnxedge.export.pipeline import ExportRequest, export_model

    request = ExportRequest(
        model=model_name,
        head=head,
        exporter=exporter,
        opset=opset,
        checkpoint=checkpoint,
        seed=seed,
        out=out,
        images=images,
        model_args=model_args,
        input_shape=input_shape,
        labels=labels,
        preprocessing=preprocessing,
        dynamic_spatial=dynamic_spatial,
        golden_layers=golden_layers,
        golden_layers_budget_mb=golden_layers_budget,
        gap=gap,
        replace=force,
    )
    with Heartbeat.running() as heartbeat:
        result = export_model(request, progress=heartbeat)
    for rewrite in result.rewrites:
        click.echo(f"rewrote {rewrite}")
    for step in result.verifications:
        click.echo(f"verified {step.step}: max abs error {step.max_abs_error:.3g}")
    for item in result.check.items:
        click.echo(item.line(verbose=verbosity() > 0))
    click.echo(f"output {result.manifest['output']['name']!r}: {result.output_kind}")
    echo_written(result.out, result.manifest)


def _known_opset(opset: int) -> int:
    """``--opset`` refused as a usage error before the export where the installed onnx does not
    know it (`check_known_opset`, which the library's export also calls)."""
    try:
        from onnxedge.export.exporter import check_known_opset
    except ImportError:  # the export side is not installed: the command says what to install
        return opset
    try:
        check_known_opset(opset)
    except OnnxEdgeError as e:
        raise click.BadParameter(str(e)) from None
    return opset
