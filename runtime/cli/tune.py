"""`onnxedge tune BUNDLE`: time every setup that may run here (`onnxedge.runtime.tune`), print
the table and the winner at each batch size, and write the tuning file that ``--tuned`` reads."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from onnxedge.runtime.bench import command_line
from onnxedge.runtime.bundle.write import check_writable
from onnxedge.runtime.cli.bench import bench_progress, image_files
from onnxedge.runtime.cli.classifier_options import DECODE_OPTION
from onnxedge.runtime.cli.engine_options import engine_list
from onnxedge.runtime.cli.options import images_options, positive_ints, positive_ints_up_to
from onnxedge.runtime.cli.output import (
    json_file,
    json_option,
    note,
    refuse_over_inputs,
    verbosity,
    write_json,
)
from onnxedge.runtime.cli.variant_options import variant_list
from onnxedge.runtime.engines.onnxruntime.session import MAX_THREADS
from onnxedge.runtime.errors import OnnxEdgeError
from onnxedge.runtime.lines import LINE_WIDTH, fit
from onnxedge.runtime.names import shown
from onnxedge.runtime.tune import (
    DEFAULT_BATCH_SIZES,
    DEFAULT_SECONDS,
    FILES_LIMIT,
    FILES_MARGIN,
    FILES_SECONDS,
    FilesTune,
    TuneResult,
    TuneSettings,
    default_tuning_path,
    tune,
    write_tuning,
)
from onnxedge.runtime.variants.manifest import VARIANTS


def _optional(callback):
    """A list option that is None when absent (the library's default)."""

    def parse(ctx: click.Context, param: click.Parameter, value: str | None):
        return None if value is None else callback(ctx, param, value)

    return parse


def format_table(result: TuneResult, width: int | None = LINE_WIDTH) -> list[str]:
    """The table, one row per setup and batch size, the winners marked; then what was left
    out, and one line per winner, each broken to ``width`` columns (None: whole, as with -v)."""
    lines = [
        "| batch | setup | images/s | p50 ms | runs | vs default | status |",
        "| ---: | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    winners = {id(w) for w in result.winners.values()}
    runoff = {id(r) for r in result.runoff}
    for row in (*result.rows, *result.runoff):
        s = row.stats
        mark = " (runoff)" if id(row) in runoff else ""
        mark += " **fastest**" if id(row) in winners else ""
        status = "ok" if row else f"{row.status.upper()}: {row.reason}"
        lines.append(
            f"| {row.batch_size} | {row.setup.describe()}{mark} | "
            + (f"{s.throughput:,.0f} | {s.p50_ms:.3f} | {s.runs}" if s else "- | - | -")
            + f" | {f'{row.vs_default:.2f}x' if row.vs_default else '-'} | {status} |"
        )
    verdicts = [f"not a candidate: {e.what}: {e.reason}" for e in result.excluded]
    default = result.default.describe()
    first = {(r.setup, r.batch_size): r for r in result.rows}
    for batch, row in result.winners.items():
        vs = first[row.setup, batch].vs_default  # the runoff has no default row to compare
        ratio = f", {vs:.2f}x {default} in the first pass" if vs else ""
        verdicts.append(
            f"WINNER | batch {batch} | {row.setup.describe()} | "
            f"{row.stats.throughput:,.0f} images/s{ratio}"  # type: ignore[union-attr]
        )
    for batch in result.settings.batch_sizes:
        if batch not in result.winners:
            verdicts.append(f"NO WINNER | batch {batch} | no setup could be measured")
    if result.files is not None:
        lines += ["", *_files_table(result.files)]
        verdicts += _files_verdicts(result.files)
    return lines + [line if width is None else fit(line, width) for line in verdicts]


def _files_table(files: FilesTune) -> list[str]:
    """The files stage, one row per setup: files/s of whole onnxedge predict runs (wall time,
    the command's start included)."""
    lines = [
        f"From files: {files.files} files of {files.source}, batch {files.batch_size}, "
        f"{files.decode} decode",
        "| setup | files/s | s/run | runs | vs default | status |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    winner = files.winner
    for row in files.rows:
        s = row.stats
        mark = " **winner**" if row is winner else ""
        status = "ok" if row else f"{row.status.upper()}: {row.reason}"
        lines.append(
            f"| {row.setup.describe()}{mark} | "
            + (f"{s.throughput:,.0f} | {s.mean_ms / 1000:.3f} | {s.runs}" if s else "- | - | -")
            + f" | {f'{row.vs_default:.2f}x' if row.vs_default else '-'} | {status} |"
        )
    return lines


def _files_verdicts(files: FilesTune) -> list[str]:
    verdicts = [f"not timed from files: {e.what}: {e.reason}" for e in files.excluded]
    if files.readable.unreadable:
        verdicts.append(f"not timed from files: {files.readable.describe()}")
    winner, fastest = files.winner, files.fastest
    where = f"from files, batch {files.batch_size}, {files.decode} decode"
    if winner is None or fastest is None:
        return [*verdicts, f"NO WINNER | {where} | no setup could be measured"]
    ratio = f", {winner.vs_default:.2f}x {files.default.describe()}" if winner.vs_default else ""
    if winner is not fastest:  # within the margin of predict's default: the default stays
        ratio = (
            f"; the fastest, {fastest.setup.describe()}, was {fastest.vs_default:.2f}x, "
            f"within {FILES_MARGIN:.0%}"
        )
    return [
        *verdicts,
        f"WINNER | {where} | {winner.setup.describe()} | "
        f"{winner.stats.throughput:,.0f} files/s{ratio}",  # type: ignore[union-attr]
    ]


@click.command("tune")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--batch-sizes",
    default=",".join(map(str, DEFAULT_BATCH_SIZES)),
    show_default=True,
    callback=positive_ints,
    help="The batch sizes to choose a setup for.",
)
@click.option(
    "--engines",
    default=None,
    callback=engine_list(),
    help="Comma-separated: onnxruntime, openvino [default: every engine installed].",
)
@click.option(
    "--variants",
    default=None,
    callback=_optional(variant_list()),
    help=f"The bundle's models to consider, comma-separated: {', '.join(VARIANTS)} "
    "[default: fp32 and every variant whose gate passed, made for the CPU]; an ungated one is "
    "never a candidate.",
)
@click.option(
    "--threads",
    "thread_counts",
    default=None,
    callback=_optional(positive_ints_up_to(MAX_THREADS)),
    help="Thread counts to try, comma-separated [default: 1, half the physical cores, all].",
)
@click.option(
    "--seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_SECONDS,
    show_default=True,
    help="Timed seconds per setup x batch size (at least 10 runs), in 2 interleaved rounds.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the tuning file [default: BUNDLE.tuning.json beside the bundle].",
)
@images_options(
    "A folder (or file) of images: also time files to labels as onnxedge predict commands "
    "with the fastest models and each decoding pool, and write down the fastest (repeatable)."
)
@click.option(
    "--images-limit",
    type=click.IntRange(min=1),
    default=FILES_LIMIT,
    show_default=True,
    help="Time at most this many of the files, the first in predict's order.",
)
@DECODE_OPTION
@click.option(
    "--files-seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=FILES_SECONDS,
    show_default=True,
    help="Timed seconds per files setup: whole onnxedge predict runs over the files (at least "
    "3), in 2 rounds.",
)
@json_option("The result (the tuning file's contents) as JSON.")
@click.option("--no-progress", is_flag=True, help="No progress bar (none anyway off a TTY).")
def tune_cmd(
    bundle: Path,
    batch_sizes: tuple[int, ...],
    engines: tuple[str, ...] | None,
    variants: tuple[str, ...] | None,
    thread_counts: tuple[int, ...] | None,
    seconds: float,
    out: Path | None,
    image_dirs: tuple[Path, ...],
    images_batch_size: int,
    images_limit: int,
    decode: str | None,
    files_seconds: float,
    json_path: Path | None,
    no_progress: bool,
) -> None:
    """Find the fastest setup for BUNDLE on this machine at each batch size, and write it down.

    Every setup that may run here is timed as `onnxedge bench` times (the same inputs, each
    output checked against ONNX Runtime's on model.onnx first, interleaved rounds): fp32 and
    each variant whose gate passed, on each installed engine, at a few thread counts. A setup
    whose output differs is a FAILED row and never chosen. Setups within 15% of the fastest at a
    batch size are timed again together (runoff rows) and the winner is taken from those. The
    tuning file (the winners and the full table, keyed by this machine and the bundle's
    manifest) is what predict, evaluate and bench --tuned run. Exits 1 when no setup could be
    measured.

    With --images, the fastest models (and the uint8-input variants made from them) are also
    timed from those files as whole onnxedge predict runs, with each decoding pool (batch
    processes, decoder processes, decoding threads): the fastest model is not always the
    fastest from files. The fastest, where 5% faster than predict's default, is what predict
    and evaluate --tuned then run, with its pool.
    """
    refuse_over_inputs(out, "--out")  # another bundle's model too, as simplify refuses it
    out = out or default_tuning_path(bundle)
    for path in (out, json_file(json_path)):
        check_writable(path)
    images = image_files(image_dirs, limit=images_limit) if image_dirs else ()
    settings = TuneSettings(
        batch_sizes=batch_sizes,
        engines=engines,
        variants=variants,
        threads=thread_counts,
        seconds=seconds,
        images=images,
        images_source=", ".join(map(str, image_dirs)),
        images_batch_size=images_batch_size,
        decode=decode,
        files_seconds=files_seconds,
    )
    with bench_progress(not no_progress and sys.stderr.isatty()) as on_progress:
        result = tune(bundle, settings, command=command_line(), on_progress=on_progress)
    for line in format_table(result, width=None if verbosity() > 0 else LINE_WIDTH):
        click.echo(line)
    if not result:
        raise OnnxEdgeError(f"no setup of {bundle} could be measured; no tuning file written")
    data = result.to_dict()
    write_tuning(data, out)
    if json_file(json_path) is not None:
        write_tuning(data, json_file(json_path))
    else:
        write_json(json_path, data)
    note(f"wrote {shown(out)}")
