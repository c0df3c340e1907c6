"""The engine options that predict, parity and evaluate share (``--engines``, ``--precision``),
and bench's ``--engines`` / ``--openvino-precisions`` callbacks, as reusable click pieces.

``--precision`` is OpenVINO's inference precision: f32 (the default, computing what ONNX
Runtime computes) or bf16 (asked for explicitly, reported as such). ONNX Runtime runs the model
at the precision it is stored in, so ``--precision bf16`` with it is a usage error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from onnxedge.runtime.cli.options import name_list
from onnxedge.runtime.cli.output import deprecated_alias
from onnxedge.runtime.engines import (
    DEFAULT_PRECISION,
    ENGINES,
    ONNXRUNTIME,
    PRECISIONS,
)

F = TypeVar("F", bound=Callable[..., Any])


def engine_options(command: F) -> F:
    """Add ``--engines`` (one name) and ``--precision`` to a command (parameters ``engine``,
    ``precision``)."""
    command = click.option(
        "--precision",
        type=click.Choice(PRECISIONS),
        default=DEFAULT_PRECISION,
        show_default=True,
        help="OpenVINO's inference precision (bf16 only when asked; onnxruntime runs the model "
        "as stored).",
    )(command)
    command = click.option(
        "--engines",
        "engine",
        default=ONNXRUNTIME,
        show_default=True,
        callback=_one_engine,
        help="Inference engine (one: this command runs one): onnxruntime, or openvino (needs "
        "onnxedge[openvino], runs on the CPU).",
    )(command)
    return deprecated_alias("--engine", "--engines", "engine")(command)


def _one_engine(ctx: click.Context, param: click.Parameter, value: Any) -> str:
    """``--engines`` where one engine runs: a list of one name."""
    names = name_list(ENGINES, what="engine")(ctx, param, value)
    if len(names) > 1:
        raise click.BadParameter(
            f"this command runs one engine; expected one of "
            f"{', '.join(ENGINES)}, found {','.join(names)}"
        )
    return names[0]


def check_engine_options(engine: str, precision: str) -> None:
    """A usage error (exit 2) for a precision the engine does not take."""
    if engine == ONNXRUNTIME and precision != DEFAULT_PRECISION:
        raise click.UsageError(
            f"--precision {precision} is OpenVINO's inference precision; onnxruntime runs the "
            "model as stored (add --engines openvino)"
        )


def engine_list(default: tuple[str, ...] | None = None):
    """``--engines onnxruntime,openvino``: names out of `ENGINES`; an absent option gives
    ``default`` (None: left to the library, which takes every engine installed)."""
    parse = name_list(ENGINES, what="engine", default=default)

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        return None if value is None and default is None else parse(ctx, param, value)

    return callback


def precision_list(default: tuple[str, ...] | None = None):
    """``--precision f32,bf16`` (parity) or ``--openvino-precisions`` (bench): names out of
    `PRECISIONS`."""
    return name_list(PRECISIONS, what="precision", default=default)
