"""Click callbacks for the options the commands share: comma-separated positive integers (batch
sizes) and comma-separated names (execution providers, peers).

Each returns the values in the order given, duplicates dropped, and turns bad input into a
`click.BadParameter` (usage error, exit 2) that says what was expected and what was found.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import click

from onnxedge.runtime.session import PROVIDERS

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
    """Comma-separated integers >= 1, such as ``1,8,64``; at least one."""
    sizes = []
    for item in split_commas(value):
        try:
            size = int(item)
        except ValueError:
            raise click.BadParameter(
                f"expected comma-separated integers >= 1 such as 1,8,64, found {item!r}"
            ) from None
        if size < 1:
            raise click.BadParameter(
                f"expected comma-separated integers >= 1 such as 1,8,64, found {size}"
            )
        sizes.append(size)
    if not sizes:
        raise click.BadParameter("expected at least one integer >= 1, such as 1,8,64")
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
        if value is None and default is not None:
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
    ...): ``choices`` must be among `onnxedge.runtime.session.PROVIDERS`."""
    unknown = [c for c in choices if c not in PROVIDERS]
    if unknown:
        raise ValueError(f"not execution providers of onnxedge.runtime.session: {unknown}")
    return name_list(choices, what="provider", default=default, allow_empty=allow_empty)
