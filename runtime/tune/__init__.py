"""`onnxedge tune`: on the device itself, which of a bundle's gated models, on which engine and
with how many threads, is fastest at each batch size; and ``--tuned``, which runs that choice.

One module per job: `setup` (what is chosen between: `TunedSetup`), `candidates` (what may run
here, what is left out and why), `fingerprint` (the machine a measurement holds for), `run`
(`tune`: bench's timed loop over the candidates, the winners), `file` (the tuning file, written
atomically), `choice` (``--tuned``: the winner for this bundle, machine and batch size, or the
defaults with the reason). Nothing here imports torch.
"""

from __future__ import annotations

from onnxedge.runtime.tune.candidates import (
    Candidates,
    Excluded,
    build_candidates,
    candidate_models,
    default_thread_counts,
)
from onnxedge.runtime.tune.choice import (
    TunedArg,
    TunedChoice,
    nearest_batch,
    resolve_tuned,
    tuning_path,
)
from onnxedge.runtime.tune.file import (
    TUNING_FORMAT,
    TUNING_FORMAT_VERSION,
    TuningFile,
    default_tuning_path,
    read_tuning,
    write_tuning,
)
from onnxedge.runtime.tune.fingerprint import fingerprint_difference, machine_fingerprint
from onnxedge.runtime.tune.run import (
    DEFAULT_BATCH_SIZES,
    DEFAULT_SECONDS,
    RUNOFF_MARGIN,
    RUNOFF_MAX,
    TuneResult,
    TuneRow,
    TuneSettings,
    manifest_sha256,
    runoff_setups,
    tune,
)
from onnxedge.runtime.tune.setup import TunedSetup

__all__ = [
    "DEFAULT_BATCH_SIZES",
    "DEFAULT_SECONDS",
    "RUNOFF_MARGIN",
    "RUNOFF_MAX",
    "TUNING_FORMAT",
    "TUNING_FORMAT_VERSION",
    "Candidates",
    "Excluded",
    "TuneResult",
    "TuneRow",
    "TuneSettings",
    "TunedArg",
    "TunedChoice",
    "TunedSetup",
    "TuningFile",
    "build_candidates",
    "candidate_models",
    "default_thread_counts",
    "default_tuning_path",
    "fingerprint_difference",
    "machine_fingerprint",
    "manifest_sha256",
    "nearest_batch",
    "read_tuning",
    "resolve_tuned",
    "runoff_setups",
    "tune",
    "tuning_path",
    "write_tuning",
]
