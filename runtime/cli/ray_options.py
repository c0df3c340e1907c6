"""``--ray [ADDRESS]`` for ``predict`` and ``evaluate``: the same command with Ray Data doing the
work (`onnxedge.runtime.distributed`), imported only when the option is given."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import click

from onnxedge.runtime.classifier.predictions import FileResult
from onnxedge.runtime.cli.output import verbosity

F = TypeVar("F", bound=Callable[..., Any])

# What `--ray` alone stands for: start or join a local Ray (ray.init with no address).
JOIN_OR_START = ""


def _address(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None or value == JOIN_OR_START:
        return value
    # Checked here, without importing ray: a path taken for the address is a usage error.
    from onnxedge.runtime.distributed.connect import check_address

    try:
        return check_address(value)
    except ValueError as e:
        raise click.BadParameter(
            f"{e}; to give --ray no address before a PATH, put it after the paths or write "
            "--ray= (empty)"
        ) from None


def ray_options(command: F) -> F:
    """Add ``--ray [ADDRESS]`` and ``--ray-actors`` (parameters ``ray_address``, None without
    --ray, and ``ray_actors``)."""
    for option in (
        click.option(
            "--ray-actors",
            type=click.IntRange(min=1),
            default=None,
            help="With --ray: model actors, each with --threads CPUs [default: the cluster's "
            "CPUs / --threads].",
        ),
        click.option(
            "--ray",
            "ray_address",
            is_flag=False,
            flag_value=JOIN_OR_START,
            default=None,
            metavar="[ADDRESS]",
            callback=_address,
            help="Run on Ray Data (pip install 'onnxedge[ray]'): alone, start or join a local "
            "Ray; auto: the cluster `ray start` made; HOST:PORT or ray://HOST:PORT. Each actor "
            "loads the bundle at the same path (docs/RAY.md).",
        ),
    ):
        command = option(command)
    return command


# The names --output takes: what it writes is Parquet whatever the name says.
PARQUET_SUFFIXES = (".parquet", ".pq")


def output_option(command: F) -> F:
    """``--output FILE.parquet`` (parameter ``output``), for ``predict --ray``."""
    return click.option(
        "--output",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        callback=_parquet_name,
        help="With --ray: write the rows to this Parquet file (file, error, probability, label, "
        "and positive or class_index and probabilities) instead of printing them.",
    )(command)


def _parquet_name(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """A usage error for a FILE not named .parquet (``scores.csv`` got Parquet's bytes)."""
    if value is not None and value.suffix.lower() not in PARQUET_SUFFIXES:
        raise click.BadParameter(
            f"expected a Parquet file name ({', '.join(PARQUET_SUFFIXES)}), found {value.name!r}: "
            "the rows are written as Parquet only"
        )
    return value


def check_ray_only(ray_address: str | None, **given: Any) -> None:
    """A usage error for an option given that only a --ray run (or only a local one) takes."""
    for name, (value, needs_ray) in given.items():
        if value is not None and (ray_address is None) == needs_ray:
            where = "with --ray only" if needs_ray else "without --ray only"
            raise click.UsageError(f"--{name.replace('_', '-')} applies {where}")


def _session(ray_address: str) -> Any:
    from onnxedge.runtime.distributed import ray_session

    return ray_session(ray_address or None, verbose=verbosity() > 0)


def predict_on_ray_cmd(
    bundle: str,
    paths: Iterable[Any],
    *,
    ray_address: str,
    output: Path | None,
    emit: Callable[[Iterable[FileResult]], tuple[int, int]],
    top_k: int | None,
    **settings: Any,
) -> tuple[int, int, str]:
    """(files, failed, what ran them) of ``predict --ray``: the rows in input order, printed by
    ``emit`` (the local run's printer) or written to ``output``."""
    from onnxedge.runtime.distributed import RayRun

    with _session(ray_address):
        run = RayRun(bundle, **settings)
        if top_k is not None and run.threshold is not None:
            raise click.UsageError(
                f"--top-k applies to a model with K classes; {bundle} has one output "
                f"({run.bundle.output_kind})"
            )
        results = run.results(paths)
        if output is None:
            total, failed = emit(results)
        else:
            from onnxedge.runtime.distributed.parquet import write_results

            total, failed = write_results(
                output,
                results,
                classes=run.bundle.classes,
                k_classes=run.threshold is None,
            )
    return total, failed, run.label


def evaluate_on_ray_cmd(bundle: str, data_dir: Path, *, ray_address: str, **settings: Any) -> Any:
    """The `EvaluationResult` of ``evaluate --ray``."""
    from onnxedge.runtime.distributed import evaluate_on_ray

    with _session(ray_address):
        return evaluate_on_ray(bundle, data_dir, **settings)


__all__ = [
    "check_ray_only",
    "evaluate_on_ray_cmd",
    "output_option",
    "predict_on_ray_cmd",
    "ray_options",
]
