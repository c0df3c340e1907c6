"""``--tuned [FILE]``: predict, evaluate and bench run the setup `onnxedge tune` found fastest on
this machine (`onnxedge.runtime.tune.choice`); a tuning file that does not hold here is one line
on stderr saying why, and the defaults run."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click
from click.core import ParameterSource

from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.cli.output import BESIDE_THE_BUNDLE, note, warn

if TYPE_CHECKING:
    from onnxedge.runtime.tune import TunedChoice

F = TypeVar("F", bound=Callable[..., Any])
# The options a tuned setup replaces: given with --tuned, they are a usage error.
REPLACED = ("engine", "variant", "precision", "threads")


def tuned_option(command: F) -> F:
    """Add ``--tuned [FILE]`` to a command (parameter ``tuned``: None, or the file)."""
    return click.option(
        "--tuned",
        is_flag=False,
        flag_value=BESIDE_THE_BUNDLE,
        default=None,
        metavar="[FILE]",
        callback=_not_an_input,
        help="Run the engine, variant and threads `onnxedge tune` found fastest here for the "
        "batch size in use (from files: its files winner with its decoding pool, where tune "
        "--images measured one), from FILE [default: BUNDLE.tuning.json]; a file for another "
        "machine or bundle is ignored with the reason. Put it last, or write --tuned=FILE.",
    )(command)


def _not_an_input(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A usage error where FILE is an image or a folder: ``predict B --tuned a.jpg b.jpg``
    takes ``a.jpg`` for the tuning file, which would drop it from the run with a warning."""
    from pathlib import Path

    from onnxedge.runtime.classifier.preprocess import is_image_name

    if value is None or value == BESIDE_THE_BUNDLE:
        return value
    found = "a folder" if Path(value).is_dir() else "an image" if is_image_name(value) else None
    if found:
        raise click.BadParameter(
            f"expected a tuning file, found {found} ({value}); put --tuned last, or write "
            "--tuned=FILE"
        )
    return value


def tuned_argument(tuned: str | None) -> bool | str | None:
    """The ``tuned`` argument of the library: True for the file beside the bundle."""
    return True if tuned == BESIDE_THE_BUNDLE else tuned


def check_not_replaced(ctx: click.Context, names: Sequence[str] = REPLACED) -> None:
    """A usage error for an option --tuned replaces, given on the command line with it (named
    as it was typed: ``--engines``, or its deprecated ``--engine``, which passes its value on
    as the option's default)."""
    options = {p.name: p for p in ctx.command.params}
    given = []
    for name in names:
        source = ctx.get_parameter_source(name)
        typed = options.get(name if source == ParameterSource.COMMANDLINE else f"_alias_{name}")
        if source in (ParameterSource.COMMANDLINE, ParameterSource.DEFAULT_MAP):
            given.append(typed.opts[0] if typed is not None and typed.opts else f"--{name}")
    if given:
        raise click.UsageError(
            f"--tuned chooses the engine, variant, precision and threads; drop {', '.join(given)}"
        )


def resolve_for(
    bundle: str, tuned: str, batch_size: int, *, for_files: bool = False, decode: str | None = None
) -> TunedChoice | None:
    """The tuned choice for ``bundle`` at ``batch_size`` (``for_files``: the files winner for
    ``decode``, None: the bundle's trained decode, where there is one), its line on stderr.
    The tuning code is imported here, not with the command, so that a run without --tuned does
    not load it (with `onnxedge.runtime.bench`, about 55 ms of a one-file predict's 0.66 s)."""
    from onnxedge.runtime.tune import resolve_tuned

    opened, how = Bundle.open(bundle), tuned_argument(tuned)
    choice = resolve_tuned(opened, how, batch_size, for_files=for_files, decode=decode)
    if choice is not None:
        say_tuned(choice)
    return choice


def say_tuned(choice: TunedChoice) -> None:
    """A `TunedChoice`'s line on stderr: what runs (``onnxedge: tuned: ...``), or a warning
    where the file was ignored (``onnxedge: warning: tuning file ignored: ...``)."""
    if choice:
        given = _pool_given() if choice.files is not None else None
        instead = f"; {given} as given decodes, not tune's pool" if given else ""
        note(f"onnxedge: {choice.line()}{instead}")
    else:
        warn(choice.line())


def _pool_given() -> str | None:
    """The decoding pool option given on the command line (it wins over a files winner's)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return None
    for name in ("decode_threads", "decode_processes", "batch_processes"):
        if name in ctx.params and ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE:
            return f"--{name.replace('_', '-')} {ctx.params[name]}"
    return None


@dataclasses.dataclass(frozen=True)
class Tuned:
    """`apply_tuned`'s answer: the command's engine, variant, precision and threads as they
    stand (``chosen``), and whether a tuned choice held."""

    chosen: dict[str, Any]
    held: bool = False


def apply_tuned(
    bundle: str,
    tuned: str | None,
    batch_size: int,
    *,
    for_files: bool = False,
    decode: str | None = None,
    **current: Any,
) -> Tuned:
    """``current`` (the command's engine, variant, precision and threads), replaced by the tuned
    setup where --tuned was given and its file holds here (its line on stderr either way); from
    files (``for_files``), the files winner's engine, variant and precision where the file has
    one for the decode, the threads left to the default."""
    if tuned is None:
        return Tuned(current)
    check_not_replaced(click.get_current_context())
    choice = resolve_for(bundle, tuned, batch_size, for_files=for_files, decode=decode)
    if not choice:
        return Tuned(current)
    setup = choice.files if choice.files is not None else choice.setup
    keys = [k for k in REPLACED if hasattr(setup, k)]
    return Tuned({**current, **{k: getattr(setup, k) for k in keys}}, held=True)


def classifier_settings(tuned: str | None, applied: Tuned) -> dict[str, Any]:
    """What a local run hands `Classifier.from_bundle`: ``{"tuned": ...}`` where a tuned choice
    held, so that the classifier resolves it itself and knows its threads are tune's, not the
    user's (batch processes stay the files' default, docs/RUNTIME.md) and takes a files winner's
    pool; else the options as given. (--tuned with an option it replaces is a usage error, so
    the library's defaults stand for them.)"""
    return {"tuned": tuned_argument(tuned)} if applied.held else applied.chosen


__all__ = [
    "BESIDE_THE_BUNDLE",
    "Tuned",
    "apply_tuned",
    "check_not_replaced",
    "classifier_settings",
    "resolve_for",
    "tuned_argument",
    "tuned_option",
]
