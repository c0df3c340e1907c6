"""`onnxedge bench`: parses options, runs `onnxedge.runtime.bench`, writes the outputs."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from onnxedge.runtime.bench import (
    DEFAULT_BATCH_SIZES,
    DEFAULT_PROVIDERS,
    MIN_RUNS_TO_JUDGE,
    PEERS,
    BenchSettings,
    ProgressFn,
    Target,
    TargetError,
    TimingPlan,
    benchmark,
    command_line,
    parse_target,
    read_targets_file,
    render_markdown,
    unique_targets,
)
from onnxedge.runtime.bench.engines import VARIANTS
from onnxedge.runtime.bundle.write import atomic_write_bytes, check_writable
from onnxedge.runtime.classifier.decode import POOLS
from onnxedge.runtime.classifier.files import find_images
from onnxedge.runtime.classifier.preprocess import DECODES
from onnxedge.runtime.cli.engine_options import engine_list, precision_list
from onnxedge.runtime.cli.heartbeat import Heartbeat
from onnxedge.runtime.cli.options import (
    THREADS,
    images_options,
    name_list,
    positive_ints,
    provider_list,
)
from onnxedge.runtime.cli.output import (
    deprecated_alias,
    json_file,
    json_option,
    refuse_over_inputs,
    verbosity,
    warn,
    write_json,
)
from onnxedge.runtime.cli.tuned_option import say_tuned, tuned_argument, tuned_option
from onnxedge.runtime.cli.variant_options import variant_list
from onnxedge.runtime.errors import OnnxEdgeError
from onnxedge.runtime.lines import fit, fit_markdown
from onnxedge.runtime.variants.manifest import FP32_U8, INT8_U8

# numpy's SeedSequence takes any non-negative integer; a negative seed is a usage error.
_SEED = click.IntRange(min=0)


def _targets(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple:
    try:
        return tuple(parse_target(text) for text in value)
    except TargetError as e:
        raise click.BadParameter(str(e)) from None


def _targets_file(ctx: click.Context, param: click.Parameter, value: Path | None) -> tuple:
    if value is None:
        return ()
    try:
        return read_targets_file(value)
    except TargetError as e:
        raise click.BadParameter(str(e)) from None


def _variants(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple | None:
    """``--variants``: None when absent (the library's default: fp32, and int8 where the bundle
    has it)."""
    return None if value is None else variant_list()(ctx, param, value)


def image_files(folders: tuple[Path, ...], *, limit: int | None = None) -> tuple[str, ...]:
    """The image files under ``--images`` (predict's own walk, `find_images`; the first
    ``limit`` of them where given): none is an error, as is a folder that cannot be listed."""
    files: list[str] = []
    for item in find_images([str(f) for f in folders]):
        if limit is not None and len(files) >= limit:
            break
        if isinstance(item, str):
            files.append(item)
        else:
            raise OnnxEdgeError(f"--images: {item}")
    if not files:
        given = ", ".join(map(str, folders))
        raise OnnxEdgeError(
            f"--images: expected image files (.jpg, .png, ...) in {given}, found none"
        )
    return tuple(files)


def _tuned_setups(bundle: str, tuned: str | None, batch_sizes: tuple[int, ...]) -> dict:
    """--tuned: the tuned setup at each batch size (an extra row there), its line on stderr
    once; nothing where the file does not hold here (the line says why)."""
    if tuned is None:
        return {}
    from onnxedge.runtime.bundle.reader import Bundle
    from onnxedge.runtime.tune import resolve_tuned

    opened = Bundle.open(bundle)
    choices = [resolve_tuned(opened, tuned_argument(tuned), b) for b in batch_sizes]
    for choice in {c.line(): c for c in choices if c is not None}.values():
        say_tuned(choice)
    return {c.batch_size: c.setup for c in choices if c}


@contextmanager
def bench_progress(enabled: bool, heartbeat: bool = False) -> Iterator[ProgressFn | None]:
    """A rich progress bar on stderr where ``enabled`` (a terminal); else, with ``heartbeat``,
    a line every 10 s of a step that runs that long (`Heartbeat`: torch.compile's warm-up)."""
    if not enabled:
        if not heartbeat:
            yield None
            return
        with Heartbeat.running(echo=lambda _msg: None) as beat:
            last = [""]

            def step(description: str, done: int, total: int) -> None:
                if description != last[0]:
                    last[0] = description
                    beat(description)

            yield step
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = progress.add_task("preparing", total=None)

    def update(description: str, done: int, total: int) -> None:
        progress.update(task, description=description, completed=done, total=total)

    with progress:
        yield update


@click.command("bench")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--providers",
    default=",".join(DEFAULT_PROVIDERS),
    show_default=True,
    callback=provider_list(),
    help="ORT execution providers; one that cannot load here is reported as skipped.",
)
@click.option(
    "--engines",
    default=None,
    callback=engine_list(),
    help="Comma-separated: onnxruntime (on --providers), openvino (the CPU; fp32 and, where the "
    "bundle has it, the int8 variant) [default: every engine installed].",
)
@deprecated_alias("--openvino-precisions", "--precision", "openvino_precisions")
@click.option(
    "--precision",
    "openvino_precisions",
    default="f32",
    show_default=True,
    callback=precision_list(),
    help="OpenVINO inference precisions of the fp32 model, one row each: f32, bf16.",
)
@click.option(
    "--variants",
    default=None,
    callback=_variants,
    help=f"The bundle's models to time, comma-separated: {', '.join(VARIANTS)} (fp32 is "
    "model.onnx; the others are what `onnxedge optimize` added; one the bundle lacks is an "
    "error) [default: fp32, and int8 where the bundle has it].",
)
@images_options(
    "A folder (or file) of images: adds from-files rows, decode + preprocess + inference "
    "through predict's code, in images/s (repeatable)."
)
@click.option(
    "--decode",
    "decodes",
    multiple=True,
    callback=name_list(DECODES, what="decode", default=DECODES),
    metavar="LIST",
    help="How the from-files rows decode the files, one row each, comma-separated (or the "
    "option repeated): exact, fast [default: exact,fast].",
)
@click.option(
    "--decode-pool",
    "pools",
    multiple=True,
    callback=name_list(POOLS, what="decoding pool", allow_empty=True),
    metavar="LIST",
    help="Who decodes the files of the from-files rows, one row each, comma-separated (or the "
    "option repeated): batches (predict's --batch-processes), processes (--decode-processes), "
    "threads (--decode-threads) [default: predict's default].",
)
@click.option(
    "--batch-sizes",
    default=",".join(map(str, DEFAULT_BATCH_SIZES)),
    show_default=True,
    callback=positive_ints,
    help="Comma-separated batch sizes to time each engine at.",
)
@click.option(
    "--peers",
    default=",".join(PEERS),
    show_default=True,
    callback=name_list(tuple(PEERS), what="peer", allow_none=True),
    help="PyTorch peers timed in the same run (eager fp32, channels-last, torch.compile), or none.",
)
@click.option(
    "--warmup",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Untimed runs per engine x batch before the timed ones.",
)
@click.option(
    "--iters", type=click.IntRange(min=1), default=None, help="Timed runs per engine x batch."
)
@click.option(
    "--seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Time budget per engine x batch (default 2, with --min-iters runs at least).",
)
@click.option(
    "--min-iters",
    type=click.IntRange(min=1),
    default=MIN_RUNS_TO_JUDGE,
    show_default=True,
    help=f"With --seconds: timed runs at least. A target is judged (met or missed) only from "
    f"{MIN_RUNS_TO_JUDGE} or more runs of each engine; from fewer it is INDICATIVE.",
)
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Interleaved rounds in which the engines take turns.",
)
@click.option(
    "--threads",
    type=THREADS,
    default=None,
    help="Intra-op threads for ORT and PyTorch alike [default: physical cores].",
)
@click.option(
    "--spinning/--no-spinning",
    default=True,
    show_default=True,
    help="ORT CPU EP intra-op thread spinning.",
)
@click.option("--tf32/--no-tf32", default=False, show_default=True, help="TF32 on the GPU.")
@click.option("--seed", type=_SEED, default=0, show_default=True, help="Seed of the inputs.")
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    default=None,
    help="The bundle's checkpoint, for the PyTorch peers of a bundle exported from one.",
)
@json_option("The report as JSON.")
@click.option(
    "--markdown",
    "md_path",
    type=click.Path(path_type=Path),
    default=None,
    help="The report as a Markdown table.",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(path_type=Path),
    default=None,
    help="A PNG of p50 latency and throughput against batch size, one line per engine "
    "(needs matplotlib).",
)
@click.option(
    "--target",
    "target_list",
    multiple=True,
    callback=_targets,
    metavar="TARGET",
    help="A target to judge (repeatable), such as 'onnxruntime/torch-eager>=3.5@64' or "
    "'cuda:onnxruntime[cuda-graph] p50<=50us@1'; grammar: docs/BENCHMARKS.md.",
)
@click.option(
    "--targets",
    "targets_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    callback=_targets_file,
    help="A TOML file of [[target]] tables (target = '...', optional name and note).",
)
@click.option(
    "--fail-on-miss",
    is_flag=True,
    help="Exit 1 when a target is MISSED (INDICATIVE and NOT MEASURED do not fail).",
)
@tuned_option
@click.option("--no-progress", is_flag=True, help="No progress bar (none anyway off a TTY).")
def bench_cmd(
    bundle: Path,
    providers: tuple[str, ...],
    engines: tuple[str, ...] | None,
    openvino_precisions: tuple[str, ...],
    variants: tuple[str, ...] | None,
    image_dirs: tuple[Path, ...],
    images_batch_size: int,
    decodes: tuple[str, ...],
    pools: tuple[str, ...],
    batch_sizes: tuple[int, ...],
    peers: tuple[str, ...],
    warmup: int,
    iters: int | None,
    seconds: float | None,
    min_iters: int,
    rounds: int,
    threads: int | None,
    spinning: bool,
    tf32: bool,
    seed: int,
    checkpoint: Path | None,
    json_path: Path | None,
    md_path: Path | None,
    plot_path: Path | None,
    target_list: tuple[Target, ...],
    targets_file: tuple[Target, ...],
    fail_on_miss: bool,
    tuned: str | None,
    no_progress: bool,
) -> None:
    """Latency and throughput of BUNDLE under ONNX Runtime, with PyTorch peers in the same run.

    Prints the Markdown report and one MET / MISSED / INDICATIVE / NOT MEASURED line per target
    given with --target or --targets (INDICATIVE: fewer than 10 timed runs, too few to judge).
    Exits 0 when at least one engine was measured; with --fail-on-miss, 1 when a target was
    MISSED.
    """
    if iters is not None and seconds is not None:
        raise click.UsageError("give --iters or --seconds, not both")
    pixels_only = [v for v in variants or () if v in (FP32_U8, INT8_U8)]
    if pixels_only and not image_dirs:
        raise click.UsageError(
            f"--variants {', '.join(pixels_only)}: expected --images DIR with them, found none "
            "(a model that takes the decoded uint8 pixels is timed from image files only)"
        )
    if plot_path is not None:
        from onnxedge.runtime.bench.plot import require_matplotlib

        require_matplotlib()
    refuse_over_inputs(md_path, "--markdown")
    refuse_over_inputs(plot_path, "--plot")
    for path in (json_file(json_path), md_path, plot_path):
        check_writable(path)
    plan = TimingPlan(
        warmup=warmup,
        iters=iters,
        seconds=None if iters is not None else (seconds or 2.0),
        min_iters=min_iters,
        rounds=rounds,
    )
    try:
        settings = BenchSettings(
            providers=providers,
            batch_sizes=batch_sizes,
            peers=peers,
            plan=plan,
            threads=threads,
            seed=seed,
            checkpoint=str(checkpoint) if checkpoint else None,
            tf32=tf32,
            spinning=spinning,
            variants=variants,
            images=image_files(image_dirs) if image_dirs else (),
            images_batch_size=images_batch_size,
            images_decodes=tuple(dict.fromkeys(decodes)),
            images_pools=tuple(dict.fromkeys(pools)),
            images_source=", ".join(map(str, image_dirs)),
            targets=unique_targets([*targets_file, *target_list]),
        )
    except TargetError as e:
        raise click.UsageError(str(e)) from None
    settings = dataclasses.replace(
        settings,
        engines=engines,
        openvino_precisions=openvino_precisions,
        tuned=_tuned_setups(str(bundle), tuned, batch_sizes),
    )
    show = not no_progress and sys.stderr.isatty()
    with bench_progress(show, heartbeat=not no_progress) as on_progress:
        report = benchmark(bundle, settings, command=command_line(), on_progress=on_progress)

    verbose = verbosity() > 0
    markdown = render_markdown(report, verbose=verbose)
    write_json(json_path, report.to_dict())
    if md_path is not None:
        atomic_write_bytes(md_path, markdown.encode())
    if plot_path is not None and report:
        from onnxedge.runtime.bench.plot import render_png

        atomic_write_bytes(plot_path, render_png(report))
    click.echo(markdown if verbose else fit_markdown(markdown, keep=("|", "#", "- Command:")))
    for target in report.targets:
        click.echo(str(target) if verbose else fit(str(target)))
    for warning in report.warnings:
        warn(warning)
    if not report:
        by_reason: dict[str, list[str]] = {}
        for r in report.rows:
            labels = by_reason.setdefault(r.reason, [])
            if r.info.label not in labels:
                labels.append(r.info.label)
        if not by_reason:
            raise OnnxEdgeError("no engine could be measured: the run made no rows")
        reason, labels = next(iter(by_reason.items()))
        more = f" (and {len(by_reason) - 1} other reasons)" if len(by_reason) > 1 else ""
        raise OnnxEdgeError(f"no engine could be measured: {', '.join(labels)}: {reason}{more}")
    missed = [t for t in report.targets if t.status == "missed"]
    if fail_on_miss and missed:
        raise OnnxEdgeError(
            f"{len(missed)} of {len(report.targets)} targets MISSED (--fail-on-miss): "
            + ", ".join(t.name for t in missed)
        )
