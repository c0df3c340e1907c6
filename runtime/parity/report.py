"""The parity report: every row, the preprocessing check and the reference used."""

from __future__ import annotations

import dataclasses
from typing import Any

from onnxedge.runtime.engines.onnxruntime.session import short_reason
from onnxedge.runtime.lines import fit
from onnxedge.runtime.parity.preprocessing import PreprocessingCheck
from onnxedge.runtime.parity.rows import FAILED, PASSED, SKIPPED, ParityRow


@dataclasses.dataclass(frozen=True)
class ParityReport:
    """Every row, the preprocessing check and the reference used. Truthy when the preprocessing
    check did not fail (a skipped one is reported as skipped, not passed), at least one row ran,
    and no row failed (a required provider that was skipped is a failed row)."""

    bundle: str
    reference: str
    preprocessing: PreprocessingCheck
    rows: tuple[ParityRow, ...]

    def __bool__(self) -> bool:
        return self.preprocessing.status != FAILED and self.ran > 0 and self.failed == 0

    @property
    def passed(self) -> bool:
        return bool(self)

    def _count(self, status: str) -> int:
        return sum(1 for r in self.rows if r.status == status)

    @property
    def failed(self) -> int:
        return self._count(FAILED)

    @property
    def skipped(self) -> int:
        return self._count(SKIPPED)

    @property
    def ran(self) -> int:
        return sum(1 for r in self.rows if r.ran)

    @property
    def summary(self) -> str:
        text = (
            f"parity: {self._count(PASSED)} passed, {self.failed} failed, {self.skipped} skipped"
            f"; preprocessing {self.preprocessing.status.replace(FAILED, 'FAILED')}"
        )
        if self.ran == 0:
            text += "; nothing ran, which is not a pass"
        return text

    def lines(self, *, verbose: bool = False) -> list[str]:
        """What the command prints: the preprocessing check, a line per row that ran or failed,
        ONE line per provider that was skipped (its batch sizes and TF32 settings together, the
        first cause of its reason, the full reason when ``verbose``), and the summary."""
        return [self.preprocessing.line(verbose=verbose), *self._row_lines(verbose), self.summary]

    def _row_lines(self, verbose: bool) -> list[str]:
        skipped: dict[tuple[str, str], list[ParityRow]] = {}
        out: list[str | tuple[str, str]] = []
        for r in self.rows:
            if r.status != SKIPPED:
                out.append(r.line(verbose=verbose))
                continue
            key = (r.label, r.reason)
            if key not in skipped:
                out.append(key)
            skipped.setdefault(key, []).append(r)
        return [
            line if isinstance(line, str) else _skipped_line(skipped[line], verbose) for line in out
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle,
            "reference": self.reference,
            "passed": self.passed,
            "summary": {
                "passed": self._count(PASSED),
                "failed": self.failed,
                "skipped": self.skipped,
                "line": self.summary,
            },
            "preprocessing": self.preprocessing.to_dict(),
            "rows": [r.to_dict() for r in self.rows],
        }


def _skipped_line(rows: list[ParityRow], verbose: bool) -> str:
    batches = ", ".join(map(str, dict.fromkeys(r.batch for r in rows)))
    tf32 = list(dict.fromkeys(r.tf32_label for r in rows))
    if len(tf32) > 1 and all(t.startswith("tf32 ") for t in tf32):
        tf32 = ["tf32 " + ", ".join(t.removeprefix("tf32 ") for t in tf32)]
    reason = rows[0].reason if verbose else short_reason(rows[0].reason)
    if verbose:
        return f"SKIPPED | {rows[0].label} | batch {batches} | {', '.join(tf32)} | {reason}"
    tf32 = [t for t in tf32 if t != "tf32 n/a"]
    return fit(" | ".join(["SKIPPED", rows[0].label, f"batch {batches}", *tf32, reason]))
