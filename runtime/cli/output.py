"""What the commands print besides their results: progress lines on stderr."""

from __future__ import annotations

import click


def echo_progress(msg: str) -> None:
    """One indented progress line on stderr (stdout keeps the results)."""
    click.echo(f"  {msg}", err=True)
