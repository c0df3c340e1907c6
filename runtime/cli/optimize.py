"""`onnxedge optimize BUNDLE --data DIR [--int8] [--fp16] [--ort] [--uint8-input]
[--fast-decode]`: the command line of
`onnxedge.runtime.variants.optimize`. It parses options, calls the library, prints one gate line
per variant and writes the JSON."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from onnxedge.runtime.cli.heartbeat import Heartbeat
from onnxedge.runtime.cli.options import THREADS, percent_not_fraction
from onnxedge.runtime.cli.output import json_file, json_option, note, verbosity, write_json
from onnxedge.runtime.names import shown
from onnxedge.runtime.variants.quantize import (
    CALIBRATION_METHODS,
    DEFAULT_CALIBRATION_SIZE,
    WEIGHTS_7_BIT,
)


@click.command("optimize")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Labelled images (CelebA's layout or class folders): train split for "
    "calibration, test split for the gates.",
)
@click.option("--int8", is_flag=True, help="int8 (QDQ, static, per-channel) for CPUs.")
@click.option(
    "--fp16",
    is_flag=True,
    help="float16 for the CUDA EP (float32 in and out); not for the CPU EP, where it runs "
    "slower than fp32 (gated there where no CUDA EP loads).",
)
@click.option(
    "--ort",
    "ort_format",
    is_flag=True,
    help="ORT-format files of fp32 and int8, with the required-operators config.",
)
@click.option(
    "--int8-first-conv",
    is_flag=True,
    help="int8-conv1-fp32 (int8, the first conv in float) and int8-pad4 (int8, the input "
    "padded to 4 channels for the int8 kernels): candidates for onnxruntime's int8 speed on the "
    "3-channel first conv (needs onnx-ir, the export extra).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the bundle with its variants here [default: BUNDLE itself].",
)
@click.option("--attribute", default=None, help="CelebA attribute [default: Smiling].")
@click.option(
    "--calibration-size",
    type=click.IntRange(min=1),
    default=DEFAULT_CALIBRATION_SIZE,
    show_default=True,
    help="Train-split images int8 is calibrated on.",
)
@click.option(
    "--calibration-method",
    type=click.Choice(CALIBRATION_METHODS),
    default="minmax",
    show_default=True,
    help="How int8's activation ranges are set from the calibration images (docs/VARIANTS.md).",
)
@click.option(
    "--int8-7-bit-weights",
    "weights_7_bit",
    type=click.Choice(WEIGHTS_7_BIT),
    default="image",
    show_default=True,
    help="int8's weights in 7 bits, so that x86 CPUs without VNNI do not saturate their 16-bit "
    "sums: the convolutions that read the image, all, or none (docs/VARIANTS.md).",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Which train-split images are the calibration sample.",
)
@click.option(
    "--min-agreement",
    type=click.FloatRange(0.0, 100.0),
    callback=percent_not_fraction,
    default=99.5,
    show_default=True,
    help="Gate: label agreement with fp32, in percent.",
)
@click.option(
    "--max-accuracy-drop",
    type=click.FloatRange(0.0, 100.0),
    default=0.5,
    show_default=True,
    help="Gate: accuracy drop from fp32, in percentage points.",
)
@click.option(
    "--no-gate", is_flag=True, help="Write variants that miss their gate too, marked ungated."
)
@click.option("--force", is_flag=True, help="Replace variants (or an --out bundle) that exist.")
@click.option(
    "--threads",
    type=THREADS,
    default=None,
    help="ONNX Runtime intra-op threads for the gates [default: one per core].",
)
@click.option(
    "--uint8-input",
    is_flag=True,
    help="fp32-u8 and int8-u8: the preprocessing (scale, mean/std, NHWC to NCHW) as the "
    "graph's first nodes, the input the decoded uint8 pixels.",
)
@click.option(
    "--fast-decode",
    is_flag=True,
    help="Gate --decode fast (JPEGs at a reduced DCT scale) on the test split and record it.",
)
@json_option("The result (every gate's figures) as JSON.")
def optimize_cmd(
    bundle: Path,
    data_dir: Path,
    int8: bool,
    fp16: bool,
    ort_format: bool,
    int8_first_conv: bool,
    out: Path | None,
    attribute: str | None,
    calibration_size: int,
    calibration_method: str,
    weights_7_bit: str,
    seed: int,
    min_agreement: float,
    max_accuracy_drop: float,
    no_gate: bool,
    force: bool,
    threads: int | None,
    json_path: Path | None,
    uint8_input: bool,
    fast_decode: bool,
) -> None:
    """Make BUNDLE's edge variants, gate each on DIR's test split, and add those that pass.

    With none of --int8, --fp16, --ort, --int8-first-conv, --uint8-input, --fast-decode: the
    first three. --uint8-input adds fp32-u8 (and int8-u8 where int8 is made or there): the model
    with the preprocessing as its first nodes, taking the decoded uint8 pixels NHWC.
    --fast-decode gates `--decode fast` (fp32 on its pixels against the exact ones, the same
    criteria) and records it in the manifest's 'decodes' block. Each variant is compared with
    fp32 on the test split (onnxruntime only): label agreement >= --min-agreement and accuracy
    drop <= --max-accuracy-drop, with the max and p99 probability error reported. One line per
    variant: PASSED, FAILED (by how much; not written) or UNGATED (--no-gate). The bundle is
    rewritten atomically, the manifest last. Exits 1 if any variant missed its gate.
    """
    from onnxedge.runtime.bundle.write import check_writable
    from onnxedge.runtime.variants.gate import GateCriteria
    from onnxedge.runtime.variants.optimize import OptimizeRequest, optimize_bundle

    if json_path is not None:
        check_writable(json_file(json_path))  # before the work, not after the bundle is written
    every = not (int8 or fp16 or ort_format or int8_first_conv or uint8_input or fast_decode)
    request = OptimizeRequest(
        bundle=bundle,
        data=data_dir,
        out=out,
        int8=int8 or every,
        fp16=fp16 or every,
        ort=ort_format or every,
        int8_first_conv=int8_first_conv,
        attribute=attribute,
        calibration_size=calibration_size,
        calibration_method=calibration_method,
        weights_7_bit=weights_7_bit,
        seed=seed,
        gate=not no_gate,
        force=force,
        criteria=GateCriteria(min_agreement / 100.0, max_accuracy_drop),
        threads=threads,
        uint8_input=uint8_input,
        fast_decode=fast_decode,
    )
    with Heartbeat.running(echo=note) as heartbeat:  # progress: none with -q
        result = optimize_bundle(request, progress=heartbeat)
    for outcome in result.outcomes:
        click.echo(outcome.line(verbose=verbosity() > 0))
    if result.decode_gate is not None:
        click.echo(result.decode_gate.decode_line(verbose=verbosity() > 0))
    for name in result.dropped:
        note(f"dropped {name}: made from a variant this run replaced")
    write_json(json_path, result.to_dict())
    written = [o.name for o in result.outcomes if o.written]
    if result.written:
        note(f"wrote {shown(result.out)} with {', '.join(written)}")
    if result.missed:
        names = ", ".join(o.name for o in result.missed)
        click.echo(
            f"onnxedge: error: {names} missed the gate (see the FAILED lines) and "
            f"{'were' if len(result.missed) > 1 else 'was'} not written",
            err=True,
        )
        sys.exit(1)
