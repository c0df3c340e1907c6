"""The commands of the `onnxedge` group that read a bundle, found from the group itself (so a new
command is found without being listed here), and an argument list that runs each one quickly."""

from __future__ import annotations

from pathlib import Path

import click

from onnxedge.runtime.cli import main

# Commands that read no bundle. A new command is a bundle command unless it is added here.
NOT_BUNDLE_COMMANDS = {
    "export": "writes a bundle (its --out), reads none",
    "simplify": "reads and writes .onnx files, not bundles",
    "import": "reads an .onnx file made elsewhere and writes a bundle (its --out), reads none",
    "data": "makes and describes data sets",
    "train": "trains a checkpoint from a data set",
}
# Options that keep a bundle command short when the bundle is good; any command not named here
# gets its required arguments only.
FAST_OPTIONS = {
    "parity": ["--providers", "cpu"],
    "bench": [
        "--providers",
        "cpu",
        "--peers",
        "none",
        "--batch-sizes",
        "1",
        "--iters",
        "2",
        "--warmup",
        "1",
        "--no-progress",
    ],
    "predict": ["--providers", "cpu", "--no-progress"],
    "evaluate": ["--providers", "cpu", "--no-progress"],
}
# Commands that cannot succeed on the seeded test bundle with the arguments `argv` gives, with the
# one clean line they end in instead: reaching it shows that the one reader accepted the unaltered
# bundle. (pack's --out gets the images' directory, which it refuses to write over.)
CONTROL_REFUSALS = {
    "optimize": "expected a bundle exported from a trained checkpoint",
    "pack": "expected a new or empty directory",
}
BUNDLE_ARGUMENTS = ("bundle", "target")


def group_commands() -> dict[str, click.Command]:
    ctx = click.Context(main)
    return {name: main.get_command(ctx, name) for name in main.list_commands(ctx)}


def bundle_commands() -> list[str]:
    return sorted(set(group_commands()) - set(NOT_BUNDLE_COMMANDS))


def bundle_argument(command: click.Command) -> click.Argument | None:
    """The command's first positional argument, if it is named as a bundle."""
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    if arguments and arguments[0].name in BUNDLE_ARGUMENTS:
        return arguments[0]
    return None


def image_folders(root: Path) -> Path:
    """``root/test/{not_smiling,smiling}/*.png``: a directory of images for `predict`, and a
    labelled split (class folders) for `evaluate`."""
    from PIL import Image

    for i, label in enumerate(("not_smiling", "smiling")):
        (root / "test" / label).mkdir(parents=True)
        Image.new("RGB", (90, 70), (100 + 50 * i, 120, 140)).save(root / "test" / label / "a.png")
    return root


def argv(name: str, bundle: Path, images: Path) -> list[str]:
    """``onnxedge NAME BUNDLE ...``: each further required argument or option gets ``images``
    (`image_folders`) or, where a directory is not accepted, one PNG in it."""
    command = group_commands()[name]
    image = min(images.rglob("*.png"))
    args: list[str] = [name, str(bundle)]
    for param in command.params[1:]:
        if not param.required:
            continue
        value = image
        if isinstance(param.type, click.Path) and param.type.dir_okay:
            value = images
        if isinstance(param, click.Option):
            args.append(param.opts[0])
        args.append(str(value))
    return [*args, *FAST_OPTIONS.get(name, [])]
