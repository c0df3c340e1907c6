"""``onnxedge parity --localize``: the options, the choice of reference, and the output of
`onnxedge.runtime.parity.localize`, kept apart from the parity command, which calls them only
when ``--localize`` is given (its output and JSON are otherwise unchanged)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from onnxedge.runtime.errors import OnnxEdgeError, first_line
from onnxedge.runtime.parity import PARITY_PROVIDERS
from onnxedge.runtime.variants.manifest import FP32, INT8

# The bundle's models --against runs on the CPU as the reference: ONNX files (a .ort file cannot
# be exposed) that the CPU EP runs as made (fp16 is made for the CUDA EP).
REFERENCE_VARIANTS = (FP32, INT8)

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


def layer_reference(
    bundle: Any,
    reference: Any,
    exposed: Any,
    *,
    against: str | None,
    live: bool,
    checkpoint: Path | None,
) -> Any:
    """What the layers of ``exposed`` (the model checked) are compared with: ``--against`` a
    provider or another variant, else PyTorch live with ``--reference live``, else the bundle's
    golden layers (an error naming the other references where it has none)."""
    from onnxedge.runtime.parity import make_targets
    from onnxedge.runtime.parity.layer_reference import (
        against_provider,
        against_variant,
        golden_layer_reference,
    )

    if against is not None and against.lower() in REFERENCE_VARIANTS:
        return against_variant(bundle, against.lower(), reference)
    if against is not None:
        (target,) = make_targets([against.lower()])
        return against_provider(exposed, reference, target)
    if live:
        return _live_layers(bundle, reference, checkpoint)
    return golden_layer_reference(bundle)


def _live_layers(bundle: Any, reference: Any, checkpoint: Path | None) -> Any:
    import onnx

    from onnxedge.runtime.parity.layers import layer_modules

    if not layer_modules(bundle.manifest):
        raise OnnxEdgeError(
            f"{bundle.path}: its manifest records no map from tensors to modules (exported by "
            "an onnxedge that did not record one): re-export it, or use --against"
        )
    try:
        from onnxedge.export.layers import live_layer_reference
        from onnxedge.models.weights import module_from_manifest
    except (ImportError, OSError) as e:
        raise live_needs_torch(e) from None
    module = module_from_manifest(bundle.manifest, checkpoint)
    final = onnx.load(str(bundle.model_path), load_external_data=False)
    return live_layer_reference(module, bundle.manifest, final, reference)


def run_localize(
    bundle: Any,
    report: Any,
    reference: Any,
    layers: Any,
    exposed: Any,
    *,
    when: str,
    plot: Path | None,
) -> tuple[Any, ...]:
    """Localize, print each row's block, write the plot; the localizations, for the JSON."""
    from onnxedge.runtime.bundle.write import atomic_write_bytes
    from onnxedge.runtime.parity.localize import localize

    found = localize(bundle, report.rows, layers, reference=reference, when=when, exposed=exposed)
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
            click.echo(f"wrote {plot}")
        else:
            click.echo(f"--plot: nothing localized, {plot} not written")
    return found


def live_needs_torch(e: BaseException) -> OnnxEdgeError:
    """The error of ``--reference live`` where torch cannot be imported: ``e`` is the ImportError,
    or the OSError of a torch installed without its native libraries (a Jetson wheel without its
    CUDA libraries, a CUDA build on a machine without them)."""
    return OnnxEdgeError(
        f"--reference live needs torch, which cannot be imported here ({first_line(e)}); "
        "install onnxedge[export], or use the golden reference (the default)"
    )
