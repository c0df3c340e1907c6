"""The options of the commands that classify images with a bundle's `Classifier` (``predict``,
``evaluate``): ``--providers``, ``--threads``, ``--threshold`` and ``--decode``, each as
`onnxedge.runtime.classifier.classifier.Classifier.from_bundle` and its predictions take them;
and how files are read (`files_options`: the decoding pool and ``--max-pixels``, as
``predict_files`` takes them)."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

from onnxedge.runtime.classifier.decode import (
    DEFAULT_POOL_HELP,
    MAX_BATCH_PROCESSES,
    MAX_DECODE_PROCESSES,
)
from onnxedge.runtime.classifier.preprocess import DECODES, MAX_PIXELS
from onnxedge.runtime.classifier.session import PROVIDER_CHOICES
from onnxedge.runtime.cli.options import THREADS, name_list
from onnxedge.runtime.cli.output import deprecated_alias

F = TypeVar("F", bound=Callable[..., Any])

DECODE_OPTION = click.option(
    "--decode",
    type=click.Choice(DECODES),
    default=None,
    help="How files become pixels: exact (the training transform's, bit for bit) or fast "
    "(JPEGs decoded at a reduced scale; gated by onnxedge optimize --fast-decode) "
    "[default: the decode the model was trained with, exact where unknown].",
)


def _providers(ctx: click.Context, param: click.Parameter, value: Any) -> str:
    """``--providers`` as the one provider choice the classifier takes: ``cuda,cpu`` and
    ``auto`` are auto (CUDA when it loads, else the CPU), a list starting with cpu is cpu (the
    CPU always loads), ``cuda`` alone is cuda (an error where it cannot load)."""
    names = name_list(PROVIDER_CHOICES, what="provider")(ctx, param, value)
    if names[0] == "cpu" or names == ("cuda",):
        return names[0]
    return "auto"


def classifier_options(command: F) -> F:
    """Add ``--providers``, ``--threads``, ``--threshold`` and ``--decode`` to a command
    (parameters ``provider``, ``threads``, ``threshold`` and ``decode``)."""
    for option in (
        DECODE_OPTION,
        click.option(
            "--threshold",
            type=click.FloatRange(0.0, 1.0),
            default=None,
            help="Probability at or above which an image is positive [default: the manifest's].",
        ),
        click.option(
            "--threads",
            type=THREADS,
            default=None,
            help="ONNX Runtime intra-op threads [default: one per physical core].",
        ),
        click.option(
            "--providers",
            "provider",
            default="auto",
            show_default=True,
            callback=_providers,
            help="Execution providers in the order tried, comma-separated: cuda,cpu (the same as "
            "auto: CUDA where it loads, else the CPU), cpu alone, or cuda alone (an error where "
            "it does not load).",
        ),
        deprecated_alias("--provider", "--providers", "provider"),
    ):
        command = option(command)
    return command


def files_options(command: F) -> F:
    """Add ``--decode-threads``, ``--decode-processes``, ``--batch-processes`` (at most one of
    them: `check_pools`) and ``--max-pixels`` to a command (parameters of the same names)."""
    for option in (
        click.option(
            "--max-pixels",
            type=click.IntRange(min=1),
            default=MAX_PIXELS,
            show_default=True,
            help="Refuse images larger than this (decompression bombs).",
        ),
        click.option(
            "--batch-processes",
            type=click.IntRange(1, MAX_BATCH_PROCESSES),
            default=None,
            help="Processes that each decode whole batches and run them on a session of their "
            "own, with their share of the CPUs as threads (ONNX Runtime's CPU EP, --threads not "
            "given; not with the other two) [default: one per CPU, at most 8, where that "
            "applies].",
        ),
        click.option(
            "--decode-processes",
            type=click.IntRange(1, MAX_DECODE_PROCESSES),
            default=None,
            help="Processes decoding image files while the model runs here (not with "
            f"--decode-threads) [default: {DEFAULT_POOL_HELP}].",
        ),
        click.option(
            "--decode-threads",
            type=THREADS,
            default=None,
            help="Threads decoding image files while the model runs; 1: one file after another "
            "[default: the pool --decode-processes names].",
        ),
    ):
        command = option(command)
    return command


def check_pools(
    threads: int | None,
    decode_threads: int | None,
    decode_processes: int | None,
    batch_processes: int | None,
    ray_address: str | None,
) -> None:
    """A usage error for more than one pool, a pool with ``--ray`` (an actor decodes on its
    ``--threads``), or ``--batch-processes`` with ``--threads``."""
    pools = {
        "--decode-threads": decode_threads,
        "--decode-processes": decode_processes,
        "--batch-processes": batch_processes,
    }
    named = [name for name, count in pools.items() if count is not None]
    if len(named) > 1:
        raise click.UsageError(f"{' and '.join(named)}: give one of them")
    if named and ray_address is not None:
        raise click.UsageError(f"{named[0]} applies without --ray only")
    if batch_processes is not None and threads is not None:
        raise click.UsageError(
            "--batch-processes sets each process's threads (its share of the CPUs); found "
            f"--threads {threads} too: give one of them"
        )


@contextlib.contextmanager
def pil_limit(max_pixels: int, *, warning_is_error: bool = True) -> Iterator[None]:
    """PIL's own decompression-bomb guard, for the duration of a command: a ``--max-pixels``
    above its limit (``Image.MAX_IMAGE_PIXELS``) raises the limit so that the option governs;
    with ``warning_is_error`` (predict) its warning becomes an error for that file (evaluate
    leaves it a warning). Both are restored afterwards."""
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        if warning_is_error:
            warnings.simplefilter("error", Image.DecompressionBombWarning)
        if saved is not None and max_pixels > saved:
            Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


__all__ = ["DECODE_OPTION", "check_pools", "classifier_options", "files_options", "pil_limit"]
