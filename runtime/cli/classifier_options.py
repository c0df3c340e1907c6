"""The options of the commands that classify images with a bundle's `Classifier` (``predict``,
``evaluate``): ``--provider``, ``--threads`` and ``--threshold``, each as
`onnxedge.runtime.classifier.classifier.Classifier.from_bundle` and its predictions take them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from onnxedge.runtime.classifier.session import PROVIDER_CHOICES
from onnxedge.runtime.cli.options import THREADS

F = TypeVar("F", bound=Callable[..., Any])


def classifier_options(command: F) -> F:
    """Add ``--provider``, ``--threads`` and ``--threshold`` to a command (parameters
    ``provider``, ``threads`` and ``threshold``)."""
    for option in (
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


__all__ = ["classifier_options"]
