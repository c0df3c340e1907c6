"""What the commands print besides their results: how verbose to be, and progress lines."""

from __future__ import annotations

import click


def verbosity() -> int:
    """How many ``-v`` the `onnxedge` group was given (0 outside a command)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return 0
    return int(ctx.find_root().params.get("verbose") or 0)


def echo_progress(msg: str) -> None:
    """One indented progress line on stderr, with ``-v`` only: stdout keeps the results, and a
    command run without it prints its results alone."""
    if verbosity() > 0:
        click.echo(f"  {msg}", err=True)
