"""`onnxedge.runtime.deps`: optional modules and package versions, asked without importing."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import onnxruntime
import pytest

from onnxedge.runtime import deps


def test_package_version_of_an_installed_and_a_missing_distribution():
    assert deps.package_version("numpy") == np.__version__
    assert deps.package_version("onnxedge-no-such-distribution") is None


def test_onnxruntime_version_is_the_imported_modules():
    assert deps.onnxruntime_version() == onnxruntime.__version__


@pytest.mark.parametrize(
    ("installed", "expected"),
    [
        ({"onnxruntime-gpu": "1.31.1"}, "1.31.1"),
        ({"onnxruntime": "1.20.0"}, "1.20.0"),
        ({"onnxruntime-gpu": "1.31.1", "onnxruntime": "1.20.0"}, "1.31.1"),
        ({}, None),
    ],
)
def test_onnxruntime_version_tries_the_gpu_build_first(monkeypatch, installed, expected):
    def version(dist):
        if dist in installed:
            return installed[dist]
        raise importlib.metadata.PackageNotFoundError(dist)

    monkeypatch.setattr(deps.importlib.metadata, "version", version)
    assert deps.onnxruntime_version() == expected


@pytest.mark.parametrize(
    ("installed", "refused"),
    [
        ({"onnxruntime": "1.31.1"}, False),
        ({"onnxruntime-gpu": "1.31.1"}, False),
        ({"onnxruntime-gpu": "1.31.1", "onnxruntime": "1.31.1"}, True),
    ],
)
def test_both_onnxruntime_builds_are_refused_with_what_to_run(monkeypatch, installed, refused):
    """pip cannot express "onnxruntime-gpu instead of onnxruntime" (pyproject.toml's cuda
    extra): an environment with both is refused by every command in one line saying what to
    run; with one of them nothing is said."""
    from click.testing import CliRunner

    from onnxedge.runtime.cli import main

    monkeypatch.setattr(deps, "package_version", installed.get)
    if refused:
        with pytest.raises(deps.OnnxEdgeError, match="both installed"):
            deps.check_one_onnxruntime()
    else:
        deps.check_one_onnxruntime()
    result = CliRunner().invoke(main, ["check", "no-such-model.onnx"])
    errors = [line for line in result.output.splitlines() if line.startswith("onnxedge: error:")]
    assert len(errors) == 1 and result.exit_code == 1, result.output
    if refused:
        assert deps.KEEP_ONE_ONNXRUNTIME in errors[0] and len(errors[0]) <= 200
    else:
        assert "no-such-model.onnx" in errors[0]
