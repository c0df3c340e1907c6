"""Shared fixtures. Exports are slow (seconds), so one default bundle serves the whole session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def smile_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default export (smile_cnn, avgpool head, dynamo, opset 18, seed 0), made once.

    Read-only for tests: copy it (`bundle_copy`) before changing anything in it.
    """
    from onnxedge.export.pipeline import ExportRequest, export_model

    out = tmp_path_factory.mktemp("bundles") / "smile_cnn"
    export_model(ExportRequest(out=out))
    return out


@pytest.fixture
def bundle_copy(smile_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of the default bundle that a test may modify."""
    return Path(shutil.copytree(smile_bundle, tmp_path / "bundle"))


@pytest.fixture
def no_openvino(monkeypatch: pytest.MonkeyPatch):
    """openvino not importable, as where the extra is not installed."""
    import sys

    from onnxedge.runtime.engines.openvino import loader

    monkeypatch.setitem(sys.modules, "openvino", None)
    loader._core.cache_clear()
    yield
    loader._core.cache_clear()
