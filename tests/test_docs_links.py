"""Every relative link in README.md and docs/ points at a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# [text](target) and [text](target "title"); images too. Code spans and fences are skipped.
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FENCE = re.compile(r"^(```|~~~)")


def broken_links(markdown: Path) -> list[str]:
    """The relative link targets of ``markdown`` that do not resolve to an existing path."""
    broken = []
    in_fence = False
    for number, line in enumerate(markdown.read_text(encoding="utf-8").splitlines(), 1):
        if _FENCE.match(line.lstrip()):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        line = re.sub(r"`[^`]*`", "", line)
        for target in _LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL (http:, mailto:) or an anchor in the same page
            path = target.split("#", 1)[0]
            if not (markdown.parent / path).exists():
                broken.append(f"{markdown.relative_to(markdown.parents[1])}:{number}: {target}")
    return broken


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("document", _documents(), ids=lambda p: p.name)
def test_relative_links_resolve(document: Path) -> None:
    assert broken_links(document) == []


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "GOOD.md").write_text("x\n")
    page = docs / "PAGE.md"
    page.write_text(
        "[ok](GOOD.md) [ok too](GOOD.md#a-section) [web](https://example.org/x.md) [here](#top)\n"
        "![missing picture](pic.png) and [gone](../README.md)\n"
        "```\n[in a fence](nowhere.md)\n```\n"
        "`[in code](nowhere.md)`\n"
    )
    assert broken_links(page) == ["docs/PAGE.md:2: pic.png", "docs/PAGE.md:2: ../README.md"]
