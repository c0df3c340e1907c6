"""`optimize_bundle`: make a bundle's edge variants, gate each on held-out data, and write the
bundle with those that passed, atomically.

1. Refused before any work: a bundle without trained weights (the gates compare accuracy, which
   seeded weights do not have), a data set without a non-empty test split (or train split, for
   int8's calibration), a variant the target bundle already has or a target that is another
   bundle (both replaced only with ``force``), a target that cannot be written.
2. Made in a temporary directory: int8 (`quantize`), fp16 (`fp16`), the ORT format of fp32 and of
   int8 (`ortformat`; int8's from this run's int8, or from the bundle's when only ``--ort`` is
   asked for).
3. Gated (`gate_run.run_gates`, `gate.judge`): fp32 and every variant run by onnxruntime on the
   test split, decoded once; fp16 on the CUDA EP where it loads, else on the CPU against fp32's
   numbers. A variant that misses
   its gate is not written (nor int8-ort when int8 missed); with ``gate=False`` it is written and
   marked ungated, its figures recorded all the same.
4. Written (`BundleWriter`): the source bundle's files, verified, then the variants; the manifest
   last, in a temporary directory renamed into place, so an interrupted run leaves the bundle as
   it was. A variant derived from one that is replaced (int8-ort from int8) and not remade is
   dropped, never left pointing at another model. The required-operators configuration is
   rewritten for the ``.ort`` files the bundle then holds.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import logging
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from onnxedge.runtime.bundle.lock import bundle_lock
from onnxedge.runtime.bundle.outputs import BINARY_KINDS
from onnxedge.runtime.bundle.reader import (
    FORMAT_VERSION,
    MANIFEST,
    VARIANTS_FORMAT_VERSION,
    Bundle,
    BundleWriter,
)
from onnxedge.runtime.classifier.preprocess import FAST
from onnxedge.runtime.data import Dataset, open_dataset
from onnxedge.runtime.errors import OnnxEdgeError
from onnxedge.runtime.variants.gate import GateResult
from onnxedge.runtime.variants.gate_run import DECODE_FAST, run_gates
from onnxedge.runtime.variants.graph import operators_config
from onnxedge.runtime.variants.manifest import (
    FP16,
    FP32_ORT,
    FP32_U8,
    INT8,
    INT8_CONV1_FP32,
    INT8_ORT,
    INT8_PAD4,
    INT8_U8,
    ORT_CONFIG,
    VARIANT_FILES,
    VARIANTS,
)
from onnxedge.runtime.variants.optimize_result import (
    OptimizeRequest,
    OptimizeResult,
    VariantOutcome,
)
from onnxedge.runtime.variants.quantize import Int8Config
from onnxedge.runtime.variants.samples import calibration_sample, load_inputs

log = logging.getLogger(__name__)

# Fewer test images than this: the gate's verdict is a warning's matter (a few images' labels).
FEW_GATE_IMAGES = 200

Progress = Callable[[str], None]
_FIRST_CONV = (INT8_CONV1_FP32, INT8_PAD4)  # `first_conv`: int8 with the first conv dealt with
_PIXELS = (FP32_U8, INT8_U8)  # variants that take uint8 pixels (`--uint8-input`)
_PRECISION = (
    {INT8: "int8", FP16: "fp16", FP32_ORT: "fp32", INT8_ORT: "int8"}
    | {n: "int8" for n in _FIRST_CONV}
    | {FP32_U8: "fp32", INT8_U8: "int8"}
)
_PROVIDERS = {INT8: ["cpu"], FP16: ["cuda"], FP32_ORT: ["cpu"], INT8_ORT: ["cpu"]} | {
    n: ["cpu"] for n in (*_FIRST_CONV, *_PIXELS)
}
_DERIVED = {INT8_ORT: INT8, INT8_U8: INT8}  # a variant made from another variant


def optimize_bundle(request: OptimizeRequest, progress: Progress | None = None) -> OptimizeResult:
    """The steps of the module docstring; `OnnxEdgeError` for what 1. refuses. The target's
    writer lock (`bundle_lock`) is held from before the source is read until the bundle is
    written, so two runs on one bundle take turns and neither loses the other's variants."""
    out = Path(request.out) if request.out is not None else Path(request.bundle)
    with bundle_lock(out):
        return _optimize(request, out, progress or (lambda _msg: None))


def _optimize(request: OptimizeRequest, out: Path, say: Progress) -> OptimizeResult:
    source = Bundle.open(request.bundle)
    wanted = _wanted(request, source)
    _check_target(request, source, out, wanted)  # 1.
    classes = None if source.output_kind in BINARY_KINDS else source.labels["classes"]
    data = open_dataset(request.data, request.attribute, classes=classes)
    test = data.split("test")
    if len(test) == 0:
        raise OnnxEdgeError(f"{data.root}: the test split is empty; the gates need held-out images")
    if len(test) < FEW_GATE_IMAGES and request.gate:
        log.warning(
            "%s: the gates judge only %d test image%s, each %.2f%% of the label agreement; %d "
            "or more make a gate's verdict mean more",
            data.root,
            len(test),
            "" if len(test) == 1 else "s",
            100 / len(test),
            FEW_GATE_IMAGES,
        )

    with tempfile.TemporaryDirectory(prefix="onnxedge-optimize-") as tmp:
        work = Path(tmp)
        made = _make_variants(request, source, data, wanted, work, say)  # 2.
        say(f"gating on the test split ({len(test)} images)")
        gates = run_gates(  # 3.
            source,
            test,
            made,
            request.criteria,
            threads=request.threads,
            fast_decode=request.fast_decode,
            int8=[n for n, p in _PRECISION.items() if p == "int8"],
            pixels=_PIXELS,
            say=say,
        )
        outcomes = _decide(request, made, gates)
        decode_gate = None
        if request.fast_decode:
            say("fast decode: fp32 on its pixels against the exact ones")
            gate = gates[DECODE_FAST]
            passed = gate.passed or not request.gate
            reason = "" if passed else "missed its gate"
            decode_gate = VariantOutcome(DECODE_FAST, gate, passed, 0, request.gate, reason)
        to_write = {o.name: made[o.name] for o in outcomes if o.written}
        result = OptimizeResult(
            out=out,
            outcomes=outcomes,
            fp32_bytes=source.model_path.stat().st_size,
            written=bool(to_write) or bool(decode_gate and decode_gate.written),
            decode_gate=decode_gate,
        )
        if result.written:
            say(f"writing {out}")
            dropped = _write(source, out, to_write, outcomes, _data_block(data), decode_gate)  # 4.
            result = dataclasses.replace(result, dropped=dropped)
    return result


def check_trained(bundle: Bundle) -> None:
    """Refuse a bundle without trained weights: neither a ``training`` block (a checkpoint of
    `onnxedge train`) nor weights loaded from a checkpoint, nor an ONNX file imported with its
    own weights (`onnxedge import`)."""
    weights = bundle.manifest.get("weights")
    if isinstance(bundle.manifest.get("training"), Mapping):
        return
    if isinstance(weights, Mapping) and weights.get("source") == "onnx":
        return
    if not isinstance(weights, Mapping) or weights.get("source") != "checkpoint":
        found = dict(weights) if isinstance(weights, Mapping) else weights
        raise OnnxEdgeError(
            f"{bundle.path}: expected a bundle exported from a trained checkpoint (export "
            f"--checkpoint; the gates measure accuracy), found weights {found!r}"
        )


def _wanted(request: OptimizeRequest, source: Bundle) -> list[str]:
    names = []
    if request.int8:
        names.append(INT8)
    if request.fp16:
        names.append(FP16)
    if request.ort:
        names.append(FP32_ORT)
        if request.int8 or INT8 in source.variants:
            names.append(INT8_ORT)
    if request.int8_first_conv:
        names.extend(_FIRST_CONV)
    if request.uint8_input:
        names.append(FP32_U8)
        if request.int8 or INT8 in source.variants:
            names.append(INT8_U8)
    return names


def _check_target(request: OptimizeRequest, source: Bundle, out: Path, wanted: list[str]) -> None:
    check_trained(source)
    same = out.resolve() == source.path.resolve()
    if not request.force:
        if same:
            existing = [n for n in wanted if n in source.variants]
            if existing:
                raise OnnxEdgeError(
                    f"{source.path} already has the {', '.join(existing)} variant"
                    f"{'s' if len(existing) > 1 else ''}; pass --force to replace "
                    f"{'them' if len(existing) > 1 else 'it'}"
                )
        elif out.exists() and (out / MANIFEST).is_file():
            raise OnnxEdgeError(
                f"--out {out} is another bundle; pass --force to replace it with {source.path} "
                "and its variants"
            )
    BundleWriter(out).check_target()


def _make_variants(
    request: OptimizeRequest,
    source: Bundle,
    data: Dataset,
    wanted: list[str],
    work: Path,
    say: Progress,
) -> dict[str, dict[str, Any]]:
    """2.: each variant's file in ``work`` and its manifest entry (without the gate)."""
    from onnxedge.runtime.variants.fp16 import convert_fp16
    from onnxedge.runtime.variants.ortformat import convert_to_ort

    made: dict[str, dict[str, Any]] = {}
    int8_source: Path | None = None
    quantized = [n for n in (INT8, *_FIRST_CONV) if n in wanted]
    if quantized:
        train = data.split("train")
        paths = calibration_sample(train, request.calibration_size, request.seed)
        say(f"int8: calibrating on {len(paths)} images of the train split")
        images = load_inputs(paths, source.preprocessing, what="calibration images (train split)")
        calibration = {
            "split": "train",
            "images": len(paths),
            "requested": request.calibration_size,
            "seed": request.seed,
            "method": request.calibration_method,
            "data": _data_block(data),
        }
    for name in quantized:
        if name != INT8:
            say(f"{name}: quantising")
        made[name] = _quantized(name, request, source.model_path, images, work)
        made[name]["made"]["calibration"] = calibration
    if INT8 in made:
        int8_source = Path(made[INT8]["_path"])
    elif INT8_ORT in wanted or INT8_U8 in wanted:
        int8_source = source.variant_model(INT8)
    if FP16 in wanted:
        say("fp16: converting")
        path = work / "fp16.onnx"
        made[FP16] = _entry(FP16, path, "model.onnx", convert_fp16(source.model_path, path))
    if FP32_ORT in wanted:
        say("ORT format: converting fp32")
        path = work / "fp32.ort"
        made[FP32_ORT] = _entry(
            FP32_ORT, path, "model.onnx", convert_to_ort(source.model_path, path)
        )
    if INT8_ORT in wanted and int8_source is not None:
        say("ORT format: converting int8")
        path = work / "int8.ort"
        made[INT8_ORT] = _entry(INT8_ORT, path, INT8, convert_to_ort(int8_source, path))
    if FP32_U8 in wanted or INT8_U8 in wanted:
        from onnxedge.runtime.variants.uint8_input import add_uint8_input, pixels_input_block

        pixels_input = pixels_input_block(source.manifest["input"])
        for name, model, origin in (
            (FP32_U8, source.model_path, "model.onnx"),
            (INT8_U8, int8_source, INT8),
        ):
            if name not in wanted or model is None:
                continue
            say(f"{name}: the preprocessing into the graph")
            path = work / f"{name}.onnx"
            made[name] = _entry(
                name, path, origin, add_uint8_input(model, path, source.preprocessing)
            )
            made[name]["input"] = pixels_input
    return made


def _quantized(
    name: str, request: OptimizeRequest, model: Path, images: np.ndarray, work: Path
) -> dict[str, Any]:
    """An int8 variant's file in ``work`` and its entry: int8 itself, or one of `_FIRST_CONV`
    (the first conv kept in float; its input padded to 4 channels first)."""
    from onnxedge.runtime.variants.quantize import quantize_int8

    config = Int8Config(
        calibration_method=request.calibration_method,
        weights_7_bit=request.weights_7_bit,
        keep_first_conv_float=name == INT8_CONV1_FP32,
    )
    first_conv: dict[str, Any] = {}
    if name == INT8_PAD4:
        from onnxedge.runtime.variants.first_conv import pad_first_conv

        padded = work / "pad4-float.onnx"
        channels = pad_first_conv(model, padded)
        first_conv = {"first_conv": f"input padded with zero channels to {channels}"}
        model = padded
    elif name == INT8_CONV1_FP32:
        first_conv = {"first_conv": "kept in float, with its activation and pooling"}
    path = work / f"{name}.onnx"
    info = quantize_int8(model, path, images, config)
    return _entry(name, path, "model.onnx", {**info, **first_conv})


def _entry(name: str, path: Path, derived_from: str, info: dict[str, Any]) -> dict[str, Any]:
    return {
        "file": VARIANT_FILES[name],
        "format": "ort" if path.suffix == ".ort" else "onnx",
        "precision": _PRECISION[name],
        "providers": list(_PROVIDERS[name]),
        "from": derived_from,
        "bytes": path.stat().st_size,
        "made": {
            **info,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
        "_path": str(path),  # removed before the manifest is written
    }


def _data_block(data: Dataset) -> dict[str, Any]:
    return {
        "root": str(data.root),
        "layout": data.layout,
        "attribute": data.attribute,
        "listing_sha256": data.listing_sha256(),
    }


def _decide(
    request: OptimizeRequest,
    made: Mapping[str, Mapping[str, Any]],
    gates: Mapping[str, GateResult],
) -> tuple[VariantOutcome, ...]:
    outcomes: dict[str, VariantOutcome] = {}
    for name in (n for n in VARIANTS if n in made):
        gate = gates[name]
        size = int(made[name]["bytes"])
        if request.gate and not gate:
            outcomes[name] = VariantOutcome(name, gate, False, size, True, "missed its gate")
            continue
        parent = _DERIVED.get(name)
        if parent in outcomes and not outcomes[parent].written:
            outcomes[name] = VariantOutcome(
                name, gate, False, size, request.gate, f"made from {parent}, which was not written"
            )
            continue
        outcomes[name] = VariantOutcome(name, gate, True, size, request.gate)
    return tuple(outcomes.values())


def _write(
    source: Bundle,
    out: Path,
    made: Mapping[str, Mapping[str, Any]],
    outcomes: tuple[VariantOutcome, ...],
    data: Mapping[str, Any],
    decode_gate: VariantOutcome | None = None,
) -> tuple[str, ...]:
    """4.: the source bundle's files and manifest, with the variants added or replaced."""
    gates = {o.name: o for o in outcomes}
    variants = {
        k: dict(v) for k, v in copy.deepcopy(dict(source.manifest.get("variants", {}))).items()
    }
    dropped = tuple(
        name
        for name, parent in _DERIVED.items()
        if parent in made and name in variants and name not in made
    )
    for name in dropped:
        log.warning(
            "dropping the %s variant: it was made from the %s being replaced", name, _DERIVED[name]
        )
        del variants[name]
    for name, entry in made.items():
        block = {k: v for k, v in entry.items() if k != "_path"}
        outcome = gates[name]
        block["gated"] = outcome.enforced and outcome.gate.passed
        block["gate"] = {**outcome.gate.to_dict(), "enforced": outcome.enforced, "data": data}
        variants[name] = block
    keep_files = {v["file"] for v in variants.values()}
    ort_operators = [v["made"]["operators"] for v in variants.values() if v.get("format") == "ort"]
    stale = {entry.file for entry in source.variants.values() if entry.file not in keep_files} | {
        ORT_CONFIG
    }
    manifest = {
        k: v
        for k, v in copy.deepcopy(dict(source.manifest)).items()
        if k not in ("format", "format_version", "files", "variants")
    }
    with BundleWriter(out) as writer:
        for name in source.manifest["files"]:
            if name in stale or name in (VARIANT_FILES[n] for n in made):
                continue
            writer.write_bytes(name, source.file(name).read_bytes())
        for entry in made.values():
            writer.write_bytes(entry["file"], Path(entry["_path"]).read_bytes())
        if ort_operators:
            writer.write_bytes(ORT_CONFIG, operators_config(ort_operators).encode())
            for v in variants.values():
                if v.get("format") == "ort":
                    v["required_operators"] = ORT_CONFIG
        writer.manifest.update(manifest)
        writer.manifest["format_version"] = VARIANTS_FORMAT_VERSION if variants else FORMAT_VERSION
        if variants:
            writer.manifest["variants"] = variants
        if decode_gate is not None and decode_gate.written:
            decodes = dict(writer.manifest.get("decodes") or {})
            gate = decode_gate.gate
            decodes[FAST] = {
                "gated": decode_gate.enforced and gate.passed,
                "gate": {**gate.to_dict(), "enforced": decode_gate.enforced, "data": data},
                "against": "exact: the pixels of the training transform, on fp32 (model.onnx)",
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            }
            writer.manifest["decodes"] = decodes
    return dropped


__all__ = [
    "OptimizeRequest",
    "OptimizeResult",
    "VariantOutcome",
    "check_trained",
    "optimize_bundle",
]
