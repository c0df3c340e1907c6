"""`make parity-matrix`: parity's false alarms and misses, measured, into docs/PARITY.md.

1. False alarms: every model of `onnxedge.export.zoo` and smile_cnn, random weights (seed 0),
   exported with each exporter (the GAP lowering at its default scope, the head's mean), with the
   default preprocessing and with ImageNet's mean and std (the same graph, its golden data made
   again with that preprocessing), judged by `run_parity` on the CPU EP and OpenVINO f32 at the
   golden batch sizes. A healthy export must pass every row. Beside the verdict: each output's
   largest error over its bound and which bound decided, the engine's error as a multiple of
   PyTorch's own float32 error, and what the fixed tolerances alone would have said (each
   element within ``atol + rtol * |reference|``).
2. The GAP lowering's scope: the models whose graph keeps global means besides the head's
   (squeeze-excitation blocks) are exported again with every mean lowered (``gap="all"``) and
   judged alike; their error multiples decide the default.
3. Misses: for smile_cnn and three zoo models (dynamo export, default preprocessing), each
   convolution or linear layer's weights scaled by 1.01 (one at a time), one bias element moved
   by 1e-3 of its range (of the first layer with a bias, and of the last; where a bias is
   constant, as a freshly initialised one is, by 1e-3 of its weights' range), output channels 0
   and 1 of the first convolution swapped, and the manifest's mean changed by 0.1: each must fail
   every row, at every golden batch size, on the CPU EP. A miss is measured: its float64 effect
   on the batch sizes that passed, over PyTorch's float32 spread (`parity_effect`); at most 1,
   it is below float32 resolution, which no output check can catch.
4. The layer check (`onnxedge.runtime.parity.layer_check`): every bundle is exported with golden
   layers (`LAYERS_BUDGET_MB`), and 1. and 3. count each row with it and with the outputs alone.

Trained weights: none are at hand (pytorchcv's need a download, and training smile_cnn is
`make train`'s), so every model runs with random weights; ``--checkpoint`` adds smile_cnn with a
trained checkpoint.

    python -m onnxedge.export.parity_matrix --out docs/PARITY.md [--only resnet18,smile_cnn]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from onnxedge.export.parity_rows import (
    BIAS_SHARE,
    MEAN_SHIFT,
    SCALE,
    AlarmRow,
    EngineVerdict,
    MissRow,
    splice,
    write,
)
from onnxedge.export.zoo import EXPORTERS, GOLDEN_BATCHES, ZOO, ZooEntry, load_average
from onnxedge.runtime.errors import OnnxEdgeError, first_line

log = logging.getLogger(__name__)

SMILE = ZooEntry("smile_cnn", "onnxedge.models.smile_cnn:smile_cnn", (3, 64, 64), "the toolkit's")
SMILE_BATCHES = (1, 2, 7, 64)
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
PREPROCESSINGS: dict[str, dict[str, Any]] = {"default": {}, "imagenet": IMAGENET}
MISS_MODELS = ("smile_cnn", "squeezenet_v1_1", "regnety004", "mobilenetv3_small_w1")
# Golden layers for the layer check: the largest golden batch whose layers fit this many MB as
# float32 (a 224x224 zoo model's take 7-175 MB a row, densenet121 the most; the export's default,
# 5 MB, stores none).
LAYERS_BUDGET_MB = 200.0


def judge_bundle(bundle_dir: Path, *, engines: Sequence[str]) -> tuple[EngineVerdict, ...]:
    """Each engine's verdict on the bundle, with the layer check where it has golden layers."""
    from onnxedge.runtime.bundle.reader import Bundle
    from onnxedge.runtime.parity import load_golden, make_targets, run_parity
    from onnxedge.runtime.parity.layer_check import golden_layers_or_none, judge_layers

    bundle = Bundle.open(bundle_dir)
    reference = load_golden(bundle)
    golden, _ = golden_layers_or_none(bundle)
    verdicts = []
    for engine in engines:
        targets = make_targets(["cpu"], engines=(engine,))
        report = run_parity(bundle, reference, targets=targets)
        judged = judge_layers(bundle, report, golden=golden).report if golden else report
        verdicts.append(_verdict(engine, judged, outputs=report))
    return tuple(verdicts)


def _verdict(engine: str, report: Any, outputs: Any = None) -> EngineVerdict:
    """``report`` (with the layer check, where it ran) as a verdict; ``outputs``: the report
    of the outputs alone (default: ``report``)."""
    ran = [r for r in report.rows if r.ran]
    if not ran:
        reason = report.rows[0].reason if report.rows else "no rows"
        failed = any(r.status == "failed" for r in report.rows)
        return EngineVerdict(engine, "failed" if failed else "skipped", reason=reason)
    checks = [(c, r) for r in ran for c in (r.prob_check, r.logits_check) if c is not None]
    worst, _ = max(checks, key=lambda cr: cr[0].ratio)
    multiples = [
        r.logits_check.max_abs_error / max(r.logits_check.judge.rounding.float32_error, 1e-300)
        for r in ran
        if r.logits_check is not None and r.logits_check.judge.rounding is not None
    ]
    status = "passed" if report else "failed"
    reasons = "; ".join(f"batch {r.batch}: {r.reason}" for r in ran if r.reason)
    if report.preprocessing.status == "failed":
        reasons = f"preprocessing: {report.preprocessing.detail}; {reasons}"
    checks = [r.layers for r in ran if r.layers is not None and r.layers.status != "not run"]
    return EngineVerdict(
        engine,
        status,
        ratio=worst.ratio,
        decided_by=worst.decided_by,
        float32_multiple=max(multiples, default=0.0),
        old_judge=_old_judge(ran),
        reason=reasons,
        layers_ratio=max((c.ratio for c in checks), default=None),
        outputs_status="passed" if (report if outputs is None else outputs) else "failed",
    )


def _old_judge(rows: Sequence[Any]) -> bool:
    """The fixed tolerances alone, each element against its own magnitude (``atol + rtol *
    |reference|``), as parity judged before the rounding bound (without its spread check)."""
    return all(row.prob and row.logits for row in rows)


# -- 1. and 2.: false alarms ---------------------------------------------------------------------


def _module(entry: ZooEntry, checkpoint: Path | None = None) -> tuple[Any, Any]:
    from onnxedge.models.loader import build_module
    from onnxedge.models.weights import seeded

    if checkpoint is not None:
        from onnxedge.models.weights import load_checkpoint, read_checkpoint_info

        info = read_checkpoint_info(checkpoint)
        args = {**dict(entry.args), **({"head": info.head} if info is not None else {})}
        module = build_module(entry.factory, args)
        return module, load_checkpoint(module, checkpoint)
    return seeded(lambda: build_module(entry.factory, dict(entry.args)), 0)


def export_entry(
    entry: ZooEntry, exporter: str, opset: int, out: Path, *, gap: str, module: Any, weights: Any
) -> Any:
    from onnxedge.export.pipeline import export_bundle

    return export_bundle(
        module,
        input_shape=entry.input_shape,
        out=out,
        exporter=exporter,
        opset=opset,
        name=entry.name,
        weights=weights,
        model_info={"factory": entry.factory},
        golden_batch_sizes=SMILE_BATCHES if entry is SMILE else GOLDEN_BATCHES,
        golden_layers_budget_mb=LAYERS_BUDGET_MB,
        gap=gap,
    )


def regolden(bundle_dir: Path, out: Path, module: Any, overrides: dict[str, Any]) -> Path:
    """A copy of the bundle whose preprocessing takes ``overrides`` and whose golden data and
    golden layers are made again with it (the graph is the same: preprocessing runs before it)."""
    from onnxedge.export.golden import make_golden
    from onnxedge.export.layers import make_golden_layers
    from onnxedge.runtime.bundle.hashing import sha256_file
    from onnxedge.runtime.parity import GOLDEN
    from onnxedge.runtime.parity.layers import GOLDEN_LAYERS, layer_modules

    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(bundle_dir, out)
    manifest = json.loads((out / "manifest.json").read_text())
    spec = {**manifest["preprocessing"], **overrides}
    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    golden = make_golden(
        module,
        model,
        spec,
        kind=manifest["output"]["kind"],
        batch_sizes=manifest["golden"]["batch_sizes"],
    )
    (out / GOLDEN).write_bytes(golden.data)
    manifest["preprocessing"] = spec
    manifest["golden"] = golden.manifest_block()
    budget = (manifest["layers"].get("golden") or {}).get("budget_mb")
    layers = make_golden_layers(
        module, model, layer_modules(manifest), golden.inputs, budget_mb=budget
    )
    manifest["layers"] = layers.block
    manifest["files"].pop(GOLDEN_LAYERS, None)
    (out / GOLDEN_LAYERS).unlink(missing_ok=True)
    if layers.data is not None:
        (out / GOLDEN_LAYERS).write_bytes(layers.data)
    for name in (GOLDEN, GOLDEN_LAYERS):
        if (out / name).exists():
            path = out / name
            manifest["files"][name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


def alarm_rows(
    entry: ZooEntry,
    bundles: Path,
    *,
    engines: Sequence[str],
    say: Callable[[str], None],
    checkpoint: Path | None = None,
    exporters: Sequence[tuple[str, int]] = EXPORTERS,
) -> Iterator[tuple[AlarmRow, Path | None]]:
    """1. and 2. for one entry: a row per exporter, preprocessing and GAP scope."""
    module, weights = _module(entry, checkpoint)
    label = "trained" if checkpoint is not None else "random (seed 0)"
    for exporter, opset in exporters:
        scopes = ["head"]
        for gap in scopes:
            trained = "-trained" if checkpoint is not None else ""
            out = bundles / f"{entry.name}-{exporter}-{gap}{trained}"
            say(f"{entry.name} ({exporter}, gap {gap}): export")
            try:
                result = export_entry(
                    entry, exporter, opset, out, gap=gap, module=module, weights=weights
                )
            except Exception as e:  # an entry's failure is its row's, the others go on
                error = f"export: {type(e).__name__}: {first_line(e)}"
                for pre in PREPROCESSINGS:
                    yield AlarmRow(entry.name, exporter, pre, gap, label, error=error), None
                continue
            nodes = result.manifest["graph"]["nodes"]
            if gap == "head" and any(op in ("ReduceMean", "AveragePool") for op in nodes):
                scopes.append("all")  # 2.: means besides the head's were left alone
            for pre, overrides in PREPROCESSINGS.items():
                say(f"{entry.name} ({exporter}, gap {gap}, {pre}): parity")
                try:
                    target = out
                    if overrides:
                        target = regolden(out, Path(f"{out}-{pre}"), module, overrides)
                    verdicts = judge_bundle(target, engines=engines)
                    yield AlarmRow(entry.name, exporter, pre, gap, label, verdicts), target
                except Exception as e:
                    error = f"parity: {type(e).__name__}: {first_line(e)}"
                    yield AlarmRow(entry.name, exporter, pre, gap, label, error=error), None


# -- 3.: misses ----------------------------------------------------------------------------------


def _layers(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Every Conv, Gemm and MatMul whose weight is an initializer, in graph order."""
    inits = {i.name for i in model.graph.initializer}
    return [
        n
        for n in model.graph.node
        if n.op_type in ("Conv", "Gemm", "MatMul") and len(n.input) > 1 and n.input[1] in inits
    ]


def _edit(model: onnx.ModelProto, name: str, change: Callable[[np.ndarray], np.ndarray]) -> None:
    for init in model.graph.initializer:
        if init.name == name:
            array = change(numpy_helper.to_array(init).copy())
            init.CopyFrom(numpy_helper.from_array(array.astype(np.float32), name))
            return
    raise OnnxEdgeError(f"no initializer {name!r}")


def perturbations(
    model: onnx.ModelProto,
) -> Iterator[tuple[str, str, Callable[[onnx.ModelProto], None]]]:
    """(kind, target, edit) for every weight perturbation of 3."""
    layers = _layers(model)
    arrays = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}

    for node in layers:
        yield "scale", node.input[1], lambda m, w=node.input[1]: _edit(m, w, lambda a: a * SCALE)

    with_bias = [n for n in layers if len(n.input) > 2 and n.input[2] in arrays]
    for node in with_bias[:1] + with_bias[1:][-1:]:  # the first and the last
        bias, weight = arrays[node.input[2]], arrays[node.input[1]]
        span = float(np.ptp(bias)) or float(np.ptp(weight))

        def move(a: np.ndarray, step: float = BIAS_SHARE * span) -> np.ndarray:
            a.flat[0] += step
            return a

        yield "bias", node.input[2], lambda m, b=node.input[2], f=move: _edit(m, b, f)

    conv = next((n for n in layers if n.op_type == "Conv"), None)
    if conv is not None and arrays[conv.input[1]].shape[0] > 1:

        def swap(a: np.ndarray) -> np.ndarray:
            a[[0, 1]] = a[[1, 0]]
            return a

        def swap_both(m: onnx.ModelProto, c: onnx.NodeProto = conv) -> None:
            _edit(m, c.input[1], swap)
            if len(c.input) > 2 and c.input[2] in arrays:
                _edit(m, c.input[2], swap)

        yield "swap", f"{conv.input[1]} channels 0, 1", swap_both


def miss_rows(
    bundle_dir: Path, name: str, say: Callable[[str], None], module: Any = None
) -> Iterator[MissRow]:
    """3. for one bundle, on the CPU EP; with ``module`` (the exported one), each miss's float64
    effect."""
    from onnxedge.export.parity_effect import float64_effect
    from onnxedge.runtime.bundle.reader import Bundle
    from onnxedge.runtime.parity import load_golden, make_targets, run_parity
    from onnxedge.runtime.parity.layer_check import golden_layers_or_none, judge_layers

    bundle = Bundle.open(bundle_dir)
    reference = load_golden(bundle)
    golden, _ = golden_layers_or_none(bundle)

    def with_layers(report: Any, model: Path | None = None, on: Any = bundle) -> Any:
        return judge_layers(on, report, model=model, golden=golden).report if golden else report

    targets = make_targets(["cpu"])
    original = onnx.load(str(bundle.model_path))
    with tempfile.TemporaryDirectory(prefix="parity-matrix-") as tmp:
        for kind, target, edit in perturbations(original):
            model = onnx.ModelProto()
            model.CopyFrom(original)
            edit(model)
            path = Path(tmp) / "model.onnx"
            onnx.save(model, str(path))
            report = run_parity(bundle, reference, targets=targets, model=path)
            miss = _miss(name, kind, target, report, with_layers(report, path))
            if not miss.caught_outputs and module is not None:
                effects = float64_effect(
                    module, original, model, reference, bundle.manifest["output"]["kind"]
                )
                passed = [r.batch for r in report.rows if r.ran and r.status != "failed"]
                if effects is not None and passed:
                    miss = dataclasses.replace(miss, effect=min(effects[b] for b in passed))
            yield miss
        say(f"{name}: mean")
        mean = [float(v) for v in bundle.preprocessing.get("mean", [0.0, 0.0, 0.0])]
        manifest = {**bundle.manifest}
        shifted = {**bundle.preprocessing, "mean": [mean[0] + MEAN_SHIFT, *mean[1:]]}
        manifest["preprocessing"] = shifted
        changed = dataclasses.replace(bundle, manifest=manifest, preprocessing=shifted)
        report = run_parity(changed, reference, targets=targets)
        judged = with_layers(report, on=changed)
        yield _miss(name, "mean", "preprocessing mean[0] + 0.1", report, judged)


def _miss(name: str, kind: str, target: str, report: Any, judged: Any = None) -> MissRow:
    """``report``: the outputs alone; ``judged``: with the layer check (None: none ran)."""
    preprocessing_failed = report.preprocessing.status == "failed"

    def failed(rep: Any) -> int:
        return sum(1 for r in rep.rows if r.ran and (r.status == "failed" or preprocessing_failed))

    rows = [r for r in report.rows if r.ran]
    strengths = [
        max(c.ratio for c in (r.prob_check, r.logits_check) if c is not None) for r in rows
    ]
    weakest = np.inf if preprocessing_failed else min(strengths, default=0.0)
    checks = [] if judged is None else [r.layers for r in judged.rows if r.layers is not None]
    ratios = [c.ratio for c in checks if c.status != "not run"]
    return MissRow(
        name,
        kind,
        target,
        failed(report if judged is None else judged),
        len(rows),
        float(weakest),
        outputs_failed=failed(report),
        layers_ratio=min(ratios) if ratios else None,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m onnxedge.export.parity_matrix", description=__doc__
    )
    parser.add_argument("--out", type=Path, default=Path("docs/PARITY.md"))
    parser.add_argument("--bundles", type=Path, default=Path("build/parity_matrix"))
    parser.add_argument("--json", type=Path, default=None, help="also write every figure")
    parser.add_argument("--only", default="", help="comma-separated model names, in run order")
    parser.add_argument("--checkpoint", type=Path, default=None, help="trained smile_cnn")
    args = parser.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    try:  # before the run, not after its first model: the matrix is spliced into --out
        splice(args.out.read_text(), "")
    except (OSError, UnicodeDecodeError, OnnxEdgeError) as e:
        parser.error(f"--out: expected a Markdown file with the matrix's markers, got {e}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from onnxedge.runtime.engines import OPENVINO, engine_unavailable_reason

    entries = [SMILE, *ZOO]
    only = {n.strip() for n in args.only.split(",") if n.strip()}
    unknown = only - {e.name for e in entries}
    if unknown:
        parser.error(f"unknown models: {', '.join(sorted(unknown))}")
    by_name = {e.name: e for e in entries}
    # --only runs in the order given
    order = [n.strip() for n in args.only.split(",") if n.strip()]
    entries = [by_name[n] for n in dict.fromkeys(order)] if only else entries
    engines = ["onnxruntime"]
    if engine_unavailable_reason(OPENVINO) is None:
        engines.append(OPENVINO)

    def say(msg: str) -> None:
        print(f"  {msg}", file=sys.stderr, flush=True)

    load_before = load_average()
    alarms: list[AlarmRow] = []
    misses: list[MissRow] = []
    for entry in entries:
        for row, bundle in alarm_rows(entry, args.bundles, engines=engines, say=say):
            alarms.append(row)
            say(
                f"{row.model} {row.exporter} {row.preprocessing} gap {row.gap}: "
                + (row.error or ", ".join(v.cell() for v in row.verdicts))
            )
            if (
                entry.name in MISS_MODELS
                and bundle is not None
                and (row.exporter, row.preprocessing, row.gap) == ("dynamo", "default", "head")
            ):
                module, _ = _module(entry)
                for miss in miss_rows(bundle, entry.name, say, module):
                    misses.append(miss)
                    if not miss.caught:
                        say(f"MISSED {miss}")
        if entry is SMILE and args.checkpoint is not None:
            for row, _ in alarm_rows(
                entry, args.bundles, engines=engines, say=say, checkpoint=args.checkpoint
            ):
                alarms.append(row)
        # After each model, so that an interrupted run leaves what it measured, marked so.
        partial = "" if entry is entries[-1] else f"; partial: the models up to {entry.name}"
        write(args, alarms, misses, engines, load_before, partial)
    head = [r for r in alarms if r.gap == "head"]
    print(
        f"wrote {args.out}: {sum(r.false_alarm for r in head)} false alarms of {len(head)} "
        f"({sum(r.false_alarm_outputs for r in head)} with the outputs alone), "
        f"{sum(not m.caught for m in misses)} misses of {len(misses)} "
        f"({sum(not m.caught_outputs for m in misses)} with the outputs alone)"
    )
    return 0 if not any(r.false_alarm for r in head) and all(m.caught for m in misses) else 1


if __name__ == "__main__":
    sys.exit(main())
