"""`benchmark`: open a bundle, build the engines, time them and return the report."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from onnxedge.runtime.bench.engines import AnyEngine
from onnxedge.runtime.bench.files import files_engines, readable_files
from onnxedge.runtime.bench.machine import load_average, machine_info, versions
from onnxedge.runtime.bench.models import bench_models
from onnxedge.runtime.bench.openvino import openvino_engines
from onnxedge.runtime.bench.ort import ort_engines
from onnxedge.runtime.bench.peers import peer_engines
from onnxedge.runtime.bench.report import BenchReport
from onnxedge.runtime.bench.settings import BenchSettings
from onnxedge.runtime.bench.timing import ProgressFn, run_benchmark
from onnxedge.runtime.bench.tuned import tuned_engines
from onnxedge.runtime.bundle.reader import MODEL, Bundle, TensorSpec
from onnxedge.runtime.engines import ONNXRUNTIME, OPENVINO
from onnxedge.runtime.errors import OnnxEdgeError


def benchmark(
    bundle_path: str | Path,
    settings: BenchSettings | None = None,
    *,
    command: str = "",
    on_progress: ProgressFn | None = None,
) -> BenchReport:
    """Open the bundle, build the engines, time them, and return the report."""
    settings = settings or BenchSettings()
    bundle = Bundle.open(bundle_path)
    if settings.images:  # files.readable_files: a file that cannot be read is left out, named
        readable = readable_files(settings.images, bundle.preprocessing, settings.images_decodes)
        settings = dataclasses.replace(
            settings, images=readable.files, images_unreadable=readable.unreadable
        )
    manifest = bundle.manifest
    shape = sample_shape(bundle.input, bundle.preprocessing)
    threads = settings.resolved_threads
    models = bench_models(bundle, settings.variants)  # a variant the bundle lacks: an error
    load_before = load_average()
    engines: list[AnyEngine] = []
    wanted = settings.resolved_engines
    try:
        timed = [m for m in models if not m.pixels_of]  # pixels: from-files rows only
        if ONNXRUNTIME in wanted:
            for model in timed:
                engines += ort_engines(
                    model,
                    settings.providers,
                    threads=threads,
                    tf32=settings.tf32,
                    spinning=settings.spinning,
                )
        if OPENVINO in wanted:
            engines += openvino_engines(timed, settings.openvino_precisions, threads=threads)
        if settings.images:
            engines += files_engines(
                bundle.path,
                models,
                [e for e in wanted if e != ONNXRUNTIME or "cpu" in settings.devices],
                settings.images,
                batch_size=settings.images_batch_size,
                threads=settings.threads,  # None, as predict's default, unless --threads
                decodes=settings.images_decodes,
                pools=settings.images_pools,
            )
        engines += tuned_engines(bundle, settings.tuned)  # --tuned: the chosen setups
        # An imported bundle has no PyTorch model: the report's one line says so (`no_peers`).
        engines += (
            []
            if no_peers(manifest)
            else peer_engines(
                manifest,
                settings.peers,
                settings.devices,
                threads=threads,
                checkpoint=settings.checkpoint,
                tf32=settings.tf32,
            )
        )
        rows = run_benchmark(engines, shape, settings, on_progress=on_progress)
    finally:
        for e in engines:
            e.close()
    return BenchReport(
        bundle={
            "path": str(bundle.path),
            "model": manifest.get("model"),
            "head": manifest.get("head"),
            "exporter": manifest.get("exporter"),
            "no_peers": no_peers(manifest) if settings.peers else "",
            "opset": manifest.get("opset"),
            "weights": manifest.get("weights"),
            "input": manifest.get("input"),
            "model_sha256": manifest.get("files", {}).get(MODEL, {}).get("sha256"),
            "models": [m.to_dict(bundle.path) for m in models],
        },
        settings=settings,
        machine={
            **machine_info(),
            "load_average_before": load_before,
            "load_average_after": load_average(),
        },
        versions=versions(),
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        command=command,
        engines=tuple(e.info for e in engines),
        rows=tuple(rows),
    )


def no_peers(manifest: Mapping[str, Any]) -> str:
    """Why the bundle has no PyTorch peers to time ("" where it may have them): one imported
    from ONNX (`onnxedge import`) has no PyTorch model."""
    imported = manifest.get("imported")
    if manifest.get("exporter") != "import" and not isinstance(imported, Mapping):
        return ""
    source = imported.get("file") if isinstance(imported, Mapping) else None
    return (
        f"no PyTorch peers: the bundle was imported from ONNX ({source or 'a file'}), so there "
        "is no PyTorch model to time beside ONNX Runtime"
    )


def sample_shape(spec: TensorSpec, preprocessing: Mapping[str, Any]) -> tuple[int, ...]:
    """The shape of one sample of the bundle's input (`Bundle` has validated the spec): what
    `make_input` stacks batch-size times. Bench feeds float32 with every dim but the batch fixed;
    symbolic H and W (a model that takes any size) are the size the preprocessing resizes to."""
    if spec.dtype != "float32":
        raise OnnxEdgeError(
            f"bench times float32 inputs; the model's input {spec.name!r} is {spec.describe()}"
        )
    dims = list(spec.shape[1:])
    resize = preprocessing.get("resize")
    if len(dims) == 3 and isinstance(resize, list) and len(resize) == 2:
        dims[1:] = [r if isinstance(d, str) else d for d, r in zip(dims[1:], resize, strict=True)]
    if not dims or any(isinstance(d, str) for d in dims):
        raise OnnxEdgeError(
            "bench needs the input's dims fixed except the batch dim (the first) and H and W "
            f"(the preprocessing's size); the model's input {spec.name!r} has shape "
            f"{list(spec.shape)}"
        )
    return tuple(int(d) for d in dims)
