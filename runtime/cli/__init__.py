"""The `onnxedge` command: a click group whose subcommands live one per module and are imported by
name only when used.

So the group loads (and ``--help`` works) where torch is absent: the export-side commands import
torch only when they run. Each command only parses options and calls the library; a user error
(`OnnxEdgeError`) from any of them becomes one line on stderr and exit status 1.

A new command is one line in `COMMANDS`: its name and ``"module:attribute"`` of a click command.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import click

from onnxedge.runtime.cli.options import finite_numbers
from onnxedge.runtime.cli.output import verbosity_options, warn
from onnxedge.runtime.deps import EXPORT_EXTRA_HINT, check_one_onnxruntime, module_available
from onnxedge.runtime.errors import ArgumentError, OnnxEdgeError, first_line
from onnxedge.runtime.lines import one_line

# name -> "module:attribute" of the click command.
COMMANDS = {
    "export": "onnxedge.export.cli.export:export_cmd",
    "simplify": "onnxedge.export.cli.simplify:simplify_cmd",
    "import": "onnxedge.export.cli.import_onnx:import_cmd",
    "check": "onnxedge.runtime.cli.check:check_cmd",
    "inspect": "onnxedge.runtime.cli.inspect:inspect_cmd",
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
        try:
            command = getattr(importlib.import_module(module_name), attr)
        except ImportError as e:  # a dependency missing; onnxedge's own import is a bug
            if e.name and e.name.partition(".")[0] == "onnxedge":
                raise
            command = _unavailable(cmd_name, module_name, e)
        except OnnxEdgeError as e:  # two onnxruntimes
            command = _unavailable(cmd_name, module_name, e)
        # NaN and the infinities refused by every float option, whoever wrote the command; -v
        # and -q taken after the subcommand as well as before it.
        return _with_verbosity(finite_numbers(command))

    def invoke(self, ctx: click.Context) -> Any:
        previous = _on_sigterm()
        stdout = sys.stdout
        sys.stdout = _Results(stdout)  # type: ignore[assignment]
        try:
            try:
                return super().invoke(ctx)
            finally:
                sys.stdout.flush()  # what is still buffered fails here, not at exit
                sys.stdout = stdout
        except ArgumentError as e:  # an option's value the library refused: a usage error
            raise click.UsageError(one_line(str(e))) from None
        except OnnxEdgeError as e:
            _fail(ctx, str(e))
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (`Terminated`)
            terminated = isinstance(e, Terminated)
            click.echo(f"onnxedge: {'terminated' if terminated else 'interrupted'}", err=True)
            ctx.exit(143 if terminated else 130)
        except OSError as e:
            _fail(ctx, os_error_line(e), stdout_failed=isinstance(e, StdoutError))
        except MemoryError:
            command = ctx.invoked_subcommand or "onnxedge"
            _fail(ctx, f"out of memory in {command}; what it wrote before stays as it was")
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


def _unavailable(name: str, module: str, error: Exception) -> click.Command:
    """What stands for command ``name`` whose ``module`` cannot be imported here: listed by
    ``--help`` with the reason, and one error line (exit 1) when run, instead of a traceback of
    the import (a device install without the export extra's onnx_ir for ``import``)."""
    if isinstance(error, ModuleNotFoundError) and error.name:
        install = EXPORT_EXTRA_HINT if module.startswith("onnxedge.export.") else REINSTALL
        reason = (
            f"onnxedge {name} needs {error.name.partition('.')[0]}, not installed here; "
            f"install with: {install}"
        )
    else:
        reason = f"onnxedge {name} cannot load here: {first_line(error)}"

    def fail(args: tuple[str, ...]) -> None:
        raise OnnxEdgeError(reason)

    return click.Command(
        name,
        callback=fail,
        params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
        help=f"(Unavailable: {reason}.)",
        short_help=f"(unavailable: {reason})",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=False,
    )


# How to put back a base dependency that is missing (a damaged install).
REINSTALL = "pip install --force-reinstall onnxedge"


def _with_verbosity(command: click.Command) -> click.Command:
    """Give ``command`` (and its subcommands) the group's ``-v``/``-q``; returns it. Idempotent."""
    names = {p.name for p in command.params}
    if "verbose" not in names:
        command.params.extend(verbosity_options(click.Command("_")).params)
    for sub in getattr(command, "commands", {}).values():
        _with_verbosity(sub)
    return command


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so that every ``with`` and ``finally`` on the way
    out runs: a writer's temporaries and lock are removed as on Ctrl-C. Exit status 143."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def _on_sigterm() -> Any:
    """Install `_raise_terminated` for SIGTERM (main thread only); the handler it replaced."""
    try:
        return signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread
        return None


class StdoutError(OSError):
    """Writing the results to standard output failed (a full disk, a closed pipe)."""


class _Results:
    """sys.stdout while a command runs: a write or flush that fails is a `StdoutError`, so the
    one-line error can say that it was standard output that failed."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as e:
            raise StdoutError(e.errno, e.strerror) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as e:
            raise StdoutError(e.errno, e.strerror) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def os_error_line(e: OSError) -> str:
    """An OSError as one line naming what failed: standard output, or the file."""
    reason = e.strerror or first_line(e)
    if isinstance(e, StdoutError):
        return f"cannot write the results to standard output: {reason}"
    if e.filename is not None:
        name = os.fsdecode(e.filename).encode("ascii", "backslashreplace").decode()
        return f"{name}: {reason}"
    return f"input/output error: {reason}"


def _silence_stdout() -> None:
    """Point file descriptor 1 at /dev/null once standard output has failed, so that Python's
    flush at exit does not fail a second time with a traceback."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _fail(ctx: click.Context, message: str, *, stdout_failed: bool = False) -> None:
    """One line on stderr, exit status 1."""
    if stdout_failed:
        _silence_stdout()
    click.echo(one_line(f"onnxedge: error: {message}"), err=True)
    ctx.exit(1)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@verbosity_options
@click.version_option(package_name="onnxedge", prog_name="onnxedge")
def main() -> None:
    """Export GAP-head CNN classifiers to ONNX and prove they still are the model on the edge."""
    _quiet_third_party_warnings()
    check_one_onnxruntime()  # every command: an environment with both builds is broken


def _quiet_third_party_warnings() -> None:
    """Warnings of other packages (PIL about a damaged file, torch, onnxruntime's Python layer)
    are one debug log line each (``-vv``): a command's own lines already say what became of its
    input, and a library's advice is not addressed to its user. Warnings of onnxedge itself are
    one ``onnxedge: warning: ...`` line each."""
    shown = warnings.showwarning
    if getattr(shown, "quiets_others", False):
        return
    runtime = Path(__file__).resolve().parents[1]  # onnxedge.runtime's folder
    roots = tuple(str(Path(p).resolve()) + os.sep for p in (runtime, *_package_roots()))

    def show(message: Any, category: Any, filename: str, lineno: int, *args: Any) -> None:
        if str(Path(filename).resolve()).startswith(roots):
            warn(str(message))
        else:
            logging.getLogger("warnings").debug(
                "%s: %s (%s:%d)", category.__name__, message, filename, lineno
            )

    show.quiets_others = True  # type: ignore[attr-defined]
    warnings.showwarning = show


def _package_roots() -> list[str]:
    """The folders of onnxedge's export and models packages, where installed."""
    roots = []
    for name in ("onnxedge.export", "onnxedge.models"):
        spec = importlib.util.find_spec(name) if module_available(name) else None
        if spec is not None and spec.submodule_search_locations:
            roots.extend(spec.submodule_search_locations)
    return roots


__all__ = ["COMMANDS", "LazyGroup", "StdoutError", "Terminated", "main"]
