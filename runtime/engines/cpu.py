"""What the engines' int8 kernels depend on in the CPU: its feature flags, and whether its int8
dot products add in 32 bits (VNNI) or in pairs into 16 bits (x86 without VNNI: AVX2's
``VPMADDUBSW``, which saturates; docs/VARIANTS.md, "int8 on x86 CPUs without VNNI")."""

from __future__ import annotations

import platform
from collections.abc import Iterable
from pathlib import Path

# Flags of an x86 CPU whose int8 dot products onnxruntime (MLAS) and OpenVINO (oneDNN) add in 32
# bits: AVX-512 VNNI, AVX-VNNI, AMX.
INT8_DOT_PRODUCT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
_X86 = frozenset({"x86_64", "amd64", "i386", "i686"})


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``avx512_vnni``, ``amx_int8``, ...) from /proc/cpuinfo; empty
    where it does not exist."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def int8_pairs_saturate(flags: Iterable[str] | None = None, machine: str | None = None) -> bool:
    """Whether the int8 kernels here add u8 x s8 products in pairs into 16 bits: an x86 CPU
    (``machine``, default this one's) whose ``flags`` (default this one's) are known and name no
    `INT8_DOT_PRODUCT_FLAGS`. False where the flags cannot be read: unknown is not a warning."""
    flags = cpu_flags() if flags is None else frozenset(flags)
    machine = (machine if machine is not None else platform.machine()).lower()
    return machine in _X86 and bool(flags) and not flags & INT8_DOT_PRODUCT_FLAGS


__all__ = ["INT8_DOT_PRODUCT_FLAGS", "cpu_flags", "int8_pairs_saturate"]
