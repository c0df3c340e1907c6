"""`onnxedge simplify`: any ONNX model through onnxsim and the GAP lowering, then checked."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from onnxedge.export.annotations import dropped_line
from onnxedge.export.cli.export import gap_option
from onnxedge.runtime.cli.heartbeat import Heartbeat
from onnxedge.runtime.cli.output import (
    force_option,
    refuse_a_bundles_file,
    refuse_existing,
    verbosity,
)
from onnxedge.runtime.deps import require_modules
from onnxedge.runtime.names import shown


@click.command("simplify")
@click.argument("src", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--out",
    "dst",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The simplified model's file.",
)
@click.option("--no-onnxsim", is_flag=True, help="Only lower the GAP head; skip onnxsim.")
@gap_option
@force_option("a model")
def simplify_cmd(src: Path, dst: Path, no_onnxsim: bool, gap: str, force: bool) -> None:
    """Simplify any ONNX model with onnxsim and lower its GAP head to GlobalAveragePool.

    Keeps dynamic dims; each step is verified numerically; reports what was rewritten and the
    result of `onnxedge check` on the output. The output is written either way; the exit status
    is 1 when it does not pass the check (for example a model without a GAP head).
    """
    refuse_existing(dst, force, "the model")
    refuse_a_bundles_file(dst, "--out")
    require_modules(
        "onnxscript",
        "onnx_ir",
        *(() if no_onnxsim else ("onnxsim",)),
        needed_by="onnxedge simplify",
    )
    from onnxedge.export.lowering import simplify_file

    with Heartbeat.running() as heartbeat:
        result = simplify_file(src, dst, simplify=not no_onnxsim, progress=heartbeat, gap=gap)
    if line := dropped_line(result.annotations_dropped):
        click.echo(line)
    for rewrite in result.rewrites:
        click.echo(f"rewrote {rewrite}")
    click.echo(f"{len(result.rewrites)} GAP rewrite(s); wrote {shown(dst)}")
    for step in result.verifications:
        click.echo(f"verified {step.step}: max abs error {step.max_abs_error:.3g}")
    for item in result.check.items:
        click.echo(item.line(verbose=verbosity() > 0))
    if not result.check:
        click.echo(
            f"FAILED | {shown(dst)} was written, but it does not pass onnxedge check", err=True
        )
        sys.exit(1)
