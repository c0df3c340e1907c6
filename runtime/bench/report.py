"""The benchmark's report: every row with how it was made, the ratios and the targets; JSON by
`to_dict`, Markdown by `onnxedge.runtime.bench.markdown`."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from onnxedge.runtime.bench.engines import EngineInfo
from onnxedge.runtime.bench.machine import BUSY_LOAD_PER_CORE
from onnxedge.runtime.bench.ratios import EngineRatio, Ratio, compute_engine_ratios, compute_ratios
from onnxedge.runtime.bench.settings import BenchSettings
from onnxedge.runtime.bench.timing import BenchRow
from onnxedge.runtime.bench.verdicts import TargetResult, evaluate_targets


@dataclasses.dataclass(frozen=True)
class BenchReport:
    bundle: Mapping[str, Any]
    settings: BenchSettings
    machine: Mapping[str, Any]
    versions: Mapping[str, Any]
    date: str
    command: str
    engines: tuple[EngineInfo, ...]
    rows: tuple[BenchRow, ...]

    def __bool__(self) -> bool:
        return any(self.rows)

    @property
    def warnings(self) -> list[str]:
        """What makes these figures less trustworthy than they look."""
        out = []
        load = self.machine.get("load_average_before")
        cores = self.machine.get("usable_cores") or 1
        if load and load[0] > BUSY_LOAD_PER_CORE * cores:
            out.append(
                f"the machine was busy (1-minute load {load[0]:.2f} on {cores} usable cores "
                "before the run): other jobs slow engines unequally; not comparable with a quiet "
                "run (docs/BENCHMARKS.md)"
            )
        unreadable = self.settings.readable_images.describe()
        if unreadable:
            out.append(f"--images: {unreadable}; the from-files rows time the others")
        return out

    @property
    def ratios(self) -> list[Ratio]:
        return compute_ratios(self.rows)

    @property
    def engine_ratios(self) -> list[EngineRatio]:
        return compute_engine_ratios(self.rows)

    @property
    def targets(self) -> list[TargetResult]:
        return evaluate_targets(self.rows, self.settings.targets)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool": "onnxedge bench",
            "date": self.date,
            "warnings": self.warnings,
            "command": self.command,
            "bundle": dict(self.bundle),
            "machine": dict(self.machine),
            "versions": dict(self.versions),
            "settings": self.settings.to_dict(),
            "engines": [e.to_dict() for e in self.engines],
            "rows": [r.to_dict() for r in self.rows],
            "ratios": [r.to_dict() for r in self.ratios],
            "engine_ratios": [r.to_dict() for r in self.engine_ratios],
            "targets": [t.to_dict() for t in self.targets],
        }


def command_line(argv: Sequence[str] | None = None) -> str:
    import shlex

    from onnxedge.runtime.names import shown

    args = list(sys.argv[1:] if argv is None else argv)
    return shlex.join(["onnxedge", *map(shown, args)])  # one line, whatever the names
