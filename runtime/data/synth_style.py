"""How `onnxedge.runtime.data.synth` draws its faces: `FaceStyle`, set by `onnxedge data synth`'s
options (``--expression``, ``--near-fraction``, ``--near-limit``, ``--min-curvature``, ``--sag``,
``--supersample``). The defaults draw the set `make train` trains on; a set records its style in
its ``synth.json``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from onnxedge.runtime.errors import OnnxEdgeError


@dataclasses.dataclass(frozen=True)
class FaceStyle:
    """What the drawing's constants set.

    ``expression``: how much the rest of the face follows the mouth at |curvature| 1: a smile
    raises the cheeks (a blush) and narrows the eyes, a frown pulls the brows down at the inner
    ends, as in a real face. Each in proportion to |curvature|, so faces near the decision line
    look neutral and only the mouth's shape decides them (0: the mouth alone). Added with drawing
    version 4, together with the trainer's BatchNorms; whether it alone shortens the chance plateau
    was not measured.

    ``near_fraction`` of the faces have a mouth almost straight: |curvature| in
    [``min_curvature``, ``near_limit``); the others in [``near_limit``, 1]. No face sits exactly on
    the line (``min_curvature`` > 0 keeps every label decidable in principle).

    ``sag``: the corners' lift (a smile) or drop at |curvature| 1, times the mouth's half width.
    ``supersample``: drawn at this many times the size, then reduced (2: smooth edges, sub-pixel
    mouth shapes; 1: aliased edges). The face's and the mouth's sizes are ranges in pixels of the
    178x218 image (half sizes at scale 1, before jitter).
    """

    expression: float = 1.0
    near_fraction: float = 0.15
    near_limit: float = 0.3
    min_curvature: float = 0.05
    sag: float = 0.7
    supersample: int = 2
    face_half_size: tuple[float, float] = (46.0, 60.0)
    mouth_half_width: tuple[float, float] = (0.42, 0.56)  # x the face's half width
    lip_thickness: tuple[float, float] = (4.0, 8.0)

    def check(self) -> FaceStyle:
        """The style itself if it can be drawn; else an `OnnxEdgeError` naming the option."""
        problems = [
            ("--expression", self.expression, "a number >= 0", self.expression >= 0),
            ("--near-fraction", self.near_fraction, "in [0, 1]", 0 <= self.near_fraction <= 1),
            ("--min-curvature", self.min_curvature, "in (0, 1)", 0 < self.min_curvature < 1),
            (
                "--near-limit",
                self.near_limit,
                f"above --min-curvature ({self.min_curvature:g}) and below 1",
                self.min_curvature < self.near_limit < 1,
            ),
            ("--sag", self.sag, "a number > 0", self.sag > 0),
            ("--supersample", self.supersample, "an integer in [1, 8]", 1 <= self.supersample <= 8),
        ]
        for option, value, expected, ok in problems:
            finite = not isinstance(value, float) or math.isfinite(value)
            if not (ok and finite):
                raise OnnxEdgeError(f"{option}: expected {expected}, got {value!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }


DEFAULT_STYLE = FaceStyle()

# The most faces `onnxedge data synth` draws: five times CelebA's 202,599 (about 6 GB of JPEGs).
# Its lists are built in memory, so a count of 10**10 grew to 23 GB before the kernel killed it.
MAX_FACES = 1_000_000
