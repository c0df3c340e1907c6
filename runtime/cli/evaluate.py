"""`onnxedge evaluate BUNDLE --data DIR`: the command line of `onnxedge.runtime.data.evaluate`."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from onnxedge.runtime.cli.classifier_options import (
    check_pools,
    classifier_options,
    files_options,
    pil_limit,
)
from onnxedge.runtime.cli.engine_options import check_engine_options, engine_options
from onnxedge.runtime.cli.options import percent_not_fraction
from onnxedge.runtime.cli.output import json_option, write_json
from onnxedge.runtime.cli.ray_options import check_ray_only, evaluate_on_ray_cmd, ray_options
from onnxedge.runtime.cli.tuned_option import apply_tuned, classifier_settings, tuned_option
from onnxedge.runtime.cli.variant_options import variant_option
from onnxedge.runtime.data import SPLITS
from onnxedge.runtime.data.evaluate import ClassesEvaluation, EvaluationResult, evaluate_bundle
from onnxedge.runtime.names import escape


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


# The most classes whose confusion matrix is printed (the JSON always holds it).
CONFUSION_SHOWN = 12


def format_classes(result: ClassesEvaluation) -> list[str]:
    """A K-class model's report: top-1 accuracy, recall per class, the confusion matrix over the
    classes that occur (when there are few), then one ERROR line per failed file."""
    counts = ", ".join(f"{escape(name)} {n}" for name, n in result.images.items())
    recall = result.per_class_recall()
    lines = [
        f"split      {result.split}: {sum(result.images.values())} images ({counts}), "
        f"{result.evaluated} evaluated, {len(result.failed)} failed",
        f"accuracy   {_percent(result.accuracy)}   (top-1 of {len(result.class_names)} classes)",
        "recall     " + ", ".join(f"{escape(name)} {_percent(r)}" for name, r in recall.items()),
        f"provider   {result.provider}   variant {result.variant}",
    ]
    shown = [
        i
        for i, name in enumerate(result.class_names)
        if sum(result.confusion[i]) or sum(row[i] for row in result.confusion)
    ]
    if len(shown) <= CONFUSION_SHOWN:
        names = [escape(result.class_names[i]) for i in shown]
        corner = "true \\ predicted"
        width = max(len(corner), *map(len, names))
        lines.append("confusion:")
        lines.append(f"  {corner:<{width}}  " + "  ".join(f"{n:>{width}}" for n in names))
        for i in shown:
            row = "  ".join(f"{result.confusion[i][j]:>{width}}" for j in shown)
            lines.append(f"  {escape(result.class_names[i]):<{width}}  {row}")
    else:
        lines.append(f"confusion: {len(shown)} classes occur, in the JSON (--json)")
    lines += [f"{escape(f.file)}\tERROR\t{escape(f.reason)}" for f in result.failed]
    return lines


def format_result(result: EvaluationResult | ClassesEvaluation) -> list[str]:
    """The text report: metrics, the confusion matrix, then one ERROR line per failed file."""
    if isinstance(result, ClassesEvaluation):
        return format_classes(result)
    negative, positive = (escape(name) for name in result.class_names)
    counts = ", ".join(f"{escape(name)} {n}" for name, n in result.images.items())
    (tn, fp), (fn, tp) = result.confusion
    corner = "true \\ predicted"
    width = max(len(negative), len(positive), len(corner))
    auc = "n/a (one class)" if result.roc_auc is None else f"{result.roc_auc:.4f}"
    lines = [
        f"split      {result.split}: {sum(result.images.values())} images ({counts}), "
        f"{result.evaluated} evaluated, {len(result.failed)} failed",
        f"accuracy   {_percent(result.accuracy)}",
        f"precision  {_percent(result.precision)}   (positive: '{positive}')",
        f"recall     {_percent(result.recall)}",
        f"roc_auc    {auc}",
        f"threshold  {result.threshold:g}   provider {result.provider}   variant {result.variant}"
        f"   decode {result.decode}",
        "confusion:",
        f"  {corner:<{width}}  {negative:>{width}}  {positive:>{width}}",
        f"  {negative:<{width}}  {tn:>{width}}  {fp:>{width}}",
        f"  {positive:<{width}}  {fn:>{width}}  {tp:>{width}}",
    ]
    if not result.labels_match:
        lines.append(
            f"note: the bundle's labels are '{escape(result.bundle_labels[0])}' / "
            f"'{escape(result.bundle_labels[1])}'; the data's classes '{negative}' / '{positive}'"
        )
    lines += [f"{escape(f.file)}\tERROR\t{escape(f.reason)}" for f in result.failed]
    return lines


@click.command("evaluate")
@click.argument("bundle", type=click.Path(path_type=str))
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="CelebA's layout or class folders (see `onnxedge data info`).",
)
@click.option(
    "--split",
    type=click.Choice(SPLITS),
    default="test",
    show_default=True,
    help="Which split of the data set to score.",
)
@click.option("--attribute", default=None, help="CelebA attribute [default: Smiling].")
@json_option("The result as JSON (accuracy is a top-level key).")
@classifier_options
@engine_options
@variant_option
@tuned_option
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Images per inference call.",
)
@click.option(
    "--min-accuracy",
    type=click.FloatRange(0.0, 100.0),
    default=None,
    callback=percent_not_fraction,
    help="Exit 1 when the accuracy is below this percent, such as 97 (a gate for scripts and CI).",
)
@files_options
@click.option("--no-progress", is_flag=True, help="No progress bar (shown only on a terminal).")
@ray_options
def evaluate_cmd(
    bundle: str,
    data_dir: Path,
    split: str,
    attribute: str | None,
    json_path: Path | None,
    provider: str,
    threads: int | None,
    decode: str | None,
    engine: str,
    precision: str,
    variant: str,
    tuned: str | None,
    batch_size: int,
    threshold: float | None,
    min_accuracy: float | None,
    max_pixels: int,
    decode_threads: int | None,
    decode_processes: int | None,
    batch_processes: int | None,
    no_progress: bool,
    ray_address: str | None,
    ray_actors: int | None,
) -> None:
    """Measure BUNDLE's model on a labelled split with ONNX Runtime (no torch): accuracy,
    precision, recall, confusion matrix, ROC AUC, images per class.

    An image that cannot be read is reported (FILE<TAB>ERROR<TAB>REASON) and counted; the metrics
    are over the others. Exits 0 unless nothing could be evaluated or --min-accuracy is missed.
    With --ray, Ray Data reads and classifies the split; the figures are a local run's.
    """
    given = {"engine": engine, "variant": variant, "precision": precision, "threads": threads}
    applied = apply_tuned(
        bundle, tuned, batch_size, for_files=ray_address is None, decode=decode, **given
    )
    chosen = applied.chosen
    check_engine_options(chosen["engine"], chosen["precision"])
    check_pools(threads, decode_threads, decode_processes, batch_processes, ray_address)
    check_ray_only(ray_address, ray_actors=(ray_actors, True), decode=(decode, False))
    pools = {
        "decode_threads": decode_threads,
        "decode_processes": decode_processes,
        "batch_processes": batch_processes,
    }
    run = functools.partial(evaluate_bundle, decode=decode, **pools)
    settings = classifier_settings(tuned, applied)
    if ray_address is not None:  # the decode the model was trained with (--decode: local only)
        run = functools.partial(evaluate_on_ray_cmd, ray_address=ray_address, actors=ray_actors)
        settings = chosen
    bar = _progress(not no_progress and sys.stderr.isatty())
    with pil_limit(max_pixels, warning_is_error=False), bar as advance:
        result = run(
            bundle,
            data_dir,
            split=split,
            attribute=attribute,
            provider=provider,
            batch_size=batch_size,
            **settings,
            threshold=threshold,
            max_pixels=max_pixels,
            progress=advance,
        )
    for line in format_result(result):
        click.echo(line)
    write_json(json_path, result.to_dict())
    if result.accuracy is None:
        click.echo(f"FAILED | no image of the {split} split could be evaluated", err=True)
        sys.exit(1)
    if min_accuracy is not None:
        verdict = "PASSED" if 100 * result.accuracy >= min_accuracy else "FAILED"
        click.echo(
            f"{verdict} | accuracy {_percent(result.accuracy)}, required {min_accuracy:.2f}%"
        )
        if verdict == "FAILED":
            sys.exit(1)


class _progress:
    """A rich progress bar on stderr while the split is classified (when asked)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = None

    def __enter__(self):
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self.bar = Progress(
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self.bar.__enter__()
        task = self.bar.add_task("evaluate", total=None)

        def advance(done: int, total: int) -> None:
            self.bar.update(task, completed=done, total=total)

        return advance

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
