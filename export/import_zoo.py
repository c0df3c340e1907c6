"""`make import-zoo`: models exported elsewhere, as users bring them, through `onnxedge import`.

`make zoo` takes each model through onnxedge's own export. A user's file was exported by torch
itself, most often traced at batch 1 (``torch.onnx.export(model, (x,), path)``): the batch is
fixed at 1 in the input, the output and the reshapes before the classifier (with the dynamo
exporter, ``allowzero=1`` on every ``Reshape``), and the head is whatever the exporter wrote.
Each entry (pytorchcv's architectures, random weights from seed 0; `IMPORT_ZOO`) with each
exporter (`EXPORTERS`: dynamo at opset 18, torchscript at 17) is

1. exported by ``torch.onnx.export`` at batch 1, no dynamic axes, no onnxedge code;
2. imported by `import_bundle` (what ``onnxedge import`` runs): onnxsim, the fixed batch made
   symbolic, the GAP lowering, each verified against the original file, check, golden data
   whose reference is the original file (``auto``: onnx's float64 reference evaluator where it
   fits the budget, else ONNX Runtime in float32), ImageNet's mean and std;
3. judged by `run_parity` on the CPU EP at the golden batch sizes.

A healthy model must pass every step: a refusal is a gap in import, a parity failure a false
alarm. The table (``--out docs/IMPORT_ZOO.md``) gives per row the batch rewrites, the head's
rewrite, the reference taken, the seconds of each step, parity's largest errors and the verdict,
with the command, date and CPU model. A step that fails is a FAILED row with its one-line reason;
the other entries go on.

    python -m onnxedge.export.import_zoo --out docs/IMPORT_ZOO.md [--only resnet18,ghostnet]
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from onnxedge.export.parity_matrix import IMAGENET
from onnxedge.export.zoo import (
    GOLDEN_BATCHES,
    ZooEntry,
    build_entry,
    cpu_parity,
    errors_cell,
    fmt,
    result_cell,
    run_lines,
    table_row,
    zoo_main,
)
from onnxedge.runtime.errors import OnnxEdgeError, first_line

EXPORT_BATCH = 1  # 1.: the batch a user's export traces at


def _pytorchcv(module: str, name: str, family: str) -> ZooEntry:
    return ZooEntry(name, f"pytorchcv.models.{module}:{name}", (3, 224, 224), family)


IMPORT_ZOO: tuple[ZooEntry, ...] = (
    _pytorchcv("resnet", "resnet18", "residual"),
    _pytorchcv("preresnet", "preresnet18", "pre-activation residual"),
    _pytorchcv("seresnet", "seresnet18", "SE blocks"),
    _pytorchcv("cbamresnet", "cbam_resnet18", "channel and spatial attention"),
    _pytorchcv("bamresnet", "bam_resnet18", "bottleneck attention"),
    _pytorchcv("resnext", "resnext14_16x4d", "grouped convs"),
    _pytorchcv("sknet", "sknet50", "selective kernels"),
    _pytorchcv("densenet", "densenet121", "dense blocks"),
    _pytorchcv("dla", "dla34", "deep layer aggregation"),
    _pytorchcv("vovnet", "vovnet27s", "one-shot aggregation"),
    _pytorchcv("selecsls", "selecsls42b", "SelecSLS"),
    _pytorchcv("darknet", "darknet_tiny", "leaky ReLU, max-pools"),
    _pytorchcv("squeezenet", "squeezenet_v1_1", "1x1-conv classifier before the pool"),
    _pytorchcv("mobilenet", "mobilenet_w1", "depthwise separable"),
    _pytorchcv("mobilenetv2", "mobilenetv2_w1", "inverted residuals"),
    _pytorchcv("mobilenetv3", "mobilenetv3_small_w1", "hard-swish, SE, pre-logits 1x1 conv"),
    _pytorchcv("mobilenetv3", "mobilenetv3_large_w1", "hard-swish, SE, pre-logits 1x1 conv"),
    _pytorchcv("igcv3", "igcv3_w1", "interleaved group convs, channel shuffle"),
    _pytorchcv("shufflenet", "shufflenet_g3_w1", "grouped 1x1 convs, channel shuffle"),
    _pytorchcv("shufflenetv2", "shufflenetv2_w1", "channel split and shuffle"),
    _pytorchcv("efficientnet", "efficientnet_b0", "depthwise, SiLU, SE"),
    _pytorchcv("mnasnet", "mnasnet_a1", "NAS, SE"),
    _pytorchcv("proxylessnas", "proxylessnas_mobile", "NAS"),
    _pytorchcv("fbnet", "fbnet_cb", "NAS"),
    _pytorchcv("spnasnet", "spnasnet", "NAS"),
    _pytorchcv("mixnet", "mixnet_s", "mixed depthwise kernels"),
    _pytorchcv("ghostnet", "ghostnet", "ghost modules, SE"),
    _pytorchcv("hardnet", "hardnet39ds", "harmonic dense blocks"),
    _pytorchcv("peleenet", "peleenet", "two-way dense layers"),
    _pytorchcv("regnet", "regnetx002", "grouped convs"),
    # Added 2026-12-07: an upsampling (Resize by scales) before the flatten, which hid the batch
    # from import's reshape rules; and a Gather of the pooled features before the classifier.
    _pytorchcv("octresnet", "octresnet10_ad2", "octave convs: pooled and upsampled branches"),
    _pytorchcv("hrnet", "hrnet_w18_small_v1", "high-resolution branches, upsampled"),
    _pytorchcv("resattnet", "resattnet56", "residual attention: hourglass masks"),
    _pytorchcv("fishnet", "fishnet99", "fish body: upsampled and downsampled again"),
    _pytorchcv("condensenet", "condensenet74_c4_g4", "learned group convs, index_select head"),
    _pytorchcv("scnet", "scnet50", "self-calibrated convs: upsampled to constant sizes"),
)


@dataclasses.dataclass(frozen=True)
class ImportRow:
    """One entry with one exporter: what import did and parity found, or where it failed."""

    entry: ZooEntry
    exporter: str
    opset: int
    status: str  # "passed" | "failed" | "skipped"
    reason: str = ""
    batch_rewrites: int = 0
    head: str = ""  # the lowering's rewrite of the head ("" where the graph had it already)
    reference: str = ""  # float64 or float32, and why
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    parity_prob: float | None = None
    parity_logits: float | None = None


def export_elsewhere(module, input_shape: Sequence[int], path: Path, exporter: str, opset: int):
    """1.: ``torch.onnx.export`` as a user calls it, traced at `EXPORT_BATCH`, no dynamic axes;
    the exporter's own printing is kept off the runner's output."""
    import torch

    x = torch.rand(EXPORT_BATCH, *input_shape, generator=torch.Generator().manual_seed(0))
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        torch.onnx.export(module.eval(), (x,), str(path), dynamo=exporter == "dynamo",
                          opset_version=opset)  # fmt: skip


def run_entry(
    entry: ZooEntry, exporter: str, opset: int, out_dir: Path, say: Callable[[str], None]
) -> ImportRow:
    """Export one entry at batch 1, import it and judge it with parity (each step timed)."""
    from onnxedge.export.importer import import_bundle

    row = ImportRow(entry, exporter, opset, "failed")
    seconds: dict[str, float] = {}
    step = "build"
    try:
        started = time.perf_counter()
        module, _ = build_entry(entry)
        seconds["build"] = time.perf_counter() - started

        step = "export"
        say(f"{entry.name} ({exporter}): torch.onnx.export at batch {EXPORT_BATCH}")
        out_dir.mkdir(parents=True, exist_ok=True)
        source = out_dir / f"{entry.name}-{exporter}.onnx"
        started = time.perf_counter()
        export_elsewhere(module, entry.input_shape, source, exporter, opset)
        seconds["export"] = time.perf_counter() - started

        step = "import"
        say(f"{entry.name} ({exporter}): import")
        started = time.perf_counter()
        out = out_dir / f"{entry.name}-{exporter}"
        result = import_bundle(
            source,
            out=out,
            output_kind="logits",
            preprocessing=IMAGENET,
            golden_layers_budget_mb=None,
        )
        seconds["import"] = time.perf_counter() - started
        ref = result.reference
        row = dataclasses.replace(
            row,
            batch_rewrites=len(result.lowering.batch_rewrites),
            head="; ".join(result.rewrites),  # the GAP lowering's (the batch's are apart)
            reference=ref.precision + (f" ({ref.reason})" if ref.reason else ""),
        )

        step = "parity"
        say(f"{entry.name} ({exporter}): parity")
        started = time.perf_counter()
        prob, logits, failure = cpu_parity(out)
        seconds["parity"] = time.perf_counter() - started
        row = dataclasses.replace(row, parity_prob=prob, parity_logits=logits)
        if failure:
            raise OnnxEdgeError(failure)
        return dataclasses.replace(row, status="passed", seconds=seconds)
    except OnnxEdgeError as e:
        one_line = " ".join(str(e).split())  # a table cell: parity's summary spans lines
        return dataclasses.replace(row, reason=f"{step}: {one_line}", seconds=seconds)
    except Exception as e:  # an exporter's or an entry's own failure: named in its row
        return dataclasses.replace(
            row, reason=f"{step}: {type(e).__name__}: {first_line(e)}", seconds=seconds
        )


def render(rows: Sequence[ImportRow], *, command: str, machine: str, date: str) -> str:
    lines = [
        "# Models exported elsewhere, through `onnxedge import`",
        "",
        "pytorchcv's architectures with random weights (seed 0), exported by "
        f"`torch.onnx.export` itself at batch {EXPORT_BATCH} with no dynamic axes (as a user "
        "exports a model outside onnxedge), then `import_bundle` (`onnxedge import --output-kind "
        "logits`, ImageNet's mean and std, no golden layers) and `onnxedge parity` (CPU EP, "
        f"golden batches {', '.join(map(str, GOLDEN_BATCHES))}). Generated by `make import-zoo`; "
        "do not edit by hand. The seconds are wall-clock on the machine below, with whatever "
        "else ran on it.",
        "",
        *run_lines(command, date, machine),
        "",
        "Columns: how many reshapes, flattens, expands or tiles import rewrote to free the "
        "batch; the head's rewrite to `GlobalAveragePool` (– where the export wrote one); the "
        "golden data's reference (float64: onnx's reference evaluator on a float64 copy of the "
        "original file; float32: ONNX Runtime on the original); the seconds each step took; "
        "the largest absolute error of parity's probabilities and logits against that "
        "reference.",
        "",
        "| model | family | exporter | batch rewrites | head | reference | export s | import s "
        "| parity s | parity err prob / logits | result |",
        "| --- | --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        s = r.seconds
        cells = [
            r.entry.name,
            r.entry.family,
            f"{r.exporter} {r.opset}",
            str(r.batch_rewrites) if r.status != "skipped" else "–",
            r.head or "–",
            r.reference or "–",
            fmt(s.get("export"), ".1f"),
            fmt(s.get("import"), ".1f"),
            fmt(s.get("parity"), ".1f"),
            errors_cell(r),
            result_cell(r),
        ]
        lines.append(table_row(cells))
    passed = sum(r.status == "passed" for r in rows)
    lines += ["", f"{passed} of {len(rows)} rows passed.", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    return zoo_main(argv, "import_zoo", __doc__, IMPORT_ZOO, run_entry, ImportRow, render)


if __name__ == "__main__":
    sys.exit(main())
