"""Where parity runs (`Target`: a provider and its TF32 setting) and the tolerances it holds
there; why these numbers: docs/PARITY.md."""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence
from typing import Any

from onnxedge.runtime.engines.base import ONNXRUNTIME, OPENVINO
from onnxedge.runtime.engines.onnxruntime.session import SessionConfig
from onnxedge.runtime.errors import ArgumentError, OnnxEdgeError

PARITY_PROVIDERS = ("cpu", "cuda")
TF32_SETTINGS = ("off", "on")


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """Elementwise ``|actual - expected| <= atol + rtol * |expected|``."""

    atol: float
    rtol: float

    def __str__(self) -> str:
        return f"atol {self.atol:g}, rtol {self.rtol:g}"


@dataclasses.dataclass(frozen=True)
class Tolerances:
    prob: Tolerance
    logits: Tolerance
    basis: str  # where they come from: "default for cpu", "default for cuda with tf32 off", ...
    # How many times PyTorch's own float32 rounding an engine may be off
    # (`onnxedge.runtime.parity.rounding`); None where the arithmetic is coarser than float32
    # (TF32, bf16) or the tolerances were set by hand: the tolerances alone judge.
    rounding_factor: float | None = None
    # A float32 reference (no float64 truth, so no factor): no target is held nearer it than
    # `SPREAD_FACTOR` times the reference's own float32 spread, where the golden data has one
    # (`onnxedge.runtime.parity.rounding`). False where the user set the tolerances.
    spread_least: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "prob": dataclasses.asdict(self.prob),
            "logits": dataclasses.asdict(self.logits),
            "rounding_factor": self.rounding_factor,
            "spread_least": self.spread_least,
            "basis": self.basis,
        }


# Float32 engines against PyTorch's float32 rounding of the same model (docs/PARITY.md).
CPU_ROUNDING_FACTOR = 100.0
CUDA_ROUNDING_FACTOR = 300.0

# Why these numbers: docs/PARITY.md. Keyed by provider and TF32 setting (None: does not apply).
DEFAULT_TOLERANCES: dict[tuple[str, str | None], tuple[Tolerance, Tolerance]] = {
    ("cpu", None): (Tolerance(1e-5, 1e-4), Tolerance(1e-5, 1e-4)),
    ("cuda", "off"): (Tolerance(1e-4, 1e-3), Tolerance(1e-4, 1e-3)),
    ("cuda", "on"): (Tolerance(5e-3, 1e-2), Tolerance(2e-2, 1e-2)),
}
# How many times PyTorch's float32 rounding of the model an engine may be off, same keys (why
# these numbers: docs/PARITY.md). None: the arithmetic is coarser than float32 (TF32), so the
# tolerances above alone judge.
DEFAULT_ROUNDING_FACTOR: dict[tuple[str, str | None], float | None] = {
    ("cpu", None): CPU_ROUNDING_FACTOR,
    ("cuda", "off"): CUDA_ROUNDING_FACTOR,
    ("cuda", "on"): None,
}
# OpenVINO on the CPU, keyed by its inference precision: f32 holds the CPU EP's tolerances (the
# same arithmetic); bf16 four times TF32's, as bf16's unit roundoff (2**-9) is four times TF32's.
OPENVINO_TOLERANCES: dict[str, tuple[Tolerance, Tolerance]] = {
    "f32": DEFAULT_TOLERANCES[("cpu", None)],
    "bf16": (Tolerance(2e-2, 4e-2), Tolerance(8e-2, 4e-2)),
}
OPENVINO_ROUNDING_FACTOR: dict[str, float | None] = {"f32": CPU_ROUNDING_FACTOR, "bf16": None}
# A reference computed in float32 (`onnxedge import`'s ONNX Runtime CPU on the original file,
# where onnx's float64 evaluator could not run it) is itself off the truth by up to what parity
# allows the CPU EP, so a target is held to its own tolerances plus the CPU EP's, and not to its
# rounding (a float32 reference has no float64 truth to measure it against); and where the golden
# data measured the reference's float32 spread (ONNX Runtime with and without its graph
# optimizations), never to less than `SPREAD_FACTOR` times that spread, as for a float64 one.
FLOAT32_REFERENCE = "float32"


@dataclasses.dataclass(frozen=True)
class ToleranceOverrides:
    """What the user passed with --atol/--rtol (probabilities) and --logit-atol/--logit-rtol."""

    atol: float | None = None
    rtol: float | None = None
    logit_atol: float | None = None
    logit_rtol: float | None = None
    rounding_factor: float | None = None  # --rounding-factor

    def __post_init__(self) -> None:
        """Each a finite real number >= 0, or None: a negative or NaN tolerance failed every row
        with a bound of 1e+299, and a string was taken."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None:
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Real)
                or not math.isfinite(value)
                or value < 0
            ):
                raise ArgumentError(
                    f"{field.name}: expected a finite number of at least 0 or None, got {value!r}"
                )

    def __bool__(self) -> bool:
        return any(v is not None for v in dataclasses.astuple(self))


@dataclasses.dataclass(frozen=True)
class Target:
    """One provider to run on, with its TF32 setting where it has one (CUDA); or OpenVINO on the
    CPU at an inference precision."""

    provider: str  # short name: cpu, cuda
    tf32: str | None = None  # "off" | "on" on CUDA; None where it does not apply
    engine: str = ONNXRUNTIME
    precision: str | None = None  # OpenVINO's inference precision; None for onnxruntime

    @property
    def label(self) -> str:
        """How its rows are named: the provider for onnxruntime, ``openvino cpu f32`` else."""
        if self.engine == ONNXRUNTIME:
            return self.provider
        return f"{self.engine} {self.provider} {self.precision}"

    def session_config(self) -> SessionConfig:
        options = {"use_tf32": "1" if self.tf32 == "on" else "0"} if self.tf32 else {}
        return SessionConfig(provider=self.provider, provider_options=options)

    def tolerances(
        self, overrides: ToleranceOverrides | None = None, reference: str = "float64"
    ) -> Tolerances:
        """The defaults for this target, widened for a float32 ``reference`` (the precision
        the reference was computed in), then the user's overrides."""
        if self.engine == ONNXRUNTIME:
            prob, logits = DEFAULT_TOLERANCES[(self.provider, self.tf32)]
            factor = DEFAULT_ROUNDING_FACTOR[(self.provider, self.tf32)]
        else:
            prob, logits = OPENVINO_TOLERANCES[str(self.precision)]
            factor = OPENVINO_ROUNDING_FACTOR[str(self.precision)]
        basis = f"default for {self.label}" + (f" with tf32 {self.tf32}" if self.tf32 else "")
        spread_least = reference == FLOAT32_REFERENCE
        if spread_least:
            cpu_prob, cpu_logits = DEFAULT_TOLERANCES[("cpu", None)]
            prob, logits = _plus(prob, cpu_prob), _plus(logits, cpu_logits)
            factor = None
            basis += ", plus the CPU EP's for the float32 reference"
        o = overrides or ToleranceOverrides()
        if o:
            prob = Tolerance(_pick(o.atol, prob.atol), _pick(o.rtol, prob.rtol))
            logits = Tolerance(_pick(o.logit_atol, logits.atol), _pick(o.logit_rtol, logits.rtol))
            # Tolerances set by hand judge alone, unless a rounding factor is given too.
            hand_set = any(v is not None for v in (o.atol, o.rtol, o.logit_atol, o.logit_rtol))
            factor = None if hand_set else factor
            spread_least = spread_least and not hand_set
            factor = factor if o.rounding_factor is None else float(o.rounding_factor)
            basis += ", overridden on the command line"
        return Tolerances(prob, logits, basis, factor, spread_least)


def _plus(a: Tolerance, b: Tolerance) -> Tolerance:
    return Tolerance(a.atol + b.atol, a.rtol + b.rtol)


def _pick(override: float | None, default: float) -> float:
    return default if override is None else float(override)


def make_targets(
    providers: Sequence[str],
    tf32: str = "off",
    *,
    engines: Sequence[str] = (ONNXRUNTIME,),
    precisions: Sequence[str] = ("f32",),
) -> list[Target]:
    """Targets for short provider names; ``tf32`` is off, on or both (CUDA only). ``engines``:
    onnxruntime gives those; openvino one CPU target per precision in ``precisions``."""
    settings = TF32_SETTINGS if tf32 == "both" else (tf32,)
    if any(s not in TF32_SETTINGS for s in settings):
        raise OnnxEdgeError(f"unknown TF32 setting {tf32!r}; expected off, on or both")
    targets: list[Target] = []
    for short in providers:
        if short not in PARITY_PROVIDERS:
            raise OnnxEdgeError(
                f"parity has no tolerances for provider {short!r}; expected one of: "
                + ", ".join(PARITY_PROVIDERS)
            )
        if short == "cuda":
            targets += [Target("cuda", s) for s in settings]
        else:
            targets.append(Target(short))
    if ONNXRUNTIME not in engines:
        targets = []
    if OPENVINO in engines:
        for precision in precisions:
            if precision not in OPENVINO_TOLERANCES:
                raise OnnxEdgeError(
                    f"parity has no tolerances for OpenVINO precision {precision!r}; expected one "
                    f"of: {', '.join(OPENVINO_TOLERANCES)}"
                )
            targets.append(Target("cpu", engine=OPENVINO, precision=precision))
    return list(dict.fromkeys(targets))
