"""The options of the commands that classify images with a bundle's `Classifier` (``predict``,
``evaluate``): ``--providers``, ``--threads``, ``--threshold`` and ``--decode``, each as
`onnxedge.runtime.classifier.classifier.Classifier.from_bundle` and its predictions take them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from onnxedge.runtime.classifier.preprocess import DECODES
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


__all__ = ["DECODE_OPTION", "classifier_options"]
