"""`onnxedge tune`: on the device itself, which of a bundle's gated models, on which engine and
with how many threads, is fastest at each batch size; and ``--tuned``, which runs that choice.

One module per job: `setup` (what is chosen between: `TunedSetup`), `candidates` (what may run
here, what is left out and why), `fingerprint` (the machine a measurement holds for), `run`
(`tune`: bench's timed loop over the candidates, the winners), `files` (``--images``: the
fastest models timed from files with each decoding pool), `file` (the tuning file, written
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
from onnxedge.runtime.tune.files import (
    FILES_LIMIT,
    FILES_MARGIN,
    FILES_MODELS,
    FILES_SECONDS,
    FilesTune,
    files_models,
    files_plan,
    tune_files,
)
from onnxedge.runtime.tune.fingerprint import fingerprint_difference, machine_fingerprint
from onnxedge.runtime.tune.rows import TuneRow, tune_rows
from onnxedge.runtime.tune.run import (
    DEFAULT_BATCH_SIZES,
    DEFAULT_SECONDS,
    RUNOFF_MARGIN,
    RUNOFF_MAX,
    TuneResult,
    TuneSettings,
    manifest_sha256,
    runoff_setups,
    tune,
)
from onnxedge.runtime.tune.setup import FilesSetup, TunedSetup

__all__ = [
    "DEFAULT_BATCH_SIZES",
    "DEFAULT_SECONDS",
    "FILES_LIMIT",
    "FILES_MARGIN",
    "FILES_MODELS",
    "FILES_SECONDS",
    "RUNOFF_MARGIN",
    "RUNOFF_MAX",
    "TUNING_FORMAT",
    "TUNING_FORMAT_VERSION",
    "Candidates",
    "Excluded",
    "FilesSetup",
    "FilesTune",
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
    "files_models",
    "files_plan",
    "fingerprint_difference",
    "machine_fingerprint",
    "manifest_sha256",
    "nearest_batch",
    "read_tuning",
    "resolve_tuned",
    "runoff_setups",
    "tune",
    "tune_files",
    "tune_rows",
    "tuning_path",
    "write_tuning",
]
