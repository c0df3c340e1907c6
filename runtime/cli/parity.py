"""`onnxedge parity BUNDLE`: the command line of `onnxedge.runtime.parity`; it parses options,
calls the library, prints one line per row and writes the JSON. Needs no torch unless
``--reference live`` is given."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from onnxedge.runtime.cli.engine_options import engine_list, precision_list
from onnxedge.runtime.cli.localize import (
    check_localize_options,
    echo_localizations,
    localize_options,
)
from onnxedge.runtime.cli.options import name_list, positive_ints, provider_list
from onnxedge.runtime.cli.output import (
    deprecated_alias,
    json_option,
    refuse_over_inputs,
    verbosity,
    write_json,
)
from onnxedge.runtime.cli.variant_options import variant_option
from onnxedge.runtime.engines.base import ONNXRUNTIME, OPENVINO
from onnxedge.runtime.lines import fit
from onnxedge.runtime.parity import (
    DEFAULT_BATCH_SIZES,
    PARITY_PROVIDERS,
    ToleranceOverrides,
)
from onnxedge.runtime.variants.manifest import FP32, variant_key

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
@deprecated_alias("--engine", "--engines", "engines")
@click.option(
    "--engines",
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
    "(under the tolerances as a guard, and never below 20 times the spread of PyTorch's "
    "kernels) [default: 100 cpu and OpenVINO f32, 300 cuda; none with TF32, bf16 or "
    "tolerances set by hand].",
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
    "--layers/--no-layers",
    default=None,
    help="Judge model.onnx's intermediate tensors against the bundle's golden layers too, each "
    "within its layer bound [default: where the bundle has golden layers; not for --variant].",
)
@json_option("The report as JSON.")
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
    layers: bool | None,
    json_path: Path | None,
    variant: str,
    localize: str | None,
    against: str | None,
    plot_path: Path | None,
) -> None:
    """Check that BUNDLE's model.onnx computes under ONNX Runtime (and OpenVINO, with --engines)
    what the PyTorch model computed.

    One line per provider (or engine) x batch size: PASSED, FAILED, or SKIPPED with the reason (a
    provider or engine that cannot run here; a model that cannot load is FAILED). Exits 0 only if
    every row that ran passed (at least one did) and the preprocessing check did not fail; 1
    otherwise.

    --layers (the default where the bundle has golden layers): a row also fails where an
    intermediate tensor of model.onnx leaves its layer bound against the golden layers (run once
    per provider, at their batch size), and names the first such layer; without golden layers a
    line says so and the outputs alone are judged.

    --localize: for each failed row (--localize always: every row), the first layer whose output
    leaves its tolerance, by ONNX node and PyTorch module, and the table of every layer; against
    the bundle's golden layers (no torch needed), the same graph on --against PROVIDER, or
    PyTorch live (--reference live). The rows' verdicts and the exit status are unchanged.

    --variant: check one of the models `onnxedge optimize` added instead of model.onnx. One in
    fewer bits (int8, fp16) is judged as a variant, by its gate: probabilities within twice the
    gate's largest error, labels agreeing at least as the gate asked (docs/PARITY.md); --localize
    --against fp32 ranks its layers by their share of the error.
    """
    from onnxedge.runtime.parity.check import check_parity

    if checkpoint is not None and reference != "live":
        raise click.UsageError("--checkpoint is for --reference live")
    check_localize_options(localize, against, plot_path, variant=variant_key(variant))
    refuse_over_inputs(plot_path, "--plot")
    if OPENVINO not in (*engines, *require) and precisions != ("f32",):
        raise click.UsageError(
            "--precision is OpenVINO's inference precision (add --engines openvino)"
        )
    result = check_parity(
        bundle,
        providers=providers,
        batch_sizes=batch_sizes,
        engines=engines,
        precisions=precisions,
        require=require,
        tf32=tf32,
        tolerances=ToleranceOverrides(atol, rtol, logit_atol, logit_rtol, rounding_factor),
        reference=reference,
        checkpoint=checkpoint,
        variant=variant,
        localize=localize,
        against=against,
        layers=layers,
    )
    report = result.report
    if result.variant != FP32:
        click.echo(
            f"model: {result.model.relative_to(result.bundle).as_posix()} "
            f"(variant {result.variant})"
        )
        click.echo(fit(result.judged_as))
    click.echo(f"reference: {report.reference}")
    if result.layers_line:
        click.echo(fit(result.layers_line))
    for line in report.lines(verbose=verbosity() > 0):
        click.echo(line)
    if localize is not None:
        echo_localizations(result.localizations, when=localize, plot=plot_path)
    write_json(json_path, result.to_dict())
    if not report:
        sys.exit(1)
