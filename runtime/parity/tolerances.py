"""Where parity runs (`Target`: a provider and its TF32 setting) and the tolerances it holds
there; why these numbers: docs/PARITY.md."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from onnxedge.runtime.engines.base import ONNXRUNTIME, OPENVINO
from onnxedge.runtime.engines.onnxruntime.session import SessionConfig
from onnxedge.runtime.errors import OnnxEdgeError

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
    # Each output's error against the spread of the reference (`onnxedge.runtime.parity.spread`);
    # None where the arithmetic is too coarse for it (TF32, bf16): the elementwise check only.
    spread_rtol: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "prob": dataclasses.asdict(self.prob),
            "logits": dataclasses.asdict(self.logits),
            "spread_rtol": self.spread_rtol,
            "basis": self.basis,
        }


# Why these numbers: docs/PARITY.md. Keyed by provider and TF32 setting (None: does not apply).
DEFAULT_TOLERANCES: dict[tuple[str, str | None], tuple[Tolerance, Tolerance]] = {
    ("cpu", None): (Tolerance(1e-5, 1e-4), Tolerance(1e-5, 1e-4)),
    ("cuda", "off"): (Tolerance(1e-4, 1e-3), Tolerance(1e-4, 1e-3)),
    ("cuda", "on"): (Tolerance(5e-3, 1e-2), Tolerance(2e-2, 1e-2)),
}
# Errors against the spread of the reference, same keys. CPU: its rounding is at most 1e-5 of the
# spread on smile_cnn, and a 1% change of any layer's weights at least 5.6e-3 at every default
# batch size. CUDA with TF32 off: ten times the CPU's rounding still leaves a margin of 30.
# TF32: its rounding of every convolution's inputs is of the order of 1e-3 of the activations,
# not of the spread, so only the elementwise check applies.
DEFAULT_SPREAD_RTOL: dict[tuple[str, str | None], float | None] = {
    ("cpu", None): 1e-3,
    ("cuda", "off"): 3e-3,
    ("cuda", "on"): None,
}
# OpenVINO on the CPU, keyed by its inference precision: f32 holds the CPU EP's tolerances (the
# same arithmetic); bf16 four times TF32's, as bf16's unit roundoff (2**-9) is four times TF32's.
OPENVINO_TOLERANCES: dict[str, tuple[Tolerance, Tolerance]] = {
    "f32": DEFAULT_TOLERANCES[("cpu", None)],
    "bf16": (Tolerance(2e-2, 4e-2), Tolerance(8e-2, 4e-2)),
}
OPENVINO_SPREAD_RTOL: dict[str, float | None] = {"f32": 1e-3, "bf16": None}
# A reference computed in float32 (`onnxedge import`'s ONNX Runtime CPU on the original file,
# where onnx's float64 evaluator could not run it) is itself off the truth by up to what parity
# allows the CPU EP, so a target is held to its own tolerances plus the CPU EP's.
FLOAT32_REFERENCE = "float32"


@dataclasses.dataclass(frozen=True)
class ToleranceOverrides:
    """What the user passed with --atol/--rtol (probabilities) and --logit-atol/--logit-rtol."""

    atol: float | None = None
    rtol: float | None = None
    logit_atol: float | None = None
    logit_rtol: float | None = None
    spread_rtol: float | None = None  # --spread-rtol

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
            spread = DEFAULT_SPREAD_RTOL[(self.provider, self.tf32)]
        else:
            prob, logits = OPENVINO_TOLERANCES[str(self.precision)]
            spread = OPENVINO_SPREAD_RTOL[str(self.precision)]
        basis = f"default for {self.label}" + (f" with tf32 {self.tf32}" if self.tf32 else "")
        if reference == FLOAT32_REFERENCE:
            cpu_prob, cpu_logits = DEFAULT_TOLERANCES[("cpu", None)]
            prob, logits = _plus(prob, cpu_prob), _plus(logits, cpu_logits)
            cpu_spread = DEFAULT_SPREAD_RTOL[("cpu", None)]
            spread = None if spread is None or cpu_spread is None else spread + cpu_spread
            basis += ", plus the CPU EP's for the float32 reference"
        o = overrides or ToleranceOverrides()
        if o:
            prob = Tolerance(_pick(o.atol, prob.atol), _pick(o.rtol, prob.rtol))
            logits = Tolerance(_pick(o.logit_atol, logits.atol), _pick(o.logit_rtol, logits.rtol))
            spread = spread if o.spread_rtol is None else float(o.spread_rtol)
            basis += ", overridden on the command line"
        return Tolerances(prob, logits, basis, spread)


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
