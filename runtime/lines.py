"""Result lines for a terminal: every PASSED/FAILED/SKIPPED line a command prints without -v fits
`LINE_WIDTH` columns (-v and the JSON keep every figure on one line)."""

from __future__ import annotations

import textwrap

LINE_WIDTH = 120
INDENT = "    "


def fit(text: str, width: int = LINE_WIDTH, subsequent_indent: str = INDENT) -> str:
    """``text`` in lines of at most ``width`` characters, broken at spaces (a word longer than a
    line, such as a path, stays whole), the lines after the first indented."""
    return textwrap.fill(
        text,
        width,
        subsequent_indent=subsequent_indent,
        break_long_words=False,
        break_on_hyphens=False,
    )


def fit_markdown(text: str, width: int = LINE_WIDTH, keep: tuple[str, ...] = ("|", "#")) -> str:
    """Markdown for a terminal: each paragraph, list item and quote longer than ``width`` broken
    at spaces into lines that render the same (a paragraph's and a list item's next lines
    indented by two spaces, a quote's marked ``>``); a line starting with one of ``keep`` (a table
    row, a heading) stays whole, as does a word longer than a line."""
    out = []
    for line in text.split("\n"):
        if len(line) <= width or line.startswith(keep):
            out.append(line)
            continue
        indent = "> " if line.startswith("> ") else "  "
        out.append(fit(line, width, subsequent_indent=indent))
    return "\n".join(out)


# No line a user sees is longer than this, beyond the paths it names (docs/CLI.md): the messages
# are written to fit, and `tests/test_cli_vocabulary.py` runs the error paths with short paths.
MAX_LINE = 200


def one_line(text: str) -> str:
    """``text`` on one line: a library's message that ends in a newline or spreads over several
    (protobuf's, onnxruntime's) joined with single spaces. Nothing is cut: a path the user gave
    stays whole, however long. A path's bytes outside UTF-8 (Python's surrogate escapes, which
    printed as ``\udcff``) are shown as predict shows them in its lines, ``\377``."""
    return " ".join(_undecodable_as_octal(text).split())


def _undecodable_as_octal(text: str) -> str:
    if not any("\udc80" <= c <= "\udcff" for c in text):
        return text
    from onnxedge.runtime.names import name_bytes, octal, utf8_runs

    return "".join(part + octal(bad) for part, bad in utf8_runs(name_bytes(text)))
