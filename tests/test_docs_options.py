"""Every option that README.md and docs/ give an `onnxedge` command is one that command has, so
that a renamed or removed option cannot stay in the documentation (an example a user copies
would fail with "No such option")."""

from __future__ import annotations

import re
from pathlib import Path

import click

from onnxedge.runtime.cli import main

ROOT = Path(__file__).resolve().parents[1]
# `onnxedge` then up to two command words (a group's subcommand: `data synth`), then the rest of
# the line up to the end of a code span or a table cell.
_COMMAND = re.compile(r"onnxedge ([a-z][a-z-]*(?: [a-z][a-z-]*)?)([^`|\n]*)")
_OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def _command(group: click.Group, words: list[str]) -> tuple[click.Command | None, int]:
    """The command the words name and how many words name it; None where they name none."""
    ctx = click.Context(group)
    command: click.Command = group
    used = 0
    for word in words:
        if not isinstance(command, click.Group):
            break
        sub = command.get_command(ctx, word)
        if sub is None:
            return None, used
        command, used = sub, used + 1
    return command, used


def _logical_lines(markdown: Path) -> list[tuple[int, str]]:
    """The lines of ``markdown`` with those continued by a backslash joined, each with the number
    of its first line."""
    lines: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, line in enumerate(markdown.read_text(encoding="utf-8").splitlines(), 1):
        start, text = pending if pending else (number, "")
        text += " " + line.strip() if text else line
        pending = (start, text[:-1]) if line.endswith("\\") else None
        if pending is None:
            lines.append((start, text))
    return lines + ([pending] if pending else [])


def unknown_options(markdown: Path, group: click.Group = main) -> list[str]:
    """``FILE:LINE: onnxedge CMD --option`` for each option a command line in ``markdown`` gives
    that its command does not have (lines continued with a backslash are read as one)."""
    unknown = []
    for number, line in _logical_lines(markdown):
        for match in _COMMAND.finditer(line):
            words = match.group(1).split()
            command, used = _command(group, words)
            if command is None or isinstance(command, click.Group):
                continue  # prose ("onnxedge is ..."), or a group named alone
            names = {"--help"}
            for param in command.params:
                names.update(param.opts, param.secondary_opts)
            rest = " ".join(words[used:]) + match.group(2)
            for option in _OPTION.findall(rest):
                if option not in names:
                    unknown.append(
                        f"{markdown.name}:{number}: onnxedge {' '.join(words[:used])} {option}"
                    )
    return unknown


def test_the_documents_give_each_command_only_its_own_options() -> None:
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert [u for d in documents for u in unknown_options(d)] == []


def test_an_option_a_command_lacks_is_found(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "Run `onnxedge predict b.bundle x.jpg --batch-size 8 --no-such-option`.\n"
        "```sh\nonnxedge data synth --out d \\\n  --count 100 --colour red\n```\n"
        "| `onnxedge tune b --images d` | ok |\nonnxedge is a toolkit --not-an-option\n"
        "`onnxedge export --model m --out o --opset 18 --head mean --fps 9`\n",
        encoding="utf-8",
    )
    assert unknown_options(page) == [
        "page.md:1: onnxedge predict --no-such-option",
        "page.md:3: onnxedge data synth --colour",
        "page.md:8: onnxedge export --fps",
    ]
