"""What `onnxedge tune` chooses between: one of the bundle's models on one engine, at one
inference precision, with one thread count (`TunedSetup`); and from files (`tune --images`),
one of them on one engine with one decoding pool (`FilesSetup`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from onnxedge.runtime.classifier.args import check_count
from onnxedge.runtime.classifier.decode import (
    MAX_BATCH_PROCESSES,
    MAX_DECODE_PROCESSES,
    POOLS,
    DecodePool,
    pool_arguments,
)
from onnxedge.runtime.classifier.preprocess import DECODES
from onnxedge.runtime.engines import DEFAULT_PRECISION, ONNXRUNTIME, check_engine, check_precision
from onnxedge.runtime.engines.onnxruntime.session import MAX_THREADS
from onnxedge.runtime.errors import OnnxEdgeError
from onnxedge.runtime.variants.manifest import FP32


@dataclasses.dataclass(frozen=True)
class TunedSetup:
    """``variant`` (``fp32`` is model.onnx) on ``engine`` at ``precision`` (OpenVINO's inference
    precision; ``f32`` for ONNX Runtime, which runs a model as stored) with ``threads``."""

    variant: str = FP32
    engine: str = ONNXRUNTIME
    precision: str = DEFAULT_PRECISION
    threads: int = 1

    def describe(self) -> str:
        """``openvino int8, 2 threads``; the precision where it is not f32."""
        precision = "" if self.precision == DEFAULT_PRECISION else f" {self.precision}"
        plural = "s" if self.threads != 1 else ""
        return f"{self.engine} {self.variant}{precision}, {self.threads} thread{plural}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, block: Any) -> TunedSetup:
        """A setup as a tuning file stores it; `OnnxEdgeError` saying what is wrong otherwise."""
        if not isinstance(block, Mapping):
            raise OnnxEdgeError(f"expected a setup object, found {type(block).__name__}")
        variant, engine = block.get("variant"), block.get("engine")
        precision, threads = block.get("precision"), block.get("threads")
        if not isinstance(variant, str) or not isinstance(engine, str):
            raise OnnxEdgeError(f"expected a variant and an engine, found {dict(block)!r}")
        check_engine(engine)
        _check_precision(engine, precision)
        check_count(threads, "threads", maximum=MAX_THREADS)  # an ArgumentError: ignored
        return cls(variant=variant, engine=engine, precision=precision, threads=threads)


@dataclasses.dataclass(frozen=True)
class FilesSetup:
    """``variant`` on ``engine`` (predict's default threads) with ``workers`` of ``pool`` (a
    name of `POOLS`), files decoded as ``decode``."""

    variant: str = FP32
    engine: str = ONNXRUNTIME
    precision: str = DEFAULT_PRECISION
    pool: str = "batches"
    workers: int = 1
    decode: str = "exact"

    def describe(self) -> str:
        """``onnxruntime int8-u8, 2 batch processes``."""
        pool = DecodePool.named(self.pool, self.workers).describe()
        return f"{self.engine} {self.variant}, {pool}"

    def pool_arguments(self) -> dict[str, int]:
        """The `Classifier.predict_files` argument for this pool."""
        return pool_arguments(self.pool, self.workers)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, block: Any) -> FilesSetup:
        """A setup as a tuning file stores it; `OnnxEdgeError` saying what is wrong otherwise."""
        if not isinstance(block, Mapping):
            raise OnnxEdgeError(f"expected a setup object, found {type(block).__name__}")
        strings = {k: block.get(k) for k in ("variant", "engine", "precision", "pool", "decode")}
        wrong = [k for k, v in strings.items() if not isinstance(v, str)]
        if wrong:
            raise OnnxEdgeError(f"expected {', '.join(wrong)} as strings, found {dict(block)!r}")
        check_engine(strings["engine"])
        _check_precision(strings["engine"], strings["precision"])
        if strings["pool"] not in POOLS:
            raise OnnxEdgeError(f"expected a pool of {', '.join(POOLS)}, found {strings['pool']!r}")
        if strings["decode"] not in DECODES:
            found = strings["decode"]
            raise OnnxEdgeError(f"expected decode {' or '.join(DECODES)}, found {found!r}")
        workers = block.get("workers")
        check_count(workers, "workers", maximum=MAX_WORKERS)
        return cls(**strings, workers=workers)  # type: ignore[arg-type]


# The most decoding workers a files setup may name: as many as the pools take (threads and
# processes alike), so that a file's number is refused when it is read, not when it runs.
MAX_WORKERS = min(MAX_THREADS, MAX_DECODE_PROCESSES, MAX_BATCH_PROCESSES)


def _check_precision(engine: str, precision: Any) -> None:
    """A precision ``engine`` runs (`check_precision`), as a reason for the file to be ignored
    (not the command line's ``--precision``, which the user never gave)."""
    if not isinstance(precision, str):
        raise OnnxEdgeError(f"expected a precision, found {precision!r}")
    try:
        check_precision(engine, precision)
    except (OnnxEdgeError, ValueError):
        raise OnnxEdgeError(f"expected a precision {engine} runs, found {precision!r}") from None


__all__ = ["FilesSetup", "TunedSetup"]
