"""Which optional modules are installed here, asked without importing them.

The runtime installs without the export side (torch, onnxscript, onnxsim) and without matplotlib;
commands that need them say so in one line instead of failing with an ImportError.
"""

from __future__ import annotations

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
