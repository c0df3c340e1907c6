"""``onnxedge parity --localize``: the options, the choice of reference, and the output of
`onnxedge.runtime.parity.localize`, kept apart from the parity command, which calls them only
when ``--localize`` is given (its output and JSON are otherwise unchanged)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from onnxedge.runtime.names import shown
from onnxedge.runtime.parity import PARITY_PROVIDERS
from onnxedge.runtime.parity.check import REFERENCE_VARIANTS
from onnxedge.runtime.variants.manifest import FP32

F = TypeVar("F", bound=Callable[..., Any])


def localize_options(command: F) -> F:
    """``--localize [failed|always]``, ``--against PROVIDER`` and ``--plot FILE``."""
    command = click.option(
        "--plot",
        "plot_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="With --localize: write a PNG of each tensor's error against its depth.",
    )(command)
    command = click.option(
        "--against",
        type=click.Choice((*PARITY_PROVIDERS, *REFERENCE_VARIANTS), case_sensitive=False),
        default=None,
        help="With --localize: compare the layers with the same graph on this provider, or with "
        "another of the bundle's models run on the CPU, instead of golden layers (no golden "
        "data needed: a cuda row --against cpu, --variant int8 --against fp32).",
    )(command)
    return click.option(
        "--localize",
        type=click.Choice(["failed", "always"]),
        is_flag=False,
        flag_value="failed",
        default=None,
        help="Find the first layer that diverges, by ONNX node and PyTorch module: for each "
        "failed row (--localize), or every row that ran (--localize always).",
    )(command)


def check_localize_options(
    localize: str | None, against: str | None, plot: Path | None, *, variant: str = FP32
) -> None:
    if localize is None and (against is not None or plot is not None):
        raise click.UsageError("--against and --plot go with --localize")
    if against is not None and against.lower() == variant.lower():
        raise click.UsageError(
            f"--against {against}: that is the model being checked (--variant {variant}); "
            "name another variant, or a provider"
        )
    if plot is not None:
        from onnxedge.runtime.bench.plot import require_matplotlib

        require_matplotlib()  # before the run, not after it


def echo_localizations(found: tuple[Any, ...], *, when: str, plot: Path | None) -> None:
    """Print each localized row's block and write the plot."""
    from onnxedge.runtime.bundle.write import atomic_write_bytes

    if not found:
        click.echo(
            "localize: no row failed, nothing to localize (--localize always localizes every row)"
            if when == "failed"
            else "localize: no row ran, nothing to localize"
        )
    for localization in found:
        for line in localization.lines():
            click.echo(line)
    if plot is not None:
        from onnxedge.runtime.parity.localize_plot import render_png

        if any(loc.layers for loc in found):
            atomic_write_bytes(plot, render_png(found))
            click.echo(f"wrote {shown(plot)}")
        else:
            click.echo(f"--plot: nothing localized, {shown(plot)} not written")
