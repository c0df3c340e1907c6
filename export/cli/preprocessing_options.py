"""The options `onnxedge export` and `onnxedge import` share, defined once: the input shape, the
class names and the preprocessing a bundle's manifest records (`preprocessing_options`, read
back by `preprocessing_from`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click

from onnxedge.models.registry import CHANNEL_ORDERS, CROPS, RESIZE_MODES
from onnxedge.runtime.errors import OnnxEdgeError
from onnxedge.runtime.names import shown
from onnxedge.runtime.parity.layers import DEFAULT_GOLDEN_LAYERS_BUDGET_MB

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")


def numbers(counts: tuple[int, ...], kind: type, example: str) -> Callable[..., Any]:
    """A callback for comma-separated finite numbers of ``kind``, as many as one of ``counts``
    (None stays None); integers must be positive."""

    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        if value is None:
            return None
        items = [v.strip() for v in value.split(",")]
        try:
            found = tuple(kind(v) for v in items)
        except ValueError:
            found = ()
        if (
            len(found) not in counts
            or (kind is int and any(n < 1 for n in found))
            or not all(math.isfinite(n) for n in found)
        ):
            what = "positive integers" if kind is int else "finite numbers"
            count = " or ".join(map(str, counts))
            raise click.BadParameter(
                f"expected {count} comma-separated {what} such as {example}, found {value!r}"
            )
        return found

    return parse


def read_labels(path: Path) -> list[str]:
    """Class names from a text file, one a line (blank lines and surrounding spaces ignored)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a BOM (Notepad) is no name
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else e
        raise OnnxEdgeError(f"--labels: cannot read {path}: {reason}") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise OnnxEdgeError(f"--labels: expected one class name a line in {path}, found none")
    return names


def preprocessing_options(input_shape_help: str) -> Callable[[Callable[..., Any]], Any]:
    """--input-shape (its help says when the command needs it), --labels, and the preprocessing:
    --resize, --resize-mode, --pad-value, --crop, --crop-fraction, --interpolation, --scale,
    --mean, --std, --channel-order."""
    options = [
        click.option(
            "--input-shape", callback=numbers((3,), int, "3,224,224"), help=input_shape_help
        ),
        click.option(
            "--labels",
            "labels_file",
            type=click.Path(path_type=Path),
            default=None,
            help="Class names, one a line (K lines for K outputs; negative then positive for one).",
        ),
        click.option(
            "--resize",
            callback=numbers((2,), int, "224,224"),
            help="Preprocessing: resize to H,W (default: the input's H,W).",
        ),
        click.option(
            "--resize-mode",
            type=click.Choice(RESIZE_MODES),
            default=None,
            help="Preprocessing: stretch to H x W (default); pad-right: to height H keeping the "
            "aspect ratio, padded on the right to W (OCR text lines); letterbox: fit within "
            "H x W keeping the aspect ratio, centred, padded.",
        ),
        click.option(
            "--pad-value",
            type=float,
            default=None,
            help="Preprocessing: the model input's value at padded pixels, after --mean and "
            "--std (default 0).",
        ),
        click.option(
            "--crop",
            type=click.Choice(CROPS),
            default=None,
            help="Preprocessing: crop before the resize (default: none; smile_cnn: center-square).",
        ),
        click.option(
            "--crop-fraction",
            type=click.FloatRange(min=0.0, max=1.0, min_open=True),
            default=None,
            help="Preprocessing: crop the centred square that keeps this fraction of the "
            "shorter side (implies --crop center-square; default 1; 0.875 with a 224x224 input "
            "is Resize(256) then CenterCrop(224), timm's crop_pct).",
        ),
        click.option(
            "--interpolation",
            type=click.Choice(INTERPOLATIONS),
            default=None,
            help="Preprocessing: resize filter (default bilinear).",
        ),
        click.option(
            "--scale",
            type=click.FloatRange(min=0.0, min_open=True),
            default=None,
            metavar="FACTOR",
            help="Preprocessing: what the 8-bit pixels are multiplied by before --mean and --std "
            "(default 1/255, to [0, 1]; 1 for a model that takes 0..255 and rescales inside, "
            "as Keras's applications do).",
        ),
        click.option(
            "--mean",
            callback=numbers((1, 3), float, "0.485,0.456,0.406"),
            help="Preprocessing: per-channel mean (three, in the model's channel order: B, G, R "
            "with --channel-order BGR; or one for a grayscale input), subtracted after --scale.",
        ),
        click.option(
            "--std",
            callback=numbers((1, 3), float, "0.229,0.224,0.225"),
            help="Preprocessing: per-channel std (three, in the model's channel order, as --mean; "
            "or one for a grayscale input), divided by after the mean.",
        ),
        click.option(
            "--channel-order",
            type=click.Choice(CHANNEL_ORDERS),
            default=None,
            help="Preprocessing: the channel order the model takes (default RGB).",
        ),
    ]

    def decorate(command: Callable[..., Any]) -> Any:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def golden_images_option(command: Callable[..., Any]) -> Any:
    """--images: real images for the golden data."""
    return click.option(
        "--images",
        type=click.Path(path_type=Path),
        default=None,
        help="A directory of real images to add to the golden data for `onnxedge parity`.",
    )(command)


def golden_layers_options(command: Callable[..., Any]) -> Any:
    """--golden-layers/--no-golden-layers and --golden-layers-budget."""
    command = click.option(
        "--golden-layers-budget",
        "golden_layers_budget",
        type=click.FloatRange(min=0.0, min_open=True),
        default=DEFAULT_GOLDEN_LAYERS_BUDGET_MB,
        show_default=True,
        metavar="MB",
        help="The most megabytes the golden layers may take as float32 (the file deflates them): "
        "smile_cnn takes 2.2 MB a row, so the default stores batch 2, 16 stores batch 7.",
    )(command)
    return click.option(
        "--golden-layers/--no-golden-layers",
        default=True,
        show_default=True,
        help="Store the reference's value of every layer on golden inputs, for "
        "`parity --localize` without torch (the largest golden batch that fits the budget).",
    )(command)


PREPROCESSING_PARAMS = (
    "resize",
    "resize_mode",
    "pad_value",
    "crop",
    "crop_fraction",
    "interpolation",
    "scale",
    "mean",
    "std",
    "channel_order",
)


def preprocessing_from(params: Mapping[str, Any]) -> dict[str, Any]:
    """The preprocessing keys the user set with `preprocessing_options`' options, for
    `onnxedge.models.registry.image_preprocessing` (lists where the options give tuples)."""
    given = {key: params.get(key) for key in PREPROCESSING_PARAMS}
    if given["crop_fraction"] is not None and given["crop"] is None:
        given["crop"] = "center-square"  # what the fraction is of
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in given.items()
        if value is not None
    }


def echo_written(out: Path, manifest: Mapping[str, Any]) -> None:
    """The golden layers stored (or why none) and the files written, for export and import."""
    stored = manifest["layers"]["golden"]
    if stored["file"]:
        click.echo(
            f"golden layers: {stored['tensors']} tensors at batch {stored['batch_sizes'][0]}, "
            f"{stored['bytes'] / 1e6:.1f} MB"
        )
    else:
        click.echo(f"golden layers: none stored ({stored['reason']})")
    files = ["model.onnx", "golden.npz", *([stored["file"]] if stored["file"] else [])]
    sizes = {name: entry["bytes"] / 1e6 for name, entry in manifest["files"].items()}
    click.echo(
        f"wrote {shown(out)}/{', '.join(files)} and manifest.json "
        f"({sum(sizes.values()):.1f} MB, model.onnx {sizes['model.onnx']:.1f} MB)"
    )
