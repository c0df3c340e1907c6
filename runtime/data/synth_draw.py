"""The drawing primitives of `synth`'s faces: PIL drawing in face coordinates (`Canvas`), arcs,
mouth curves, colours, the label's curvature and the cluttered background."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from onnxedge.runtime.data.synth_style import FaceStyle

WIDTH, HEIGHT = 178, 218  # CelebA's aligned crops


class Canvas:
    """PIL drawing in face coordinates: rotation about the face centre, then supersampling."""

    def __init__(
        self, image: Any, centre: tuple[float, float], angle: float, supersample: int
    ) -> None:
        from PIL import ImageDraw

        self.draw = ImageDraw.Draw(image)
        self.supersample = supersample
        self.cx, self.cy = centre
        self.cos, self.sin = math.cos(angle), math.sin(angle)

    def _xy(self, x: float, y: float) -> tuple[float, float]:
        dx, dy = x - self.cx, y - self.cy
        rx = self.cx + dx * self.cos - dy * self.sin
        ry = self.cy + dx * self.sin + dy * self.cos
        return rx * self.supersample, ry * self.supersample

    def polygon(self, points: list[tuple[float, float]], fill: Any) -> None:
        self.draw.polygon([self._xy(x, y) for x, y in points], fill=rgb(fill))

    def line(self, points: list[tuple[float, float]], fill: Any, width: float) -> None:
        w = max(1, round(width * self.supersample))
        xy = [self._xy(x, y) for x, y in points]
        self.draw.line(xy, fill=rgb(fill), width=w, joint="curve")
        for end in (xy[0], xy[-1]):  # round caps
            r = w / 2
            self.draw.ellipse((end[0] - r, end[1] - r, end[0] + r, end[1] + r), fill=rgb(fill))

    def ellipse(
        self, x: float, y: float, rx: float, ry: float, fill: Any, *, start: float = 0.0,
        stop: float = 2 * math.pi, n: int = 40,
    ) -> None:  # fmt: skip
        self.polygon(arc_points(x, y, rx, ry, start, stop, n), fill)

    def outline(self, x: float, y: float, rx: float, ry: float, fill: Any, width: float) -> None:
        points = arc_points(x, y, rx, ry, 0.0, 2 * math.pi, 40)
        self.line([*points, points[0]], fill, width)


def arc_points(
    x: float, y: float, rx: float, ry: float, start: float, stop: float, n: int
) -> list[tuple[float, float]]:
    return [
        (x + rx * math.cos(t), y + ry * math.sin(t)) for t in np.linspace(start, stop, n).tolist()
    ]


def rgb(colour: Any) -> tuple[int, int, int]:
    r, g, b = (round(min(255.0, max(0.0, float(v)))) for v in colour)
    return r, g, b


def shade(colour: Any, factor: float) -> np.ndarray:
    return np.clip(np.asarray(colour, dtype=np.float64) * factor, 0, 255)


def mouth_curve(
    x: float, y: float, half_width: float, sag: float, n: int = 17
) -> list[tuple[float, float]]:
    """A parabola through the corners (x ± half_width, y - sag/2) and the middle (x, y + sag/2):
    ``sag > 0`` lifts the corners (a smile), ``sag < 0`` drops them."""
    ts = np.linspace(-1.0, 1.0, n)
    return [(x + t * half_width, y + sag / 2 - sag * t * t) for t in ts.tolist()]


def label_curvature(rng: np.random.Generator, style: FaceStyle) -> float:
    sign = 1.0 if rng.random() < 0.5 else -1.0
    if rng.random() < style.near_fraction:
        return sign * rng.uniform(style.min_curvature, style.near_limit)
    return sign * rng.uniform(style.near_limit, 1.0)


def light_ramp(width: int, height: int, theta: float) -> np.ndarray:
    """float32 [height, width]: the signed distance from the centre along the direction theta."""
    xs = (np.arange(width, dtype=np.float32) - width / 2) * np.float32(math.cos(theta))
    ys = (np.arange(height, dtype=np.float32) - height / 2) * np.float32(math.sin(theta))
    return ys[:, None] + xs[None, :]


def background(rng: np.random.Generator, width: int, height: int, supersample: int) -> Any:
    from PIL import Image

    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    theta = rng.uniform(0, 2 * math.pi)
    t = light_ramp(width, height, theta)
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-9)
    pixels = a.astype(np.float32) + (b - a).astype(np.float32) * t[..., None]
    image = Image.fromarray(pixels.astype(np.uint8), "RGB")
    canvas = Canvas(image, (0.0, 0.0), 0.0, supersample)
    for _ in range(int(rng.integers(3, 13))):
        colour = rng.uniform(0, 255, 3)
        x, y = rng.uniform(-20, WIDTH + 20), rng.uniform(-20, HEIGHT + 20)
        kind = rng.integers(3)
        if kind == 0:
            canvas.ellipse(x, y, rng.uniform(5, 45), rng.uniform(5, 45), colour)
        elif kind == 1:
            w, h, angle = rng.uniform(5, 60), rng.uniform(5, 60), rng.uniform(0, math.pi)
            corners = [(-w, -h), (w, -h), (w, h), (-w, h)]
            c, s = math.cos(angle), math.sin(angle)
            canvas.polygon([(x + u * c - v * s, y + u * s + v * c) for u, v in corners], colour)
        else:
            x2, y2 = rng.uniform(-20, WIDTH + 20), rng.uniform(-20, HEIGHT + 20)
            canvas.line([(x, y), (x2, y2)], colour, rng.uniform(1, 6))
    return image


__all__ = [
    "HEIGHT",
    "WIDTH",
    "Canvas",
    "arc_points",
    "background",
    "label_curvature",
    "light_ramp",
    "mouth_curve",
    "rgb",
    "shade",
]
