"""`onnxedge check MODEL.onnx|BUNDLE_DIR`: the command line of `onnxedge.runtime.check.check`."""

from __future__ import annotations

import json
import sys

import click

from onnxedge.runtime.bundle.write import atomic_write_bytes
from onnxedge.runtime.check.check import check_path
from onnxedge.runtime.cli.output import verbosity


@click.command("check")
@click.argument("target", type=click.Path(path_type=str))
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the report.")
def check_cmd(target: str, json_path: str | None) -> None:
    """Check MODEL.onnx or BUNDLE_DIR: full ONNX check, symbolic batch dim, GlobalAveragePool head.

    Exits 0 only if every check passes; prints one line per check.
    """
    report = check_path(target)
    for item in report.items:
        click.echo(item.line(verbose=verbosity() > 0))
    if json_path:
        atomic_write_bytes(json_path, (json.dumps(report.to_dict(), indent=2) + "\n").encode())
    if not report:
        click.echo(
            f"FAILED | {len(report.failures)} of {len(report.items)} checks failed", err=True
        )
        sys.exit(1)
