"""The bundle's preprocessing against the reference's: stated the same, and re-made bit for bit
by this runtime's `preprocess_image`."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from onnxedge.runtime.errors import OnnxEdgeError
from onnxedge.runtime.lines import fit
from onnxedge.runtime.parity.reference import (
    STRUCTURED_KINDS,
    Reference,
    canonical_json,
    structured_input,
)
from onnxedge.runtime.parity.rows import FAILED, PASSED, SKIPPED


@dataclasses.dataclass(frozen=True)
class PreprocessingCheck:
    """The bundle's preprocessing against the one the reference was made with. Truthy only when
    it was checked and passed; ``skipped`` says that nothing could be re-made (never a pass)."""

    status: str  # passed | failed | skipped
    detail: str
    short: str = ""  # the detail in a few words, for the line without -v (else the detail, cut)

    def __bool__(self) -> bool:
        return self.status == PASSED

    def __str__(self) -> str:
        return self.line(verbose=True)

    def line(self, *, verbose: bool = False) -> str:
        if verbose:
            return f"{self.status.upper()} | preprocessing | {self.detail}"
        return fit(f"{self.status.upper()} | preprocessing | {self.short or self.detail}")

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "passed": bool(self), "detail": self.detail}


def check_preprocessing(stated: Mapping[str, Any], reference: Reference) -> PreprocessingCheck:
    """The manifest's preprocessing (``stated``) against the reference's:

    1. it must equal the one the reference was made with, else FAILED;
    2. this runtime's `preprocess_image`, applied as stated, must make every structured input of
       the reference bit for bit (what the device computes is what was referenced), else FAILED;
    3. where 2. re-made nothing, it is SKIPPED with the reason, never PASSED: a reference with no
       structured rows, or a live reference, whose rows this same `preprocess_image` just made.
    """
    ours, theirs = (
        json.loads(canonical_json(dict(stated))),
        json.loads(canonical_json(dict(reference.preprocessing))),
    )
    if ours != theirs:
        diffs = [
            f"{k} {ours.get(k)!r} (reference {theirs.get(k)!r})"
            for k in sorted(set(ours) | set(theirs))
            if ours.get(k) != theirs.get(k)
        ]
        return PreprocessingCheck(
            FAILED,
            f"the manifest's preprocessing differs from the one the {reference.source} reference "
            f"was made with: {'; '.join(diffs)}",
        )
    same = f"the manifest's preprocessing is the {reference.source} reference's"
    if reference.source == "live":  # 3.
        return PreprocessingCheck(
            SKIPPED,
            f"{same}, but the live reference's rows were made by this runtime's preprocess_image "
            "itself, so re-making them checks nothing (the golden reference checks it)",
            f"as the {reference.source} reference's; live rows are not re-made (-v says why)",
        )
    checked = 0
    for size in reference.batch_sizes:
        batch = reference.batches[size]
        for row, kind in enumerate(batch.kinds):
            if kind not in STRUCTURED_KINDS:
                continue
            try:
                remade = structured_input(kind, stated)
            except OnnxEdgeError as e:
                return PreprocessingCheck(FAILED, f"cannot apply the manifest's preprocessing: {e}")
            if remade.shape != batch.inputs[row].shape or not np.array_equal(
                remade, batch.inputs[row]
            ):
                err = (
                    float(np.abs(remade - batch.inputs[row]).max())
                    if remade.shape == batch.inputs[row].shape
                    else f"shape {list(remade.shape)} vs {list(batch.inputs[row].shape)}"
                )
                return PreprocessingCheck(
                    FAILED,
                    f"the manifest's preprocessing, applied by this runtime, does not make the "
                    f"reference's {kind!r} input (batch {size}, row {row}): max abs difference "
                    f"{err}",
                )
            checked += 1
    if not checked:  # 3.
        return PreprocessingCheck(
            SKIPPED,
            f"{same}, but the reference (batch sizes "
            f"{', '.join(map(str, reference.batch_sizes))}) holds no structured rows to re-make, "
            "so this runtime's preprocess_image was not checked",
            f"as the {reference.source} reference's; no structured rows to re-make (-v says more)",
        )
    return PreprocessingCheck(
        PASSED,
        f"{same}; the {checked} structured rows, re-made by this runtime's preprocess_image as "
        "the manifest states, match bit for bit",
        f"as the {reference.source} reference's; {checked} structured rows re-made, they match "
        "bit for bit",
    )
