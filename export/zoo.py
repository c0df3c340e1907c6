"""`make zoo`: real and hand-written CNN families through export, check, parity and a short bench.

Each zoo entry is a factory (`ZooEntry`): pytorchcv's models, imported from their own modules
(``pytorchcv.models.resnet:resnet18``; pytorchcv's ``model_provider`` imports torchvision, which
does not work with the CPU build of torch), and the hand-written families of
`onnxedge.models.families`. Every entry runs with random weights (a fixed seed) through

1. `export_bundle` with each exporter (dynamo at opset 18, torchscript at 17): export, onnxsim and
   the GAP lowering, each verified, ONNX Runtime against PyTorch, check, golden data;
2. `check_path` on the bundle;
3. `run_parity` on the CPU EP at the golden batch sizes;
4. `benchmark`: ONNX Runtime's CPU EP at batch 1, a fixed number of timed runs;

and the time of each step, the head's pool before and after the lowering, the largest error and
the latency go into a Markdown table (``--out docs/ZOO.md``) with the command, date and CPU model.
A step that fails is a FAILED row with its one-line reason; the other entries go on.

    python -m onnxedge.export.zoo --out docs/ZOO.md [--only resnet18,convnext_like]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import logging
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from onnxedge.runtime.errors import OnnxEdgeError, first_line

log = logging.getLogger(__name__)

GOLDEN_BATCHES = (1, 2, 7)
BENCH_ITERS = 20
EXPORTERS = (("dynamo", 18), ("torchscript", 17))


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    name: str
    factory: str  # "module:function", called with ``args``
    input_shape: tuple[int, int, int]
    family: str  # what it stands for
    args: tuple[tuple[str, Any], ...] = ()

    @property
    def source(self) -> str:
        return "pytorchcv" if self.factory.startswith("pytorchcv.") else "hand-written"


_IMAGENET = (3, 224, 224)
_FAMILIES = "onnxedge.models.families"
ZOO: tuple[ZooEntry, ...] = (
    ZooEntry("resnet18", "pytorchcv.models.resnet:resnet18", _IMAGENET, "residual, AvgPool2d(7)"),
    ZooEntry(
        "efficientnet_b0",
        "pytorchcv.models.efficientnet:efficientnet_b0",
        _IMAGENET,
        "depthwise, SiLU, SE blocks",
    ),
    ZooEntry(
        "squeezenet_v1_1",
        "pytorchcv.models.squeezenet:squeezenet_v1_1",
        _IMAGENET,
        "1x1-conv classifier before the pool",
    ),
    ZooEntry("densenet121", "pytorchcv.models.densenet:densenet121", _IMAGENET, "dense blocks"),
    ZooEntry(
        "regnety004", "pytorchcv.models.regnet:regnety004", _IMAGENET, "grouped convs, SE blocks"
    ),
    ZooEntry(
        "mobilenetv3_small_w1",
        "pytorchcv.models.mobilenetv3:mobilenetv3_small_w1",
        _IMAGENET,
        "hard-swish, SE, pre-logits 1x1 conv",
    ),
    ZooEntry(
        "resnext14_16x4d",
        "pytorchcv.models.resnext:resnext14_16x4d",
        _IMAGENET,
        "grouped convs",
    ),
    ZooEntry(
        "convnext_like",
        f"{_FAMILIES}:convnext_like",
        (3, 128, 128),
        "LayerNorm, GELU, x.mean((2, 3)) head",
    ),
    ZooEntry(
        "depthwise_silu",
        f"{_FAMILIES}:depthwise_silu",
        (3, 96, 128),
        "mean(keepdim) head, 1x1-conv classifier",
    ),
    ZooEntry(
        "grouped_dilated", f"{_FAMILIES}:grouped_dilated", (3, 112, 112), "grouped, dilated convs"
    ),
    ZooEntry(
        "mobilenetv3_like",
        f"{_FAMILIES}:mobilenetv3_like",
        (3, 128, 128),
        "hard-swish written out, pre-logits head",
    ),
    ZooEntry("squeeze_excite", f"{_FAMILIES}:squeeze_excite", (3, 96, 96), "SE blocks"),
)


@dataclasses.dataclass(frozen=True)
class ZooRow:
    """One entry with one exporter: the figures, or where it failed and why."""

    entry: ZooEntry
    exporter: str
    opset: int
    status: str  # "passed" | "failed" | "skipped"
    reason: str = ""
    pool_before: str = ""
    pool_after: str = ""
    global_means: int = 0
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    max_error_vs_torch: float | None = None
    parity_prob: float | None = None
    parity_logits: float | None = None
    p50_ms: float | None = None


def build_entry(entry: ZooEntry) -> tuple[Any, Any]:
    """The entry's module with its default initialisation from seed 0, and that provenance."""
    from onnxedge.models.loader import build_module
    from onnxedge.models.weights import seeded

    return seeded(lambda: build_module(entry.factory, dict(entry.args)), 0)


def cpu_parity(bundle_dir: Path) -> tuple[float | None, float | None, str]:
    """`run_parity` of the bundle on the CPU EP at its golden batch sizes: the largest error of
    the probabilities and of the logits over the rows that ran, and why it failed on one line
    ("" where it passed): the summary and the first failed row's batch and reason."""
    from onnxedge.runtime.bundle.reader import Bundle
    from onnxedge.runtime.parity import load_golden, make_targets, run_parity

    bundle = Bundle.open(bundle_dir)
    parity = run_parity(bundle, load_golden(bundle), targets=make_targets(["cpu"]))
    ran = [r for r in parity.rows if r.ran]
    prob = max(r.prob.max_abs_error for r in ran) if ran else None
    logits = max(r.logits.max_abs_error for r in ran) if ran else None
    if parity:
        return prob, logits, ""
    failed = next((r for r in parity.rows if r.status == "failed"), None)  # a failed row is falsy
    summary = parity.summary.removeprefix("parity: ")
    why = f"{summary}; batch {failed.batch}: {failed.reason}" if failed is not None else summary
    return prob, logits, " ".join(why.split())


def run_entry(
    entry: ZooEntry, exporter: str, opset: int, out_dir: Path, say: Callable[[str], None]
) -> ZooRow:
    """Export, check, parity and bench one entry with one exporter (all steps timed)."""
    from onnxedge.export.pipeline import export_bundle
    from onnxedge.runtime.bench import BenchSettings, TimingPlan, benchmark
    from onnxedge.runtime.check.check import check_path

    row = ZooRow(entry, exporter, opset, "failed")
    seconds: dict[str, float] = {}
    step = "build"
    try:
        started = time.perf_counter()
        module, provenance = build_entry(entry)
        seconds["build"] = time.perf_counter() - started

        step = "export"
        say(f"{entry.name} ({exporter}): export")
        started = time.perf_counter()
        out = out_dir / f"{entry.name}-{exporter}"
        result = export_bundle(
            module,
            input_shape=entry.input_shape,
            out=out,
            exporter=exporter,
            opset=opset,
            name=entry.name,
            weights=provenance,
            model_info={"factory": entry.factory, "model_args": dict(entry.args)},
            golden_batch_sizes=GOLDEN_BATCHES,
        )
        seconds["export"] = time.perf_counter() - started
        ops = result.manifest["graph"]["nodes"]
        head = next(i for i in result.check.items if i.name == "gap_head")
        row = dataclasses.replace(
            row,
            pool_before=result.exported_pool,
            pool_after="GlobalAveragePool" if head else "?",
            global_means=ops.count("GlobalAveragePool"),
            max_error_vs_torch=max(
                v.max_abs_error for v in result.verifications if "PyTorch" in v.step
            ),
        )

        step = "check"
        say(f"{entry.name} ({exporter}): check")
        started = time.perf_counter()
        report = check_path(out)
        seconds["check"] = time.perf_counter() - started
        if not report:
            raise OnnxEdgeError(str(report.failures[0]))

        step = "parity"
        say(f"{entry.name} ({exporter}): parity")
        started = time.perf_counter()
        prob, logits, failure = cpu_parity(out)
        seconds["parity"] = time.perf_counter() - started
        row = dataclasses.replace(row, parity_prob=prob, parity_logits=logits)
        if failure:
            raise OnnxEdgeError(failure)

        step = "bench"
        say(f"{entry.name} ({exporter}): bench")
        started = time.perf_counter()
        settings = BenchSettings(
            providers=("cpu",),
            batch_sizes=(1,),
            peers=(),
            plan=TimingPlan(iters=BENCH_ITERS, seconds=None, rounds=1),
        )
        bench = benchmark(out, settings)
        seconds["bench"] = time.perf_counter() - started
        timed = [r for r in bench.rows if r and r.stats is not None]
        if not timed:
            raise OnnxEdgeError(bench.rows[0].reason if bench.rows else "no rows")
        row = dataclasses.replace(row, p50_ms=timed[0].stats.p50_ms)
        return dataclasses.replace(row, status="passed", seconds=seconds)
    except OnnxEdgeError as e:
        return dataclasses.replace(row, reason=f"{step}: {e}", seconds=seconds)
    except Exception as e:  # an entry's own bug must not stop the zoo; named in its row
        return dataclasses.replace(
            row, reason=f"{step}: {type(e).__name__}: {first_line(e)}", seconds=seconds
        )


def fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def render(rows: Sequence[ZooRow], *, command: str, machine: str, date: str) -> str:
    lines = [
        "# The model zoo",
        "",
        "Random-weight models (seed 0) of each family through `export_bundle` (export, onnxsim "
        "and the GAP lowering, each verified under ONNX Runtime, then against PyTorch), "
        "`onnxedge check`, `onnxedge parity` (CPU EP, golden batches "
        f"{', '.join(map(str, GOLDEN_BATCHES))}) and a short `onnxedge bench` (CPU EP, batch 1, "
        f"{BENCH_ITERS} timed runs). Generated by `make zoo`; do not edit by hand. The times "
        "are wall-clock seconds on the machine below, with whatever else ran on it (its load "
        "average is given): compare them within one table, and take latencies from "
        "`onnxedge bench` on a quiet machine.",
        "",
        *run_lines(command, date, machine),
        "",
        "Columns: the head's pool as the exporter wrote it and after the lowering; how many "
        "`GlobalAveragePool` the shipped graph has (the default lowering rewrites the head's "
        "mean only; squeeze-excitation blocks keep theirs as ReduceMean); the seconds each "
        "step took; the largest absolute error of ONNX Runtime "
        "against PyTorch in float32 (export) and of parity's probabilities and logits against "
        "the float64 reference; the median latency.",
        "",
        "| model | source | exporter | input | head pool before → after | GAPs | export s "
        "| check s | parity s | bench s | max err vs PyTorch | parity err prob / logits "
        "| p50 ms (b1) | result |",
        "| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| --- |",
    ]
    for r in rows:
        s = r.seconds
        result = "PASSED" if r.status == "passed" else f"{r.status.upper()}: {r.reason}"
        result = result.replace("|", "\\|")
        lines.append(
            f"| {r.entry.name} | {r.entry.source} ({r.entry.family}) | {r.exporter} {r.opset} "
            f"| {'×'.join(map(str, r.entry.input_shape))} "
            f"| {r.pool_before or '–'} → {r.pool_after or '–'} | {r.global_means or '–'} "
            f"| {fmt(s.get('export'), '.1f')} | {fmt(s.get('check'), '.2f')} "
            f"| {fmt(s.get('parity'), '.1f')} | {fmt(s.get('bench'), '.1f')} "
            f"| {fmt(r.max_error_vs_torch, '.1e')} "
            f"| {fmt(r.parity_prob, '.1e')} / {fmt(r.parity_logits, '.1e')} "
            f"| {fmt(r.p50_ms, '.2f')} | {result} |"
        )
    passed = sum(r.status == "passed" for r in rows)
    lines += ["", f"{passed} of {len(rows)} rows passed.", ""]
    return "\n".join(lines)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
        else:
            name = platform.processor() or platform.machine()
    except OSError:
        name = platform.processor() or platform.machine()
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name}, {cores} cores, Python {platform.python_version()}"


def load_average() -> float:
    """The 1-minute load average (the times in the table are wall-clock: other jobs slow them)."""
    import os

    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def zoo_arguments(
    argv: Sequence[str] | None,
    prog: str,
    description: str | None,
    entries: Sequence[Any],
    *,
    out: Path,
    bundles: Path,
    more: Callable[[argparse.ArgumentParser], None] | None = None,
) -> tuple[argparse.Namespace, list[Any]]:
    """A zoo runner's command line: ``--out``, ``--bundles``, ``--only`` (comma-separated entry
    names, an unknown one a usage error) and what ``more`` adds; the arguments and the entries
    chosen, in order."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--out", type=Path, default=out, help="table")
    parser.add_argument("--bundles", type=Path, default=bundles, help="bundles")
    parser.add_argument("--only", default="", help="comma-separated entry names")
    if more is not None:
        more(parser)
    args = parser.parse_args(argv)
    only = {n.strip() for n in args.only.split(",") if n.strip()}
    unknown = only - {e.name for e in entries}
    if unknown:
        parser.error(f"unknown zoo entries: {', '.join(sorted(unknown))}")
    return args, [e for e in entries if not only or e.name in only]


def say(msg: str) -> None:
    """A zoo runner's progress line on stderr."""
    print(f"  {msg}", file=sys.stderr, flush=True)


def run_lines(command: str, date: str, machine: str) -> list[str]:
    """The lines of a zoo table that say how it was made."""
    return [f"- command: `{command}`", f"- date: {date}", f"- machine: {machine}"]


def zoo_main(
    argv: Sequence[str] | None,
    name: str,
    description: str | None,
    entries: Sequence[Any],
    run: Callable[[Any, str, int, Path, Callable[[str], None]], Any],
    row_type: Callable[..., Any],
    render_rows: Callable[..., str],
) -> int:
    """``python -m onnxedge.export.NAME``: every entry (``--only`` some) with each exporter
    through ``run``, a skipped ``row_type`` where pytorchcv is missing, the table by
    ``render_rows`` written atomically to ``--out`` (docs/NAME.md); exit 1 where a row failed."""
    prog = f"python -m onnxedge.export.{name}"
    args, chosen = zoo_arguments(
        argv, prog, description, entries, out=Path(f"docs/{name.upper()}.md"),
        bundles=Path(f"build/{name}"),
    )  # fmt: skip
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    has_pytorchcv = importlib.util.find_spec("pytorchcv") is not None
    load_before = load_average()
    rows: list[Any] = []
    for entry in chosen:
        for exporter, opset in EXPORTERS:
            if entry.source == "pytorchcv" and not has_pytorchcv:
                reason = "pytorchcv is not installed (the Makefile installs it with --no-deps)"
                rows.append(row_type(entry, exporter, opset, "skipped", reason))
                continue
            row = run(entry, exporter, opset, args.bundles, say)
            say(f"{entry.name} ({exporter}): {row.status.upper()} {row.reason}")
            rows.append(row)
    return write_table(rows, prog, argv, render_rows, args.out, load_before)


def write_table(
    rows: Sequence[Any],
    prog: str,
    argv: Sequence[str] | None,
    render_rows: Callable[..., str],
    out: Path,
    load_before: float,
) -> int:
    """A zoo runner's end: the table of ``rows`` by ``render_rows`` (with the command, the date
    and the machine) written atomically to ``out``; the exit status, 1 where a row failed."""
    command = f"{prog} " + shlex.join(argv if argv is not None else sys.argv[1:])
    text = render_rows(
        rows,
        command=command.strip(),
        machine=f"{cpu_model()}; load average {load_before:.1f} before the run, "
        f"{load_average():.1f} after",
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
    )
    from onnxedge.runtime.bundle.write import atomic_write_bytes

    atomic_write_bytes(out, text.encode())
    fine = sum(r.status != "failed" and r.status != "skipped" for r in rows)
    print(f"wrote {out}: {fine} of {len(rows)} rows as expected")
    return 0 if all(r.status != "failed" for r in rows) else 1


def result_cell(row: Any) -> str:
    """A row's verdict: PASSED, or its status and why."""
    return "PASSED" if row.status == "passed" else f"{row.status.upper()}: {row.reason}"


def errors_cell(row: Any) -> str:
    """Parity's largest errors of a row: probabilities / logits."""
    return f"{fmt(row.parity_prob, '.1e')} / {fmt(row.parity_logits, '.1e')}"


def table_row(cells: Sequence[str]) -> str:
    """One Markdown table row of ``cells``, a ``|`` inside one escaped."""
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def main(argv: Sequence[str] | None = None) -> int:
    return zoo_main(argv, "zoo", __doc__, ZOO, run_entry, ZooRow, render)


if __name__ == "__main__":
    sys.exit(main())
