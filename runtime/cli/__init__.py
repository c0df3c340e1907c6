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
import os
import sys
import warnings
from typing import Any

import click

from onnxedge.runtime.cli.options import finite_numbers
from onnxedge.runtime.deps import module_available
from onnxedge.runtime.errors import OnnxEdgeError

# name -> "module:attribute" of the click command.
COMMANDS = {
    "export": "onnxedge.export.cli.export:export_cmd",
    "simplify": "onnxedge.export.cli.simplify:simplify_cmd",
    "import": "onnxedge.export.cli.import_onnx:import_cmd",
    "check": "onnxedge.runtime.cli.check:check_cmd",
    "parity": "onnxedge.runtime.cli.parity:parity_cmd",
    "bench": "onnxedge.runtime.cli.bench:bench_cmd",
    "tune": "onnxedge.runtime.cli.tune:tune_cmd",
    "predict": "onnxedge.runtime.cli.predict:predict_cmd",
    "optimize": "onnxedge.runtime.cli.optimize:optimize_cmd",
    "pack": "onnxedge.runtime.cli.pack:pack_cmd",
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
        # NaN and the infinities refused by every float option, whoever wrote the command.
        return finite_numbers(getattr(importlib.import_module(module_name), attr))

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
    _quiet_pil_warnings()


def _quiet_pil_warnings() -> None:
    """PIL warns about a damaged file as it reads it ("Truncated File Read", "Corrupt EXIF data")
    in two lines of Python's warning format. That file's own result line already says what became
    of it, so such a warning is one debug log line (``-vv``); other warnings are shown as before."""
    shown = warnings.showwarning
    if getattr(shown, "quiets_pil", False):
        return

    def show(message: Any, category: Any, filename: str, lineno: int, *args: Any) -> None:
        if f"{os.sep}PIL{os.sep}" in filename:
            logging.getLogger("PIL").debug("%s: %s", category.__name__, message)
        else:
            shown(message, category, filename, lineno, *args)

    show.quiets_pil = True  # type: ignore[attr-defined]
    warnings.showwarning = show


__all__ = ["COMMANDS", "LazyGroup", "main"]
