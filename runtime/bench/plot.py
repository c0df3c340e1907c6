"""The benchmark's PNG: p50 latency and throughput against batch size, one line per engine, log
scales. Imported only when ``--plot`` is given; matplotlib is not a runtime dependency."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from onnxedge.runtime.bench.engines import FILES
from onnxedge.runtime.deps import require_modules
from onnxedge.runtime.errors import OnnxEdgeError

if TYPE_CHECKING:
    from onnxedge.runtime.bench.report import BenchReport


def require_matplotlib() -> None:
    """Fail with one line before a long run, rather than with an ImportError after it."""
    require_modules(
        "matplotlib",
        needed_by="--plot",
        install="pip install matplotlib (or 'onnxedge[export]'), or leave out --plot",
    )


def render_png(report: BenchReport, *, dpi: int = 120) -> bytes:
    """The plot as PNG bytes (the caller writes them atomically)."""
    require_matplotlib()
    from matplotlib.figure import Figure
    from matplotlib.ticker import (
        FixedLocator,
        FuncFormatter,
        LogLocator,
        NullFormatter,
        NullLocator,
    )

    series: dict[str, list[tuple[int, float, float]]] = {}
    families: dict[str, str] = {}
    for row in report.rows:
        if row.stats is None or row.info.mode == FILES:  # per-pass latencies: the report's table
            continue
        label = row.info.label
        series.setdefault(label, []).append(
            (row.batch_size, row.stats.p50_ms, row.stats.throughput)
        )
        families[label] = row.info.family
    if not series:
        raise OnnxEdgeError("nothing to plot: no engine was measured")

    fig = Figure(figsize=(12, 5.5), layout="constrained")
    ax_lat, ax_thr = fig.subplots(1, 2)
    batches = sorted({b for points in series.values() for b, _, _ in points})
    for label, points in sorted(series.items()):
        points.sort()
        xs = [p[0] for p in points]
        style = "-" if families[label] == "onnxruntime" else "--"
        ax_lat.plot(xs, [p[1] for p in points], style, marker="o", label=label)
        ax_thr.plot(xs, [p[2] for p in points], style, marker="o", label=label)
    for ax, ylabel, title in (
        (ax_lat, "p50 latency (ms)", "p50 latency against batch size"),
        (ax_thr, "throughput (images/s)", "throughput against batch size"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(FixedLocator(batches))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([str(b) for b in batches])
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = ax_thr.get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="outside lower center", ncols=min(4, len(labels)), fontsize="small"
    )
    m = report.machine
    b = report.bundle
    gpus = ", ".join(m.get("gpus") or []) or "no GPU"
    fig.suptitle(
        f"{b.get('model')} — {m.get('cpu')}, {report.settings.resolved_threads} threads, {gpus}"
        f" — {report.date}",
        fontsize="medium",
    )
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
