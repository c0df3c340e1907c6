"""Which setups `onnxedge tune` times on this machine, and which it leaves out and why.

1. Models: ``model.onnx`` (fp32) and every variant whose accuracy gate passed and that is made
   for the CPU. A variant written with ``--no-gate`` is left out (a tuned choice is never a
   model whose accuracy nobody checked); so is one made for another provider (fp16: CUDA).
2. Engines: those installed here (`installed_engines`); one asked for that cannot run is left
   out with its reason.
3. Precisions: each model as stored (OpenVINO at ``f32``). OpenVINO's bf16 inference of the fp32
   model is left out where the CPU runs it: it is no variant, so no accuracy gate has judged it.
4. Threads: 1, half the physical cores and all of them (`default_thread_counts`).
5. The engines are bench's (`ort_engines`, `openvino_engines`), fp32 on ONNX Runtime first, so
   that it is the reference every other output is checked against before it is timed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from onnxedge.runtime.bench import (
    AnyEngine,
    BenchModel,
    bench_models,
    default_threads,
    openvino_engines,
    ort_engines,
)
from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.engines import (
    ENGINES,
    ONNXRUNTIME,
    OPENVINO,
    engine_unavailable_reason,
)
from onnxedge.runtime.tune.setup import TunedSetup
from onnxedge.runtime.variants.manifest import FP32, variant_key

F32 = "f32"
BF16 = "bf16"


@dataclasses.dataclass(frozen=True)
class Excluded:
    """A model, engine or precision that is not a candidate here, and why."""

    what: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Candidates:
    """The engines to time, the setup each stands for (by ``id`` of its `EngineInfo`), and what
    was left out."""

    engines: tuple[AnyEngine, ...]
    setups: dict[int, TunedSetup]
    models: tuple[BenchModel, ...]
    excluded: tuple[Excluded, ...]

    def setup_of(self, info: object) -> TunedSetup:
        return self.setups[id(info)]


def default_thread_counts() -> tuple[int, ...]:
    """4.: 1, half the physical cores this process may use, and all of them."""
    cores = default_threads()
    return tuple(sorted({1, max(1, cores // 2), cores}))


def candidate_models(
    bundle: Bundle, requested: Sequence[str] | None = None
) -> tuple[list[BenchModel], list[Excluded]]:
    """1.: the models to time and those left out. A name the bundle lacks is an error naming
    those it has (`bench_models`)."""
    names = [FP32, *bundle.variants] if requested is None else [variant_key(n) for n in requested]
    names = list(dict.fromkeys(names))
    for name in names:
        bundle.variant_model(name)  # a name the bundle lacks: BundleError naming those it has
    keep, excluded = [], []
    for name in names:
        entry = bundle.variants.get(name)
        if entry is None:
            keep.append(name)
        elif not entry.gated:
            excluded.append(
                Excluded(name, "not gated (written with --no-gate): tune runs gated models only")
            )
        elif "input" in entry.block:
            excluded.append(
                Excluded(
                    name,
                    "takes the decoded uint8 pixels (--uint8-input): timed from files only "
                    "(tune --images), not on the float input",
                )
            )
        elif entry.providers and "cpu" not in [p.lower() for p in entry.providers]:
            excluded.append(
                Excluded(name, f"made for the {', '.join(entry.providers)} execution provider")
            )
        else:
            keep.append(name)
    return (bench_models(bundle, keep) if keep else []), excluded


def build_candidates(
    bundle: Bundle,
    *,
    variants: Sequence[str] | None = None,
    engines: Sequence[str] | None = None,
    threads: Sequence[int] | None = None,
) -> Candidates:
    """The engines of 1.-5. (not yet prepared: bench prepares each at each batch size)."""
    models, excluded = candidate_models(bundle, variants)
    wanted = list(dict.fromkeys(engines or ENGINES))
    usable = []
    for engine in wanted:
        reason = engine_unavailable_reason(engine)
        if reason:
            excluded.append(Excluded(engine, reason))
        else:
            usable.append(engine)
    if OPENVINO in usable and engine_unavailable_reason(OPENVINO, BF16) is None:
        excluded.append(
            Excluded(
                f"{OPENVINO} {BF16}",
                "bf16 inference is not a variant of the bundle, so no accuracy gate has judged it",
            )
        )
    onnx_models = [m for m in models if m.format == "onnx"]
    if OPENVINO in usable:
        excluded.extend(
            Excluded(f"{OPENVINO} {m.variant}", f"OpenVINO reads ONNX files, not {m.format}")
            for m in models
            if m.format != "onnx"
        )
    counts = tuple(dict.fromkeys(threads or default_thread_counts()))
    built: list[AnyEngine] = []
    setups: dict[int, TunedSetup] = {}
    for count in counts:  # 5.: ONNX Runtime first, fp32 first among its models
        if ONNXRUNTIME in usable:
            for model in models:
                for e in ort_engines(model, ("cpu",), threads=count, tf32=False):
                    built.append(e)
                    setups[id(e.info)] = TunedSetup(model.variant, ONNXRUNTIME, F32, count)
        if OPENVINO in usable:
            for e in openvino_engines(onnx_models, (F32,), threads=count):
                built.append(e)
                setups[id(e.info)] = TunedSetup(e.info.variant, OPENVINO, F32, count)
    return Candidates(tuple(built), setups, tuple(models), tuple(excluded))


__all__ = [
    "Candidates",
    "Excluded",
    "build_candidates",
    "candidate_models",
    "default_thread_counts",
]
