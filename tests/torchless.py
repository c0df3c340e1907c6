"""Run the `onnxedge` CLI in a subprocess where torch and the other export-side packages cannot be
imported, as on a device where only the runtime is installed.

A `sys.meta_path` finder placed first raises `ModuleNotFoundError` for every module in `BLOCKED`
and their submodules, exactly what Python raises when a package is not installed. Everything else
(onnxruntime, onnx, numpy, PIL, click, rich) imports normally from the same environment.

Usage::

    result = run_without_torch(["predict", str(bundle), str(image)])
    assert result.returncode == 0, result.stderr
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

BLOCKED = ("torch", "onnxsim", "onnxscript", "onnx_ir", "safetensors", "matplotlib")

# Runs as `python -c BOOTSTRAP ARG...`: sys.argv is ["-c", ARG...].
BOOTSTRAP = f"""
import sys

BLOCKED = {BLOCKED!r}


class _BlockExportSide:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: runtime-only test)",
                                      name=name)
        return None


for _name in list(sys.modules):
    if _name.partition(".")[0] in BLOCKED:
        raise SystemExit(f"torchless: {{_name}} was imported before the blocker was installed")
sys.meta_path.insert(0, _BlockExportSide())
"""

_RUN_CLI = """
sys.argv = ["onnxedge", *sys.argv[1:]]
from onnxedge.runtime.cli import main

main()
"""


def run_python_without_torch(code: str, args: list[str] | None = None, **kw: Any) -> Any:
    """Run ``code`` with the blocker installed; returns the `subprocess.CompletedProcess`."""
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 300)
    env = dict(kw.pop("env", None) or os.environ)
    env.setdefault("PYTHONIOENCODING", "utf-8")
    return subprocess.run(
        [sys.executable, "-c", BOOTSTRAP + code, *(args or [])], env=env, check=False, **kw
    )


def run_without_torch(args: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run ``onnxedge ARGS...`` with torch and the export side blocked from import.

    Keyword arguments go to `subprocess.run` (defaults: ``capture_output=True``, ``text=True``,
    ``timeout=300``, ``check=False``).
    """
    return run_python_without_torch(_RUN_CLI, [str(a) for a in args], **kw)
