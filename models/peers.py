"""PyTorch peers for `onnxedge bench`: the bundle's model rebuilt in PyTorch and timed beside ONNX
Runtime on the same inputs, in the same run.

The model comes from the bundle's manifest: its name (the registry), its head and its weights
(a seed is rebuilt with `onnxedge.models.weights.seeded`; a checkpoint needs ``--checkpoint``,
whose sha256 must match the manifest's). The bench checks each peer's output against ORT's before
timing it, so a peer that is not the same model is never compared.

Peers (each on the CPU, and on CUDA where ``torch.cuda.is_available()``):

1. ``eager``: fp32, ``model.eval()``, parameters with ``requires_grad`` off (no autograd graph).
2. ``channels-last``: as eager with the weights in channels-last; the NCHW host input is converted
   inside the timed call (end-to-end) or once before timing (device-resident).
3. ``compile``: ``torch.compile(model, backend="inductor", mode="default", dynamic=False)``; the
   first call at each batch size compiles, and its wall time is reported as ``compile_s``, apart
   from the latency. On the CPU inductor needs a C++ compiler; without one the peer is skipped.

Modes: ``end-to-end`` takes the host array and returns a host array (on CUDA: ``.to("cuda")`` in,
``.cpu()`` out); ``device-resident`` (CUDA only) has the input on the GPU before timing and ends
each call with ``torch.cuda.synchronize()``. Threads: ``torch.set_num_threads(threads)``, the
count ORT's CPU EP gets. TF32 is off for convolutions and matmuls unless ``tf32``.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from onnxedge.models.weights import CannotRebuild, module_from_manifest
from onnxedge.runtime.bench.engines import (
    E2E,
    PEERS,
    RESIDENT,
    AnyEngine,
    EngineInfo,
    SkippedEngine,
    peer_info,
    peer_modes,
)

log = logging.getLogger(__name__)

_COMPILE_OPTIONS = {"backend": "inductor", "mode": "default", "dynamic": False}
# Each batch size is a new static shape, hence a recompile; keep dynamo from falling back to eager
# silently after its default recompile limit (8).
_RECOMPILE_LIMIT = 64


class PeerUnavailable(Exception):
    """The peer cannot be built here; the message is the reason shown in the report."""


def build_model(manifest: Mapping[str, Any], checkpoint: str | Path | None) -> torch.nn.Module:
    """The bundle's model in PyTorch, with the bundle's weights, in eval mode without grads."""
    try:
        model = module_from_manifest(manifest, checkpoint)
    except CannotRebuild as e:
        raise PeerUnavailable(str(e)) from None
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def cxx_compiler() -> str | None:
    """The C++ compiler inductor would use on the CPU ($CXX, else g++), if it exists."""
    return shutil.which(os.environ.get("CXX") or "g++")


def _set_recompile_limit() -> None:
    import torch._dynamo

    cfg = torch._dynamo.config
    for attr in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, attr):
            setattr(cfg, attr, max(getattr(cfg, attr), _RECOMPILE_LIMIT))


def build_peers(
    manifest: Mapping[str, Any],
    *,
    peers: Sequence[str],
    devices: Sequence[str],
    threads: int,
    checkpoint: str | Path | None = None,
    tf32: bool = False,
) -> list[AnyEngine]:
    """One engine (or `SkippedEngine`) per peer x device x mode."""
    torch.set_num_threads(threads)
    common = {"torch_threads": threads, "requires_grad": False, "dtype": "float32"}
    try:
        model: torch.nn.Module | None = build_model(manifest, checkpoint)
        unavailable = ""
    except PeerUnavailable as e:
        model, unavailable = None, str(e)
    engines: list[AnyEngine] = []
    for device in devices:
        device_reason = unavailable or _device_unavailable(device)
        if device == "cuda" and not device_reason:
            torch.backends.cudnn.allow_tf32 = tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.benchmark = True
        for peer in peers:
            settings = dict(common)
            if peer == "channels-last":
                settings["memory_format"] = "channels_last"
            if peer == "compile":
                settings.update({f"compile_{k}": v for k, v in _COMPILE_OPTIONS.items()})
            if device == "cuda":
                settings.update(
                    {
                        "tf32": tf32,
                        "cudnn_benchmark": True,
                        "timing": "torch.cuda.synchronize() ends each call",
                        "gpu": _gpu_name(device_reason),
                    }
                )
            reason = device_reason
            if not reason and peer == "compile" and device == "cpu" and cxx_compiler() is None:
                reason = (
                    "torch.compile on the CPU needs a C++ compiler (inductor); found none "
                    f"({os.environ.get('CXX') or 'g++'} is not on PATH)"
                )
            for mode in peer_modes(device):
                info = peer_info(peer, device, mode, settings)
                if reason or model is None:
                    engines.append(SkippedEngine(info, reason))
                else:
                    engines.append(TorchEngine(info, model, peer))
    return engines


def _device_unavailable(device: str) -> str:
    if device == "cpu":
        return ""
    if device == "cuda":
        if torch.cuda.is_available():
            return ""
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        return f"torch.cuda.is_available() is False (torch {torch.__version__}, {build})"
    return f"no PyTorch peer for device {device!r}"


def _gpu_name(reason: str) -> str | None:
    return None if reason else torch.cuda.get_device_name(0)


class TorchEngine:
    """A PyTorch peer on one device, in one mode."""

    def __init__(self, info: EngineInfo, model: torch.nn.Module, peer: str) -> None:
        if peer not in PEERS:
            raise ValueError(f"unknown peer {peer!r}")
        self.info = info
        self.peer = peer
        self.device = torch.device(info.device)
        # A copy per engine: Module.to() works in place, and peers must not share a layout.
        model = copy.deepcopy(model).to(self.device)
        if peer == "channels-last":
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self._compiled: Any = None
        # What the benchmark's progress says while `prepare` runs (`runtime.bench.timing`).
        self.warmup_note = "compiling (torch.compile's first call)" if peer == "compile" else ""
        if peer == "compile":
            _set_recompile_limit()
            self._compiled = torch.compile(model, **_COMPILE_OPTIONS)

    def prepare(self, x: np.ndarray) -> _TorchRunner:
        fn = self._compiled if self._compiled is not None else self.model
        runner = _TorchRunner(fn, x, self.device, self.info.mode, self.peer == "channels-last")
        if self.peer == "compile":
            t0 = time.perf_counter()
            runner.run()  # compiles for this batch size
            runner.extras = {"compile_s": time.perf_counter() - t0}
        return runner

    def close(self) -> None:
        self._compiled = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


class _TorchRunner:
    def __init__(
        self, fn: Any, x: np.ndarray, device: torch.device, mode: str, channels_last: bool
    ) -> None:
        self._fn = fn
        self._x = x
        self._device = device
        self._mode = mode
        self._cl = channels_last
        self._cuda = device.type == "cuda"
        self._x_dev: torch.Tensor | None = None
        if mode == RESIDENT:
            t = torch.from_numpy(x).to(device)
            self._x_dev = t.contiguous(memory_format=torch.channels_last) if channels_last else t
            if self._cuda:
                torch.cuda.synchronize(device)
        elif mode != E2E:
            raise ValueError(f"unknown mode {mode!r}")
        self._last: Any = None
        self.extras: Mapping[str, Any] = {}

    def run(self) -> None:
        if self._x_dev is not None:
            self._last = self._fn(self._x_dev)
            if self._cuda:
                torch.cuda.synchronize(self._device)
            return
        t = torch.from_numpy(self._x)
        if self._cuda:
            t = t.to(self._device)
        if self._cl:
            t = t.contiguous(memory_format=torch.channels_last)
        y = self._fn(t)
        self._last = y.cpu().numpy() if self._cuda else y.numpy()

    def output(self) -> np.ndarray:
        if self._last is None:
            self.run()
        if isinstance(self._last, torch.Tensor):
            return self._last.detach().cpu().numpy()
        return np.asarray(self._last)

    def close(self) -> None:
        self._last = None
        self._x_dev = None
