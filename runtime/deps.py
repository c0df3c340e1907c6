"""Which optional modules are installed here, and at which version, asked without importing them.

The runtime installs without the export side (torch, onnxscript, onnxsim) and without matplotlib;
commands that need them say so in one line instead of failing with an ImportError. Versions come
from the installed distributions' metadata, so recording them in a report imports nothing (and
cannot fail the way importing a broken torch wheel can).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util

from onnxedge.runtime.errors import OnnxEdgeError

EXPORT_EXTRA_HINT = "pip install 'onnxedge[export]'"


def module_available(name: str) -> bool:
    """Whether ``name`` can be imported here; nothing is imported (a parent package may be)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def require_modules(*names: str, needed_by: str, install: str = EXPORT_EXTRA_HINT) -> None:
    """An `OnnxEdgeError` naming every module of ``names`` that is missing, and how to install."""
    missing = [name for name in names if not module_available(name)]
    if missing:
        raise OnnxEdgeError(
            f"{needed_by} needs {', '.join(missing)}, not installed here; install with: {install}"
        )


def package_version(dist: str) -> str | None:
    """The installed version of distribution ``dist`` (a pip name), or None where it is not
    installed; nothing is imported."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# The distributions that provide the `onnxruntime` module, in the order they are asked for.
ONNXRUNTIME_DISTS = ("onnxruntime-gpu", "onnxruntime")
# What to run where both are installed: keep the GPU build (the one the `cuda` extra added), its
# files written again over what removing the other took (the two share the `onnxruntime` folder).
KEEP_ONE_ONNXRUNTIME = (
    "pip uninstall -y onnxruntime && pip install --force-reinstall --no-deps onnxruntime-gpu"
)


def onnxruntime_version() -> str | None:
    """The version of the installed onnxruntime build (``onnxruntime-gpu`` or ``onnxruntime``)."""
    for dist in ONNXRUNTIME_DISTS:
        version = package_version(dist)
        if version:
            return version
    return None


def check_one_onnxruntime() -> None:
    """An `OnnxEdgeError` where both onnxruntime and onnxruntime-gpu are installed: they write the
    same files, so which build runs is whichever was installed last, partly. pip cannot express
    "one or the other" (pyproject.toml's ``cuda`` extra), so the runtime says what to run."""
    if all(package_version(dist) for dist in ONNXRUNTIME_DISTS):
        raise OnnxEdgeError(
            "onnxruntime and onnxruntime-gpu are both installed (they share files); keep the GPU "
            f"one: {KEEP_ONE_ONNXRUNTIME}"
        )
