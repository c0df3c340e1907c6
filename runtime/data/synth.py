"""Synthetic faces in CelebA's layout: a data set the project can train on without any download.

`write_faces` draws ``count`` faces into ``out/img_align_celeba/NNNNNN.jpg`` (178x218 JPEGs, as
CelebA's aligned crops) and writes ``list_attr_celeba.txt`` and ``list_eval_partition.txt`` in
CelebA's formats, so every reader of real CelebA reads them unchanged.

What varies, each drawn from the image's own random stream (`numpy.random.default_rng([seed,
index])`, so one seed gives identical bytes, image by image, whatever the worker count):

1. The face: position, size, tilt, skin and hair colour, hair style (short, long, bald), eyes,
   eyebrows, nose, glasses, an open or closed mouth of varied width and lip thickness.
2. The picture: a background of two colours with 3-12 shapes of clutter, a shirt, directional
   lighting and exposure, Gaussian blur, sensor noise and JPEG quality 55-95.
3. The label: the mouth's curvature ``c`` in [-1, 1]. ``Smiling`` is ``c > 0`` (corners up). A
   fraction of faces (`FaceStyle.near_fraction`) has ``|c|`` below `FaceStyle.near_limit`, a mouth
   almost straight, so that a weaker model, or a badly quantised one, loses accuracy there.

How the faces are drawn is a `FaceStyle` (`onnxedge.runtime.data.synth_style`, set by `onnxedge
data synth`'s options). The rest of the face follows the mouth in proportion to ``|c|``
(`FaceStyle.expression`): a smile raises the
cheeks (a blush) and narrows the eyes, a frown pulls the brows down at their inner ends; near the
decision line the face looks neutral and only the mouth's shape tells the classes apart. Other
attributes that the drawing decides are filled in (``Eyeglasses``, ``Black_Hair``, ``Blond_Hair``,
``Brown_Hair``, ``Gray_Hair``, ``Bald``, ``Mouth_Slightly_Open``, ``Pale_Skin``, ``Wearing_Hat``
is never drawn); the attributes the drawing does not model are -1 for every face.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from onnxedge.runtime.classifier.args import check_count, is_integer
from onnxedge.runtime.data.synth_draw import (
    HEIGHT,
    WIDTH,
    Canvas,
    arc_points,
    background,
    label_curvature,
    light_ramp,
    mouth_curve,
    shade,
)
from onnxedge.runtime.data.synth_style import DEFAULT_STYLE, MAX_FACES, FaceStyle
from onnxedge.runtime.errors import OnnxEdgeError

log = logging.getLogger(__name__)

SYNTH_VERSION = 4  # bumped whenever the drawing changes, so a set records what drew it
MARKER = "synth.json"  # what `write_faces` writes next to CelebA's files; readers ignore it

# CelebA's 40 attribute names, in its file's order.
_CELEBA_HEADER = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
    "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes "
    "No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling "
    "Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace "
    "Wearing_Necktie Young"
)
CELEBA_ATTRIBUTES = tuple(_CELEBA_HEADER.split())

_SKIN = np.array(
    [
        (255, 224, 196),
        (250, 210, 170),
        (234, 189, 142),
        (214, 160, 112),
        (186, 128, 84),
        (141, 90, 56),
        (98, 62, 38),
        (70, 44, 28),
    ],
    dtype=np.float64,
)
_HAIR = {
    "Black_Hair": (28, 24, 22),
    "Brown_Hair": (96, 62, 36),
    "Blond_Hair": (222, 190, 124),
    "Gray_Hair": (165, 165, 162),
    "Red": (150, 62, 30),
}


@dataclasses.dataclass(frozen=True)
class Face:
    """What was drawn for one image: the label and the attributes the drawing decides."""

    curvature: float
    attributes: dict[str, int]  # CelebA attribute name -> 1 or -1

    @property
    def smiling(self) -> bool:
        return self.curvature > 0


@dataclasses.dataclass(frozen=True)
class SynthResult:
    """What `write_faces` wrote."""

    out: Path
    count: int
    seed: int
    smiling: int  # faces with Smiling = 1
    near: int  # faces with |curvature| < the style's near_limit
    splits: dict[str, int]  # train / val / test -> images

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "out": str(self.out)}


# -- drawing ---------------------------------------------------------------------------------------


def draw_face(seed: int, index: int, style: FaceStyle = DEFAULT_STYLE) -> tuple[bytes, Face]:
    """One face as JPEG bytes, and what was drawn; the same (seed, index, style) gives the same
    bytes."""
    from PIL import Image, ImageFilter

    rng = np.random.default_rng([seed, index])
    big = (WIDTH * style.supersample, HEIGHT * style.supersample)
    image = background(rng, *big, style.supersample)

    # 1. The face: CelebA's aligned crops put the eyes near y = 112 and the mouth near y = 150.
    scale = rng.uniform(0.85, 1.15)
    cx = WIDTH / 2 + float(np.clip(rng.normal(0, 5), -12, 12))
    cy = 122 + float(np.clip(rng.normal(0, 5), -12, 12))
    rx = style.face_half_size[0] * scale * rng.uniform(0.9, 1.1)
    ry = style.face_half_size[1] * scale * rng.uniform(0.92, 1.08)
    canvas = Canvas(image, (cx, cy), math.radians(rng.uniform(-12, 12)), style.supersample)

    pale = rng.random() < 0.15
    skin = _SKIN[0] if pale else _SKIN[int(rng.integers(1, len(_SKIN)))]
    skin = np.clip(skin * rng.uniform(0.9, 1.08) + rng.normal(0, 6, 3), 0, 255)
    hair_name = list(_HAIR)[int(rng.integers(len(_HAIR)))]
    hair = np.clip(
        np.asarray(_HAIR[hair_name]) * rng.uniform(0.8, 1.15) + rng.normal(0, 8, 3), 0, 255
    )
    hair_style = ("short", "long", "bald")[int(rng.choice(3, p=[0.55, 0.35, 0.10]))]

    if hair_style == "long":
        canvas.ellipse(cx, cy + 0.35 * ry, rx * 1.35, ry * 1.3, hair)
    shirt = rng.uniform(0, 255, 3)
    canvas.ellipse(cx, cy + 2.05 * ry, rx * 2.2, ry * 0.95, shirt)  # shoulders
    canvas.polygon(
        [(cx - 0.42 * rx, cy + 0.6 * ry), (cx + 0.42 * rx, cy + 0.6 * ry),
         (cx + 0.5 * rx, cy + 1.3 * ry), (cx - 0.5 * rx, cy + 1.3 * ry)],
        shade(skin, 0.88),
    )  # fmt: skip
    for side in (-1, 1):  # ears
        canvas.ellipse(
            cx + side * rx * 0.97, cy + 0.02 * ry, rx * 0.16, ry * 0.2, shade(skin, 0.93)
        )
    canvas.ellipse(cx, cy, rx, ry, skin)
    if hair_style != "bald":
        fringe = cy - ry * rng.uniform(0.38, 0.62)
        cap = arc_points(cx, cy - 0.02 * ry, rx * 1.07, ry * 1.08, math.pi, 2 * math.pi, 30)
        wave = rng.uniform(0, 4)
        xs = np.linspace(cx + rx * 1.07, cx - rx * 1.07, 9).tolist()
        edge = [(x, fringe + wave * math.sin(i * 1.3)) for i, x in enumerate(xs)]
        canvas.polygon([*cap, *edge], hair)

    # The expression: its strength grows with |curvature|, so a face near the decision line
    # looks neutral and only its mouth tells (see `FaceStyle.expression`).
    curvature = label_curvature(rng, style)
    smile, frown = max(curvature, 0.0) * style.expression, max(-curvature, 0.0) * style.expression
    if smile > 0:  # raised cheeks
        blush = skin + (np.array([235.0, 95.0, 105.0]) - skin) * min(1.0, 0.55 * smile)
        for side in (-1, 1):
            canvas.ellipse(cx + side * rx * 0.56, cy + 0.3 * ry, rx * 0.2, ry * 0.13, blush)

    # 2. Eyes (narrowed by a smile), eyebrows (pulled down at the inner ends by a frown), nose,
    # glasses.
    eye_y = cy - ry * rng.uniform(0.12, 0.2)
    eye_dx = rx * rng.uniform(0.36, 0.44)
    eye_r = rx * rng.uniform(0.1, 0.14)
    iris = rng.uniform(20, 140, 3)
    brow_lift = ry * rng.uniform(0.12, 0.2)
    brow_tilt = rng.uniform(-0.12, 0.12)
    eye_open = 1.0 - 0.5 * min(1.0, smile)
    knit = frown * ry * 0.14  # the inner ends of the brows this much lower
    for side in (-1, 1):
        ex = cx + side * eye_dx
        canvas.ellipse(ex, eye_y, eye_r * 1.4, eye_r * eye_open, (245, 245, 240))
        iris_r = eye_r * 0.62
        canvas.ellipse(ex + rng.uniform(-1, 1), eye_y, iris_r, min(iris_r, eye_r * eye_open), iris)
        canvas.ellipse(ex, eye_y, eye_r * 0.3, eye_r * 0.3 * eye_open, (10, 10, 10))
        by = eye_y - brow_lift
        brow = [
            (ex - side * eye_r * 1.5, by + side * brow_tilt * 10 + knit),
            (ex + side * eye_r * 1.6, by - 2),
        ]
        canvas.line(brow, shade(hair, 0.8), rng.uniform(1.5, 3.5))
    nose_y = cy + ry * rng.uniform(0.18, 0.28)
    nose_w = rx * rng.uniform(0.1, 0.16)
    canvas.line(
        [(cx, eye_y + eye_r), (cx + nose_w * 0.3, nose_y), (cx - nose_w, nose_y + 1)],
        shade(skin, 0.72), rng.uniform(1.0, 2.0),
    )  # fmt: skip
    glasses = rng.random() < 0.15
    if glasses:
        frame = rng.uniform(0, 80, 3)
        for side in (-1, 1):
            canvas.outline(cx + side * eye_dx, eye_y, eye_r * 2.0, eye_r * 1.6, frame, 1.6)
        canvas.line(
            [(cx - eye_dx + eye_r * 2, eye_y), (cx + eye_dx - eye_r * 2, eye_y)], frame, 1.6
        )

    # 3. The mouth: its curvature is the label.
    mouth_y = cy + ry * rng.uniform(0.5, 0.6)
    half_width = rx * rng.uniform(*style.mouth_half_width)
    sag = curvature * half_width * style.sag  # corners this far above (below) the middle
    lip = np.clip(shade(skin, rng.uniform(0.45, 0.7)) + np.array([45.0, -8.0, -8.0]), 0, 255)
    parting = shade(lip, rng.uniform(0.35, 0.6))
    thickness = rng.uniform(*style.lip_thickness)
    mouth_open = rng.random() < 0.3
    gap = ry * rng.uniform(0.05, 0.11) if mouth_open else 0.0
    # Upper lip, (the opening), lower lip: bands that all bend as the curvature says.
    top = mouth_curve(cx, mouth_y - thickness / 2, half_width * 0.96, sag)
    middle = mouth_curve(cx, mouth_y, half_width, sag)
    low = mouth_curve(cx, mouth_y + gap, half_width * (0.92 if mouth_open else 1.0), sag * 1.1)
    bottom = mouth_curve(cx, mouth_y + gap + thickness / 2, half_width * 0.9, sag * 1.1)
    canvas.polygon([*top, *reversed(bottom)], lip)
    if mouth_open:
        canvas.polygon([*middle, *reversed(low)], (70, 20, 25))
        if rng.random() < 0.6:
            teeth = mouth_curve(cx, mouth_y + gap * 0.3, half_width * 0.8, sag)
            canvas.line(teeth, (235, 232, 222), gap * 0.45)
    else:
        canvas.line(middle, parting, rng.uniform(0.8, 1.6))

    # 4. The picture: reduce, light, blur, noise, JPEG.
    image = image.resize((WIDTH, HEIGHT), Image.Resampling.LANCZOS)
    pixels = np.asarray(image, dtype=np.float64)
    ramp = light_ramp(WIDTH, HEIGHT, rng.uniform(0, 2 * math.pi)) / HEIGHT
    light = rng.uniform(0.7, 1.25) * (1 + rng.uniform(0, 0.8) * ramp)
    pixels = pixels * light[..., None] + rng.normal(0, rng.uniform(0, 7), pixels.shape)
    image = Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8), "RGB")
    blur = rng.uniform(0, 1.3)
    if blur > 0.25:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(rng.integers(55, 96)))

    attributes = {name: -1 for name in CELEBA_ATTRIBUTES}
    attributes["Smiling"] = 1 if curvature > 0 else -1
    attributes["Mouth_Slightly_Open"] = 1 if mouth_open else -1
    attributes["Eyeglasses"] = 1 if glasses else -1
    attributes["Pale_Skin"] = 1 if pale else -1
    attributes["Bald"] = 1 if hair_style == "bald" else -1
    if hair_style != "bald" and hair_name in attributes:
        attributes[hair_name] = 1
    return buffer.getvalue(), Face(curvature=float(curvature), attributes=attributes)


# -- the set ---------------------------------------------------------------------------------------


def file_name(index: int, count: int) -> str:
    """CelebA's names: 000001.jpg, ... (six digits, wider when the set needs more)."""
    return f"{index + 1:0{max(6, len(str(count)))}d}.jpg"


def partition(index: int, count: int) -> int:
    """CelebA's partition codes: the first 80% train (0), the next 10% val (1), then test (2)."""
    if index < int(count * 0.8):
        return 0
    return 1 if index < int(count * 0.9) else 2


def _draw_chunk(
    args: tuple[int, int, int, int, str, FaceStyle],
) -> list[tuple[int, float, dict[str, int]]]:
    seed, start, stop, count, directory, style = args
    drawn = []
    for index in range(start, stop):
        data, face = draw_face(seed, index, style)
        Path(directory, file_name(index, count)).write_bytes(data)
        drawn.append((index, face.curvature, face.attributes))
    return drawn


def write_faces(
    out: str | Path,
    *,
    count: int = 6000,
    seed: int = 0,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    style: FaceStyle = DEFAULT_STYLE,
    replace: bool = True,
) -> SynthResult:
    """Draw ``count`` faces into ``out`` in CelebA's layout, atomically: the set is drawn in a
    temporary directory beside ``out`` and renamed into place, so ``out`` is a complete set or
    absent. An existing ``out`` is replaced only if it is empty or an earlier synthetic set (it
    holds `MARKER`); anything else is refused. ``progress(done, count)`` is called as faces are
    drawn; ``workers`` processes draw them (None: one per CPU, at most 4); ``style`` says how
    (`FaceStyle`; the default draws the set `make train` uses). The set is moved into place as a
    bundle is (`move_into_place`: mode 0755 when new, else the old set's mode and owner; the old
    set whole until one swap replaces it). Two runs on one ``out`` take
    turns (`bundle_lock`); with ``replace`` False (``--force`` not given) one that finds ``out``
    written by the other meanwhile fails instead of replacing it."""
    out = Path(out)
    if not isinstance(style, FaceStyle):
        raise OnnxEdgeError(f"expected style as a FaceStyle, got {style!r}")
    style.check()
    if not (is_integer(count) and 10 <= count <= MAX_FACES):  # "10", None: were TypeErrors
        raise OnnxEdgeError(
            f"--count: expected 10 (train, val and test) to {MAX_FACES:,} faces, got {count!r}"
        )
    if not (is_integer(seed) and 0 <= seed < 2**63):
        raise OnnxEdgeError(f"--seed: expected an integer in [0, 2**63), got {seed!r}")
    workers = check_count(workers, "workers", optional=True)  # 0 was taken as None
    from onnxedge.runtime.bundle.lock import bundle_lock
    from onnxedge.runtime.bundle.write import refuse_written_meanwhile, remove_stale_temporaries

    _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with bundle_lock(out):
        _check_replaceable(out)  # again: another run may have written it meanwhile
        if not replace:
            refuse_written_meanwhile(out)
        remove_stale_temporaries(out)  # of a run killed outright (out of memory)
        return _write_set(out, count, seed, workers, progress, style)


def _check_replaceable(out: Path) -> None:
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or (out / MARKER).is_file())):
        raise OnnxEdgeError(
            f"--out: expected a new directory, an empty one or an earlier synthetic set, found "
            f"{'a file' if not out.is_dir() else 'a directory with other files'} at {out}"
        )
    if out.is_dir():
        from onnxedge.runtime.bundle.write import check_owner

        check_owner(out, "set")  # its owner and group go to the new set (`move_into_place`)


def _write_set(
    out: Path,
    count: int,
    seed: int,
    workers: int | None,
    progress: Callable[[int, int], None] | None,
    style: FaceStyle,
) -> SynthResult:
    """`write_faces` once ``out`` is checked and its lock held."""
    from onnxedge.runtime.bundle.write import move_into_place, temp_prefix

    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(out, "tmp"), dir=out.parent))
    try:
        images = tmp / "img_align_celeba"
        images.mkdir()
        faces = _draw_all(seed, count, images, workers, progress, style)
        _write_lists(tmp, faces, count)
        near = sum(abs(c) < style.near_limit for _, c, _ in faces)
        smiling = sum(c > 0 for _, c, _ in faces)
        splits = {
            name: sum(partition(i, count) == code for i in range(count))
            for code, name in enumerate(("train", "val", "test"))
        }
        marker = {
            "what": "synthetic faces drawn by onnxedge (onnxedge data synth), not photographs",
            "layout": "CelebA (img_align_celeba/, list_attr_celeba.txt, list_eval_partition.txt)",
            "version": SYNTH_VERSION,
            "seed": seed,
            "count": count,
            "smiling": smiling,
            "near_decision_line": near,
            "splits": splits,
            "style": style.to_dict(),
        }
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        move_into_place(tmp, out)  # as a bundle: the old set stays whole until the swap
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SynthResult(out=out, count=count, seed=seed, smiling=smiling, near=near, splits=splits)


def _draw_all(
    seed: int,
    count: int,
    directory: Path,
    workers: int | None,
    progress: Callable[[int, int], None] | None,
    style: FaceStyle,
) -> list[tuple[int, float, dict[str, int]]]:
    chunk = 50
    tasks = [
        (seed, s, min(s + chunk, count), count, str(directory), style)
        for s in range(0, count, chunk)
    ]
    workers = workers or min(4, os.cpu_count() or 1)
    faces: list[tuple[int, float, dict[str, int]]] = []
    results: Iterator[list[tuple[int, float, dict[str, int]]]]
    if workers > 1 and len(tasks) > 1:
        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(_draw_chunk, tasks)
    else:
        pool = None
        results = map(_draw_chunk, tasks)
    try:
        for drawn in results:
            faces += drawn
            if progress is not None:
                progress(len(faces), count)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return sorted(faces)


def _write_lists(
    directory: Path, faces: list[tuple[int, float, dict[str, int]]], count: int
) -> None:
    """CelebA's text files: the count, the attribute names, then one row per image."""
    rows = [str(count), " ".join(CELEBA_ATTRIBUTES) + " "]
    for index, _, attributes in faces:
        values = " ".join(f"{attributes[name]:2d}" for name in CELEBA_ATTRIBUTES)
        rows.append(f"{file_name(index, count)} {values}")
    (directory / "list_attr_celeba.txt").write_text("\n".join(rows) + "\n")
    (directory / "list_eval_partition.txt").write_text(
        "".join(f"{file_name(i, count)} {partition(i, count)}\n" for i in range(count))
    )
