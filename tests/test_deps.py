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
