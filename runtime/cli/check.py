"""`onnxedge check MODEL.onnx|BUNDLE_DIR`: the command line of `onnxedge.runtime.check.check`."""

from __future__ import annotations

import sys

import click

from onnxedge.runtime.check.check import check_path
from onnxedge.runtime.cli.output import json_option, verbosity, write_json


@click.command("check")
@click.argument("target", type=click.Path(path_type=str))
@json_option("The report as JSON.")
def check_cmd(target: str, json_path: str | None) -> None:
    """Check MODEL.onnx or BUNDLE_DIR: full ONNX check, symbolic batch dim, GlobalAveragePool head.

    Exits 0 only if every check passes; prints one line per check.
    """
    report = check_path(target)
    for item in report.items:
        click.echo(item.line(verbose=verbosity() > 0))
    write_json(json_path, report.to_dict())
    if not report:
        click.echo(
            f"FAILED | {len(report.failures)} of {len(report.items)} checks failed", err=True
        )
        sys.exit(1)
