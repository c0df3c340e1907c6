"""The `onnxedge` command: a click group whose subcommands live one per module and are imported by
name only when used.

So the group loads (and ``--help`` works) where torch is absent: the export-side commands import
torch only when they run. Each command only parses options and calls the library; a user error
(`OnnxEdgeError`) from any of them becomes one line on stderr and exit status 1.

A new command is one line in `COMMANDS`: its name and ``"module:attribute"`` of a click command.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import click

from onnxedge.runtime.deps import module_available
from onnxedge.runtime.errors import OnnxEdgeError

# name -> "module:attribute" of the click command.
COMMANDS = {
    "export": "onnxedge.export.cli.export:export_cmd",
    "simplify": "onnxedge.export.cli.simplify:simplify_cmd",
    "check": "onnxedge.runtime.cli.check:check_cmd",
    "parity": "onnxedge.runtime.cli.parity:parity_cmd",
    "bench": "onnxedge.runtime.cli.bench:bench_cmd",
    "predict": "onnxedge.runtime.cli.predict:predict_cmd",
    "evaluate": "onnxedge.runtime.cli.evaluate:evaluate_cmd",
    "data": "onnxedge.runtime.cli.data:data_group",
    "train": "onnxedge.export.cli.train:train_cmd",
}


class LazyGroup(click.Group):
    """A click group whose commands live in other modules and are imported on first use.

    A user error (`OnnxEdgeError`) from any command becomes one line on stderr and exit status 1.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(n for n, t in COMMANDS.items() if module_available(t.partition(":")[0]))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None or not module_available(target.partition(":")[0]):
            return None
        module_name, _, attr = target.partition(":")
        return getattr(importlib.import_module(module_name), attr)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OnnxEdgeError as e:
            click.echo(f"onnxedge: error: {e}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("onnxedge: interrupted", err=True)
            ctx.exit(130)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="onnxedge", prog_name="onnxedge")
def main(verbose: int) -> None:
    """Export GAP-head CNN classifiers to ONNX and prove they still are the model on the edge."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


__all__ = ["COMMANDS", "LazyGroup", "main"]
