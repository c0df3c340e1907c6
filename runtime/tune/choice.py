"""``--tuned``: the setup a tuning file chose for this bundle, this machine and a batch size, or
the defaults with one line saying why not.

A tuning file is ignored (never an error, never another model) when:

1. it is missing, unreadable, not JSON or not a tuning file (`read_tuning`);
2. it was measured on another bundle (its manifest sha256 differs: another model, or the same
   model with other variants);
3. it was measured on another machine: another CPU model, other CPU flags, another number of
   usable cores, another onnxruntime or openvino version (`fingerprint_difference`);
4. its winner names a variant the bundle lacks, one that is not gated, or an engine that cannot
   run here.

The winner used is the one measured at the batch size nearest the one in use (on a log scale;
the larger on a tie). For a run from files (``for_files``, with the decode in use), the files
stage's winner (`tune --images`: model, engine and decoding pool, measured through predict's
code) where the file has one for that decode, 4. applying to it too; else the model-only
winner, the line saying why.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.classifier.preprocess import trained_decode
from onnxedge.runtime.engines import engine_unavailable_reason
from onnxedge.runtime.errors import OnnxEdgeError
from onnxedge.runtime.tune.file import (
    TuningFile,
    default_tuning_path,
    manifest_sha256,
    read_tuning,
)
from onnxedge.runtime.tune.fingerprint import fingerprint_difference, machine_fingerprint
from onnxedge.runtime.tune.setup import FilesSetup, TunedSetup
from onnxedge.runtime.variants.manifest import FP32

TunedArg = bool | str | Path | None


@dataclasses.dataclass(frozen=True)
class TunedChoice:
    """The outcome of ``--tuned``: ``setup`` to run (measured at ``tuned_batch``), or None with
    ``reason`` saying why the file at ``path`` was ignored."""

    path: Path
    batch_size: int
    setup: TunedSetup | None = None
    tuned_batch: int | None = None
    reason: str = ""
    files: FilesSetup | None = None  # the files stage's winner, for a run from files
    note: str = ""  # why a run from files has the model-only winner

    def __bool__(self) -> bool:
        return self.setup is not None or self.files is not None

    def line(self) -> str:
        """One line for the user: what runs, or why the file was ignored."""
        if self.files is not None:
            return (
                f"tuned: {self.files.describe()} (fastest from files, {self.files.decode} "
                f"decode, at batch {self.tuned_batch} in {self.path})"
            )
        if self.setup is not None:
            note = f"; {self.note}" if self.note else ""
            return (
                f"tuned: {self.setup.describe()} (fastest at batch {self.tuned_batch} in "
                f"{self.path}{note})"
            )
        return f"tuning file ignored: {self.reason}; running the defaults"


def tuning_path(bundle: str | Path, tuned: TunedArg) -> Path | None:
    """The file ``tuned`` names: None for no ``--tuned``, the default place for True."""
    if tuned is None or tuned is False:
        return None
    if tuned is True:
        return default_tuning_path(bundle)
    return Path(tuned)


# How much of why a tuning file is ignored its warning shows beyond the file's path (a value in
# the file can be any length; CLI.md: no line over 200 characters beyond the paths it names).
REASON_CHARS = 200


def resolve_tuned(
    bundle: Bundle,
    tuned: TunedArg,
    batch_size: int,
    *,
    for_files: bool = False,
    decode: str | None = None,
) -> TunedChoice | None:
    """The tuned setup for ``bundle`` at ``batch_size`` (``for_files``: for a run from files
    decoded as ``decode``, None being the bundle's trained decode, the files winner where there
    is one), or one ignored with the reason (module docstring); None where no tuning was asked
    for."""
    path = tuning_path(bundle.path, tuned)
    if path is None:
        return None
    files_decode = (decode or trained_decode(bundle.preprocessing)) if for_files else None
    try:
        tuning = _holding(bundle, path)
        files = tuning.files
        if files_decode is not None and files is not None and files.decode == files_decode:
            _check_runs(bundle, path, files.variant, files.engine, files.precision)
            return TunedChoice(path, batch_size, tuned_batch=tuning.files_batch, files=files)
        setup, tuned_batch = _choose(bundle, path, tuning, batch_size)
    except OnnxEdgeError as e:  # the file's values cut, not its path: one warning line
        reason, most = str(e), len(str(path)) + REASON_CHARS
        reason = reason if len(reason) <= most else reason[:most] + "..."
        return TunedChoice(path, batch_size, reason=reason)
    note = ""
    if files_decode is not None:
        note = (  # a files stage for this decode would have been returned above
            f"no files stage for the {files_decode} decode: tune --images measures one"
            if tuning.files is None
            else f"its files stage decoded {tuning.files.decode}, this run {files_decode}"
        )
    return TunedChoice(path, batch_size, setup, tuned_batch, note=note)


def _holding(bundle: Bundle, path: Path) -> TuningFile:
    """1. to 3.: the tuning file at ``path`` where it holds for this bundle and machine."""
    tuning = read_tuning(path)  # 1.
    here = manifest_sha256(bundle)
    if tuning.manifest_sha256 != here:  # 2.
        raise OnnxEdgeError(
            f"{path} was measured on another bundle (manifest sha256 "
            f"{tuning.manifest_sha256[:12]}, {bundle.path}'s {here[:12]})"
        )
    difference = fingerprint_difference(tuning.machine, machine_fingerprint())
    if difference:  # 3.
        raise OnnxEdgeError(f"{path} was measured on another machine: {difference}")
    return tuning


def _choose(
    bundle: Bundle, path: Path, tuning: TuningFile, batch_size: int
) -> tuple[TunedSetup, int]:
    batch = nearest_batch(tuning.winners, batch_size)
    setup = tuning.winners[batch]
    _check_runs(bundle, path, setup.variant, setup.engine, setup.precision)
    return setup, batch


def _check_runs(bundle: Bundle, path: Path, variant: str, engine: str, precision: str) -> None:
    """4.: the variant is the bundle's and gated, the engine runs here."""
    if variant != FP32:
        entry = bundle.variants.get(variant)
        if entry is None:
            have = ", ".join([FP32, *bundle.variants])
            raise OnnxEdgeError(
                f"{path} names the variant {variant!r}, which {bundle.path} lacks (it has {have})"
            )
        if not entry.gated:
            raise OnnxEdgeError(f"{path} names the variant {variant!r}, which is not gated")
    reason = engine_unavailable_reason(engine, precision)
    if reason:
        raise OnnxEdgeError(f"{path} names the engine {engine}: {reason}")


def nearest_batch(winners: dict[int, TunedSetup] | object, batch_size: int) -> int:
    """The tuned batch size nearest ``batch_size`` on a log scale, the larger on a tie (8 is
    as near 1 as 64)."""
    sizes = sorted(winners)  # type: ignore[call-overload]
    return min(sizes, key=lambda b: (abs(math.log(b / batch_size)), -b))


__all__ = ["TunedArg", "TunedChoice", "nearest_batch", "resolve_tuned", "tuning_path"]
