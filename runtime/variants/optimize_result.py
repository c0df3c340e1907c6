"""`optimize_bundle`'s request and results: `OptimizeRequest` (checked when made),
`VariantOutcome` (one variant's gate and whether it was written) and `OptimizeResult`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from onnxedge.runtime.deps import module_available
from onnxedge.runtime.errors import OnnxEdgeError
from onnxedge.runtime.lines import INDENT, LINE_WIDTH, fit
from onnxedge.runtime.variants.gate import GateCriteria, GateResult
from onnxedge.runtime.variants.quantize import DEFAULT_CALIBRATION_SIZE, Int8Config


@dataclasses.dataclass(frozen=True)
class OptimizeRequest:
    bundle: Path
    data: Path
    out: Path | None = None  # None: the bundle itself, replaced atomically
    int8: bool = True
    fp16: bool = True
    ort: bool = True
    # int8-conv1-fp32 and int8-pad4 (`first_conv`; needs onnx-ir, the export extra).
    int8_first_conv: bool = False
    attribute: str | None = None
    calibration_size: int = DEFAULT_CALIBRATION_SIZE
    calibration_method: str = "minmax"
    weights_7_bit: str = "image"  # `Int8Config.weights_7_bit`
    seed: int = 0
    gate: bool = True
    force: bool = False
    criteria: GateCriteria = dataclasses.field(default_factory=GateCriteria)
    threads: int | None = None
    uint8_input: bool = False  # fp32-u8, and int8-u8 where int8 is made or there
    fast_decode: bool = False  # gate `--decode fast` and record it in the manifest

    def __post_init__(self) -> None:
        if (
            not (self.int8 or self.fp16 or self.ort or self.int8_first_conv or self.uint8_input)
            and not self.fast_decode
        ):
            raise OnnxEdgeError(
                "expected at least one of --int8, --fp16, --ort, --int8-first-conv, "
                "--uint8-input, --fast-decode"
            )
        if self.int8_first_conv and not module_available("onnx_ir"):
            raise OnnxEdgeError(
                "--int8-first-conv edits the graph with onnx-ir, which is not installed here "
                "(pip install 'onnxedge[export]')"
            )
        if self.calibration_size < 1:
            raise OnnxEdgeError(
                f"--calibration-size: expected at least 1, got {self.calibration_size}"
            )
        Int8Config(  # checks the method and the 7-bit weights
            calibration_method=self.calibration_method, weights_7_bit=self.weights_7_bit
        )


# Execution providers by the short name a line without -v gives them.
PROVIDER_SHORT = {"CPUExecutionProvider": "cpu", "CUDAExecutionProvider": "cuda"}


@dataclasses.dataclass(frozen=True)
class VariantOutcome:
    """One variant: its gate, whether it was written, and why not."""

    name: str
    gate: GateResult
    written: bool
    bytes: int
    enforced: bool  # the gate decided (False: --no-gate)
    reason: str = ""

    def line(self, *, verbose: bool = False) -> str:
        """The variant's gate line, its provider and size; without ``verbose`` shorter figures
        (p99 and mean in -v and the JSON), the provider's short name, in lines of at most
        `LINE_WIDTH` columns."""
        return self._line(_size(self.bytes), verbose=verbose)

    def decode_line(self, *, verbose: bool = False) -> str:
        """`line` for the fast decode's gate: what became of it instead of a file size."""
        what = "recorded in the manifest" if self.written else "not recorded: missed its gate"
        return self._line(what, verbose=verbose, reason=False)

    def _line(self, tail: str, *, verbose: bool, reason: bool = True) -> str:
        provider = self.gate.provider
        if not verbose:
            provider = PROVIDER_SHORT.get(provider, provider)
        head = self.gate.line(enforced=self.enforced, verbose=verbose)
        tail = f"{provider} | {tail}"
        if reason and not self.written:
            tail += f" | not written: {self.reason}"
        if verbose or len(head) + 3 + len(tail) <= LINE_WIDTH:
            return f"{head} | {tail}"
        return f"{fit(head)}\n{fit(INDENT + tail)}"


@dataclasses.dataclass(frozen=True)
class OptimizeResult:
    out: Path
    outcomes: tuple[VariantOutcome, ...]
    fp32_bytes: int
    written: bool  # whether the bundle was (re)written
    dropped: tuple[str, ...] = ()  # derived variants removed because their source was replaced
    # `--fast-decode`: fp32 on the fast decode's pixels against fp32 on the exact ones.
    decode_gate: VariantOutcome | None = None

    def __bool__(self) -> bool:
        """True when every variant asked for was written (passed, or written ungated), and the
        fast decode passed its gate where it was asked for."""
        decode_ok = self.decode_gate is None or self.decode_gate.written
        return all(o.written for o in self.outcomes) and decode_ok

    @property
    def missed(self) -> tuple[VariantOutcome, ...]:
        every = (*self.outcomes, *([self.decode_gate] if self.decode_gate else []))
        return tuple(o for o in every if not o.gate and o.enforced)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "written": self.written,
            "fp32_bytes": self.fp32_bytes,
            "dropped": list(self.dropped),
            "variants": {
                o.name: {
                    "written": o.written,
                    "reason": o.reason,
                    "bytes": o.bytes,
                    "gate_enforced": o.enforced,
                    "gate": o.gate.to_dict(),
                }
                for o in self.outcomes
            },
            "decode_gate": None
            if self.decode_gate is None
            else {
                "recorded": self.decode_gate.written,
                "gate_enforced": self.decode_gate.enforced,
                "gate": self.decode_gate.gate.to_dict(),
            },
        }


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"
