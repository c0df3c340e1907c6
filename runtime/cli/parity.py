"""`onnxedge parity BUNDLE`: the command line of `onnxedge.runtime.parity`; it parses options,
calls the library, prints one line per row and writes the JSON. Needs no torch unless
``--reference live`` is given."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from onnxedge.runtime.cli.engine_options import engine_list, precision_list
from onnxedge.runtime.cli.localize import (
    check_localize_options,
    layer_reference,
    live_needs_torch,
    localize_options,
    run_localize,
)
from onnxedge.runtime.cli.options import name_list, positive_ints, provider_list
from onnxedge.runtime.cli.output import verbosity
from onnxedge.runtime.cli.variant_options import variant_option
from onnxedge.runtime.engines.base import ONNXRUNTIME, OPENVINO
from onnxedge.runtime.errors import OnnxEdgeError
from onnxedge.runtime.parity import (
    DEFAULT_BATCH_SIZES,
    FAILED,
    PARITY_PROVIDERS,
    SKIPPED,
    ParityRow,
    Reference,
    Target,
    ToleranceOverrides,
    make_targets,
)
from onnxedge.runtime.variants.manifest import FP32, provider_for, variant_key

_NON_NEGATIVE = click.FloatRange(min=0.0)


@click.command("parity")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--providers",
    default=None,
    callback=provider_list(PARITY_PROVIDERS, default=PARITY_PROVIDERS),
    help="Comma-separated: cpu, cuda. Default: both; one that cannot run here is SKIPPED.",
)
@click.option(
    "--batch-sizes",
    default=",".join(map(str, DEFAULT_BATCH_SIZES)),
    show_default=True,
    callback=positive_ints,
    help="Comma-separated batch sizes (the golden data holds 1,2,7,64).",
)
@click.option(
    "--engine",
    "engines",
    default=None,
    callback=engine_list(default=(ONNXRUNTIME,)),
    help="Comma-separated: onnxruntime (on --providers), openvino (on the CPU). Default: "
    "onnxruntime; one that cannot run here is SKIPPED.",
)
@click.option(
    "--precision",
    "precisions",
    default=None,
    callback=precision_list(default=("f32",)),
    help="OpenVINO's inference precisions, each with its own tolerances: f32 (default), bf16.",
)
@click.option(
    "--require",
    multiple=True,
    callback=name_list((*PARITY_PROVIDERS, OPENVINO), what="provider", allow_empty=True),
    help="A provider (or the engine openvino) that must run: a skipped row of it is a failure. "
    "Repeatable.",
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
    "--rounding-factor",
    type=_NON_NEGATIVE,
    default=None,
    help="How many times PyTorch's own float32 rounding of the model an engine may be off "
    "(under the tolerances as a guard) [default: 100 cpu and OpenVINO f32, 300 cuda; none with "
    "TF32, bf16 or tolerances set by hand].",
)
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
@variant_option
@localize_options
def parity_cmd(
    bundle: Path,
    providers: tuple[str, ...],
    batch_sizes: tuple[int, ...],
    engines: tuple[str, ...],
    precisions: tuple[str, ...],
    require: tuple[str, ...],
    tf32: str,
    atol: float | None,
    rtol: float | None,
    logit_atol: float | None,
    logit_rtol: float | None,
    rounding_factor: float | None,
    reference: str,
    checkpoint: Path | None,
    json_path: Path | None,
    variant: str,
    localize: str | None,
    against: str | None,
    plot_path: Path | None,
) -> None:
    """Check that BUNDLE's model.onnx computes under ONNX Runtime (and OpenVINO, with --engine)
    what the PyTorch model computed.

    One line per provider (or engine) x batch size: PASSED, FAILED, or SKIPPED with the reason (a
    provider or engine that cannot run here; a model that cannot load is FAILED). Exits 0 only if
    every row that ran passed (at least one did) and the preprocessing check did not fail; 1
    otherwise.

    --localize: for each failed row (--localize always: every row), the first layer whose output
    leaves its tolerance, by ONNX node and PyTorch module, and the table of every layer; against
    the bundle's golden layers (no torch needed), the same graph on --against PROVIDER, or
    PyTorch live (--reference live). The rows' verdicts and the exit status are unchanged.

    --variant: check one of the models `onnxedge optimize` added instead of model.onnx, held to
    the same tolerances (an int8 or fp16 model is not expected to meet fp32's: its accuracy is
    gated by optimize); --localize --against fp32 shows where it departs from model.onnx.
    """
    from onnxedge.runtime.bundle.reader import Bundle
    from onnxedge.runtime.bundle.write import atomic_write_bytes
    from onnxedge.runtime.parity import load_golden, run_parity

    if checkpoint is not None and reference != "live":
        raise click.UsageError("--checkpoint is for --reference live")
    variant = variant_key(variant)
    check_localize_options(localize, against, plot_path, variant=variant)
    if OPENVINO in require:
        engines = (*engines, OPENVINO)
    if OPENVINO not in engines and precisions != ("f32",):
        raise click.UsageError(
            "--precision is OpenVINO's inference precision (add --engine openvino)"
        )
    targets = make_targets(
        tuple(dict.fromkeys(p for p in (*providers, *require) if p != OPENVINO)),
        tf32,
        engines=engines,
        precisions=precisions,
    )
    opened = Bundle.open(bundle)
    model = _variant_model(opened, variant)
    if reference == "live":
        ref = _live_reference(opened.manifest, batch_sizes, checkpoint)
    else:
        ref = load_golden(opened)
    if localize is not None:  # before the run: a bundle without its reference fails fast
        from onnxedge.runtime.parity.exposed import ExposedModel

        exposed = ExposedModel.of(opened, variant)
        layers = layer_reference(
            opened,
            ref,
            exposed,
            against=against,
            live=reference == "live",
            checkpoint=checkpoint,
        )
    overrides = ToleranceOverrides(atol, rtol, logit_atol, logit_rtol, rounding_factor)
    targets, not_for = _targets_for_variant(opened, variant, targets)
    report = run_parity(
        opened,
        ref,
        targets=targets,
        batch_sizes=batch_sizes,
        overrides=overrides,
        required=require,
        model=model,
    )
    if not_for:  # the targets the variant is not made for, SKIPPED (FAILED where required)
        sizes = batch_sizes or ref.batch_sizes
        skipped = [_not_run(t, why, sizes, overrides, require) for t, why in not_for]
        report = dataclasses.replace(report, rows=(*[r for g in skipped for r in g], *report.rows))
    if variant != FP32:
        click.echo(f"model: {model.relative_to(opened.path).as_posix()} (variant {variant})")
    click.echo(f"reference: {report.reference}")
    for line in report.lines(verbose=verbosity() > 0):
        click.echo(line)
    payload = {"variant": variant, **report.to_dict()}
    if localize is not None:
        found = run_localize(opened, report, ref, layers, exposed, when=localize, plot=plot_path)
        payload["localization"] = [loc.to_dict() for loc in found]
    if json_path is not None:
        atomic_write_bytes(json_path, (json.dumps(payload, indent=2) + "\n").encode())
    if not report:
        sys.exit(1)


def _targets_for_variant(
    bundle: Any, variant: str, targets: Sequence[Target]
) -> tuple[list[Target], list[tuple[Target, str]]]:
    """The targets ``variant`` runs on, and those it is not made for with why: fp16 is made for
    the CUDA EP, and onnxruntime's CPU EP has no float16 convolutions (`provider_for`, the rule
    predict and evaluate follow)."""
    runs, not_for = [], []
    for target in targets:
        try:
            if target.engine == ONNXRUNTIME:
                provider_for(bundle.variants, variant, target.provider)
            runs.append(target)
        except OnnxEdgeError as e:
            not_for.append((target, str(e)))
    return runs, not_for


def _not_run(
    target: Target,
    why: str,
    sizes: Sequence[int],
    overrides: ToleranceOverrides,
    require: Sequence[str],
) -> list[ParityRow]:
    required = target.provider in require
    return [
        ParityRow(
            target.provider,
            size,
            FAILED if required else SKIPPED,
            target.tolerances(overrides),
            tf32=target.tf32,
            reason=f"required, but it did not run: {why}" if required else why,
            required=required,
            engine=target.engine,
            precision=target.precision,
        )
        for size in sizes
    ]


def _variant_model(bundle: Any, variant: str) -> Path:
    """The verified file of ``variant``; an ORT-format one is refused: parity also reads the
    logits, from a copy of the graph with them exposed, and a .ort file cannot be rewritten."""
    path = bundle.variant_model(variant)
    entry = bundle.variants.get(variant)
    if entry is not None and entry.format != "onnx":
        source = variant.removesuffix("-ort")
        raise OnnxEdgeError(
            f"parity --variant {variant}: {entry.file} is in the ORT format, whose graph parity "
            "cannot copy to read the logits; check the ONNX model it was converted from "
            f"(--variant {source})"
        )
    return path


def _live_reference(
    manifest: Mapping[str, Any], batch_sizes: Sequence[int], checkpoint: Path | None
) -> Reference:
    try:
        from onnxedge.export.golden import live_reference
    except (ImportError, OSError) as e:
        raise live_needs_torch(e) from None
    return live_reference(manifest, batch_sizes, checkpoint=checkpoint)
