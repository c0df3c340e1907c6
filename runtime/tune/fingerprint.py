"""The machine a tuning file was measured on: what decides which setup is fastest (the CPU
model and its flags, the cores this process may use, the engines' versions), and how two
fingerprints differ, in words."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from onnxedge.runtime.bench.machine import machine_info, versions
from onnxedge.runtime.engines.cpu import cpu_flags

# The fields compared, in the order a difference is reported, with what each is called.
FIELDS = {
    "cpu": "CPU model",
    "cpu_flags_sha256": "CPU flags",
    "usable_cores": "usable cores",
    "onnxruntime": "onnxruntime version",
    "openvino": "openvino version",
}


def machine_fingerprint() -> dict[str, Any]:
    """This machine's fingerprint: the `FIELDS` and, for a reader, the ISA flags that the int8
    and bf16 kernels depend on."""
    flags = cpu_flags()
    info = machine_info()
    engines = versions()
    return {
        "cpu": info["cpu"],
        "cpu_flags_sha256": hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest(),
        "usable_cores": info["usable_cores"],
        "onnxruntime": engines["onnxruntime"],
        "openvino": engines["openvino"],
        "isa": sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "sse4"))),
    }


def fingerprint_difference(made: Mapping[str, Any], here: Mapping[str, Any]) -> str | None:
    """The first field in which ``made`` (a tuning file's) differs from ``here``, in words, or
    None where they agree on every field."""
    for key, name in FIELDS.items():
        if made.get(key) != here.get(key):
            return f"{name} {_show(made.get(key))}, this machine's {_show(here.get(key))}"
    return None


def _show(value: Any) -> str:
    if value is None:
        return "none"
    text = str(value)
    return text[:12] if len(text) == 64 else text  # a sha256, shortened


__all__ = ["FIELDS", "fingerprint_difference", "machine_fingerprint"]
