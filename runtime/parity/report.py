"""The parity report: every row, the preprocessing check and the reference used."""

from __future__ import annotations

import dataclasses
from typing import Any

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

    def lines(self) -> list[str]:
        return [str(self.preprocessing), *(str(r) for r in self.rows), self.summary]

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
