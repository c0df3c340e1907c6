"""What `onnxedge tune` chooses between: one of the bundle's models on one engine, at one
inference precision, with one thread count (`TunedSetup`); and from files (`tune --images`),
one of them on one engine with one decoding pool (`FilesSetup`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from onnxedge.runtime.classifier.decode import POOLS, DecodePool, pool_arguments
from onnxedge.runtime.engines import DEFAULT_PRECISION, ONNXRUNTIME, check_engine
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
        if not isinstance(precision, str):
            raise OnnxEdgeError(f"expected a precision, found {precision!r}")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise OnnxEdgeError(f"expected threads as an integer >= 1, found {threads!r}")
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
        if strings["pool"] not in POOLS:
            raise OnnxEdgeError(f"expected a pool of {', '.join(POOLS)}, found {strings['pool']!r}")
        workers = block.get("workers")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise OnnxEdgeError(f"expected workers as an integer >= 1, found {workers!r}")
        return cls(**strings, workers=workers)  # type: ignore[arg-type]


__all__ = ["FilesSetup", "TunedSetup"]
