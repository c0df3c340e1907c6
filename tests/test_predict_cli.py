"""`onnxedge predict`: a line per file, bad files reported one by one while the rest go on."""

from __future__ import annotations

import base64
import json
import os
import pty
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from test_preprocess import mode_files, noise_bytes, png_claiming

from onnxedge.runtime.bundle.reader import MODEL
from onnxedge.runtime.classifier.classifier import Classifier
from onnxedge.runtime.classifier.files import find_images
from onnxedge.runtime.cli import main


def predict(*args: object) -> tuple[int, list[str], str]:
    result = CliRunner().invoke(main, ["predict", *map(str, args)])
    assert "Traceback" not in result.output + result.stderr
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout.splitlines(), result.stderr


def predict_json(*args: object) -> tuple[int, list[dict], str]:
    code, lines, err = predict(*args, "--json")
    return code, [json.loads(line) for line in lines], err


def good_image(path: Path, seed: int, size: tuple[int, int] = (90, 70), mode: str = "RGB") -> Path:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.convert(mode).save(path)
    return path


@pytest.fixture
def mixed(tmp_path: Path) -> tuple[Path, dict[str, str | None]]:
    """A directory of good and bad files; the expected error (None: a prediction) for each file
    the walk must report, in the order it must report them."""
    root = tmp_path / "photos"
    good_image(root / "a.jpg", 1)
    good_image(root / "b.PNG", 2, mode="L")
    (root / "c.jpg").write_bytes(b"")
    data = noise_bytes("PNG")
    (root / "d.png").write_bytes(data[: len(data) // 2])
    data = noise_bytes("JPEG")
    (root / "e.jpg").write_bytes(data[: len(data) // 2])
    (root / "f.png").write_text("not a picture\n")
    (root / "g.png").write_bytes(png_claiming(20000, 20000))  # above PIL's hard limit
    (root / "h.png").write_bytes(png_claiming(9000, 9000))  # above ours, below PIL's warning
    (root / "i.png").write_bytes(png_claiming(10000, 10000))  # PIL warns: here an error
    (root / "j.jpg").mkdir()
    good_image(root / "j.jpg" / "inside.png", 3)  # not entered: j.jpg is reported instead
    good_image(root / "sub" / "k.webp", 4, size=(300, 200))
    good_image(root / ".hidden.png", 5)  # skipped
    (root / "notes.txt").write_text("skipped: not named like an image")
    good_image(root / "sub" / "l.bmp", 6, mode="RGB")
    expected = {
        "a.jpg": None,
        "b.PNG": None,
        "c.jpg": "expected an image file, found an empty file (0 bytes)",
        "d.png": "cannot decode the image: image file is truncated",
        "e.jpg": "cannot decode the image: image file is truncated",
        "f.png": "expected an image file, found no format PIL reads",
        "g.png": "refused as a decompression bomb",
        "h.png": "9000x9000 is 81,000,000 pixels, more than the limit of 64,000,000",
        "i.png": "refused as a decompression bomb",
        "j.jpg": "expected an image file, found a directory",
        "sub/k.webp": None,
        "sub/l.bmp": None,
    }
    return root, {str(root / name): error for name, error in expected.items()}


def test_mixed_directory(smile_bundle, mixed):
    root, expected = mixed
    code, records, err = predict_json(smile_bundle, root)
    assert code == 1
    assert [r["file"] for r in records] == list(expected)
    for record in records:
        error = expected[record["file"]]
        if error is None:
            assert set(record) == {"file", "probability", "label", "positive"}, record
            assert 0.0 < record["probability"] < 1.0
        else:
            assert set(record) == {"file", "error"}, record
            assert error in record["error"], record
    assert "12 files: 4 classified, 8 failed (CPUExecutionProvider)" in err
    # the predictions are those of the Python API
    clf = Classifier.from_bundle(smile_bundle, provider="cpu")
    good = [f for f, e in expected.items() if e is None]
    api = clf.predict_images(good)
    by_file = {r["file"]: r for r in records}
    assert [by_file[f]["probability"] for f in good] == pytest.approx(
        [p.probability for p in api], abs=1e-6
    )
    assert [by_file[f]["label"] for f in good] == [p.label for p in api]


def test_human_output(smile_bundle, mixed):
    root, expected = mixed
    code, lines, _ = predict(smile_bundle, root)
    assert code == 1 and len(lines) == len(expected)
    for line, (file, error) in zip(lines, expected.items(), strict=True):
        name, middle, last = line.split("\t")
        assert name == file
        if error is None:
            assert 0.0 < float(middle) < 1.0 and len(middle) == 6  # four decimals
            assert last in ("smiling", "not smiling")
        else:
            assert middle == "ERROR" and error in last


def test_all_good_files_exit_zero(smile_bundle, tmp_path):
    paths = [good_image(tmp_path / f"{i}.png", i) for i in range(5)]
    code, records, err = predict_json(smile_bundle, *paths)
    assert code == 0, err
    assert [r["file"] for r in records] == [str(p) for p in paths]
    assert "5 files: 5 classified, 0 failed" in err


def test_batch_size_does_not_change_results(smile_bundle, tmp_path):
    paths = [good_image(tmp_path / f"{i}.png", i, size=(40 + i, 60)) for i in range(7)]
    runs = [predict_json(smile_bundle, tmp_path, "--batch-size", n)[1] for n in (1, 3, 32)]
    for records in runs[1:]:
        assert [r["file"] for r in records] == [str(p) for p in paths]
        assert [r["probability"] for r in records] == pytest.approx(
            [r["probability"] for r in runs[0]], abs=1e-6
        )


def test_threshold_sets_the_label(smile_bundle, tmp_path):
    path = good_image(tmp_path / "x.png", 0)
    _, low, _ = predict_json(smile_bundle, path, "--threshold", "0")
    _, high, _ = predict_json(smile_bundle, path, "--threshold", "1")
    assert low[0]["label"] == "smiling" and low[0]["positive"] is True
    assert high[0]["label"] == "not smiling" and high[0]["positive"] is False


def test_explicit_file_is_tried_whatever_its_extension(smile_bundle, tmp_path):
    path = tmp_path / "photo.data"
    Image.new("RGB", (64, 64), (10, 200, 30)).save(path, format="PNG")
    code, records, _ = predict_json(smile_bundle, path, tmp_path / "missing.jpg")
    assert code == 1
    assert "probability" in records[0]
    assert records[1]["error"] == "expected an image file, found nothing there"


def test_each_mode_is_classified(smile_bundle, tmp_path):
    files = mode_files(tmp_path / "modes")
    code, records, err = predict_json(smile_bundle, *(p for p, _ in files.values()))
    assert code == 0, err
    assert len(records) == len(files) and all("probability" in r for r in records)


def test_bomb_warning_is_an_error_not_a_warning(smile_bundle, tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(10000, 10000))  # 100 MP: PIL only warns
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, records, _ = predict_json(smile_bundle, path)
    assert code == 1
    assert "refused as a decompression bomb" in records[0]["error"]
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_max_pixels_option(smile_bundle, tmp_path):
    pil_limit = Image.MAX_IMAGE_PIXELS
    path = good_image(tmp_path / "x.png", 0, size=(100, 100))
    code, records, _ = predict_json(smile_bundle, path, "--max-pixels", "9999")
    assert code == 1 and "more than the limit of 9,999" in records[0]["error"]
    # above PIL's own limit the option governs: the header passes, the fake data then fails
    (tmp_path / "big.png").write_bytes(png_claiming(20000, 20000))
    code, records, _ = predict_json(smile_bundle, tmp_path / "big.png", "--max-pixels", "5e8")
    assert code == 2  # an integer option
    code, records, _ = predict_json(smile_bundle, tmp_path / "big.png", "--max-pixels", "500000000")
    assert code == 1
    assert "bomb" not in records[0]["error"] and "cannot decode" in records[0]["error"]
    assert pil_limit == Image.MAX_IMAGE_PIXELS  # the command leaves PIL as it found it


def test_undecodable_file_names_are_printed(smile_bundle, tmp_path):
    name = os.fsdecode(b"caf\xff.png")
    try:
        good_image(tmp_path / name, 0)
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system does not take undecodable names")
    code, lines, _ = predict(smile_bundle, tmp_path)
    assert code == 0 and lines[0].startswith(str(tmp_path / "caf\\377.png") + "\t")
    code, records, _ = predict_json(smile_bundle, tmp_path)
    assert code == 0 and records[0]["file"] == str(tmp_path / "caf\\377.png")
    assert base64.b64decode(records[0]["file_bytes"]) == os.fsencode(tmp_path / name)


# -- paths named on the command line that cannot be read -----------------------------------------


def unreadable_kinds(root: Path) -> dict[Path, str]:
    """Paths that cannot be read as images, made on the real file system (no simulation; root
    reads them no better than anyone), each with the reason its ERROR line gives."""
    root.mkdir(parents=True, exist_ok=True)
    good = good_image(root / "good.jpg", 0)
    kinds = {
        root / "missing.jpg": "expected an image file, found nothing there",
        root / "broken.jpg": "expected an image file, found a symbolic link to nothing",
        root / "loop.jpg": "cannot read: Too many levels of symbolic links",
        root / "good.jpg" / "inside.jpg": "cannot read: Not a directory",
        root / ("n" * 300 + ".jpg"): "cannot read: File name too long",
    }
    (root / "broken.jpg").symlink_to(root / "nowhere.jpg")
    (root / "loop.jpg").symlink_to(root / "loop.jpg")
    if hasattr(os, "mkfifo"):  # a reader that opened it would wait for a writer forever
        os.mkfifo(root / "pipe.jpg")
        kinds[root / "pipe.jpg"] = "expected an image file, found a named pipe"
    if os.path.exists(os.devnull) and not os.path.isfile(os.devnull):
        kinds[Path(os.devnull)] = "expected an image file, found a device"
    assert good.is_file()
    return kinds


@pytest.mark.parametrize("decode_threads", ["1", "3"])
def test_named_paths_that_cannot_be_read_are_error_lines_among_the_others(
    smile_bundle, tmp_path, decode_threads
):
    kinds = unreadable_kinds(tmp_path / "kinds")
    first, last = good_image(tmp_path / "first.png", 1), good_image(tmp_path / "last.jpg", 2)
    named = [first, *kinds, last]
    code, records, err = predict_json(
        smile_bundle, *named, "--decode-threads", decode_threads, "--batch-size", 2
    )
    assert code == 1
    assert [r["file"] for r in records] == [str(p) for p in named]
    assert "probability" in records[0] and "probability" in records[-1]
    for record, (path, reason) in zip(records[1:-1], kinds.items(), strict=True):
        assert record == {"file": str(path), "error": reason}
    assert err.strip() == (
        f"{len(named)} files: 2 classified, {len(kinds)} failed (CPUExecutionProvider)"
    )


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="running as root, which reads a file and lists a directory whatever their mode "
    "(test_cli_hardening.py simulates the same errors)",
)
def test_named_paths_without_permission_are_error_lines(smile_bundle, tmp_path):
    locked_file = good_image(tmp_path / "locked.jpg", 0)
    locked_dir = tmp_path / "locked"
    good_image(locked_dir / "inside.png", 1)
    last = good_image(tmp_path / "last.png", 2)
    locked_file.chmod(0)
    locked_dir.chmod(0)
    try:
        code, records, _ = predict_json(smile_bundle, locked_file, locked_dir, last)
    finally:
        locked_dir.chmod(0o755)
    assert code == 1
    assert [r["file"] for r in records] == [str(locked_file), str(locked_dir), str(last)]
    assert records[0]["error"] == "cannot read: Permission denied"
    assert records[1]["error"] == "cannot list the directory: Permission denied"
    assert "probability" in records[2]


def test_a_file_without_read_permission_is_not_a_usage_error(smile_bundle, tmp_path, monkeypatch):
    """What a user who may not read a file sees, simulated for root: ``os.access`` says no and
    ``open`` fails. click's ``Path`` type checks ``os.access`` on every existing path unless told
    not to, which made this a usage error (exit 2) that stopped the other files."""
    import builtins

    locked = good_image(tmp_path / "locked.jpg", 0)
    last = good_image(tmp_path / "last.png", 1)
    real_access, real_open = os.access, builtins.open

    def access(path, mode, *args, **kwargs):
        return False if os.fspath(path) == str(locked) else real_access(path, mode, *args, **kwargs)

    def guarded_open(path, *args, **kwargs):
        if isinstance(path, (str, os.PathLike)) and os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(builtins, "open", guarded_open)
    code, records, err = predict_json(smile_bundle, locked, last)
    assert code == 1, err
    assert records[0] == {"file": str(locked), "error": "cannot read: Permission denied"}
    assert "probability" in records[1]


# -- errors that stop the command -----------------------------------------------------------------


def one_line_error(code: int, stderr: str) -> str:
    assert code == 1
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith("onnxedge: error: "), stderr
    return lines[-1]


def test_no_path_is_a_usage_error(smile_bundle):
    result = CliRunner().invoke(main, ["predict", str(smile_bundle)])
    assert result.exit_code == 2 and "Missing argument 'PATH...'" in result.output


@pytest.mark.parametrize(
    "option", [["--batch-size", "0"], ["--threshold", "1.5"], ["--providers", "tpu"]]
)
def test_bad_options_are_usage_errors(smile_bundle, tmp_path, option):
    result = CliRunner().invoke(main, ["predict", str(smile_bundle), str(tmp_path), *option])
    assert result.exit_code == 2, result.output


def test_hash_mismatch(bundle_copy, tmp_path):
    data = bytearray((bundle_copy / MODEL).read_bytes())
    data[100] ^= 0xFF
    (bundle_copy / MODEL).write_bytes(bytes(data))
    code, lines, err = predict(bundle_copy, good_image(tmp_path / "x.png", 0))
    assert lines == []
    assert "does not match the manifest: expected sha256" in one_line_error(code, err)


def test_not_a_bundle(tmp_path):
    code, _, err = predict(tmp_path, good_image(tmp_path / "x.png", 0))
    assert "is not a complete bundle: manifest.json is missing" in one_line_error(code, err)


def test_cuda_where_it_cannot_load(smile_bundle, tmp_path):
    code, _, err = predict(smile_bundle, good_image(tmp_path / "x.png", 0), "--providers", "cuda")
    if code == 0:  # a machine where the CUDA EP loads
        assert "(CUDAExecutionProvider)" in err
    else:
        line = one_line_error(code, err)
        assert "the CUDA execution provider, which did not load here" in line
        assert "install onnxedge[cuda] on a GPU machine, or use --providers cpu here" in line


def test_no_images_found(smile_bundle, tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = predict(smile_bundle, tmp_path / "empty")
    assert "expected image files, found none in: " in one_line_error(code, err)


# -- the walk -------------------------------------------------------------------------------------


def test_find_images_is_lazy_and_sorted(tmp_path):
    for name in ("b.png", "a.png", "z/c.jpg", "y/d.tif"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    walk = find_images([str(tmp_path)])
    assert iter(walk) is walk  # a generator, not a list
    assert list(walk) == [str(tmp_path / n) for n in ("a.png", "b.png", "y/d.tif", "z/c.jpg")]


def test_unreadable_directory_is_reported(smile_bundle, tmp_path, monkeypatch):
    """A directory that cannot be listed is one error line; the walk goes on. (Simulated: root,
    as in CI containers, may list any directory.)"""
    good_image(tmp_path / "a.png", 0)
    locked = tmp_path / "locked"
    locked.mkdir()
    good_image(tmp_path / "m" / "b.png", 1)
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(locked))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    code, records, _ = predict_json(smile_bundle, tmp_path)
    assert code == 1
    assert [r["file"] for r in records] == [
        str(tmp_path / "a.png"),
        str(locked),
        str(tmp_path / "m" / "b.png"),
    ]
    assert records[1]["error"] == "cannot list the directory: Permission denied"
    assert "probability" in records[0] and "probability" in records[2]


# -- the progress bar -----------------------------------------------------------------------------


CLI = [sys.executable, "-c", "from onnxedge.runtime.cli import main; main()"]


def run_with_tty_stderr(args: list[str]) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal and stdout on a pipe."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*CLI, *args],
        stdout=subprocess.PIPE,
        stderr=slave,
        text=True,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    out = proc.stdout.read()
    code = proc.wait(timeout=120)
    os.close(master)
    return code, out, b"".join(chunks).decode(errors="replace")


def test_progress_bar_only_on_a_terminal(smile_bundle, tmp_path):
    for i in range(3):
        good_image(tmp_path / f"{i}.png", i)
    code, out, terminal = run_with_tty_stderr(["predict", str(smile_bundle), str(tmp_path)])
    assert code == 0
    assert "3 files, 0 failed" in terminal  # the bar's text
    assert "\x1b[" not in out and len(out.splitlines()) == 3  # stdout stays clean
    code, out, terminal = run_with_tty_stderr(
        ["predict", str(smile_bundle), str(tmp_path), "--no-progress"]
    )
    assert code == 0 and "files, 0 failed" not in terminal and "\x1b[" not in terminal
    assert "3 files: 3 classified, 0 failed" in terminal


def test_no_progress_bar_when_stderr_is_not_a_terminal(smile_bundle, tmp_path):
    good_image(tmp_path / "x.png", 0)
    code, _, err = predict(smile_bundle, tmp_path)
    assert (
        code == 0
        and "\x1b[" not in err
        and err.strip().splitlines() == ["1 file: 1 classified, 0 failed (CPUExecutionProvider)"]
    )


def test_broken_pipe_is_one_line(smile_bundle, tmp_path):
    """`onnxedge predict ... | head -0`: the reader is gone before the first line."""
    for i in range(3):
        good_image(tmp_path / f"{i}.png", i, size=(20, 20))
    proc = subprocess.Popen(
        [*CLI, "predict", str(smile_bundle), str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=120)
    assert code == 1
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err
    assert err.splitlines() == [
        "onnxedge: error: cannot write the results to standard output: Broken pipe"
    ]
