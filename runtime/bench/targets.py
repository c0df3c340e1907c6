"""Benchmark targets are the user's: ``--target TEXT`` (repeatable) or ``--targets FILE.toml``.
This module parses them; `onnxedge.runtime.bench.verdicts` judges them from the measured rows.

The grammar (spaces are allowed between the parts)::

    TARGET := [DEVICE ":"] CLAIM "@" BATCH
    CLAIM  := SIDE "/" SIDE ">=" NUMBER ["x"]        throughput ratio: left over right
            | [SIDE " "] "p50" "<=" NUMBER UNIT       p50 latency of SIDE (default onnxruntime)
    SIDE   := ENGINE ["[" QUALIFIER {"," QUALIFIER} "]"]
    QUALIFIER := MODE | VARIANT | PRECISION
    DEVICE := cpu | cuda                              default cpu
    MODE   := end-to-end | from-files | device-resident | cuda-graph   default end-to-end
    VARIANT := fp32 | int8 | fp16 | fp32-ort | int8-ort (`VARIANTS`)   default fp32
    PRECISION := bf16 (`PRECISIONS`: OpenVINO's bf16 inference)      default the model's own
    UNIT   := ms | us | µs
    BATCH  := an integer >= 1 | max                   max: the largest batch measured for every side

ENGINE is an engine as the report names it (`target_engines`: onnxruntime, openvino,
torch-eager, torch-channels-last, torch-compile, ...); a side without a variant is the bundle's
fp32 model (``model.onnx``). ``from-files`` is the CPU row that decodes a folder of images
(``bench --images DIR``). Examples::

    onnxruntime/torch-eager>=3.5@64                     CPU, end-to-end, batch 64
    onnxruntime[int8]/onnxruntime>=3@64                 a variant against the fp32 model
    openvino[int8]/onnxruntime>=3@64                    another engine's int8 against ORT fp32
    onnxruntime[from-files,int8]/onnxruntime[from-files]>=1.2@32
    cuda:onnxruntime[cuda-graph] p50<=50us@1
    cuda:onnxruntime[device-resident]/torch-eager[device-resident]>=2@max

A TOML file holds a list of tables, each with ``target`` (the text above) and optionally ``name``
(the name in the report; default: the text) and ``note`` (shown with the target)::

    [[target]]
    name = "cpu-b64-vs-eager"
    target = "onnxruntime/torch-eager>=3.5@64"
    note = "set for a 2-core CPU"

Anything else is a `TargetError` that says what was expected and what was found.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from onnxedge.runtime.bench.engines import (
    E2E,
    FILES,
    GRAPH,
    ORT,
    PEERS,
    PRECISIONS,
    RESIDENT,
    VARIANTS,
    target_engines,
)
from onnxedge.runtime.errors import OnnxEdgeError
from onnxedge.runtime.variants.manifest import FP32

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEVICES = ("cpu", "cuda")
MODES = (E2E, FILES, RESIDENT, GRAPH)
CPU_MODES = (E2E, FILES)
RATIO, LATENCY = "ratio", "p50"
GRAMMAR_HINT = (
    "[cpu:|cuda:]ENGINE[MODE]/ENGINE[MODE]>=RATIO@BATCH or [cpu:|cuda:][ENGINE[MODE] ]p50<=X ms"
    "@BATCH, such as onnxruntime/torch-eager>=3.5@64 or cuda:onnxruntime[cuda-graph] p50<=50us@1"
    " (docs/BENCHMARKS.md)"
)

_NUMBER = r"[0-9]+(?:\.[0-9]*)?(?:e[-+]?[0-9]+)?|\.[0-9]+(?:e[-+]?[0-9]+)?"
_SIDE = r"[A-Za-z][A-Za-z0-9_.-]*(?:\s*\[[^\]]*\])?"
_TARGET = re.compile(
    rf"""^\s*(?:(?P<device>[A-Za-z]+)\s*:)?\s*
    (?:
        (?P<left>{_SIDE})\s*/\s*(?P<right>{_SIDE})\s*>=\s*(?P<ratio>{_NUMBER})\s*[x×]?
      | (?:(?P<side>{_SIDE})(?:\s+|(?<=\])))?p50\s*<=\s*(?P<ms>{_NUMBER})\s*(?P<unit>ms|us|µs)
    )
    \s*@\s*(?P<batch>[0-9]+|max)\s*$""",
    re.VERBOSE | re.IGNORECASE,
)
_UNIT_MS = {"ms": 1.0, "us": 1e-3, "µs": 1e-3}


class TargetError(OnnxEdgeError):
    """A target that does not parse, or that the run cannot measure as asked (a usage error)."""


@dataclasses.dataclass(frozen=True)
class Side:
    """One engine in one mode on one of the bundle's models, at the model's own precision or
    another, as the report's rows name them (`EngineInfo`'s engine, mode, variant, precision)."""

    engine: str
    mode: str = E2E
    variant: str = FP32
    precision: str = ""

    def label(self, device: str) -> str:
        variant = "" if self.variant == FP32 else self.variant
        return " ".join(filter(None, (self.engine, device, self.mode, variant, self.precision)))

    def describe(self) -> str:
        variant = "" if self.variant == FP32 else self.variant
        return f"{self.engine} ({', '.join(filter(None, (self.mode, variant, self.precision)))})"


@dataclasses.dataclass(frozen=True)
class Target:
    """A figure the user asks for: ``left`` over ``right`` throughput at least ``required``
    (``kind`` ratio), or ``left``'s p50 latency at most ``required`` ms (``kind`` p50), on
    ``device`` at ``batch_size`` (None: the largest batch measured for every side)."""

    text: str  # as given
    kind: str  # RATIO or LATENCY
    device: str
    left: Side
    required: float  # a ratio (x), or milliseconds
    batch_size: int | None
    right: Side | None = None
    name: str = ""  # the name in the report; default: the text
    note: str = ""
    unit: str = "ms"  # for LATENCY: the unit it was given in, for the report

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", self.text)

    @property
    def sides(self) -> tuple[Side, ...]:
        return (self.left,) if self.right is None else (self.left, self.right)

    @property
    def description(self) -> str:
        at = f"at batch {self.batch_size}" if self.batch_size else "at the largest batch"
        where = self.device.upper() if self.device == "cpu" else "CUDA"
        if self.kind == RATIO:
            assert self.right is not None
            what = (
                f"{where}: {self.left.describe()} ≥ {self.required:g}× "
                f"{self.right.describe()} throughput {at}"
            )
        else:
            what = (
                f"{where}: {self.left.describe()} p50 ≤ "
                f"{format_latency(self.required, self.unit)} {at}"
            )
        return what + (f" ({self.note})" if self.note else "")


def format_latency(ms: float, unit: str = "ms") -> str:
    """``ms`` in the unit a target was given in: ``50 µs``, ``0.545 ms``."""
    if unit in ("us", "µs"):
        return f"{ms * 1e3:.1f} µs" if ms * 1e3 < 100 else f"{ms * 1e3:.0f} µs"
    return f"{ms:.3g} ms"


def parse_target(text: str, *, name: str = "", note: str = "") -> Target:
    """One target from its text (the grammar above); a `TargetError` says what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise TargetError(f"expected a target such as {GRAMMAR_HINT}; found {text!r}")
    match = _TARGET.match(text)
    if match is None:
        raise TargetError(f"cannot read the target {text.strip()!r}: expected {GRAMMAR_HINT}")
    device = (match["device"] or "cpu").lower()
    if device not in DEVICES:
        raise TargetError(
            f"target {text.strip()!r}: unknown device {match['device']!r}; expected "
            + " or ".join(DEVICES)
        )
    batch = None if match["batch"].lower() == "max" else int(match["batch"])
    if batch is not None and batch < 1:
        raise TargetError(f"target {text.strip()!r}: expected a batch size >= 1, found {batch}")
    common: dict[str, Any] = {
        "text": text.strip(),
        "device": device,
        "batch_size": batch,
        "name": name,
        "note": note,
    }
    if match["ratio"] is not None:
        left, right = (_side(match[k], device, text) for k in ("left", "right"))
        if left == right:
            raise TargetError(
                f"target {text.strip()!r}: expected two different sides, found "
                f"{left.describe()} twice"
            )
        return Target(
            kind=RATIO, left=left, right=right, required=_positive(match["ratio"], text), **common
        )
    unit = match["unit"].lower()
    side = _side(match["side"], device, text) if match["side"] else Side(ORT)
    required = _positive(match["ms"], text) * _UNIT_MS[unit]
    return Target(kind=LATENCY, left=side, required=required, unit=unit, **common)


def _side(text: str, device: str, target: str) -> Side:
    engine, _, qualifiers = text.partition("[")
    engine = engine.strip().lower()
    known = target_engines()
    if engine not in known:
        raise TargetError(
            f"target {target.strip()!r}: unknown engine {engine!r}; expected one of: "
            + ", ".join(known)
        )
    words = [q.strip().lower() for q in qualifiers.rstrip("]").split(",") if q.strip()]
    unknown = next((w for w in words if w not in (*MODES, *VARIANTS, *PRECISIONS)), None)
    if unknown is not None:
        raise TargetError(
            f"target {target.strip()!r}: unknown mode, variant or precision {unknown!r}; expected "
            f"modes {', '.join(MODES)}, variants {', '.join(VARIANTS)} or precisions "
            f"{', '.join(PRECISIONS)}"
        )
    modes = [w for w in words if w in MODES]
    variants = [w for w in words if w in VARIANTS]
    precisions = [w for w in words if w in PRECISIONS]
    if len(modes) > 1 or len(variants) > 1 or len(precisions) > 1:
        raise TargetError(
            f"target {target.strip()!r}: expected at most one mode, one variant and one "
            f"precision after {engine}, found [{qualifiers}"
        )
    mode = modes[0] if modes else E2E
    if device == "cpu" and mode not in CPU_MODES:
        raise TargetError(
            f"target {target.strip()!r}: on the cpu every engine runs {E2E} (or {FILES}); {mode} "
            "is a cuda mode (write cuda: before the target)"
        )
    if device != "cpu" and mode == FILES:
        raise TargetError(
            f"target {target.strip()!r}: {FILES} rows run on the cpu only (bench --images)"
        )
    return Side(
        engine,
        mode,
        variants[0] if variants else FP32,
        precisions[0] if precisions else "",
    )


def _positive(text: str, target: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise TargetError(f"target {target.strip()!r}: expected a number > 0, found {text}")
    return value


def parse_targets(texts: Sequence[str]) -> tuple[Target, ...]:
    """`parse_target` for each; the same text twice counts once."""
    return unique_targets(parse_target(t) for t in texts)


def unique_targets(targets: Any) -> tuple[Target, ...]:
    """The targets in order, one per text; two different targets under one name are an error."""
    out: dict[str, Target] = {}
    for t in targets:
        seen = out.get(t.name)
        if seen is not None and seen != t:
            raise TargetError(f"two targets are named {t.name!r}: {seen.text!r} and {t.text!r}")
        out.setdefault(t.name, t)
    return tuple(out.values())


_FILE_KEYS = ("target", "name", "note")
MAX_TARGETS_BYTES = 1 << 20  # a few targets take a few hundred bytes


def read_targets_file(path: str | Path) -> tuple[Target, ...]:
    """The targets of a TOML file (the format above)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_TARGETS_BYTES:
            raise TargetError(
                f"{path}: expected a targets file of at most {MAX_TARGETS_BYTES:,} bytes, "
                f"found {size:,}"
            )
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise TargetError(f"cannot read {path}: {e.strerror or e}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise TargetError(f"{path} is not TOML: {e}") from None
    except RecursionError:
        raise TargetError(f"{path}: expected TOML nested a few levels deep, found deeper") from None
    extra = sorted(set(data) - {"target"})
    tables = data.get("target")
    if extra or not isinstance(tables, list) or not tables:
        found = f"keys {extra}" if extra else f"target = {type(tables).__name__}"
        raise TargetError(
            f'{path}: expected one or more [[target]] tables (target = "...", optional name '
            f"and note), found {found}"
        )
    targets = []
    for i, table in enumerate(tables, 1):
        where = f"{path}: target {i}"
        if not isinstance(table, Mapping):
            raise TargetError(f"{where}: expected a table, found {type(table).__name__}")
        unknown = sorted(set(table) - set(_FILE_KEYS))
        if unknown:
            raise TargetError(f"{where}: unknown key {unknown[0]!r}; expected {_FILE_KEYS}")
        if not all(isinstance(table.get(k, ""), str) for k in _FILE_KEYS):
            raise TargetError(f"{where}: expected target, name and note as strings")
        if "target" not in table:
            raise TargetError(f"{where}: expected a 'target' key, found {sorted(table)}")
        try:
            target = parse_target(
                table["target"], name=table.get("name", ""), note=table.get("note", "")
            )
        except TargetError as e:
            raise TargetError(f"{where}: {e}") from None
        targets.append(target)
    try:
        return unique_targets(targets)
    except TargetError as e:
        raise TargetError(f"{path}: {e}") from None


def check_targets_fit(
    targets: Sequence[Target],
    *,
    batch_sizes: Sequence[int],
    devices: Sequence[str],
    peers: Sequence[str],
    variants: Sequence[str] | None = None,
    files: bool = False,
    files_batch_size: int | None = None,
) -> None:
    """A `TargetError` for a target this run cannot measure as configured: its batch size is not
    among ``batch_sizes`` (``files_batch_size`` for a from-files side), its device among those of
    the providers asked for, a PyTorch peer it names among ``peers`` (engine names), a variant it
    names among ``variants`` (None: the bundle decides), or a from-files side without ``files``.
    An engine that is asked for but cannot run here is another matter: its targets are NOT
    MEASURED, with the reason."""
    for t in targets:
        for side in t.sides:
            if variants is not None and side.variant not in variants:
                raise TargetError(
                    f"target {t.name!r} needs the {side.variant} model, which this run does not "
                    f"time (add {side.variant} to --variants)"
                )
            if side.mode == FILES and not files:
                raise TargetError(
                    f"target {t.name!r} needs a {FILES} row: give image files with --images DIR"
                )
        in_files = any(side.mode == FILES for side in t.sides)
        if in_files and files_batch_size is not None:
            if t.batch_size not in (None, files_batch_size):
                raise TargetError(
                    f"target {t.name!r} is at batch {t.batch_size}, but the {FILES} rows run at "
                    f"--images-batch-size {files_batch_size}"
                )
        elif t.batch_size is not None and t.batch_size not in batch_sizes:
            raise TargetError(
                f"target {t.name!r} is at batch {t.batch_size}, which is not among the batch "
                f"sizes of this run ({','.join(map(str, batch_sizes))})"
            )
        if t.device not in devices:
            raise TargetError(
                f"target {t.name!r} is on {t.device}, but no {t.device} provider is asked for "
                f"(devices of this run: {', '.join(devices)})"
            )
        for side in t.sides:
            if side.engine in PEERS.values() and side.engine not in peers:
                short = next(k for k, v in PEERS.items() if v == side.engine)
                raise TargetError(
                    f"target {t.name!r} needs the engine {side.engine}, which this run does not "
                    f"time (add {short} to --peers)"
                )
