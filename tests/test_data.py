"""The data readers (CelebA's layout, class folders) and the synthetic faces, torch-free."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from onnxedge.runtime.data import DataError, detect_layout, open_dataset
from onnxedge.runtime.data.celeba import ATTRIBUTES, IMAGES, PARTITION
from onnxedge.runtime.data.folders import hashed_split
from onnxedge.runtime.data.synth import CELEBA_ATTRIBUTES, MARKER, draw_face, write_faces
from onnxedge.runtime.errors import ArgumentError, OnnxEdgeError


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 synthetic faces in CelebA's layout (read-only: copy before changing)."""
    return write_faces(tmp_path_factory.mktemp("synth") / "faces", count=20, seed=3, workers=1).out


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _image(path: Path, size: tuple[int, int] = (20, 24), colour: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (colour, colour, colour)).save(path)


def _celeba(root: Path, rows: list[tuple[str, int, int]], names: tuple[str, ...] = ("Smiling",)):
    """A CelebA layout by hand: rows of (file, value of every attribute, partition code)."""
    for file, _, _ in rows:
        _image(root / IMAGES / file)
    lines = [str(len(rows)), " ".join(names)]
    lines += [f"{f} " + " ".join(f"{v:2d}" for _ in names) for f, v, _ in rows]
    (root / ATTRIBUTES).write_text("\n".join(lines) + "\n")
    (root / PARTITION).write_text("".join(f"{f} {code}\n" for f, _, code in rows))
    return root


_ROWS = [
    (f"{i:06d}.jpg", 1 if i % 2 else -1, (0, 0, 0, 0, 1, 1, 2, 2)[i % 8]) for i in range(1, 17)
]


# -- synthetic faces -------------------------------------------------------------------------------


def test_synth_same_seed_gives_identical_trees_and_other_seeds_differ(faces, tmp_path):
    again = write_faces(tmp_path / "again", count=20, seed=3, workers=2).out  # other worker count
    assert _tree(again) == _tree(faces)
    other = write_faces(tmp_path / "other", count=20, seed=4, workers=1).out
    assert _tree(other).keys() == _tree(faces).keys()
    differing = [n for n, data in _tree(other).items() if data != _tree(faces)[n]]
    assert len(differing) >= 20  # every image, and the attribute list


def test_synth_writes_celeba_layout_that_the_reader_reads(faces):
    with Image.open(faces / IMAGES / "000001.jpg") as image:
        assert image.format == "JPEG" and image.size == (178, 218)
    lines = (faces / ATTRIBUTES).read_text().splitlines()
    assert lines[0] == "20" and tuple(lines[1].split()) == CELEBA_ATTRIBUTES
    data = open_dataset(faces)
    assert data.layout == "celeba" and data.attribute == "Smiling"
    assert data.class_names == ("not smiling", "smiling")
    assert {name: len(s) for name, s in data.splits.items()} == {"train": 16, "val": 2, "test": 2}
    marker = json.loads((faces / MARKER).read_text())
    assert sum(sum(s.labels) for s in data.splits.values()) == marker["smiling"]
    assert "synthetic" in marker["what"]


def test_synth_label_is_the_mouth_curvature_and_some_faces_are_near_the_line():
    drawn = [draw_face(7, i)[1] for i in range(60)]
    assert all(f.attributes["Smiling"] == (1 if f.curvature > 0 else -1) for f in drawn)
    assert 15 < sum(f.smiling for f in drawn) < 45
    assert any(abs(f.curvature) < 0.3 for f in drawn) and any(abs(f.curvature) > 0.6 for f in drawn)


def test_face_style_changes_the_drawing_and_the_default_is_the_one_used():
    from onnxedge.runtime.data.synth_style import DEFAULT_STYLE, FaceStyle

    assert draw_face(7, 0) == draw_face(7, 0, DEFAULT_STYLE)
    near = [draw_face(7, i, FaceStyle(near_fraction=1.0))[1] for i in range(8)]
    assert all(0.05 <= abs(f.curvature) < 0.3 for f in near)
    plain = draw_face(7, 0, FaceStyle(expression=0.0, supersample=1))
    assert plain[0] != draw_face(7, 0)[0] and plain[1].curvature == draw_face(7, 0)[1].curvature


@pytest.mark.parametrize(
    ("style", "fragment"),
    [
        ({"near_fraction": 1.5}, "--near-fraction: expected in [0, 1], got 1.5"),
        ({"near_limit": 0.01}, "--near-limit: expected above --min-curvature"),
        ({"expression": float("nan")}, "--expression: expected a number >= 0, got nan"),
        ({"supersample": 0}, "--supersample: expected an integer in [1, 8], got 0"),
    ],
)
def test_face_style_refuses_what_cannot_be_drawn(tmp_path, style, fragment):
    from onnxedge.runtime.data.synth_style import FaceStyle

    with pytest.raises(OnnxEdgeError) as e:
        write_faces(tmp_path / "x", count=10, seed=0, workers=1, style=FaceStyle(**style))
    assert fragment in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [  # each was a TypeError ('<=' not supported, seed must be integer) or an AttributeError
        ({"count": "20"}, "expected 10 (train, val and test) to 1,000,000 faces, got '20'"),
        ({"count": None}, "expected 10 (train, val and test) to 1,000,000 faces, got None"),
        ({"seed": 2.5}, "--seed: expected an integer in [0, 2**63), got 2.5"),
        ({"seed": "1"}, "--seed: expected an integer in [0, 2**63), got '1'"),
        ({"style": None}, "expected style as a FaceStyle, got None"),
    ],
)
def test_write_faces_refuses_arguments_of_the_wrong_kind(tmp_path, arguments, fragment):
    with pytest.raises(OnnxEdgeError) as e:
        write_faces(tmp_path / "x", **{"count": 10, "workers": 1, **arguments})
    assert fragment in str(e.value)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("prepare", "fragment"),
    [
        (lambda p: p.write_text("x"), "found a file"),
        (
            lambda p: (p.mkdir(), (p / "keep.txt").write_text("mine")),
            "a directory with other files",
        ),
    ],
)
def test_synth_refuses_to_replace_what_it_did_not_write(tmp_path, prepare, fragment):
    out = tmp_path / "out"
    prepare(out)
    with pytest.raises(OnnxEdgeError, match=fragment):
        write_faces(out, count=10, seed=0, workers=1)


def test_synth_replaces_an_earlier_set(faces, tmp_path):
    out = write_faces(tmp_path / "set", count=10, seed=0, workers=1).out
    write_faces(out, count=12, seed=1, workers=1)
    assert len(list((out / IMAGES).iterdir())) == 12
    assert [p.name for p in tmp_path.iterdir()] == ["set"]  # no temporary directory left


# -- CelebA's layout -------------------------------------------------------------------------------


def test_celeba_reads_splits_and_attribute(tmp_path):
    data = open_dataset(_celeba(tmp_path, _ROWS))
    assert [len(data.split(s)) for s in ("train", "val", "test")] == [8, 4, 4]
    train = data.split("train")
    assert train.paths[0] == tmp_path / IMAGES / "000001.jpg" and train.labels[0] == 1
    assert data.describe()["images"]["test"] == {"not smiling": 2, "smiling": 2}
    assert len(data.listing_sha256()) == 64


def test_celeba_in_a_nested_folder_as_the_archive_unpacks(tmp_path):
    _celeba(tmp_path, _ROWS)
    (tmp_path / IMAGES).rename(tmp_path / "inner")
    (tmp_path / IMAGES).mkdir()
    (tmp_path / "inner").rename(tmp_path / IMAGES / IMAGES)
    assert open_dataset(tmp_path).split("train").paths[0].parent == tmp_path / IMAGES / IMAGES


def _replace_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("damage", "fragments"),
    [
        (lambda r: _replace_line(r / ATTRIBUTES, 1, "17"), ["line 1 says 17 images", "lists 16"]),
        (lambda r: _replace_line(r / ATTRIBUTES, 1, "many"), ["line 1", "number of images"]),
        (lambda r: _replace_line(r / ATTRIBUTES, 4, "000002.jpg 1 1"), ["line 4", "1 values"]),
        (lambda r: _replace_line(r / ATTRIBUTES, 5, "000003.jpg  0"), ["line 5", "1 or -1", "'0'"]),
        (lambda r: _replace_line(r / ATTRIBUTES, 5, "000001.jpg  1"), ["line 5", "listed twice"]),
        (
            lambda r: (r / IMAGES / "000005.jpg").unlink(),
            ["names 1 image(s) (000005.jpg)", "not found"],
        ),
        (
            lambda r: (r / PARTITION).write_text((r / PARTITION).read_text() + "000099.jpg 2\n"),
            ["000099.jpg", "does not list"],
        ),
        (lambda r: _replace_line(r / PARTITION, 2, "000002.jpg 3"), ["line 2", "FILE 0|1|2"]),
        (lambda r: (r / PARTITION).unlink(), [PARTITION, "missing"]),
        (
            lambda r: (shutil.rmtree(r / IMAGES), (r / IMAGES).write_text("x")),
            [f"needs the directory {IMAGES}/; found a file at"],
        ),
        (lambda r: (r / ATTRIBUTES).write_bytes(b"\xff\xfe"), ["not UTF-8"]),
        # an attribute named twice: which column labels the images would be a guess
        (lambda r: _replace_line(r / ATTRIBUTES, 2, "Smiling Smiling"), ["'Smiling' twice"]),
        # values as int() reads them but CelebA never writes them; the bad one is named
        (lambda r: _replace_line(r / ATTRIBUTES, 5, "000003.jpg 01"), ["line 5", "'01'"]),
        (lambda r: _replace_line(r / ATTRIBUTES, 5, "000003.jpg \u0661"), ["'\u0661'"]),
        # a form feed is not a line break: the line number is the editor's
        (
            lambda r: (r / ATTRIBUTES).write_text(
                (r / ATTRIBUTES)
                .read_text()
                .replace("000002.jpg", "\f000002.jpg", 1)
                .replace("000004.jpg -1", "000004.jpg 2", 1)
            ),
            ["line 6:", "'2'"],
        ),
    ],
)
def test_celeba_malformed_is_one_clear_error(tmp_path, damage, fragments):
    root = _celeba(tmp_path, _ROWS)
    damage(root)
    with pytest.raises(DataError) as caught:
        open_dataset(root)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_celeba_unknown_attribute_names_the_close_match_and_the_known_ones(tmp_path):
    root = _celeba(tmp_path, _ROWS, names=("Smiling", "Young"))
    with pytest.raises(DataError, match=r"unknown attribute 'Smilng' \(did you mean 'Smiling'\?\)"):
        open_dataset(root, attribute="Smilng")
    assert open_dataset(root, attribute="Young").class_names == ("not young", "young")
    with pytest.raises(DataError, match=r"unknown attribute ''"):  # not silently Smiling
        open_dataset(root, attribute="")
    for wrong in (3, ["Smiling"]):  # 3 was a TypeError ('int' object is not iterable)
        expected = f"expected attribute as a CelebA attribute's name, got {wrong!r}"
        with pytest.raises(ArgumentError, match=re.escape(expected)):
            open_dataset(root, attribute=wrong)
    names = (*(f"A{i}" for i in range(39)), "Smiling")
    many = _celeba(tmp_path / "many", _ROWS, names=names)
    with pytest.raises(DataError) as caught:
        open_dataset(many, attribute="Frowning")
    assert str(caught.value).endswith("has: A0, A1, A2, A3, A4, A5, A6, A7 and 32 more")


def test_celeba_single_class_attribute_is_refused(tmp_path):
    rows = [(f, -1, code) for f, _, code in _ROWS]
    with pytest.raises(DataError, match="'Smiling' is -1 for every partitioned image"):
        open_dataset(_celeba(tmp_path, rows))


def test_celeba_missing_split_is_refused(tmp_path):
    rows = [(f, v, 0 if code == 1 else code) for f, v, code in _ROWS]
    with pytest.raises(DataError, match="puts no image in val"):
        open_dataset(_celeba(tmp_path, rows))


# -- class folders ---------------------------------------------------------------------------------


def _folders(root: Path, layout: dict[str, int]) -> Path:
    for folder, count in layout.items():
        for i in range(count):
            _image(root / folder / f"img{i:03d}.png")
    return root


def test_split_class_folders(tmp_path, caplog):
    root = _folders(tmp_path, {f"{s}/{c}": 3 for s in ("train", "val", "test") for c in ("b", "a")})
    (root / "train" / "a" / "notes.txt").write_text("ignored")
    (root / "train" / "a" / ".hidden.png").write_text("ignored")
    shutil.copy(root / "train" / "b" / "img000.png", root / "train" / "b" / "saved.JFIF")
    with caplog.at_level(logging.INFO, logger="onnxedge.runtime.data.folders"):
        data = open_dataset(root)
    assert data.layout == "class-folders" and data.class_names == ("a", "b")
    assert len(data.split("train").paths) == 7  # the .jfif is a JPEG's name, taken as one
    left_out = [r.getMessage() for r in caplog.records if "not named as images" in r.getMessage()]
    assert left_out == [
        f"{root / 'train' / 'a'}: 1 entries not named as images left out, e.g. notes.txt"
    ]
    assert data.split("val").labels == (0, 0, 0, 1, 1, 1)
    assert data.labels == {"threshold": 0.5, "positive": "b", "negative": "a"}


@pytest.mark.parametrize("split", [False, True])
def test_a_loop_of_links_beside_the_class_folders_is_left_out_with_a_warning(
    tmp_path, caplog, split
):
    """One entry whose kind cannot be told stopped the whole data set: data info, evaluate and
    train failed with "Too many levels of symbolic links"."""
    folders = {"a": 10, "b": 10}
    if split:
        folders = {f"{s}/{c}": 3 for s in ("train", "val", "test") for c in ("a", "b")}
    root = _folders(tmp_path, folders)
    where = root / "train" if split else root
    (where / "x1").symlink_to(where / "x2")
    (where / "x2").symlink_to(where / "x1")
    data = open_dataset(root)
    assert data.class_names == ("a", "b")
    assert f"{where / 'x1'}: not a class folder, left out (Too many levels of symbolic links)" in (
        caplog.text
    )


def test_hashed_class_folders_split_80_10_10_by_file_name(tmp_path):
    root = _folders(tmp_path, {"smiling": 150, "not_smiling": 150})
    data = open_dataset(root)
    assert data.layout == "class-folders-hashed"
    assert data.class_names == ("not_smiling", "smiling")
    sizes = {name: len(s) for name, s in data.splits.items()}
    assert sum(sizes.values()) == 300
    assert 210 <= sizes["train"] <= 270 and 15 <= sizes["val"] <= 45 and 15 <= sizes["test"] <= 45
    for name, split in data.splits.items():
        assert all(hashed_split(p.name) == name for p in split.paths)
    assert open_dataset(root).listing_sha256() == data.listing_sha256()


def test_a_file_name_that_is_not_utf8_is_hashed_into_a_split(tmp_path):
    """HOSTILE.md: a name that is not UTF-8 is hashed over its bytes, not a crash (it was a
    UnicodeEncodeError in data info, evaluate, train and optimize); a UTF-8 name keeps its
    split."""
    root = _folders(tmp_path, {"smiling": 4, "not_smiling": 4})
    odd = os.fsdecode(b"caf\xe9.png")
    (root / "smiling" / odd).write_bytes((root / "smiling" / "img000.png").read_bytes())
    data = open_dataset(root)
    assert any(odd in {p.name for p in s.paths} for s in data.splits.values())
    # a UTF-8 name's split is what it was: its bytes are the same
    bucket = int.from_bytes(hashlib.sha256("café.png".encode()).digest()[:8], "big") % 10
    assert hashed_split("café.png") == ("train" if bucket < 8 else "val" if bucket == 8 else "test")


@pytest.mark.parametrize(
    ("layout", "fragments"),
    [
        ({"smiling": 3, "not_smiling": 0}, ["class folder", "not_smiling", "holds no image"]),
        ({"smiling": 3}, ["single class 'smiling'"]),
        ({"train/a": 2, "train/b": 2, "extra/a": 1}, ["split folders", "both", "extra"]),
        ({"train/a": 2, "train/b": 2, "val/a": 2, "val/c": 1}, ["same class folders", "val: a, c"]),
        ({"a": 2, "b": 2, "c": 2}, ["two classes", "found 3"]),
    ],
)
def test_class_folders_malformed_is_one_clear_error(tmp_path, layout, fragments):
    for folder, count in layout.items():
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            _image(tmp_path / folder / f"{i}.jpg")
    with pytest.raises(DataError) as caught:
        open_dataset(tmp_path)
    for fragment in fragments:
        assert fragment in str(caught.value), str(caught.value)


def test_layout_detection_and_what_it_refuses(tmp_path, faces):
    assert detect_layout(faces) == "celeba"
    _folders(tmp_path / "split", {"train/a": 1, "train/b": 1})
    assert detect_layout(tmp_path / "split") == "class-folders"
    _folders(tmp_path / "flat", {"a": 1, "b": 1})
    assert detect_layout(tmp_path / "flat") == "class-folders-hashed"
    with pytest.raises(DataError, match="found nothing at"):
        open_dataset(tmp_path / "absent")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="found a file at"):
        open_dataset(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="found no folder"):
        open_dataset(tmp_path / "empty")
    with pytest.raises(DataError, match="applies to CelebA's layout"):
        open_dataset(tmp_path / "flat", attribute="Smiling")
    with pytest.raises(DataError, match="no 'val' split; this class-folders data set has: train"):
        open_dataset(tmp_path / "split").split("val")
