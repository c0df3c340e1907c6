"""Parity: does a bundle's ``model.onnx`` under ONNX Runtime compute what the PyTorch model did?

The pieces, kept apart as in Polygraphy (loader, runner, comparator), one module each:

1. The reference (`reference`, `golden`). `load_golden` reads ``golden.npz``, the inputs and
   PyTorch outputs that `onnxedge export` stored in the bundle (sha256 checked against the
   manifest); or ``onnxedge.export.golden.live_reference`` recomputes them where torch is
   installed. Either way a `Reference`: per batch size the float32 inputs, what each row is
   (`kinds`), and the reference probabilities and pre-sigmoid values (logits) in float64 (the
   truth) and float32.
2. The preprocessing (`preprocessing`). `check_preprocessing` fails when the bundle's manifest
   states another preprocessing than the reference was made with, or when this runtime's
   `preprocess_image`, applied as the manifest states, no longer makes the reference's structured
   inputs bit for bit; where there is nothing to re-make (a live reference, no structured rows) it
   is skipped.
3. The graphs (`graph`). Probabilities come from the shipped ``model.onnx`` as it is, loaded from
   its path (external data resolves as on the device); the logits from a check-only copy made in
   memory (`with_logits_output`) that also outputs the Sigmoid's input, because a saturated
   sigmoid hides errors that the logits show.
4. The run (`run`; `tolerances`, `rows`, `report`). `run_parity` builds a session per provider
   (and TF32 setting on CUDA) with `make_session`; a provider that cannot run here
   (`ProviderUnavailable`) gives `SKIPPED` rows with the reason, never a pass, and any other load
   error `FAILED` rows. Each provider x batch size is a `ParityRow`: max abs / max rel / mean abs
   error on probabilities and logits, 0.5-threshold label agreement, the tolerances used, the TF32
   setting as onnxruntime reported it.

Only numpy, onnx and onnxruntime (and PIL for the preprocessing check) are needed: no torch.
"""

from __future__ import annotations

from onnxedge.runtime.parity.golden import (
    GOLDEN,
    GOLDEN_FORMAT,
    GOLDEN_VERSION,
    golden_npz_bytes,
    load_golden,
)
from onnxedge.runtime.parity.graph import find_logits_tensor, with_logits_output
from onnxedge.runtime.parity.preprocessing import PreprocessingCheck, check_preprocessing
from onnxedge.runtime.parity.reference import (
    DEFAULT_BATCH_SIZES,
    GOLDEN_SEED,
    IMAGE_PREFIX,
    RANDOM_KIND,
    STRUCTURED_KINDS,
    STRUCTURED_SOURCE_SIZE,
    Reference,
    ReferenceBatch,
    canonical_json,
    golden_inputs,
    random_rows,
    structured_image,
    structured_input,
)
from onnxedge.runtime.parity.report import ParityReport
from onnxedge.runtime.parity.rows import (
    FAILED,
    PASSED,
    SKIPPED,
    LabelAgreement,
    ParityRow,
    label_agreement,
)
from onnxedge.runtime.parity.run import run_parity
from onnxedge.runtime.parity.tolerances import (
    DEFAULT_TOLERANCES,
    PARITY_PROVIDERS,
    TF32_SETTINGS,
    Target,
    Tolerance,
    ToleranceOverrides,
    Tolerances,
    make_targets,
)

__all__ = [
    "DEFAULT_BATCH_SIZES",
    "DEFAULT_TOLERANCES",
    "FAILED",
    "GOLDEN",
    "GOLDEN_FORMAT",
    "GOLDEN_SEED",
    "GOLDEN_VERSION",
    "IMAGE_PREFIX",
    "PARITY_PROVIDERS",
    "PASSED",
    "RANDOM_KIND",
    "SKIPPED",
    "STRUCTURED_KINDS",
    "STRUCTURED_SOURCE_SIZE",
    "TF32_SETTINGS",
    "LabelAgreement",
    "ParityReport",
    "ParityRow",
    "PreprocessingCheck",
    "Reference",
    "ReferenceBatch",
    "Target",
    "Tolerance",
    "ToleranceOverrides",
    "Tolerances",
    "canonical_json",
    "check_preprocessing",
    "find_logits_tensor",
    "golden_inputs",
    "golden_npz_bytes",
    "label_agreement",
    "load_golden",
    "make_targets",
    "random_rows",
    "run_parity",
    "structured_image",
    "structured_input",
    "with_logits_output",
]
