"""Export-side subcommands: `onnxedge export` and `onnxedge simplify`. Torch is imported only when
a command runs, so this module loads where torch is absent."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from onnxedge.runtime.deps import require_modules


def _progress(msg: str) -> None:
    click.echo(f"  {msg}", err=True)


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
    result = export_bundle(request, progress=_progress)
    for rewrite in result.lowering.rewrites:
        click.echo(f"rewrote {rewrite}")
    for item in result.lowering.check.items:
        click.echo(str(item))
    click.echo(f"wrote {result.out}/model.onnx, golden.npz and manifest.json")


@click.command("simplify")
@click.argument("src", type=click.Path(path_type=Path))
@click.option("-o", "--out", "dst", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--no-onnxsim", is_flag=True, help="Only lower the GAP head; skip onnxsim.")
def simplify_cmd(src: Path, dst: Path, no_onnxsim: bool) -> None:
    """Simplify any ONNX model with onnxsim and lower its GAP head to GlobalAveragePool.

    Keeps dynamic dims; each step is verified numerically; reports what was rewritten and the
    result of `onnxedge check` on the output. The output is written either way; the exit status
    is 1 when it does not pass the check (for example a model without a GAP head).
    """
    require_modules(
        "onnxscript",
        "onnx_ir",
        *(() if no_onnxsim else ("onnxsim",)),
        needed_by="onnxedge simplify",
    )
    from onnxedge.export.pipeline import simplify_file

    result = simplify_file(src, dst, simplify=not no_onnxsim, progress=_progress)
    for rewrite in result.rewrites:
        click.echo(f"rewrote {rewrite}")
    click.echo(f"{len(result.rewrites)} GAP rewrite(s); wrote {dst}")
    for step in result.verifications:
        click.echo(f"verified {step.step}: max abs error {step.max_abs_error:.3g}")
    for item in result.check.items:
        click.echo(str(item))
    if not result.check:
        click.echo(f"FAILED | {dst} was written, but it does not pass onnxedge check", err=True)
        sys.exit(1)
