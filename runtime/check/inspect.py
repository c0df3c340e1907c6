"""What a model or a bundle holds, for `onnxedge inspect`: a model's inputs and outputs, opset,
op counts, parameters and size and the head `onnxedge check` finds; for a bundle also its
manifest's summary, variants (with their gates) and golden data. Read only; a bundle is opened
through `onnxedge.runtime.bundle.reader.Bundle` (its model verified against its sha256)."""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnx

from onnxedge.runtime.check.check import check_model, load_model
from onnxedge.runtime.errors import BundleError, found_at

# The manifest's top-level keys shown as its summary (the rest: `onnxedge inspect --json`'s
# "manifest" holds them all).
SUMMARY_KEYS = ("model", "head", "exporter", "opset", "format_version", "preprocessing", "labels")


@dataclasses.dataclass(frozen=True)
class Inspection:
    """What `inspect_path` found. ``bundle``: None for a bare ``.onnx`` file."""

    path: str
    inputs: tuple[dict[str, Any], ...]
    outputs: tuple[dict[str, Any], ...]
    opsets: dict[str, int]
    op_counts: dict[str, int]
    parameters: int
    size_bytes: int
    head: dict[str, Any]
    bundle: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _tensor(value: onnx.ValueInfoProto) -> dict[str, Any]:
    kind = value.type.tensor_type
    dims = [
        d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in kind.shape.dim
    ]
    return {
        "name": value.name,
        "dtype": onnx.helper.tensor_dtype_to_np_dtype(kind.elem_type).name
        if kind.elem_type
        else "?",
        "shape": dims,
    }


def _count(tensor: onnx.TensorProto) -> int:
    n = 1
    for d in tensor.dims:
        n *= d
    return n


def inspect_model(model: onnx.ModelProto, *, path: str, size_bytes: int) -> Inspection:
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    ops = collections.Counter(
        (n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}")
        for n in graph.node
    )
    report = check_model(model, source=path)
    head = next((i for i in report.items if i.name == "gap_head"), None)
    return Inspection(
        path=path,
        inputs=tuple(_tensor(v) for v in graph.input if v.name not in initializers),
        outputs=tuple(_tensor(v) for v in graph.output),
        opsets={(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        op_counts=dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        parameters=sum(_count(t) for t in graph.initializer),
        size_bytes=size_bytes,
        head={"passed": bool(head and head.passed), "detail": head.detail if head else "not found"},
    )


def _with_external_data(path: Path) -> int:
    """The bytes of the file at ``path`` and of the external data files it names (a dynamo
    export's weights are mostly there)."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    tensors = [*model.graph.initializer]
    tensors += [a.t for n in model.graph.node for a in n.attribute if a.HasField("t")]
    files = {ExternalDataInfo(t).location for t in tensors if uses_external_data(t)}
    return path.stat().st_size + sum(
        (path.parent / name).stat().st_size for name in files if (path.parent / name).is_file()
    )


def inspect_path(path: str | Path) -> Inspection:
    """Inspect a ``.onnx`` file, or a bundle directory (`Bundle.open`, which verifies it)."""
    path = Path(path)
    if not path.is_dir():
        model = load_model(path)
        return inspect_model(model, path=str(path), size_bytes=_with_external_data(path))
    from onnxedge.runtime.bundle.reader import Bundle

    bundle = Bundle.open(path)
    model_path = bundle.model_path
    size = model_path.stat().st_size + sum(
        bundle.file(name).stat().st_size for name in bundle.external_data
    )
    found = inspect_model(load_model(model_path), path=str(path), size_bytes=size)
    manifest = bundle.manifest
    golden = manifest.get("golden") or {}
    files = manifest.get("files") or {}
    absent = [name for name in files if not (path / name).is_file()]
    if absent:  # it was left out of the listing, and the bundle called whole
        raise BundleError(
            f"{path / 'manifest.json'} lists {absent[0]}: expected a file, found "
            f"{found_at(path / absent[0])}" + (f" ({len(absent)} such)" if len(absent) > 1 else "")
        )
    summary = {
        "manifest": {k: manifest[k] for k in SUMMARY_KEYS if k in manifest},
        "output_kind": bundle.output_kind,
        "files": {name: (path / name).stat().st_size for name in files if (path / name).is_file()},
        "variants": {
            name: {
                "file": v.file,
                "precision": v.precision,
                "providers": list(v.providers),
                "gated": v.gated,
                "entry": v.to_dict(),
            }
            for name, v in bundle.variants.items()
        },
        "golden": (
            {k: golden[k] for k in ("file", "batch_sizes", "seed", "images") if k in golden}
            if isinstance(golden, Mapping)
            else {"error": f"expected an object, found {type(golden).__name__} {golden!r:.40}"}
        ),
    }
    return dataclasses.replace(found, bundle=summary)
