"""Assertions shared by the CLI tests."""

from __future__ import annotations

import re
from typing import Any


def assert_one_line_error(result: Any, *fragments: str) -> None:
    """A click `Result` of a user error: exit 1, exactly one `onnxedge: error:` line holding every
    fragment, and no traceback."""
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("onnxedge: error:")]
    assert len(errors) == 1, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def unwrap_markdown(output: str) -> str:
    """Markdown broken for a terminal (`onnxedge.runtime.lines.fit_markdown`: a paragraph's and a
    list item's next lines indented by two spaces, a quote's marked ``>``) joined back."""
    return re.sub(r"(?<=[^\n])\n(?:  |> )", " ", output)


def unwrap(output: str) -> str:
    """Output whose long result lines were wrapped (continuation lines indented by four spaces,
    `onnxedge.runtime.lines.fit`) with each wrapped line joined back into one."""
    lines: list[str] = []
    for line in output.splitlines():
        if line.startswith("    ") and lines and not line.startswith("     "):
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    return "\n".join(lines) + ("\n" if output.endswith("\n") else "")
