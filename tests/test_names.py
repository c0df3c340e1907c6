"""Names are data: a file name with a tab, a newline, any control character or bytes that are not
UTF-8 keeps predict's and evaluate's rows at their fields, comes back exactly from the escaped
text and from --json, and is hashed by its bytes."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_predict_cli import good_image

from onnxedge.runtime.cli import main
from onnxedge.runtime.data import open_dataset
from onnxedge.runtime.names import escape, is_utf8, json_name, unescape

CONTROLS = [chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]] + ["\u2028", "\u2029"]


@pytest.mark.parametrize("char", CONTROLS, ids=lambda c: f"U+{ord(c):04X}")
def test_every_control_character_round_trips_and_is_escaped(char):
    name = f"a{char}b.png"
    text = escape(name)
    assert unescape(text) == name.encode()
    assert text.isprintable() and "\t" not in text and len(text.splitlines()) == 1
    assert json.loads(json.dumps(json_name(name)))["file"] == name  # UTF-8: the name itself


@pytest.mark.parametrize("byte", range(256))
def test_every_byte_round_trips(byte):
    raw = b"x" + bytes([byte]) + b"\\n.png"
    assert unescape(escape(raw)) == raw
    assert unescape(escape(os.fsdecode(raw))) == raw


def test_names_that_are_not_utf8_get_their_bytes_in_json():
    raw = b"caf\xe9\xff.png"
    record = json_name(os.fsdecode(raw))
    assert not is_utf8(raw)
    assert record["file"] == "caf\\351\\377.png"
    assert base64.b64decode(record["file_bytes"]) == raw
    assert "file_bytes" not in json_name("café.png")


def test_escape_is_the_documented_one():
    assert escape("a\\b\tc\nd\re é") == "a\\\\b\\tc\\nd\\re é"
    assert escape("\x1b[31m") == "\\033[31m"


HOSTILE = [b"tab\there.png", b"new\nline.png", b"cr\rhere.png", b"bad\xff\xfe.png", b"back\\n.png"]


def hostile_folder(root: Path) -> list[bytes]:
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for i, name in enumerate(HOSTILE):
        good_image(Path(os.fsdecode(os.path.join(os.fsencode(root), name))), i, size=(20, 20))
        names.append(os.path.join(os.fsencode(root), name))
    return sorted(names)


def run(*args: str) -> tuple[int, bytes, str]:
    result = CliRunner().invoke(main, list(args))
    assert "Traceback" not in result.stderr, result.stderr
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout_bytes, result.stderr


def test_predict_rows_keep_their_fields_and_give_back_the_names(smile_bundle, tmp_path):
    names = hostile_folder(tmp_path / "x")
    code, out, _ = run("predict", str(smile_bundle), os.fsdecode(tmp_path / "x"))
    assert code == 0
    rows = out.decode("utf-8").splitlines()
    assert len(rows) == len(names)
    assert all(len(row.split("\t")) == 3 for row in rows)
    assert sorted(unescape(row.split("\t")[0]) for row in rows) == names


def test_predict_json_is_strict_utf8_and_gives_back_the_names(smile_bundle, tmp_path):
    names = hostile_folder(tmp_path / "x")
    code, out, _ = run("predict", str(smile_bundle), os.fsdecode(tmp_path / "x"), "--json")
    assert code == 0
    records = [json.loads(line) for line in out.decode("utf-8", errors="strict").splitlines()]
    assert len(records) == len(names)
    raw = [
        base64.b64decode(r["file_bytes"]) if "file_bytes" in r else r["file"].encode()
        for r in records
    ]
    assert sorted(raw) == names
    for r in records:  # no lone surrogates, which strict parsers refuse
        r["file"].encode("utf-8")


def class_folders(root: Path) -> Path:
    for split in ("train", "test"):
        for label in ("no", "yes"):
            folder = root / split / label
            for i, name in enumerate(HOSTILE):
                path = os.path.join(os.fsencode(folder), name)
                good_image(Path(os.fsdecode(path)), i, size=(20, 20))
    return root


def test_data_info_and_evaluate_take_names_that_are_not_utf8(smile_bundle, tmp_path):
    root = class_folders(tmp_path / "d")
    digest = open_dataset(root).listing_sha256()
    assert len(digest) == 64
    code, out, _ = run("data", "info", str(root), "--json")
    assert code == 0 and json.loads(out.decode("utf-8"))["listing_sha256"] == digest
    report = tmp_path / "r.json"
    code, out, err = run(
        "evaluate", str(smile_bundle), "--data", str(root), "--split", "test", "--json", str(report)
    )
    assert code == 0, err
    assert json.loads(report.read_bytes().decode("utf-8"))["evaluated"] == 2 * len(HOSTILE)


def test_a_listing_hash_is_over_the_names_bytes(tmp_path):
    a = open_dataset(class_folders(tmp_path / "a")).listing_sha256()
    (tmp_path / "b").mkdir()
    b_root = class_folders(tmp_path / "b")
    os.rename(
        os.path.join(os.fsencode(b_root / "test" / "no"), b"bad\xff\xfe.png"),
        os.path.join(os.fsencode(b_root / "test" / "no"), b"bad\xff\xfd.png"),
    )
    assert open_dataset(b_root).listing_sha256() != a


def test_the_lines_that_say_what_was_written_keep_a_name_on_one_line(smile_bundle, tmp_path):
    """`pack`'s and the other commands' "wrote X" lines printed a folder named with a newline
    raw, as two lines; the bench report's command did too, inside its Markdown bullet."""
    from onnxedge.runtime.bench.report import command_line

    out = tmp_path / "two\nlines"
    result = CliRunner().invoke(main, ["pack", str(smile_bundle), "--out", str(out)])
    assert result.exit_code == 0, result.output
    *sizes, line = result.output.splitlines()  # a line a file, then what was packed where
    assert sizes and not any(s.startswith("lines") for s in sizes)
    assert line.startswith("packed ") and f"into {tmp_path}/two\\nlines: " in line
    assert (out / "manifest.json").is_file()  # the folder has its real name
    assert command_line(["bench", "b\nx", "--iters", "2"]) == "onnxedge bench 'b\\nx' --iters 2"
