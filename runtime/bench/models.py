"""Which of a bundle's models a benchmark times (``--variants``): ``fp32`` (``model.onnx``) and
the variants `onnxedge optimize` added, each verified by `Bundle.variant_model` before it runs.

1. Asked for by name: a name the bundle lacks is an error naming those it has (`BundleError`).
2. Not asked for: ``fp32``, and ``int8``, ``fp32-u8`` and ``int8-u8`` where the bundle has them
   (int8 is the variant made for this CPU, which both engines run; the ``-u8`` ones take the
   decoded pixels and have only from-files rows, set beside the model-only rows of the model
   they were made from, ``pixels_of``).
3. Each model records its file, its size on disk (the file and any external data it names),
   its format (``onnx`` or ``ort``), the providers it is made for (fp16: ``cuda``) and whether it
   passed its accuracy gate; the report lists them, so a figure always names its model.
4. A model computing in fewer bits than fp32 is checked at `LOW_PRECISION_ATOL` instead of fp32's
   atol: fp16 against ORT's fp32 output, int8 against ORT's on the int8 model
   (`BenchModel.reference_key`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.variants.manifest import FP32, FP32_U8, INT8, INT8_U8, variant_key

# The output check's atol (against ONNX Runtime's fp32 output) for a model or an engine computing
# in fewer bits: int8 and bf16 move probabilities by up to ~3e-3 on this model (the int8 gate's
# max error on the synthetic faces; docs/BENCHMARKS.md), far beyond fp32's 1e-4, while a broken
# engine is off by far more.
LOW_PRECISION_ATOL = 1e-2


def scaled_atol(atol: float, reference: Any) -> float:
    """`LOW_PRECISION_ATOL` for an output of the scale of ``reference``: ``atol`` times its
    largest magnitude where that is above 1 (logits: 0.2 of a K-class model's logit of 20 is
    rounding, while 0.01 of a probability is not); ``atol`` itself for probabilities. An engine
    that computes something else is off by the output's own scale, and still fails."""
    import numpy as np

    values = np.asarray(reference, dtype=np.float64)
    largest = float(np.max(np.abs(values), initial=0.0, where=np.isfinite(values)))
    return atol * max(1.0, largest)


@dataclasses.dataclass(frozen=True)
class BenchModel:
    """One of the bundle's models as the benchmark runs it (module docstring, 3.)."""

    variant: str  # "fp32" or a variant's name
    path: Path
    format: str  # "onnx" or "ort"
    precision: str  # "fp32", "int8", "fp16"
    providers: tuple[str, ...]  # short names it is made for; () for fp32: every provider
    gated: bool | None  # None for fp32 (nothing to gate)
    bytes: int
    # A variant that takes uint8 pixels (`optimize --uint8-input`): the model it was made from
    # ("fp32" or "int8"), whose model-only rows stand for it; "" for the others.
    pixels_of: str = ""

    @property
    def check_atol(self) -> float | None:
        """4.: None for fp32 numerics (the run's own atol), `LOW_PRECISION_ATOL` otherwise."""
        return None if self.precision == FP32 else LOW_PRECISION_ATOL

    @property
    def reference_key(self) -> str:
        """The numerics its output is checked against (`timing.run_benchmark`): ``int8`` for an
        int8 model, whose ranges were calibrated on real images and may clip random inputs (so
        it is checked against ORT on the int8 model, its accuracy against fp32 being its gate's
        business); ``fp32`` for the rest (fp16 and bf16 at `LOW_PRECISION_ATOL`)."""
        return INT8 if self.precision == INT8 else FP32

    def made_for(self, provider: str) -> bool:
        """Whether this model is made for ``provider`` (a short name: ``cpu``, ``cuda``)."""
        return not self.providers or provider.lower() in self.providers

    def not_made_for(self, where: str) -> str:
        """The reason a row of this model is skipped on ``where`` (an EP or an engine)."""
        return (
            f"the {self.variant} variant is made for the {', '.join(self.providers)} execution "
            f"provider, not {where}"
        )

    def to_dict(self, root: Path | None = None) -> dict[str, Any]:
        path = self.path
        if root is not None and path.is_relative_to(root):
            path = path.relative_to(root)
        return {
            "variant": self.variant,
            "file": str(path),
            "format": self.format,
            "precision": self.precision,
            "providers": list(self.providers),
            "gated": self.gated,
            "bytes": self.bytes,
        }


def fp32_model(path: Path) -> BenchModel:
    """A model file taken as the fp32 model (library callers that time one file)."""
    return BenchModel(FP32, Path(path), "onnx", FP32, (), None, _size(Path(path)))


def bench_models(bundle: Bundle, requested: Sequence[str] | None = None) -> list[BenchModel]:
    """The models to time, fp32 first where asked for (module docstring, 1. and 2.)."""
    if requested is None:
        names = [FP32, *(n for n in (INT8, FP32_U8, INT8_U8) if n in bundle.variants)]
    else:
        names = list(dict.fromkeys(variant_key(n) for n in requested))
    models = []
    for name in names:
        path = bundle.variant_model(name)  # 1.: an unknown name names those the bundle has
        entry = bundle.variants.get(name)
        if entry is None:
            models.append(fp32_model(path))
            continue
        models.append(
            BenchModel(
                name,
                path,
                entry.format,
                entry.precision or FP32,
                tuple(p.lower() for p in entry.providers),
                entry.gated,
                _size(path),
                pixels_of=_pixels_of(entry.block) if name in (FP32_U8, INT8_U8) else "",
            )
        )
    return models


def _pixels_of(block: Any) -> str:
    origin = block.get("from", FP32)
    return FP32 if origin == "model.onnx" else str(origin)


def _size(path: Path) -> int:
    """The model's bytes on disk: the file and the external data files next to it that it names
    (a bundle lists and verifies those; here they are only counted)."""
    total = path.stat().st_size
    if path.suffix != ".onnx":
        return total
    import onnx

    from onnxedge.runtime.bundle.verify import model_tensors

    model = onnx.load(str(path), load_external_data=False)
    seen = set()
    for tensor in model_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), None)
        if location and location not in seen:
            seen.add(location)
            extra = path.parent / location
            if extra.is_file():
                total += extra.stat().st_size
    return total


__all__ = ["LOW_PRECISION_ATOL", "BenchModel", "bench_models", "fp32_model"]
