"""The PyTorch peers behind an interface the benchmark owns.

The benchmark never imports torch. A peer builder (`PeerBuilder`) takes the bundle's manifest and
returns engines that follow `onnxedge.runtime.bench.engines`' `Engine` protocol (or
`SkippedEngine` with the reason); this project's lives in ``models/`` (`PEER_BUILDER`), needs
torch, and is imported by name only where torch is importable. It imports the interface
(`onnxedge.runtime.bench.engines`), never this module or the benchmark's run.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from onnxedge.runtime.bench.engines import AnyEngine, SkippedEngine, peer_info, peer_modes
from onnxedge.runtime.deps import module_available
from onnxedge.runtime.errors import first_line

log = logging.getLogger(__name__)

# "module:function" of the peer builder, imported when the benchmark has peers to build.
PEER_BUILDER = "onnxedge.models.peers:build_peers"


class PeerBuilder(Protocol):
    """One engine (or `SkippedEngine`) per peer x device x mode (`peer_modes`), each described by
    `peer_info`."""

    def __call__(
        self,
        manifest: Mapping[str, Any],
        *,
        peers: Sequence[str],
        devices: Sequence[str],
        threads: int,
        checkpoint: str | Path | None = None,
        tf32: bool = False,
    ) -> list[AnyEngine]: ...


def peer_engines(
    manifest: Mapping[str, Any],
    peers: Sequence[str],
    devices: Sequence[str],
    *,
    threads: int,
    checkpoint: str | None = None,
    tf32: bool = False,
) -> list[AnyEngine]:
    """The PyTorch peers, from `onnxedge.models.peers` where torch is importable; elsewhere one
    `SkippedEngine` per peer x device x mode with the reason.

    Installed is not importable: a torch wheel whose native libraries are missing (a Jetson wheel
    without its CUDA libraries) raises OSError on import, so the import itself is guarded too.
    """
    if not peers:
        return []

    def skipped(reason: str) -> list[AnyEngine]:
        return [
            SkippedEngine(peer_info(p, d, m), reason)
            for d in devices
            for p in peers
            for m in peer_modes(d)
        ]

    module_name, _, attribute = PEER_BUILDER.partition(":")
    if not module_available("torch"):
        return skipped(
            "torch is not installed here (the PyTorch peers need the export side: "
            "pip install 'onnxedge[export]')"
        )
    try:
        module = importlib.import_module(module_name)
    except (ImportError, OSError) as e:
        log.debug("importing the PyTorch peers failed", exc_info=True)
        return skipped(
            f"torch is installed but cannot be imported here: {type(e).__name__}: {first_line(e)}"
        )
    build: PeerBuilder = getattr(module, attribute)
    return build(
        manifest, peers=peers, devices=devices, threads=threads, checkpoint=checkpoint, tf32=tf32
    )
