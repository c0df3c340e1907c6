"""`onnxedge predict BUNDLE PATH...`: classify image files on the device, without torch.

The command parses options and calls the library (`onnxedge.runtime.classifier.predict.predict`,
which walks the paths with `find_images` and runs `Classifier.predict_files`). Files stream
through in batches, so memory stays flat however many there are.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

import click

from onnxedge.runtime.bundle.write import check_writable
from onnxedge.runtime.classifier.classifier import FileResult
from onnxedge.runtime.classifier.files import find_images
from onnxedge.runtime.classifier.preprocess import is_image_name
from onnxedge.runtime.cli.classifier_options import (
    check_pools,
    classifier_options,
    files_options,
    pil_limit,
)
from onnxedge.runtime.cli.engine_options import check_engine_options, engine_options
from onnxedge.runtime.cli.output import (
    force_option,
    json_file,
    json_option,
    note,
    refuse_existing,
)
from onnxedge.runtime.cli.ray_options import (
    check_ray_only,
    output_option,
    predict_on_ray_cmd,
    ray_options,
)
from onnxedge.runtime.cli.tuned_option import apply_tuned, classifier_settings, tuned_option
from onnxedge.runtime.cli.variant_options import variant_option
from onnxedge.runtime.errors import OnnxEdgeError
from onnxedge.runtime.names import escape


def format_result(result: FileResult, *, as_json: bool, top_k: int | None = None) -> str:
    """One line: FILE, the (top) probability and label; for a K-class model with ``top_k``, the
    next classes as LABEL:PROBABILITY columns (in JSON, ``probabilities`` limited to them). Text
    fields are `onnxedge.runtime.names.escape`d, so a row has its fields whatever a name holds;
    JSON is valid UTF-8 (``file_bytes``: the raw name, where it is not UTF-8)."""
    if as_json:
        return json.dumps(result.to_dict(top_k))
    if result.prediction is None:
        return f"{escape(result.file)}\tERROR\t{escape(result.error or '')}"
    p = result.prediction
    line = f"{escape(result.file)}\t{p.probability:.4f}\t{escape(p.label)}"
    if top_k and p.class_index is not None:
        line += "".join(f"\t{escape(label)}:{prob:.4f}" for label, prob in p.top(top_k)[1:])
    return line


@click.command("predict")
@click.argument("bundle", type=click.Path(path_type=str))
# readable=False: a path that cannot be read is that file's ERROR line, not a usage error that
# stops the others (click checks os.access on every existing path by default).
@click.argument(
    "paths",
    metavar="PATH...",
    nargs=-1,
    required=True,
    type=click.Path(path_type=str, readable=False),
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Images per ONNX Runtime call.",
)
@classifier_options
@engine_options
@variant_option
@tuned_option
@files_options
@json_option("One JSON object per line instead of text.", text_to_stderr=False)
@click.option(
    "--top-k",
    type=click.IntRange(min=1),
    default=None,
    help="K-class models: the K most probable classes (text: extra LABEL:PROB columns; JSON: "
    "'probabilities' limited to them) [default: top class in text, every class in JSON].",
)
@click.option("--no-progress", is_flag=True, help="No progress bar (shown only on a terminal).")
@ray_options
@output_option
@force_option("the --output Parquet file")
def predict_cmd(
    bundle: str,
    paths: tuple[str, ...],
    batch_size: int,
    threshold: float | None,
    provider: str,
    threads: int | None,
    decode: str | None,
    decode_threads: int | None,
    decode_processes: int | None,
    batch_processes: int | None,
    engine: str,
    precision: str,
    variant: str,
    tuned: str | None,
    max_pixels: int,
    json_path: str | None,
    top_k: int | None,
    no_progress: bool,
    ray_address: str | None,
    ray_actors: int | None,
    output: Path | None,
    force: bool,
) -> None:
    """Classify image files with BUNDLE's model: one line per file.

    PATH is an image file or a directory (walked for image files). Each line is
    FILE<TAB>PROBABILITY<TAB>LABEL, or FILE<TAB>ERROR<TAB>MESSAGE for a file that cannot be used;
    with --json, {"file", "probability", "label", "positive"} or {"file", "error"}. For a model
    with K classes the label is the top class and PROBABILITY its softmax probability; --json
    gives {"file", "probability", "label", "class_index", "probabilities": {class: p}}. A summary
    goes to stderr. Exits 1 if any file failed, after all the others were classified.

    With --ray, Ray Data reads, decodes and classifies the files (the same lines, in the same
    order), or --output writes them to a Parquet file.
    """
    from onnxedge.runtime.classifier.predict import predict

    as_json = json_path is not None
    if json_file(json_path) is not None and is_image_name(str(json_path)):
        raise click.UsageError(
            f"--json {json_path}: expected a file for the JSON lines, found an image name; "
            "put --json after the images, or give --json - for standard output"
        )
    given = {"engine": engine, "variant": variant, "precision": precision, "threads": threads}
    applied = apply_tuned(
        bundle, tuned, batch_size, for_files=ray_address is None, decode=decode, **given
    )
    chosen = applied.chosen
    local = classifier_settings(tuned, applied)
    check_engine_options(chosen["engine"], chosen["precision"])
    check_pools(threads, decode_threads, decode_processes, batch_processes, ray_address)
    check_ray_only(
        ray_address, ray_actors=(ray_actors, True), output=(output, True), decode=(decode, False)
    )
    if force and output is None:
        raise click.UsageError("--force replaces the --output file; found no --output")
    if ray_address is not None:
        if output is not None:
            refuse_existing(output, force, "the Parquet file")
        with _lines_into(json_file(json_path)):
            total, failed, ran_on = predict_on_ray_cmd(
                bundle,
                find_images(paths),
                ray_address=ray_address,
                output=output,
                emit=functools.partial(_emit, as_json=as_json, show_progress=False, top_k=top_k),
                top_k=top_k,
                batch_size=batch_size,
                threshold=threshold,
                provider=provider,
                max_pixels=max_pixels,
                actors=ray_actors,
                **chosen,
            )
        _summary(paths, total, failed, ran_on)
        return
    run = predict(
        bundle,
        paths,
        batch_size=batch_size,
        threshold=threshold,
        provider=provider,
        decode=decode,
        decode_threads=decode_threads,
        decode_processes=decode_processes,
        batch_processes=batch_processes,
        max_pixels=max_pixels,
        **local,
    )
    classifier, results = run.classifier, run.results
    if top_k is not None and classifier.threshold is not None:
        raise click.UsageError(
            f"--top-k applies to a model with K classes; {bundle} has one output "
            f"({classifier.output_kind})"
        )
    show_progress = not no_progress and sys.stderr.isatty()
    # closing: on an error or Ctrl-C the decoding threads stop before the command exits. A
    # reader that goes away (`| head`) is an OSError on stdout: one line, exit 1 (`onnxedge`).
    with _lines_into(json_file(json_path)), pil_limit(max_pixels), contextlib.closing(results):
        total, failed = _emit(results, as_json=as_json, show_progress=show_progress, top_k=top_k)
    _summary(paths, total, failed, results.ran_on(classifier.provider))


def _summary(paths: Iterable[str], total: int, failed: int, provider: str) -> None:
    """The line on stderr after the results; exit 1 when any file failed or none was found."""
    if total == 0:
        raise OnnxEdgeError(
            "expected image files, found none in: " + ", ".join(escape(p) for p in paths)
        )
    note(
        f"{total} file{'s' if total != 1 else ''}: {total - failed} classified, {failed} failed "
        f"({provider})"
    )
    if failed:
        sys.exit(1)


@contextlib.contextmanager
def _lines_into(path: Path | None) -> Iterator[None]:
    """Standard output into ``path`` while the block runs (None: left as it is), as the other
    commands write their reports (`atomic_file`): into a temporary file beside it, renamed into
    place only when the block ends without error; a device or a pipe written in place, a link
    kept."""
    if path is None:
        yield
        return
    from onnxedge.runtime.bundle.write import atomic_file

    check_writable(path)
    with atomic_file(path) as out, contextlib.redirect_stdout(out):
        yield


def _emit(
    results: Iterable[FileResult], *, as_json: bool, show_progress: bool, top_k: int | None = None
) -> tuple[int, int]:
    total = failed = 0
    with _progress(show_progress) as (out, advance):
        for result in results:
            out.write(format_result(result, as_json=as_json, top_k=top_k) + "\n")
            out.flush()  # a line per file as it is known, also through a pipe
            total += 1
            failed += not result
            advance(total, failed)
    return total, failed


class _progress:
    """A rich progress line on stderr (when asked), yielding (stdout, advance)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def __enter__(self) -> tuple[TextIO, Any]:
        if not self.enabled:
            return sys.stdout, lambda total, failed: None
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        # When stdout is the same terminal, rich prints our lines above the bar; otherwise they
        # go straight to stdout (a file or a pipe) and only the bar is drawn on stderr.
        self.bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.fields[done]} files, {task.fields[failed]} failed"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            redirect_stdout=sys.stdout.isatty(),
            transient=True,
        )
        self.bar.__enter__()
        task = self.bar.add_task("predict", total=None, done=0, failed=0)

        def advance(total: int, failed: int) -> None:
            self.bar.update(task, done=total, failed=failed)

        return sys.stdout, advance

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
