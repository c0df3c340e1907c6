"""What the commands print besides their results: how verbose to be, progress lines, warnings,
and the options every command spells the same way (docs/CLI.md).

1. ``-v``/``-q``: counted on the group and on every subcommand alike (`verbosity_options`).
2. ``--json [FILE]`` (`json_option`): the command's result as JSON into FILE, or on standard
   output when FILE is left out or is ``-`` (its text report then goes to stderr, so that stdout
   is JSON alone). `write_json` writes it either way; a file atomically.
3. Hidden old spellings (`deprecated_alias`): one warning, then the value goes to the new option.
4. `warn`: the one warning format, ``onnxedge: warning: ...``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from onnxedge.runtime.lines import one_line

F = TypeVar("F", bound=Callable[..., Any])

# Where `--json -` writes: the real standard output while the text report goes to stderr.
_JSON_STDOUT: list[Any] = []


def verbosity() -> int:
    """How verbose the command is: the ``-v`` given (on the group or the subcommand) less the
    ``-q``; 0 outside a command."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return 0
    return int(ctx.meta.get("onnxedge.verbose", 0)) - int(ctx.meta.get("onnxedge.quiet", 0))


def configure_logging(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Callback of ``-v``/``-q``: set the log levels for the verbosity counted so far. onnxedge's
    own loggers: warnings, info at ``-v``, debug at ``-vv``, errors only at ``-q``; other
    packages' (onnx_ir, onnxscript, torch ...): warnings, and their info and debug only at
    ``-vv``."""
    key = f"onnxedge.{param.name}"  # ctx.meta is shared by the group's and the command's context
    ctx.meta[key] = ctx.meta.get(key, 0) + int(value or 0)
    level = verbosity()
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_Format())
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if level >= 2 else logging.WARNING)
    own = logging.ERROR if level < 0 else logging.WARNING - 10 * min(max(level, 0), 2)
    logging.getLogger("onnxedge").setLevel(own)
    return value


class _Format(logging.Formatter):
    """Warnings and errors in the one format (``onnxedge: warning: ...``); info and debug as
    ``  name: message`` progress lines."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            kind = "error" if record.levelno >= logging.ERROR else "warning"
            return one_line(f"onnxedge: {kind}: {message}")
        return f"  {record.name}: {message}"


def verbosity_options(command: F) -> F:
    """Add ``-v``/``--verbose`` and ``-q``/``--quiet`` (counted) to a command or group."""
    command = click.option(
        "-q",
        "--quiet",
        count=True,
        expose_value=False,
        is_eager=True,  # counted before other options' callbacks, which may warn
        callback=configure_logging,
        help="Less log output: errors only.",
    )(command)
    return click.option(
        "-v",
        "--verbose",
        count=True,
        expose_value=False,
        is_eager=True,
        callback=configure_logging,
        help="More log output (-v info, -vv debug and other packages' lines).",
    )(command)


def warn(message: str) -> None:
    """One warning line on stderr: ``onnxedge: warning: MESSAGE`` (a message of several lines
    joined into one); none with ``-q`` (errors only)."""
    if verbosity() >= 0:
        click.echo(one_line(f"onnxedge: warning: {message}"), err=True)


def note(message: str) -> None:
    """A line on stderr about the run, beside its results (predict's summary, what a command
    wrote, which tuned setup runs); none with ``-q`` (errors only)."""
    if verbosity() >= 0:
        click.echo(message, err=True)


def echo_progress(msg: str) -> None:
    """One indented progress line on stderr, with ``-v`` only: stdout keeps the results, and a
    command run without it prints its results alone."""
    if verbosity() > 0:
        click.echo(f"  {msg}", err=True)


def json_option(help_text: str, *, text_to_stderr: bool = True) -> Callable[[F], F]:
    """``--json [FILE]`` (parameter ``json_path``: None, ``"-"`` for stdout, or a path).

    ``text_to_stderr``: while JSON goes to stdout, whatever else the command prints to stdout
    goes to stderr (False for commands whose only output is the JSON)."""

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> Any:
            refuse_over_inputs(kwargs.get("json_path"), "--json")
            if not text_to_stderr or kwargs.get("json_path") != "-":
                return command(*args, **kwargs)
            _JSON_STDOUT.append(sys.stdout)
            try:
                with contextlib.redirect_stdout(sys.stderr):
                    return command(*args, **kwargs)
            finally:
                _JSON_STDOUT.pop()

        return click.option(
            "--json",
            "json_path",
            is_flag=False,
            flag_value="-",
            default=None,
            metavar="[FILE]",
            type=click.Path(dir_okay=False, allow_dash=True),
            help=f"{help_text} Into FILE, or on standard output without FILE (or with -).",
        )(run)  # type: ignore[return-value]

    return decorate


# The parameters of the commands that name what they write; every other path is read.
OUTPUT_PARAMS = frozenset({"json_path", "out", "output", "md_path", "plot_path", "dst"})
# Files read that are not a click.Path option: `--tuned [FILE]` (without FILE, the tuning file
# beside the bundle).
READ_FILE_PARAMS = frozenset({"tuned"})
# What `--tuned` without a file gives (`onnxedge.runtime.cli.tuned_option`): the tuning file beside
# the bundle. Here, where `refuse_over_inputs` reads it, since tuned_option imports this module.
BESIDE_THE_BUNDLE = "\0beside"


def refuse_over_inputs(target: str | Path | None, option: str) -> None:
    """Before any work: a usage error (exit 2) where ``target`` (what ``option`` writes) is a
    file the command reads: a path argument or option of the running command (not one of
    `OUTPUT_PARAMS`), or a file inside a directory one names (a bundle's manifest.json or
    model.onnx, a data set's list files); or any bundle's own file (`refuse_a_bundles_file`).
    Such a write would replace an input with the report about it, and leave the bundle or data
    set broken."""
    ctx = click.get_current_context(silent=True)
    if target is None or str(target) == "-" or ctx is None:
        return
    written = Path(target).resolve()
    # a file to be made is an input only where the next run's walk takes it: named as an image
    if not written.is_file() and (written.exists() or not _image_name(written)):
        return
    for param in ctx.command.params:
        read_file = param.name in READ_FILE_PARAMS
        if param.name in OUTPUT_PARAMS or not (isinstance(param.type, click.Path) or read_file):
            continue
        values = ctx.params.get(param.name or "")
        if param.name == "tuned" and values == BESIDE_THE_BUNDLE:
            from onnxedge.runtime.tune.file import default_tuning_path  # --tuned without FILE

            values = default_tuning_path(ctx.params.get("bundle") or ".")
        for value in values if isinstance(values, (list, tuple)) else (values,):
            if not isinstance(value, (str, Path)) or str(value) == "-":
                continue
            read = Path(value).resolve()
            inside = read.is_dir() and written.is_relative_to(read) and _read_inside(read, written)
            if written == read or inside:
                raise click.UsageError(
                    f"{option} {target}: expected a file outside what this command reads, found "
                    f"{'that input' if written == read else f'a file inside {value}'}; "
                    "write it elsewhere"
                )
    refuse_a_bundles_file(target, option)  # any bundle's, read by this command or not


def _image_name(path: Path) -> bool:
    from onnxedge.runtime.classifier.preprocess import is_image_name

    return is_image_name(path)


# What a command reads inside a folder it is given, besides a bundle's listed files: models,
# golden data, a data set's lists, and images.
_READ_SUFFIXES = (".onnx", ".ort", ".npz", ".txt", ".csv", ".config")


def _read_inside(folder: Path, file: Path) -> bool:
    """Whether a command given ``folder`` may read ``file`` in it: a bundle's manifest and the
    files it lists, a synthetic set's marker, a model, golden data, a list, an image outside a
    bundle. A report written there before (check.json, a bundle's layers.png) is none of them,
    and may be written again."""
    from onnxedge.runtime.bundle.manifest import MANIFEST
    from onnxedge.runtime.classifier.preprocess import is_image_name
    from onnxedge.runtime.data.synth import MARKER

    if file.name in (MANIFEST, MARKER) or file.suffix.lower() in _READ_SUFFIXES:
        return True
    if not (folder / MANIFEST).is_file():  # images are walked for in folders, not in bundles
        return is_image_name(file)
    try:
        listed = json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("files") or {}
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(listed, dict) and file.relative_to(folder).as_posix() in listed


def refuse_a_bundles_file(target: str | Path, option: str) -> None:
    """Before any work: a usage error where ``target`` (a model or a checkpoint ``option``
    writes) is a bundle's manifest or a file it lists (its model.onnx, a variant): written over,
    every command refuses the bundle as changed; a bundle is made whole by export, import or
    optimize. The nearest folder above ``target`` holding a manifest is the bundle."""
    from onnxedge.runtime.bundle.manifest import MANIFEST

    written = Path(target).resolve()
    for folder in written.parents:
        try:
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        listed = manifest.get("files") if isinstance(manifest, dict) else None
        name = written.relative_to(folder).as_posix()
        if isinstance(listed, dict) and (name == MANIFEST or name in listed):
            raise click.UsageError(
                f"{option} {target}: expected a file outside a bundle's own files, found {name} "
                f"of the bundle {folder}; write it elsewhere"
            )
        return


def write_json(json_path: str | Path | None, payload: Any) -> None:
    """Write ``payload`` as indented JSON where ``--json`` said: nothing for None, stdout for
    ``-``, else FILE atomically."""
    if json_path is None:
        return
    text = json.dumps(payload, indent=2) + "\n"
    if str(json_path) == "-":
        out = _JSON_STDOUT[-1] if _JSON_STDOUT else sys.stdout
        out.write(text)
        out.flush()
        return
    from onnxedge.runtime.bundle.write import atomic_write_bytes

    atomic_write_bytes(Path(json_path), text.encode())


def deprecated_alias(old: str, new: str, param_name: str, **attrs: Any) -> Callable[[F], F]:
    """A hidden option ``old`` that warns once (``old is deprecated; use new``) and passes its
    value on as the default of the option whose parameter is ``param_name`` (so that option's
    own checks run on it). ``attrs``: for the alias (``is_flag``, ``flag_value``, ``type``)."""

    def forward(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        source = ctx.get_parameter_source(param.name)  # type: ignore[arg-type]
        if source is not click.core.ParameterSource.COMMANDLINE:
            return
        warn(f"{old} is deprecated and will be removed; use {new}")
        ctx.default_map = {**(ctx.default_map or {}), param_name: value}

    return click.option(
        old,
        f"_alias_{param_name}",
        hidden=True,
        expose_value=False,
        is_eager=True,
        callback=forward,
        **attrs,
    )


def json_file(json_path: str | Path | None) -> Path | None:
    """The file ``--json`` names, None for standard output or no ``--json`` (for checks that a
    file can be written before the work)."""
    return None if json_path is None or str(json_path) == "-" else Path(json_path)


def force_option(what: str) -> Callable[[F], F]:
    """``--force`` (parameter ``force``): replace ``what`` where it exists (`refuse_existing`)."""
    return click.option("--force", is_flag=True, help=f"Replace {what} that exists.")


def refuse_existing(path: str | Path, force: bool, what: str) -> None:
    """Before any work: an error naming ``path`` when it exists and ``--force`` was not given.
    The write itself stays the library's (atomic: the old one stays until the new is whole)."""
    path = Path(path)
    if not force and (path.exists() or path.is_symlink()):
        from onnxedge.runtime.errors import OnnxEdgeError

        raise OnnxEdgeError(f"{path} exists: give --force to replace {what}, or another path")
