"""Result lines for a terminal: every PASSED/FAILED/SKIPPED line a command prints without -v fits
`LINE_WIDTH` columns (-v and the JSON keep every figure on one line)."""

from __future__ import annotations

import textwrap

LINE_WIDTH = 120
INDENT = "    "


def fit(text: str, width: int = LINE_WIDTH) -> str:
    """``text`` in lines of at most ``width`` characters, broken at spaces (a word longer than a
    line, such as a path, stays whole), the lines after the first indented."""
    return textwrap.fill(
        text, width, subsequent_indent=INDENT, break_long_words=False, break_on_hyphens=False
    )
