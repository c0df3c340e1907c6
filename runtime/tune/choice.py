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
the larger on a tie).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.engines import engine_unavailable_reason
from onnxedge.runtime.errors import OnnxEdgeError
from onnxedge.runtime.tune.file import default_tuning_path, manifest_sha256, read_tuning
from onnxedge.runtime.tune.fingerprint import fingerprint_difference, machine_fingerprint
from onnxedge.runtime.tune.setup import TunedSetup
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

    def __bool__(self) -> bool:
        return self.setup is not None

    def line(self) -> str:
        """One line for the user: what runs, or why the file was ignored."""
        if self.setup is not None:
            return (
                f"tuned: {self.setup.describe()} (fastest at batch {self.tuned_batch} in "
                f"{self.path})"
            )
        return f"tuning file ignored: {self.reason}; running the defaults"


def tuning_path(bundle: str | Path, tuned: TunedArg) -> Path | None:
    """The file ``tuned`` names: None for no ``--tuned``, the default place for True."""
    if tuned is None or tuned is False:
        return None
    if tuned is True:
        return default_tuning_path(bundle)
    return Path(tuned)


def resolve_tuned(bundle: Bundle, tuned: TunedArg, batch_size: int) -> TunedChoice | None:
    """The tuned setup for ``bundle`` at ``batch_size``, or one ignored with the reason (module
    docstring); None where no tuning was asked for."""
    path = tuning_path(bundle.path, tuned)
    if path is None:
        return None
    try:
        setup, tuned_batch = _choose(bundle, path, batch_size)
    except OnnxEdgeError as e:
        return TunedChoice(path, batch_size, reason=str(e))
    return TunedChoice(path, batch_size, setup, tuned_batch)


def _choose(bundle: Bundle, path: Path, batch_size: int) -> tuple[TunedSetup, int]:
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
    batch = nearest_batch(tuning.winners, batch_size)
    setup = tuning.winners[batch]
    if setup.variant != FP32:  # 4.
        entry = bundle.variants.get(setup.variant)
        if entry is None:
            have = ", ".join([FP32, *bundle.variants])
            raise OnnxEdgeError(
                f"{path} names the variant {setup.variant!r}, which {bundle.path} lacks "
                f"(it has {have})"
            )
        if not entry.gated:
            raise OnnxEdgeError(f"{path} names the variant {setup.variant!r}, which is not gated")
    reason = engine_unavailable_reason(setup.engine, setup.precision)
    if reason:
        raise OnnxEdgeError(f"{path} names the engine {setup.engine}: {reason}")
    return setup, batch


def nearest_batch(winners: dict[int, TunedSetup] | object, batch_size: int) -> int:
    """The tuned batch size nearest ``batch_size`` on a log scale, the larger on a tie (8 is
    as near 1 as 64)."""
    sizes = sorted(winners)  # type: ignore[call-overload]
    return min(sizes, key=lambda b: (abs(math.log(b / batch_size)), -b))


__all__ = ["TunedArg", "TunedChoice", "nearest_batch", "resolve_tuned", "tuning_path"]
