"""The options of the commands that classify images with a bundle's `Classifier` (``predict``,
``evaluate``): ``--provider``, ``--threads``, ``--threshold`` and ``--decode``, each as
`onnxedge.runtime.classifier.classifier.Classifier.from_bundle` and its predictions take them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from onnxedge.runtime.classifier.preprocess import DECODES
from onnxedge.runtime.classifier.session import PROVIDER_CHOICES
from onnxedge.runtime.cli.options import THREADS

F = TypeVar("F", bound=Callable[..., Any])

DECODE_OPTION = click.option(
    "--decode",
    type=click.Choice(DECODES),
    default=None,
    help="How files become pixels: exact (the training transform's, bit for bit) or fast "
    "(JPEGs decoded at a reduced scale; gated by onnxedge optimize --fast-decode) "
    "[default: the decode the model was trained with, exact where unknown].",
)


def classifier_options(command: F) -> F:
    """Add ``--provider``, ``--threads``, ``--threshold`` and ``--decode`` to a command
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
            "--provider",
            type=click.Choice(PROVIDER_CHOICES),
            default="auto",
            show_default=True,
            help="Execution provider; auto: CUDA when it loads, else CPU.",
        ),
    ):
        command = option(command)
    return command


__all__ = ["DECODE_OPTION", "classifier_options"]
