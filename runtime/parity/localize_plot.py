"""The localisation's PNG: each tensor's error over its scale against its position in the graph,
one line per localized row, with the tolerance each was held to and the first divergent layer
marked. Imported only with ``--plot``; matplotlib is not a runtime dependency."""

from __future__ import annotations

import io
from collections.abc import Sequence

from onnxedge.runtime.bench.plot import require_matplotlib
from onnxedge.runtime.errors import OnnxEdgeError
from onnxedge.runtime.parity.localize import Localization

# Errors of exactly zero (a tensor equal to its reference) are drawn at this floor of the log axis.
_FLOOR = 1e-12


def render_png(localizations: Sequence[Localization], *, title: str = "", dpi: int = 120) -> bytes:
    """The plot as PNG bytes (the caller writes them atomically)."""
    require_matplotlib()
    from matplotlib.figure import Figure

    drawn = [loc for loc in localizations if loc.layers]
    if not drawn:
        raise OnnxEdgeError("nothing to plot: no row was localized")
    names = [f"{layer.tensor.index} {layer.tensor.op_type}" for layer in drawn[0].layers]
    fig = Figure(figsize=(max(8.0, 0.45 * len(names) + 3.0), 5.5), layout="constrained")
    ax = fig.subplots()
    for loc in drawn:
        label = f"{loc.row.label} batch {loc.batch} ({loc.row.tf32_label})"
        points = [(i, layer) for i, layer in enumerate(loc.layers) if layer.compared]
        xs = [i for i, _ in points]
        (line,) = ax.plot(
            xs,
            [max(layer.scaled_error, _FLOOR) for _, layer in points],
            marker="o",
            label=f"{label}: error / scale",
        )
        ax.plot(
            xs,
            [layer.tolerance for _, layer in points],
            linestyle="--",
            color=line.get_color(),
            alpha=0.6,
            label=f"{label}: tolerance",
        )
        first = loc.first_divergent
        if first is not None:
            i = loc.layers.index(first)
            ax.scatter(
                [i],
                [max(first.scaled_error, _FLOOR)],
                s=160,
                facecolors="none",
                edgecolors="red",
                linewidths=2,
                zorder=3,
            )
            ax.annotate(
                f"first divergent: {first.tensor.node}"
                + (f"\n{first.module}" if first.module else ""),
                (i, max(first.scaled_error, _FLOOR)),
                textcoords="offset points",
                xytext=(8, 8),
                fontsize="small",
                color="red",
            )
    ax.set_yscale("log")
    low, high = ax.get_ylim()
    ax.set_ylim(low, high * 30)  # room above the highest point for the first divergent's label
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize="small")
    ax.set_xlabel("tensor, in graph order")
    ax.set_ylabel("max |error| / RMS of the reference")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(title or f"layer errors against {drawn[0].reference}", fontsize="medium")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
