"""``bench --tuned``: beside the usual rows, at each batch size the setup a tuning file chose for
it (`onnxedge.runtime.tune`), as its own row tagged ``tuned (N threads)``: the model, engine and
precision it names, with its thread count, timed and checked like every other engine. A setup
chosen at several batch sizes is one engine that runs at those only."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from onnxedge.runtime.bench.engines import AnyEngine, SkippedEngine
from onnxedge.runtime.bench.models import bench_models
from onnxedge.runtime.bench.openvino import openvino_engines
from onnxedge.runtime.bench.ort import ort_engines
from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.engines import ONNXRUNTIME


def tuned_engines(bundle: Bundle, tuned: Mapping[int, Any]) -> list[AnyEngine]:
    """The engines of ``tuned`` (batch size -> a `TunedSetup`), each at its batch sizes."""
    batches: dict[Any, list[int]] = {}
    for batch, setup in tuned.items():
        batches.setdefault(setup, []).append(batch)
    engines: list[AnyEngine] = []
    for setup, sizes in batches.items():
        (model,) = bench_models(bundle, [setup.variant])
        if setup.engine == ONNXRUNTIME:
            built = ort_engines(model, ("cpu",), threads=setup.threads, tf32=False)
        else:
            built = openvino_engines([model], (setup.precision,), threads=setup.threads)
        plural = "s" if setup.threads != 1 else ""
        tag = f"tuned ({setup.threads} thread{plural})"
        for engine in built:
            info = dataclasses.replace(engine.info, tag=tag)
            if isinstance(engine, SkippedEngine):
                engine = dataclasses.replace(engine, info=info, batch_sizes=tuple(sizes))
            else:
                engine.info = info  # type: ignore[misc]
                engine.batch_sizes = tuple(sizes)  # type: ignore[attr-defined]
            engines.append(engine)
    return engines


__all__ = ["tuned_engines"]
