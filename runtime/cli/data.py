"""`onnxedge data synth` and `onnxedge data info`: the command line of `onnxedge.runtime.data`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from onnxedge.runtime.cli.output import echo_progress
from onnxedge.runtime.names import escape, json_safe


@click.group("data")
def data_group() -> None:
    """Data sets for training and evaluation: draw synthetic faces, inspect a data folder."""


@data_group.command("synth")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Directory to create.")
@click.option("--count", type=click.IntRange(min=10), default=6000, show_default=True)
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Processes drawing faces [default: one per CPU, at most 4]; the bytes are the same.",
)
def synth_cmd(out: Path, count: int, seed: int, workers: int | None) -> None:
    """Draw COUNT synthetic faces in CelebA's layout into OUT (same seed: identical bytes).

    OUT gets img_align_celeba/*.jpg (178x218), list_attr_celeba.txt (Smiling is decided by the
    mouth's curvature), list_eval_partition.txt (80/10/10) and synth.json. These are drawings, not
    photographs: a task to train and gate on without any download.
    """
    from onnxedge.runtime.data.synth import write_faces

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty() or done == total:
            echo_progress(f"{done}/{total} faces drawn")

    result = write_faces(out, count=count, seed=seed, workers=workers, progress=progress)
    splits = ", ".join(f"{name} {n}" for name, n in result.splits.items())
    click.echo(
        f"wrote {result.count} synthetic faces to {result.out} (seed {seed}; {splits}; "
        f"{result.smiling} smiling, {result.near} near the decision line)"
    )


@data_group.command("info")
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--attribute", default=None, help="CelebA attribute [default: Smiling].")
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
def info_cmd(root: Path, attribute: str | None, as_json: bool) -> None:
    """Read ROOT as training and evaluation would, and say what it holds: the layout detected,
    the classes, the images per split and class, the listing's sha256."""
    from onnxedge.runtime.data import open_dataset

    described = open_dataset(root, attribute).describe()
    if as_json:
        click.echo(json.dumps(json_safe(described), indent=2))
        return
    attribute_note = f", attribute {described['attribute']}" if described["attribute"] else ""
    click.echo(f"{escape(str(root))}: {described['layout']}{attribute_note}")
    negative, positive = (escape(name) for name in described["class_names"])
    click.echo(f"classes: 0 = '{negative}' (negative), 1 = '{positive}' (positive)")
    for split, counts in described["images"].items():
        per_class = ", ".join(f"{escape(name)} {n}" for name, n in counts.items())
        click.echo(f"{split}: {sum(counts.values())} images ({per_class})")
    click.echo(f"listing sha256: {described['listing_sha256']}")
