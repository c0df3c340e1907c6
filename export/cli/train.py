"""`onnxedge train`: the command line of `onnxedge.models.train`. Torch is imported only when it
runs."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import click

from onnxedge.runtime.classifier.preprocess import DECODES, EXACT
from onnxedge.runtime.cli.options import SEED
from onnxedge.runtime.cli.output import (
    force_option,
    json_option,
    refuse_a_bundles_file,
    refuse_existing,
    write_json,
)
from onnxedge.runtime.deps import require_modules
from onnxedge.runtime.names import escape, shown

# The choices of `onnxedge.models.train` (INITS, SCHEDULES), here so that --help needs no torch.
INITS = ("kaiming", "pytorch", "data")
SCHEDULES = ("onecycle", "constant")
NORMS = ("batch", "none")


def _finite_positive(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"expected a finite number > 0, found {value}")
    return value


@click.command("train")
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="CelebA's layout or class folders (see `onnxedge data info`).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The checkpoint to write (.safetensors), rewritten at each better epoch.",
)
@click.option("--attribute", default=None, help="CelebA attribute [default: Smiling].")
@click.option(
    "--model",
    "model_name",
    default="smile_cnn",
    show_default=True,
    help="The registered model to train (docs/ZOO.md lists them).",
)
@click.option("--head", default=None, help="GAP head: avgpool (default), adaptive or mean.")
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=12,
    show_default=True,
    help="Passes over the train split (fewer with early stopping).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Images per optimiser step.",
)
@click.option(
    "--lr",
    type=float,
    default=1e-3,
    show_default=True,
    callback=_finite_positive,
    help="Adam's learning rate (the peak of the one-cycle schedule).",
)
@click.option(
    "--seed",
    type=SEED,
    default=0,
    show_default=True,
    help="Seed of the weights, the shuffling and the augmentation.",
)
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default="cpu",
    show_default=True,
    help="Where PyTorch trains.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Loader processes [default: 1 on up to 4 CPUs (measured), else half the CPUs, "
    "at most 8]; 0 loads in the training process. Results do not depend on it.",
)
@click.option(
    "--patience",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Epochs without a better validation result before stopping (counted only "
    "once the model has left the chance plateau).",
)
@click.option(
    "--init",
    type=click.Choice(INITS),
    default="kaiming",
    show_default=True,
    help="pytorch: PyTorch's default initialisation (the book's recipe); data: He, then each "
    "convolution rescaled to unit variance over a batch of training images.",
)
@click.option(
    "--norm",
    type=click.Choice(NORMS),
    default="batch",
    show_default=True,
    help="batch: a BatchNorm after each convolution while training, folded into the "
    "convolution when the checkpoint is written (it holds the plain model); none: the book's "
    "recipe, which can sit on the chance plateau for thousands of steps.",
)
@click.option(
    "--schedule",
    type=click.Choice(SCHEDULES),
    default="onecycle",
    show_default=True,
    help="constant: a fixed learning rate (the book's recipe).",
)
@click.option(
    "--dropout/--no-dropout",
    default=False,
    show_default=True,
    help="--dropout: the model's dropouts on while training (the book's recipe); off by default, "
    "as beside the training BatchNorms they slowed leaving the chance plateau (689 steps "
    "instead of 255 on the synthetic faces) and lowered the validation accuracy.",
)
@click.option(
    "--max-steps",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after this many optimiser steps.",
)
@json_option("The per-epoch history and the result as JSON.")
@force_option("a checkpoint")
@click.option(
    "--decode",
    type=click.Choice(DECODES),
    default=EXACT,
    show_default=True,
    help="How files become pixels while training: exact, or fast (JPEGs decoded at a reduced "
    "scale, as predict --decode fast); recorded in the checkpoint and the bundle's default.",
)
@click.option("--no-progress", is_flag=True, help="No progress bar (shown only on a terminal).")
def train_cmd(
    data_dir: Path,
    out: Path,
    attribute: str | None,
    model_name: str,
    head: str | None,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: str,
    workers: int | None,
    patience: int,
    init: str,
    schedule: str,
    norm: str,
    dropout: bool,
    max_steps: int | None,
    decode: str,
    json_path: Path | None,
    no_progress: bool,
    force: bool,
) -> None:
    """Train a model on a labelled data set and write the best epoch as a safetensors checkpoint
    with its metadata (model, head, classes, preprocessing, data listing hash), which
    `onnxedge export --checkpoint` reads.

    The book's recipe (BCE on the sigmoid output, Adam, batch 32, the dropouts, random crop and
    horizontal flip) with training-time BatchNorm (folded away in the checkpoint), He
    initialisation and a one-cycle learning rate by default; one line of
    train/val loss and accuracy per epoch; early stopping once the model has left the chance
    plateau. Deterministic on the CPU for a seed.
    """
    refuse_existing(out, force, "the checkpoint")
    refuse_a_bundles_file(out, "--out")
    require_modules("torch", "safetensors", needed_by="onnxedge train")
    from onnxedge.models.train import TrainConfig, train

    config = TrainConfig(
        data=data_dir,
        out=out,
        attribute=attribute,
        model=model_name,
        head=head,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        device=device,
        workers=workers,
        patience=patience,
        init=init,
        schedule=schedule,
        norm=norm,
        dropout=dropout,
        max_steps=max_steps,
        decode=decode,
    )
    with _RichProgress(enabled=not no_progress and sys.stderr.isatty()) as progress:
        result = train(config, progress)
    best = result.history[result.best_epoch - 1]
    plateau = (
        f"left the chance plateau after {result.plateau_steps} steps"
        if result.left_plateau
        else "never left the chance plateau (loss ≈ 0.693)"
    )
    click.echo(
        f"{result.stopped}; {plateau}; best epoch {result.best_epoch}: val accuracy "
        f"{100 * best.val_accuracy:.2f}%, val loss {best.val_loss:.4f}; "
        f"{result.seconds:.0f} s in all"
    )
    if result.failed_files:
        click.echo(f"skipped {len(result.failed_files)} unreadable image(s):", err=True)
        for name in result.failed_files:
            click.echo(f"  {escape(name)}", err=True)  # one line each, as predict's
    click.echo(f"wrote {shown(result.checkpoint)}")
    write_json(json_path, result.to_dict())


def format_epoch(stats: Any, epochs: int, best: bool) -> str:
    return (
        f"epoch {stats.epoch:>{len(str(epochs))}}/{epochs}  "
        f"train loss {stats.train_loss:.4f} acc {100 * stats.train_accuracy:6.2f}%  "
        f"val loss {stats.val_loss:.4f} acc {100 * stats.val_accuracy:6.2f}%  "
        f"lr {stats.lr:.2e}  {stats.seconds:5.1f} s  step {stats.steps}" + ("  *" if best else "")
    )


class _RichProgress:
    """`TrainProgress` for the terminal: a rich bar per epoch (steps, running loss) on stderr, and
    one line per epoch on stdout, which is all that is printed without a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.task: Any = None
        self.epochs = 0
        self.loss_sum = 0.0
        self.seen = 0

    def __enter__(self) -> _RichProgress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self.epochs, self.loss_sum, self.seen = epochs, 0.0, 0
        if self.bar is not None:
            if self.task is not None:
                self.bar.remove_task(self.task)
            self.task = self.bar.add_task(f"epoch {epoch}/{epochs}", total=steps, loss="-")

    def step(self, loss: float) -> None:
        self.loss_sum += loss
        self.seen += 1
        if self.bar is not None:
            self.bar.update(self.task, advance=1, loss=f"{self.loss_sum / self.seen:.4f}")

    def end_epoch(self, stats: Any, best: bool) -> None:
        click.echo(format_epoch(stats, self.epochs, best))  # above the bar, which rich redraws
