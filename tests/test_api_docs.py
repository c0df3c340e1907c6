"""`make docs`: the API reference builds, and it names every public name of the two packages."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import onnxedge.export
import onnxedge.runtime

REPO = Path(__file__).resolve().parent.parent


def api_modules() -> list[str]:
    """The pdoc arguments of the Makefile's ``docs`` target (``API_MODULES``)."""
    match = re.search(r"^API_MODULES\s*:?=\s*(.+)$", (REPO / "Makefile").read_text(), re.M)
    assert match, "the Makefile has no API_MODULES"
    return shlex.split(match.group(1))


def documented_names(page: str) -> set[str]:
    return set(re.findall(r'<section id="([A-Za-z_][\w.]*)"', page))


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("api")
    done = subprocess.run(
        [sys.executable, "-m", "pdoc", "-o", str(out), *api_modules()],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.parametrize("package", [onnxedge.runtime, onnxedge.export])
def test_the_api_reference_names_every_public_name(api, package):
    page = api / (package.__name__.replace(".", "/") + ".html")
    names = documented_names(page.read_text(encoding="utf-8"))
    assert set(package.__all__) <= names, sorted(set(package.__all__) - names)
    assert (api / "index.html").is_file()


def test_documented_names_reads_pdoc_sections():
    page = '<section id="Bundle"></section><section id="Bundle.open"></section><p id="x">'
    assert documented_names(page) == {"Bundle", "Bundle.open"}
    assert "Classifier" not in documented_names(page)
