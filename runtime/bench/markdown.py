"""The benchmark report as Markdown: the figures with how they were made."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from onnxedge.runtime.bench.engines import E2E, FILES
from onnxedge.runtime.engines.onnxruntime.session import short_reason

if TYPE_CHECKING:
    from onnxedge.runtime.bench.report import BenchReport
    from onnxedge.runtime.bench.timing import BenchRow


def _ms(v: float) -> str:
    if v < 10:
        return f"{v:.3f}"
    if v < 100:
        return f"{v:.2f}"
    return f"{v:.1f}"


def _rate(v: float) -> str:
    return f"{v:,.1f}" if v < 100 else f"{v:,.0f}"


def render_markdown(report: BenchReport, *, verbose: bool = False) -> str:
    """The report as Markdown; ``verbose``: the full reason of every row not measured, not only
    its first cause."""
    b = report.bundle
    m = report.machine
    s = report.settings.to_dict()
    v = report.versions
    gpus = ", ".join(m.get("gpus") or []) or "none detected"
    lines = [
        f"# onnxedge bench: {b.get('model')} ("
        + (f"{b.get('head')} head, " if b.get("head") else "")
        + f"{b.get('exporter')}, opset {b.get('opset')})",
        "",
        *[f"> **Warning:** {w}.\n" for w in report.warnings],
        f"- Date: {report.date}",
        f"- Command: `{report.command}`" if report.command else "- Command: (library call)",
        f"- Machine: {m.get('cpu')}, {m.get('physical_cores')} physical cores "
        f"({m.get('logical_cores')} logical, {m.get('usable_cores')} usable); GPU: {gpus}",
        f"- Load average (1, 5, 15 min): {m.get('load_average_before')} before, "
        f"{m.get('load_average_after')} after (the load before counts other jobs sharing "
        "the CPU; the load after includes this run)",
        f"- Versions: onnxruntime {v.get('onnxruntime')}, torch {v.get('torch') or 'not installed'}"
        f", openvino {v.get('openvino') or 'not installed'}, numpy {v.get('numpy')}, "
        f"python {v.get('python')}",
        f"- Threads: {s['threads']} ({s['threads_source']}); {s['thread_note']}",
        f"- Timing: {s['timing']['description']}; batch sizes interleaved in order, every engine "
        "on the same input",
        f"- Statistics: percentiles by {s['percentile_method']}; throughput = {s['throughput']}",
        "",
        *_models(b.get("models") or []),
        "## Latency and throughput",
        "",
        "| batch | engine | device | mode | p50 ms | p90 ms | p99 ms | mean ms | min ms "
        "| images/s | runs | warm-up* |",
        "| ---: | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    measured = [r for r in report.rows if r.stats is not None]
    from_files = [r for r in measured if r.info.mode == FILES]
    for r in sorted((r for r in measured if r.info.mode != FILES), key=lambda r: r.batch_size):
        st = r.stats
        assert st is not None
        lines.append(
            f"| {r.batch_size} | {r.info.short} | "
            f"{r.info.device} | {r.info.mode} | "
            f"{_ms(st.p50_ms)} | {_ms(st.p90_ms)} | {_ms(st.p99_ms)} | {_ms(st.mean_ms)} | "
            f"{_ms(st.min_ms)} | {_rate(st.throughput)} | {st.runs} | {st.warmup} |"
        )
    lines += [
        "",
        "\\* untimed runs: the warm-up plus one at the start of each round.",
    ]
    if from_files:
        lines += _files_table(from_files, s.get("images") or {}, measured)
    engine_ratios = report.engine_ratios
    if engine_ratios:
        lines += [
            "",
            "## Models and engines against ONNX Runtime fp32",
            "",
            "Each row's throughput over ONNX Runtime's on `model.onnx` (fp32), same device, mode, "
            "batch size and input, in this run.",
            "",
            "| batch | mode | row | / ORT fp32 throughput | ORT fp32 p50 / row p50 |",
            "| ---: | --- | --- | ---: | ---: |",
        ]
        lines += [
            f"| {q.batch_size} | {q.mode} | {q.row} | {q.ratio:.2f}× | {q.p50_ratio:.2f}× |"
            for q in sorted(engine_ratios, key=lambda q: (q.mode, q.batch_size))
        ]
    ratios = report.ratios
    lines += ["", "## ORT / PyTorch throughput ratios", ""]
    if ratios:
        lines += [
            "Throughput ratio (what the targets use) and, for comparison, the p50 latency ratio, "
            "which stalls caused by other jobs on the machine move less.",
            "",
            "| batch | onnxruntime | peer | ORT / peer throughput | peer / ORT p50 |",
            "| ---: | --- | --- | ---: | ---: |",
        ]
        lines += [
            f"| {q.batch_size} | {q.ort} | {q.peer} | {q.ratio:.2f}× | {q.p50_ratio:.2f}× |"
            for q in sorted(ratios, key=lambda q: q.batch_size)
        ]
    else:
        lines.append("No ratio: no batch size has both an ORT row and a PyTorch row measured.")
    lines += [
        "",
        "## Targets",
        "",
    ]
    targets = report.targets
    if targets:
        lines += ["| target | result | detail |", "| --- | --- | --- |"]
        for t in targets:
            named = f"{t.name}: " if t.name != t.target else ""
            lines.append(f"| {named}`{t.target}` — {t.description} | {t.status} | {t.detail} |")
    else:
        lines.append("None given (`--target`, `--targets FILE.toml`).")
    compiled = [r for r in measured if "compile_s" in r.extras]
    if compiled:
        lines += [
            "",
            "## torch.compile: compile time (not in the latency figures)",
            "",
            "The wall time of the first call at each batch size: dynamo tracing, inductor code "
            "generation and the C++/Triton build (inductor's on-disk cache shortens repeat runs).",
            "",
            "| batch | device | mode | compile s |",
            "| ---: | --- | --- | ---: |",
        ]
        lines += [
            f"| {r.batch_size} | {r.info.device} | {r.info.mode} | {r.extras['compile_s']:.2f} |"
            for r in compiled
        ]
    not_run = [r for r in report.rows if r.stats is None]
    no_peers = report.bundle.get("no_peers")
    if not_run or no_peers:
        lines += ["", "## Not measured", "", *_not_measured(not_run, verbose)]
        lines += [f"- {no_peers}"] if no_peers else []
    lines += ["", "## Engine settings", ""]
    for e in report.engines:
        settings = ", ".join(f"{k}={_setting(val)}" for k, val in e.settings.items())
        lines.append(f"- {e.label} ({e.provider}): {settings}")
    checked = [r for r in report.rows if r.check]
    if checked:
        lines += ["", "## Output check (before timing)", ""]
        lines += [f"- batch {r.batch_size}, {r.info.label}: {r.check}" for r in checked]
    return "\n".join(lines) + "\n"


def _models(models: Sequence[Mapping[str, Any]]) -> list[str]:
    """The models timed, with their size on disk."""
    if not models:
        return []
    fp32 = next((m["bytes"] for m in models if m["variant"] == "fp32"), None)
    lines = [
        "## Models",
        "",
        "| variant | file | format | size on disk | / fp32 | made for | gate |",
        "| --- | --- | --- | ---: | ---: | --- | --- |",
    ]
    for m in models:
        rel = f"{m['bytes'] / fp32:.2f}×" if fp32 else "—"
        gate = {None: "—", True: "passed", False: "ungated (--no-gate)"}[m.get("gated")]
        made_for = ", ".join(m.get("providers") or []) or "any"
        lines.append(
            f"| {m['variant']} | `{m['file']}` | {m['format']} | {m['bytes'] / 1e6:.2f} MB | "
            f"{rel} | {made_for} | {gate} |"
        )
    return [*lines, ""]


def _files_table(
    rows: Sequence[BenchRow], images: Mapping[str, Any], measured: Sequence[BenchRow]
) -> list[str]:
    """The from-files rows: a timed call is a pass over every file; each beside its model's
    model-only throughput (`model_only_ratio`)."""
    source = images.get("source") or "the files given"
    lines = [
        "",
        "## From image files (decode + preprocess + inference)",
        "",
        f"`Classifier.predict_files`, as `onnxedge predict` runs it, over {source}; one timed "
        "call is a pass over every file, so the latencies are per pass and images/s = files / "
        "mean pass time. / model only: the row's images/s over the same engine's end-to-end "
        "throughput on the same model at the same batch size in this run (n/a where that batch "
        "size was not timed: add it to --batch-sizes).",
        "",
        "| batch | engine | files | p50 s/pass | mean s/pass | min s/pass | images/s "
        "| / model only | passes |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        st = r.stats
        assert st is not None
        ratio = model_only_ratio(r, measured)
        lines.append(
            f"| {r.batch_size} | {r.info.short} | {st.images_per_call} | "
            f"{st.p50_ms / 1e3:.3f} | {st.mean_ms / 1e3:.3f} | {st.min_ms / 1e3:.3f} | "
            f"{_rate(st.throughput)} | {'n/a' if ratio is None else f'{100 * ratio:.0f}%'} "
            f"| {st.runs} |"
        )
    return lines


def model_only_ratio(row: BenchRow, measured: Sequence[BenchRow]) -> float | None:
    """A from-files row's throughput over its model's: the end-to-end row of the same engine,
    device, variant and precision at the same batch size (for a variant that takes pixels, the
    variant it was made from, `BenchRow.info.settings["model_only_variant"]`); None when there is
    none."""
    variant = row.info.settings.get("model_only_variant", row.info.variant)
    for m in measured:
        i = m.info
        if (
            i.mode == E2E
            and m.stats is not None
            and m.batch_size == row.batch_size
            and (i.engine, i.device, i.variant, i.precision)
            == (row.info.engine, row.info.device, variant, row.info.precision)
        ):
            assert row.stats is not None
            return row.stats.throughput / m.stats.throughput
    return None


def _not_measured(rows: Sequence[BenchRow], verbose: bool) -> list[str]:
    """A skipped provider (or PyTorch device) is ONE line: its engines and modes, the batch sizes
    and the first cause (`short_reason`). A failed row keeps its own line and its full reason."""
    groups: dict[tuple[str, str, str], list[BenchRow]] = {}
    for r in rows:
        if r.status == "skipped":
            key = (r.status, r.info.provider, short_reason(r.reason))
        else:
            key = (r.status, r.info.label, r.reason)
        groups.setdefault(key, []).append(r)
    lines = []
    for (status, what, reason), group in groups.items():
        batches = ", ".join(map(str, dict.fromkeys(r.batch_size for r in group)))
        if status == "skipped":
            modes: dict[str, list[str]] = {}
            for r in group:
                mode = r.info.label.removeprefix(f"{r.info.engine} {r.info.device} ")
                modes.setdefault(r.info.engine, [])
                if mode not in modes[r.info.engine]:
                    modes[r.info.engine].append(mode)
            engines = "; ".join(f"{e} ({', '.join(m)})" for e, m in modes.items())
            what = f"{what}: {engines}"
            if verbose:
                reason = " / ".join(dict.fromkeys(r.reason for r in group))
        lines.append(f"- {status.upper()} | {what} | batch {batches} | {reason}")
    return lines


def _setting(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
    return str(value)
