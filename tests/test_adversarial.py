"""Altered bundles, each of every kind x every command that reads a bundle: exit status 1, one
`onnxedge: error:` line that says what was wrong, no traceback, and nothing of a file outside the
bundle (neither its contents nor its hash) in the output.

The commands come from the `onnxedge` group itself (`bundle_commands`), so a command added later
(evaluate, ...) is run on every altered bundle here without being listed.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
from bundle_commands import (
    CONTROL_REFUSALS,
    argv,
    bundle_argument,
    bundle_commands,
    group_commands,
    image_folders,
)
from cli_assertions import assert_one_line_error
from click.testing import CliRunner
from test_classifier import externalize, rehash

from onnxedge.runtime.bundle.hashing import sha256_file
from onnxedge.runtime.bundle.reader import MANIFEST, MODEL, Bundle
from onnxedge.runtime.cli import main
from onnxedge.runtime.errors import BundleError

GOLDEN = "golden.npz"
SECRET = b"the contents of a file outside the bundle\n"


def manifest_edit(change: Callable[[dict], None]) -> Callable[[Path, Path], None]:
    def edit(bundle: Path, outside: Path) -> None:
        manifest = json.loads((bundle / MANIFEST).read_text())
        change(manifest)
        (bundle / MANIFEST).write_text(json.dumps(manifest))

    return edit


def flip_last_byte(name: str) -> Callable[[Path, Path], None]:
    def flip(bundle: Path, outside: Path) -> None:
        data = bytearray((bundle / name).read_bytes())
        data[-1] ^= 0xFF
        (bundle / name).write_bytes(bytes(data))

    return flip


def symlink_out(name: str) -> Callable[[Path, Path], None]:
    """``name`` becomes a symlink to a copy outside the bundle, still matching its sha256."""

    def link(bundle: Path, outside: Path) -> None:
        copy = outside / name
        shutil.copyfile(bundle / name, copy)
        (bundle / name).unlink()
        (bundle / name).symlink_to(copy)

    return link


def list_outside(name: str) -> Callable[[Path, Path], None]:
    """The manifest lists a file outside (with the outside file's true sha256)."""

    def edit(bundle: Path, outside: Path) -> None:
        digest = sha256_file(outside / "secret.txt")
        manifest_edit(lambda m: m["files"].__setitem__(name, {"sha256": digest}))(bundle, outside)

    return edit


def external(location: str, *, listed: bool = True, changed: bool = False):
    """The model's largest tensor moved to external data at ``location`` ("{outside}": the
    directory outside the bundle), listed in the manifest or not, changed after or not."""

    def move(bundle: Path, outside: Path) -> None:
        name = externalize(bundle, location.format(outside=outside))
        if listed and not name.startswith(("..", "/")):
            rehash(bundle, name)
        if changed:
            flip_last_byte(name)(bundle, outside)

    return move


def replace_model(make: Callable[[onnx.ModelProto], bytes]) -> Callable[[Path, Path], None]:
    """model.onnx rewritten by ``make`` and its sha256 re-recorded: only the reader's other checks
    stand between it and a session."""

    def edit(bundle: Path, outside: Path) -> None:
        (bundle / MODEL).write_bytes(make(onnx.load(str(bundle / MODEL))))
        rehash(bundle, MODEL)

    return edit


def _rename_input(model: onnx.ModelProto) -> bytes:
    old = model.graph.input[0].name
    model.graph.input[0].name = "pixels"
    for node in model.graph.node:
        node.input[:] = ["pixels" if i == old else i for i in node.input]
    return model.SerializeToString()


def _fixed_batch(model: onnx.ModelProto) -> bytes:
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    return model.SerializeToString()


def _second_output(model: onnx.ModelProto) -> bytes:
    first = model.graph.node[0].output[0]
    model.graph.output.append(
        onnx.helper.make_tensor_value_info(first, onnx.TensorProto.FLOAT, None)
    )
    return model.SerializeToString()


def _to_directory(bundle: Path, outside: Path) -> None:
    (bundle / MODEL).unlink()
    (bundle / MODEL).mkdir()


def _to_fifo(bundle: Path, outside: Path) -> None:
    (bundle / MODEL).unlink()
    os.mkfifo(bundle / MODEL)


def _garbage_model(bundle: Path, outside: Path) -> None:
    (bundle / MODEL).write_bytes(b"\x08\x07garbage that is not a ModelProto")
    rehash(bundle, MODEL)


def _unlink(name: str) -> Callable[[Path, Path], None]:
    return lambda bundle, outside: (bundle / name).unlink()


def _write(name: str, data: bytes) -> Callable[[Path, Path], None]:
    return lambda bundle, outside: (bundle / name).write_bytes(data)


def _set(block: str, key: str, value: object) -> Callable[[Path, Path], None]:
    return manifest_edit(lambda m: m[block].__setitem__(key, value))


# kind -> (alteration, a fragment of the one error line)
ALTERED: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "model changed": (flip_last_byte(MODEL), "model.onnx does not match the manifest"),
    "model missing": (_unlink(MODEL), "model.onnx is missing (the manifest lists it)"),
    "model is a directory": (_to_directory, "expected a file (the manifest lists it), found a dir"),
    "model is a named pipe": (_to_fifo, "found not a regular file"),
    "model is not ONNX": (_garbage_model, "model.onnx is not an ONNX model"),
    "model symlinked out": (symlink_out(MODEL), "outside the bundle"),
    "golden symlinked out": (symlink_out(GOLDEN), "outside the bundle"),
    "manifest symlinked out": (symlink_out(MANIFEST), "outside the bundle"),
    "manifest missing": (_unlink(MANIFEST), "manifest.json is missing"),
    "manifest not JSON": (_write(MANIFEST, b"{not json"), "cannot read"),
    "manifest not a bundle's": (_write(MANIFEST, b"[]"), "is not an onnxedge manifest"),
    "manifest lists ../": (list_outside("../secret.txt"), "found '..'"),
    "manifest lists an absolute path": (list_outside("/etc/hostname"), "found an absolute path"),
    "threshold NaN": (_set("labels", "threshold", float("nan")), "threshold in [0, 1]"),
    "unknown dtype": (_set("input", "dtype", "float"), "dtype (one of float32"),
    "input renamed in the manifest": (_set("input", "name", "x"), "the manifest's input 'x'"),
    "input renamed in the model": (replace_model(_rename_input), "inputs: 'pixels'"),
    "input dims misstated": (
        _set("input", "shape", ["batch", 3, 32, 32]),
        "the manifest says float32 array of shape [N, 3, 32, 32], the model has",
    ),
    "input dtype misstated": (_set("input", "dtype", "float64"), "the manifest says float64"),
    "batch fixed in the model": (
        replace_model(_fixed_batch),
        "the model has float32 array of shape [1",
    ),
    "output renamed in the manifest": (_set("output", "name", "p"), "the manifest's output 'p'"),
    "a second output": (replace_model(_second_output), "does not match the model's outputs"),
    "external data outside": (external("../outside.bin"), "outside the bundle"),
    "external data absolute": (external("{outside}/abs.bin"), "at the absolute path"),
    "external data unlisted": (external("w.bin", listed=False), "the manifest does not list"),
    "external data changed": (external("w.bin", changed=True), "w.bin does not match the manifest"),
}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return image_folders(tmp_path_factory.mktemp("images"))


def test_every_command_that_reads_a_bundle_is_found():
    """The group's commands are either bundle commands, whose first argument is the bundle, or
    listed in NOT_BUNDLE_COMMANDS with the reason: a new command cannot slip past this suite."""
    commands = group_commands()
    assert {"check", "parity", "bench", "predict"} <= set(bundle_commands())
    for name in bundle_commands():
        assert bundle_argument(commands[name]) is not None, (
            f"`onnxedge {name}`: its first argument is not a BUNDLE; if it reads no bundle, add "
            "it to NOT_BUNDLE_COMMANDS in tests/bundle_commands.py with the reason"
        )


@pytest.mark.parametrize("kind", list(ALTERED))
@pytest.mark.parametrize("command", bundle_commands())
def test_an_altered_bundle_is_one_clean_line(bundle_copy, tmp_path, images, command, kind):
    alter, fragment = ALTERED[kind]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    alter(bundle_copy, outside)
    result = CliRunner().invoke(main, argv(command, bundle_copy, images))
    output = result.output
    assert result.exit_code == 1, output
    assert "Traceback" not in output and not isinstance(result.exception, AssertionError)
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxedge: error: "), output
    assert fragment in lines[0], lines[0]
    for path in (*outside.iterdir(), Path("/etc/hostname")):
        if path.is_file():
            assert sha256_file(path)[:16] not in output
            assert path.read_bytes()[:16].decode(errors="replace") not in output


@pytest.mark.parametrize("command", bundle_commands())
def test_the_unaltered_bundle_runs(smile_bundle, images, command):
    """The control: every command succeeds on the bundle the altered ones were made from (or,
    for a command that needs a trained bundle, gets past the reader to its own refusal)."""
    result = CliRunner().invoke(main, argv(command, smile_bundle, images))
    if command in CONTROL_REFUSALS:
        assert_one_line_error(result, CONTROL_REFUSALS[command])
        return
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("command", bundle_commands())
def test_every_bundle_command_opens_its_bundle_through_the_one_reader(
    smile_bundle, images, monkeypatch, command
):
    """`Bundle.open` replaced by a spy that refuses every bundle: each command must end in the
    spy's error. One that read the bundle its own way would run, or fail otherwise."""
    opened: list[Path] = []

    def spy(cls, path, *args, **kwargs):
        opened.append(Path(path))
        raise BundleError("refused by the spy standing in for Bundle.open")

    monkeypatch.setattr(Bundle, "open", classmethod(spy))
    result = CliRunner().invoke(main, argv(command, smile_bundle, images))
    assert result.exit_code == 1, result.output
    assert (
        result.output.strip() == "onnxedge: error: refused by the spy standing in for Bundle.open"
    )
    assert opened == [smile_bundle]
