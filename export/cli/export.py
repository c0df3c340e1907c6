"""`onnxedge export`: a registered model to a bundle. Torch is imported only when it runs."""

from __future__ import annotations

from pathlib import Path

import click

from onnxedge.runtime.cli.output import echo_progress
from onnxedge.runtime.deps import require_modules


@click.command("export")
@click.option(
    "--model", "model_name", default="smile_cnn", show_default=True, help="Registered model."
)
@click.option("--head", default=None, help="GAP head: avgpool (default), adaptive or mean.")
@click.option(
    "--exporter",
    type=click.Choice(["dynamo", "torchscript"]),
    default="dynamo",
    show_default=True,
)
@click.option("--opset", type=int, default=18, show_default=True)
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
    "--out", type=click.Path(path_type=Path), default=Path("build/smile_cnn"), show_default=True
)
@click.option(
    "--images",
    type=click.Path(path_type=Path),
    default=None,
    help="A directory of real images to add to the golden data for `onnxedge parity`.",
)
def export_cmd(
    model_name: str,
    head: str | None,
    exporter: str,
    opset: int,
    checkpoint: Path | None,
    seed: int,
    out: Path,
    images: Path | None,
) -> None:
    """Export a model to a bundle: simplified, GAP head lowered, checked, with a manifest."""
    require_modules("torch", "onnxscript", "onnx_ir", "onnxsim", needed_by="onnxedge export")
    from onnxedge.export.pipeline import ExportRequest, export_bundle
    from onnxedge.models import get_model_spec

    spec = get_model_spec(model_name)  # fail fast on a typo, before torch loads
    spec.resolve_head(head)
    request = ExportRequest(
        model=model_name,
        head=head,
        exporter=exporter,
        opset=opset,
        checkpoint=checkpoint,
        seed=seed,
        out=out,
        images=images,
    )
    result = export_bundle(request, progress=echo_progress)
    for rewrite in result.lowering.rewrites:
        click.echo(f"rewrote {rewrite}")
    for item in result.lowering.check.items:
        click.echo(str(item))
    click.echo(f"wrote {result.out}/model.onnx, golden.npz and manifest.json")
