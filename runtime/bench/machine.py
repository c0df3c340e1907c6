"""The machine a benchmark ran on: CPU model and cores, GPUs, load average, package versions."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from onnxedge.runtime.deps import module_available, onnxruntime_version, package_version
from onnxedge.runtime.engines.onnxruntime.session import available_providers

# A 1-minute load average before the run above this many per usable core marks the run as busy.
BUSY_LOAD_PER_CORE = 0.25


def _cpuinfo() -> tuple[str | None, int | None]:
    """CPU model name and the number of physical cores, from /proc/cpuinfo where it exists."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None, None
    model = None
    cores: set[tuple[str, str]] = set()
    for block in text.split("\n\n"):
        fields = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
        model = model or fields.get("model name")
        if "core id" in fields:
            cores.add((fields.get("physical id", "0"), fields["core id"]))
    return model, len(cores) or None


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_threads() -> int:
    """One thread per physical core this process may use."""
    _, physical = _cpuinfo()
    usable = _usable_cpus()
    return max(1, min(physical or usable, usable))


def _gpus() -> list[str]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=15,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages, where the OS has them."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_info() -> dict[str, Any]:
    model, physical = _cpuinfo()
    return {
        "cpu": model or platform.processor() or platform.machine(),
        "physical_cores": physical,
        "logical_cores": os.cpu_count(),
        "usable_cores": _usable_cpus(),
        "gpus": _gpus(),
        "os": platform.platform(),
        "onnxruntime_providers": available_providers(),
    }


def versions() -> dict[str, str | None]:
    """Versions from the installed distributions' metadata (nothing is imported)."""
    return {
        "onnxedge": package_version("onnxedge"),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime_version(),
        "numpy": np.__version__,
        "onnx": package_version("onnx"),
        "torch": package_version("torch") if module_available("torch") else None,
        "openvino": package_version("openvino"),
    }
