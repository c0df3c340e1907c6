"""What the commands' options share: the number types, and callbacks for comma-separated
positive integers (batch sizes) and comma-separated names (execution providers, peers).

1. Numbers: click's ``FloatRange`` lets NaN through any range and the infinities through an open
   end, so ``--atol inf`` would pass every parity row and ``--threshold nan`` reach the library.
   `FiniteFloatRange` refuses them; `finite_numbers`, applied by the group to every command it
   loads, gives each float option that type, so no command can forget it. ``THREADS`` bounds
   ``--threads`` as `onnxedge.runtime.engines.onnxruntime.session.SessionConfig` does.
2. The callbacks return the values in the order given, duplicates dropped.

Bad input is a `click.BadParameter` (usage error, exit 2) that says what was expected and what
was found.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import click

from onnxedge.runtime.engines.onnxruntime.session import MAX_THREADS, PROVIDERS


class ThreadCount(click.IntRange):
    """A thread count from 1 to ``MAX_THREADS``; for the engine's ``--threads``, one above the
    cores this process may use is taken with one warning on stderr: its compute threads share
    the cores and run slower (decoding threads, which wait on files, are not warned about)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and "," in value:  # a list: only tune tries several
            self.fail(
                f"expected one thread count from 1 to {MAX_THREADS}, found {value!r} (a list of "
                "counts to try is onnxedge tune's)",
                param,
                ctx,
            )
        count = super().convert(value, param, ctx)
        cores = usable_cores()
        if count > cores and (param is None or param.name == "threads"):
            name = param.opts[0] if param is not None and param.opts else "threads"
            from onnxedge.runtime.cli.output import warn

            warn(
                f"{name} {count} is more than the {cores} usable core"
                f"{'s' if cores != 1 else ''}; the threads share them and run slower"
            )
        return count


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), else the machine's."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


THREADS = ThreadCount(1, MAX_THREADS)

# A seed of the export side and of `data synth`: what numpy's and PyTorch's generators take.
SEED = click.IntRange(0, 2**63 - 1)


# A bound at least this large is no limit a user meets (a seed's 2**63 - 1): left out of the text.
_NO_LIMIT = 2**31


def _bound(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


class PlainRange:
    """A click number range that describes itself in words, in help and in errors: ``at least
    1``, ``0 to 1``, ``above 0, below 1``; not click's ``x>=1``, ``0<=x<=9223372036854775807``
    or, for a float without limits, ``x<=None`` (nothing at all)."""

    min: Any
    max: Any
    min_open: bool
    max_open: bool

    def _describe_range(self) -> str:
        low = self.min if self.min is not None and abs(self.min) < _NO_LIMIT else None
        high = self.max if self.max is not None and abs(self.max) < _NO_LIMIT else None
        if low is not None and high is not None and not (self.min_open or self.max_open):
            return f"{_bound(low)} to {_bound(high)}"
        parts = []
        if low is not None:
            parts.append(f"{'above' if self.min_open else 'at least'} {_bound(low)}")
        if high is not None:
            parts.append(f"{'below' if self.max_open else 'at most'} {_bound(high)}")
        return ", ".join(parts)

    def fail(self, message: str, param: Any = None, ctx: Any = None) -> Any:
        """click's ``5 is not in the range at least 10.`` said as ``expected a number at least
        10, found 5``."""
        value, sep, rest = message.partition(" is not in the range ")
        if sep and rest == f"{self._describe_range()}.":
            message = f"expected a number {rest[:-1]}, found {value}"
        return super().fail(message, param, ctx)  # type: ignore[misc]


def plain_range(kind: click.ParamType) -> click.ParamType:
    """``kind`` as a `PlainRange` (a copy of the same class with the mixin), where it is a click
    number range; anything else as it is."""
    if not isinstance(kind, click.types._NumberRangeBase) or isinstance(kind, PlainRange):
        return kind
    cls = type(kind)
    made = _PLAIN.setdefault(cls, type(f"Plain{cls.__name__}", (PlainRange, cls), {}))
    plain = made.__new__(made)
    plain.__dict__.update(vars(kind))
    return plain


_PLAIN: dict[type, type] = {}


class FiniteFloatRange(PlainRange, click.FloatRange):
    """`click.FloatRange` for finite numbers only: NaN, ``inf`` and ``-inf`` are usage errors."""

    name = "finite float range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"expected a finite number, found {value!r}", param, ctx)
        return super().convert(number, param, ctx)


class NonEmptyPath(click.Path):
    """A `click.Path` that refuses an empty string (``--out ""`` was the current folder: ". exists:
    give --force to replace the bundle"), as a usage error."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value == "":
            self.fail("expected a path, found an empty string", param, ctx)
        return super().convert(value, param, ctx)


def finite_numbers(command: click.Command) -> click.Command:
    """Give every float option and argument of ``command`` (and of its subcommands) the
    `FiniteFloatRange` of its range, every number range its description in words
    (`PlainRange`), and every path `NonEmptyPath`; returns the command. Idempotent."""
    for param in command.params:
        kind = param.type
        if isinstance(kind, FiniteFloatRange):
            continue
        if isinstance(kind, click.types._NumberRangeBase) and not isinstance(
            kind, click.FloatRange
        ):
            param.type = plain_range(kind)
        elif isinstance(kind, click.FloatRange):
            param.type = FiniteFloatRange(
                kind.min, kind.max, min_open=kind.min_open, max_open=kind.max_open, clamp=kind.clamp
            )
        elif isinstance(kind, click.types.FloatParamType):
            param.type = FiniteFloatRange()
        elif type(kind) is click.Path:  # a subclass keeps its own convert
            param.type = copy.copy(kind)
            param.type.__class__ = NonEmptyPath
    for sub in getattr(command, "commands", {}).values():
        finite_numbers(sub)
    return command


Callback = Callable[[click.Context, click.Parameter, Any], tuple[Any, ...]]


def split_commas(value: str | Sequence[str] | None) -> list[str]:
    """The non-empty, stripped items of a comma-separated value (or of several, for an option
    given more than once)."""
    if value is None:
        return []
    parts = [value] if isinstance(value, str) else list(value)
    return [item.strip() for part in parts for item in part.split(",") if item.strip()]


def positive_ints(
    ctx: click.Context, param: click.Parameter, value: str | tuple[str, ...] | None
) -> tuple[int, ...]:
    """Comma-separated integers of at least 1, such as ``1,8,64``; at least one."""
    return _ints_from_one(value, None)


def positive_ints_up_to(maximum: int) -> Callback:
    """`positive_ints` of at most ``maximum`` each (thread counts: `MAX_THREADS`)."""

    def parse(
        ctx: click.Context, param: click.Parameter, value: str | tuple[str, ...] | None
    ) -> tuple[int, ...]:
        return _ints_from_one(value, maximum)

    return parse


def _ints_from_one(value: str | tuple[str, ...] | None, maximum: int | None) -> tuple[int, ...]:
    each = "of at least 1" if maximum is None else f"from 1 to {maximum}"
    what = f"integers {each}"
    sizes = []
    for item in split_commas(value):
        try:
            size = int(item)
        except ValueError:
            raise click.BadParameter(
                f"expected comma-separated {what} such as 1,8,64, found {item!r}"
            ) from None
        if size < 1 or (maximum is not None and size > maximum):
            raise click.BadParameter(
                f"expected comma-separated {what} such as 1,8,64, found {size}"
            )
        sizes.append(size)
    if not sizes:
        raise click.BadParameter(f"expected at least one integer {each}, such as 1,8,64")
    return tuple(dict.fromkeys(sizes))


def name_list(
    choices: Sequence[str],
    *,
    what: str = "name",
    default: Sequence[str] | None = None,
    allow_none: bool = False,
    allow_empty: bool = False,
) -> Callback:
    """A callback for comma-separated names out of ``choices`` (case-insensitive).

    ``what``: the kind of name, for the messages. ``default``: what an absent option (value
    None) gives. ``allow_none``: the single word ``none`` gives ``()``. ``allow_empty``: no names
    at all is allowed (an option not given, with ``multiple=True``).
    """
    allowed = tuple(choices)
    extra = " (or none)" if allow_none else ""

    def parse(
        ctx: click.Context, param: click.Parameter, value: str | tuple[str, ...] | None
    ) -> tuple[str, ...]:
        if value in (None, ()) and default is not None:  # (): absent, with multiple=True
            return tuple(default)
        names = tuple(dict.fromkeys(n.lower() for n in split_commas(value)))
        if allow_none and names == ("none",):
            return ()
        unknown = [n for n in names if n not in allowed]
        if unknown:
            raise click.BadParameter(
                f"unknown {what} {unknown[0]!r}; expected some of: {', '.join(allowed)}{extra}"
            )
        if not names and not allow_empty:
            raise click.BadParameter(
                f"expected a comma-separated list of {what}s: {', '.join(allowed)}{extra}"
            )
        return names

    return parse


def provider_list(
    choices: Sequence[str] = tuple(PROVIDERS),
    *,
    default: Sequence[str] | None = None,
    allow_empty: bool = False,
) -> Callback:
    """`name_list` for ONNX Runtime execution providers by their short names (``cpu``, ``cuda``,
    ...): ``choices`` must be among `onnxedge.runtime.engines.onnxruntime.session.PROVIDERS`."""
    unknown = [c for c in choices if c not in PROVIDERS]
    if unknown:
        raise ValueError(
            f"not execution providers of onnxedge.runtime.engines.onnxruntime.session: {unknown}"
        )
    return name_list(choices, what="provider", default=default, allow_empty=allow_empty)


def images_options(help: str) -> Callable[[Any], Any]:
    """``--images DIR`` (repeatable; parameter ``image_dirs``) with ``help``, and
    ``--images-batch-size``, for the commands that time predict's code on image files (bench,
    tune)."""
    from pathlib import Path

    from onnxedge.runtime.classifier.loader import DEFAULT_BATCH_SIZE

    images = click.option(
        "--images", "image_dirs", multiple=True, type=click.Path(exists=True, path_type=Path),
        help=f"{help} A file that cannot be read is left out and named.",
    )  # fmt: skip
    batch = click.option(
        "--images-batch-size",
        type=click.IntRange(min=1),
        default=DEFAULT_BATCH_SIZE,
        show_default=True,
        help="predict's --batch-size for the image files.",
    )
    return lambda command: images(batch(command))


def percent_not_fraction(ctx: click.Context, param: click.Parameter, value: float | None) -> Any:
    """A percent, as every accuracy and agreement figure of the commands is (``--min-accuracy``,
    ``--min-agreement``); a fraction (above 0, at most 1) is refused, so that ``0.97`` (meant as
    97%) is not taken as a 0.97% gate, which nothing fails."""
    if value is not None and 0 < value <= 1:
        raise click.BadParameter(
            f"expected a percent such as 97 (accuracy figures are percents), found {value:g}; "
            f"give {100 * value:g} for {100 * value:g}%"
        )
    return value
