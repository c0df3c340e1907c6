"""`onnxedge parity BUNDLE`: the command line of `onnxedge.runtime.parity`; it parses options,
calls the library, prints one line per row and writes the JSON. Needs no torch unless
``--reference live`` is given."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from onnxedge.runtime.parity import (
    DEFAULT_BATCH_SIZES,
    PARITY_PROVIDERS,
    ToleranceOverrides,
    make_targets,
)


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _providers(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...]:
    if value is None:
        return PARITY_PROVIDERS
    names = [v.lower() for v in _split(value)]
    if not names:
        raise click.BadParameter("expected a comma-separated list such as cpu,cuda")
    for name in names:
        if name not in PARITY_PROVIDERS:
            raise click.BadParameter(
                f"unknown provider {name!r}; expected one of: {', '.join(PARITY_PROVIDERS)}"
            )
    return tuple(dict.fromkeys(names))


def _required(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    names = [n.lower() for v in value for n in _split(v)]
    for name in names:
        if name not in PARITY_PROVIDERS:
            raise click.BadParameter(
                f"unknown provider {name!r}; expected one of: {', '.join(PARITY_PROVIDERS)}"
            )
    return tuple(dict.fromkeys(names))


def _batch_sizes(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    sizes = []
    for item in _split(value):
        try:
            size = int(item)
        except ValueError:
            raise click.BadParameter(
                f"expected positive integers such as 1,2,7,64, found {item!r}"
            ) from None
        if size < 1:
            raise click.BadParameter(f"expected positive integers such as 1,2,7,64, found {size}")
        sizes.append(size)
    if not sizes:
        raise click.BadParameter("expected at least one batch size")
    return tuple(dict.fromkeys(sizes))


_NON_NEGATIVE = click.FloatRange(min=0.0)


@click.command("parity")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--providers",
    default=None,
    callback=_providers,
    help="Comma-separated: cpu, cuda. Default: both; one that cannot run here is SKIPPED.",
)
@click.option(
    "--batch-sizes",
    default=",".join(map(str, DEFAULT_BATCH_SIZES)),
    show_default=True,
    callback=_batch_sizes,
    help="Comma-separated batch sizes (the golden data holds 1,2,7,64).",
)
@click.option(
    "--require",
    multiple=True,
    callback=_required,
    help="A provider that must run: a skipped row of it is a failure. Repeatable.",
)
@click.option(
    "--tf32",
    type=click.Choice(["off", "on", "both"]),
    default="off",
    show_default=True,
    help="TF32 on the CUDA EP (convolutions and GEMMs); each setting has its own tolerances.",
)
@click.option("--atol", type=_NON_NEGATIVE, default=None, help="Probabilities: absolute tolerance.")
@click.option("--rtol", type=_NON_NEGATIVE, default=None, help="Probabilities: relative tolerance.")
@click.option("--logit-atol", type=_NON_NEGATIVE, default=None, help="Logits: absolute tolerance.")
@click.option("--logit-rtol", type=_NON_NEGATIVE, default=None, help="Logits: relative tolerance.")
@click.option(
    "--reference",
    type=click.Choice(["golden", "live"]),
    default="golden",
    show_default=True,
    help="golden: the bundle's golden.npz (no torch needed); live: recompute with PyTorch.",
)
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    default=None,
    help="With --reference live: the checkpoint the bundle was exported from.",
)
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write JSON."
)
def parity_cmd(
    bundle: Path,
    providers: tuple[str, ...],
    batch_sizes: tuple[int, ...],
    require: tuple[str, ...],
    tf32: str,
    atol: float | None,
    rtol: float | None,
    logit_atol: float | None,
    logit_rtol: float | None,
    reference: str,
    checkpoint: Path | None,
    json_path: Path | None,
) -> None:
    """Check that BUNDLE's model.onnx computes under ONNX Runtime what the PyTorch model computed.

    One line per provider x batch size: PASSED, FAILED, or SKIPPED with the reason (a provider
    that cannot run here). Exits 0 only if every row that ran passed (at least one did) and the
    preprocessing matches the reference; 1 otherwise.
    """
    from onnxedge.runtime.bundle import Bundle, atomic_write_bytes
    from onnxedge.runtime.parity import load_golden, run_parity

    if checkpoint is not None and reference != "live":
        raise click.UsageError("--checkpoint is for --reference live")
    targets = make_targets(tuple(dict.fromkeys((*providers, *require))), tf32)
    opened = Bundle.open(bundle)
    if reference == "live":
        ref = _live_reference(opened.manifest, batch_sizes, checkpoint)
    else:
        ref = load_golden(opened)
    report = run_parity(
        opened,
        ref,
        targets=targets,
        batch_sizes=batch_sizes,
        overrides=ToleranceOverrides(atol, rtol, logit_atol, logit_rtol),
        required=require,
    )
    click.echo(f"reference: {report.reference}")
    for line in report.lines():
        click.echo(line)
    if json_path is not None:
        atomic_write_bytes(json_path, (json.dumps(report.to_dict(), indent=2) + "\n").encode())
    if not report:
        sys.exit(1)


def _live_reference(manifest, batch_sizes, checkpoint):  # type: ignore[no-untyped-def]
    from onnxedge.runtime.errors import OnnxEdgeError

    try:
        from onnxedge.export.golden import live_reference
    except ImportError as e:
        raise OnnxEdgeError(
            f"--reference live needs torch ({e}); install onnxedge[export], or use the golden "
            "reference (the default)"
        ) from None
    return live_reference(manifest, batch_sizes, checkpoint=checkpoint)
