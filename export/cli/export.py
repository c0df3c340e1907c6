"""`onnxedge export`: a registered model, or the user's own factory, to a bundle. Torch is imported
only when it runs; the command parses options and calls `onnxedge.export.pipeline.export_model`,
which calls `export_bundle`, the Python API."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from onnxedge.runtime.cli.output import echo_progress
from onnxedge.runtime.deps import require_modules
from onnxedge.runtime.errors import OnnxEdgeError
from onnxedge.runtime.parity.layers import DEFAULT_GOLDEN_LAYERS_BUDGET_MB


def _numbers(count: int, kind: type, example: str) -> Callable[..., Any]:
    """A callback for ``count`` comma-separated numbers of ``kind`` (None stays None)."""

    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        if value is None:
            return None
        items = [v.strip() for v in value.split(",")]
        try:
            numbers = tuple(kind(v) for v in items)
        except ValueError:
            numbers = ()
        if len(numbers) != count or (kind is int and any(n < 1 for n in numbers)):
            what = "positive integers" if kind is int else "numbers"
            raise click.BadParameter(
                f"expected {count} comma-separated {what} such as {example}, found {value!r}"
            )
        return numbers

    return parse


def _model_args(items: tuple[str, ...]) -> dict[str, Any]:
    from onnxedge.models.loader import parse_model_args

    try:
        return parse_model_args(items)
    except OnnxEdgeError as e:
        raise click.BadParameter(str(e).removeprefix("--model-arg: ")) from None


def read_labels(path: Path) -> list[str]:
    """Class names from a text file, one a line (blank lines and surrounding spaces ignored)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else e
        raise OnnxEdgeError(f"--labels: cannot read {path}: {reason}") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise OnnxEdgeError(f"--labels: expected one class name a line in {path}, found none")
    return names


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
@click.option(
    "--input-shape",
    callback=_numbers(3, int, "3,224,224"),
    help="C,H,W of one input image (needed with a factory; C must be 3).",
)
@click.option(
    "--head", default=None, help="smile_cnn's GAP head: avgpool (default), adaptive, mean."
)
@click.option(
    "--exporter",
    type=click.Choice(["dynamo", "torchscript"]),
    default="dynamo",
    show_default=True,
)
@click.option("--opset", type=int, default=18, show_default=True)
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
    type=click.IntRange(0, 2**63 - 1),
    default=0,
    show_default=True,
    help="Init seed without a checkpoint.",
)
@click.option(
    "--labels",
    "labels_file",
    type=click.Path(path_type=Path),
    default=None,
    help="Class names, one a line (K lines for K outputs; negative then positive for one).",
)
@click.option(
    "--resize",
    callback=_numbers(2, int, "224,224"),
    help="Preprocessing: resize to H,W (default: the input's H,W).",
)
@click.option(
    "--crop",
    type=click.Choice(["none", "center-square"]),
    default=None,
    help="Preprocessing: crop before the resize (default: none; smile_cnn: center-square).",
)
@click.option(
    "--interpolation",
    type=click.Choice(["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"]),
    default=None,
    help="Preprocessing: resize filter (default bilinear).",
)
@click.option(
    "--mean",
    callback=_numbers(3, float, "0.485,0.456,0.406"),
    help="Preprocessing: per-channel mean, subtracted after scaling to [0, 1].",
)
@click.option(
    "--std",
    callback=_numbers(3, float, "0.229,0.224,0.225"),
    help="Preprocessing: per-channel std, divided by after the mean.",
)
@click.option(
    "--channel-order",
    type=click.Choice(["RGB", "BGR"]),
    default=None,
    help="Preprocessing: the channel order the model takes (default RGB).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Bundle directory [default: build/smile_cnn, or build/FACTORY for a factory].",
)
@click.option(
    "--images",
    type=click.Path(path_type=Path),
    default=None,
    help="A directory of real images to add to the golden data for `onnxedge parity`.",
)
@click.option(
    "--golden-layers/--no-golden-layers",
    default=True,
    show_default=True,
    help="Store PyTorch's output of every module on golden inputs, for `parity --localize` "
    "without torch (the largest golden batch that fits the budget).",
)
@click.option(
    "--golden-layers-budget",
    "golden_layers_budget",
    type=click.FloatRange(min=0.0, min_open=True),
    default=DEFAULT_GOLDEN_LAYERS_BUDGET_MB,
    show_default=True,
    metavar="MB",
    help="The most megabytes the golden layers may take.",
)
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
    crop: str | None,
    interpolation: str | None,
    mean: tuple[float, float, float] | None,
    std: tuple[float, float, float] | None,
    channel_order: str | None,
    out: Path | None,
    images: Path | None,
    golden_layers: bool,
    golden_layers_budget: float,
) -> None:
    """Export a model to a bundle: simplified, GAP head lowered, checked, with a manifest.

    MODEL is a registered name (smile_cnn) or your own factory, pkg.module:factory or
    path/to/file.py:factory, returning an nn.Module that maps [batch, C, H, W] to [batch, K]:
    one sigmoid probability, one logit, K logits or K softmax probabilities.
    """
    from onnxedge.models.loader import is_factory_reference

    factory = is_factory_reference(model_name)
    if not factory:
        from onnxedge.models import get_model_spec

        get_model_spec(model_name).resolve_head(head)  # fail fast on a typo, before torch loads
    labels = read_labels(labels_file) if labels_file is not None else None
    given = {
        "resize": list(resize) if resize else None,
        "crop": crop,
        "interpolation": interpolation,
        "mean": list(mean) if mean else None,
        "std": list(std) if std else None,
        "channel_order": channel_order,
    }
    preprocessing = {k: v for k, v in given.items() if v is not None}
    if out is None:
        out = Path("build") / (model_name.rpartition(":")[2] if factory else model_name)
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
    )
    result = export_model(request, progress=echo_progress)
    for rewrite in result.rewrites:
        click.echo(f"rewrote {rewrite}")
    for step in result.verifications:
        click.echo(f"verified {step.step}: max abs error {step.max_abs_error:.3g}")
    for item in result.check.items:
        click.echo(str(item))
    click.echo(f"output {result.manifest['output']['name']!r}: {result.output_kind}")
    stored = result.manifest["layers"]["golden"]
    if stored["file"]:
        click.echo(
            f"golden layers: {stored['tensors']} tensors at batch {stored['batch_sizes'][0]}, "
            f"{stored['bytes'] / 1e6:.1f} MB"
        )
    else:
        click.echo(f"golden layers: none stored ({stored['reason']})")
    files = ["model.onnx", "golden.npz", *([stored["file"]] if stored["file"] else [])]
    click.echo(f"wrote {result.out}/{', '.join(files)} and manifest.json")
