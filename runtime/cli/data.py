"""`onnxedge data synth` and `onnxedge data info`: the command line of `onnxedge.runtime.data`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from onnxedge.runtime.cli.options import SEED
from onnxedge.runtime.cli.output import (
    echo_progress,
    force_option,
    json_option,
    refuse_existing,
    write_json,
)
from onnxedge.runtime.data.synth_style import DEFAULT_STYLE, MAX_FACES, FaceStyle
from onnxedge.runtime.names import escape, json_safe, shown

# `FaceStyle`'s fields that `data synth` takes as options: option, type, help (the default is
# the field's).
_STYLE_OPTIONS = (
    (
        "--expression",
        click.FloatRange(min=0),
        "How much the rest of the face follows the mouth (cheeks, eyes, brows); 0: the mouth "
        "alone tells the classes apart.",
    ),
    (
        "--near-fraction",
        click.FloatRange(0, 1),
        "Share of faces whose mouth is almost straight (|curvature| below --near-limit).",
    ),
    (
        "--near-limit",
        click.FloatRange(0, 1, min_open=True, max_open=True),
        "|curvature| below this is near the decision line.",
    ),
    (
        "--min-curvature",
        click.FloatRange(0, 1, min_open=True, max_open=True),
        "The smallest |curvature| drawn: no face sits exactly on the line.",
    ),
    (
        "--sag",
        click.FloatRange(0, min_open=True),
        "The mouth corners' lift or drop at |curvature| 1, times the mouth's half width.",
    ),
    (
        "--supersample",
        click.IntRange(1, 8),
        "Drawn at this many times the size, then reduced (1: aliased edges).",
    ),
)


def _style_options(command: Callable[..., None]) -> Callable[..., None]:
    for option, kind, text in reversed(_STYLE_OPTIONS):
        default = getattr(DEFAULT_STYLE, option[2:].replace("-", "_"))
        command = click.option(option, type=kind, default=default, show_default=True, help=text)(
            command
        )
    return command


@click.group("data")
def data_group() -> None:
    """Data sets for training and evaluation: draw synthetic faces, inspect a data folder."""


@data_group.command("synth")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Directory to create.")
@click.option(
    "--count",
    type=click.IntRange(min=10, max=MAX_FACES),
    default=6000,
    show_default=True,
    help="How many faces to draw (split 80/10/10 into train, val and test).",
)
@click.option(
    "--seed",
    type=SEED,
    default=0,
    show_default=True,
    help="Seed of the drawing: the same seed draws the same bytes.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Processes drawing faces [default: one per CPU, at most 4]; the bytes are the same.",
)
@_style_options
@force_option("a data set")
def synth_cmd(
    out: Path, count: int, seed: int, workers: int | None, force: bool, **style: Any
) -> None:
    """Draw COUNT synthetic faces in CelebA's layout into OUT (same seed: identical bytes).

    OUT gets img_align_celeba/*.jpg (178x218), list_attr_celeba.txt (Smiling is decided by the
    mouth's curvature), list_eval_partition.txt (80/10/10) and synth.json. These are drawings, not
    photographs: a task to train and gate on without any download. The drawing options (the
    defaults draw the set `make train` uses) are recorded in synth.json.
    """
    from onnxedge.runtime.data.synth import write_faces

    refuse_existing(out, force, "the data set")

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty() or done == total:
            echo_progress(f"{done}/{total} faces drawn")

    result = write_faces(
        out,
        count=count,
        seed=seed,
        workers=workers,
        progress=progress,
        style=FaceStyle(**style),
        replace=force,
    )
    splits = ", ".join(f"{name} {n}" for name, n in result.splits.items())
    click.echo(
        f"wrote {result.count} synthetic faces to {shown(result.out)} (seed {seed}; {splits}; "
        f"{result.smiling} smiling, {result.near} near the decision line)"
    )


@data_group.command("info")
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--attribute", default=None, help="CelebA attribute [default: Smiling].")
@json_option("The description as JSON.", text_to_stderr=False)
def info_cmd(root: Path, attribute: str | None, json_path: str | None) -> None:
    """Read ROOT as training and evaluation would, and say what it holds: the layout detected,
    the classes, the images per split and class, the listing's sha256."""
    from onnxedge.runtime.data import open_dataset

    described = open_dataset(root, attribute).describe()
    if json_path is not None:
        write_json(json_path, json_safe(described))
        return
    attribute_note = f", attribute {described['attribute']}" if described["attribute"] else ""
    click.echo(f"{escape(str(root))}: {described['layout']}{attribute_note}")
    negative, positive = (escape(name) for name in described["class_names"])
    click.echo(f"classes: 0 = '{negative}' (negative), 1 = '{positive}' (positive)")
    for split, counts in described["images"].items():
        per_class = ", ".join(f"{escape(name)} {n}" for name, n in counts.items())
        click.echo(f"{split}: {sum(counts.values())} images ({per_class})")
    click.echo(f"listing sha256: {described['listing_sha256']}")
