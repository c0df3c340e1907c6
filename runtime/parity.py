"""Parity: does a bundle's ``model.onnx`` under ONNX Runtime compute what the PyTorch model did?

The pieces, kept apart as in Polygraphy (loader, runner, comparator):

1. The reference. `load_golden` reads ``golden.npz``, the inputs and PyTorch outputs that
   `onnxedge export` stored in the bundle (sha256 checked against the manifest); or
   ``onnxedge.export.golden.live_reference`` recomputes them where torch is installed. Either way
   a `Reference`: per batch size the float32 inputs, what each row is (`kinds`), and the reference
   probabilities and pre-sigmoid values (logits) in float64 (the truth) and float32.
2. The preprocessing. `check_preprocessing` fails when the bundle's manifest states another
   preprocessing than the reference was made with, or when this runtime's `preprocess_image`,
   applied as the manifest states, no longer makes the reference's structured inputs bit for bit;
   where there is nothing to re-make (a live reference, no structured rows) it is skipped.
3. The graphs. Probabilities come from the shipped ``model.onnx`` as it is, loaded from its path
   (external data resolves as on the device); the logits from a check-only copy made in memory
   (`with_logits_output`) that also outputs the Sigmoid's input, because a saturated sigmoid hides
   errors that the logits show.
4. The run. `run_parity` builds a session per provider (and TF32 setting on CUDA) with
   `make_session`; a provider that cannot run here (`ProviderUnavailable`) gives `SKIPPED` rows
   with the reason, never a pass, and any other load error `FAILED` rows. Each provider x batch
   size is a `ParityRow`: max abs / max rel / mean abs error on probabilities and logits,
   0.5-threshold label agreement, the tolerances used, the TF32 setting as onnxruntime reported it.

Only numpy, onnx and onnxruntime (and PIL for the preprocessing check) are needed: no torch.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import logging
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxedge.runtime.bundle import Bundle
from onnxedge.runtime.check import producers_of, walk_back
from onnxedge.runtime.classifier import check_external_data
from onnxedge.runtime.compare import Comparison, compare_arrays
from onnxedge.runtime.errors import BundleError, OnnxEdgeError, ProviderUnavailable, first_line
from onnxedge.runtime.preprocess import normalize, preprocess_image
from onnxedge.runtime.session import SessionConfig, make_session, provider_name

log = logging.getLogger(__name__)

GOLDEN = "golden.npz"
GOLDEN_FORMAT = "onnxedge-golden"
GOLDEN_VERSION = 1
DEFAULT_BATCH_SIZES = (1, 2, 7, 64)
GOLDEN_SEED = 0
# Synthetic images, preprocessed as the manifest says: black, white, mid-grey (128), a left-to-right
# and a top-to-bottom ramp. With the default preprocessing: all zeros, all ones, 0.502, gradients.
STRUCTURED_KINDS = ("zeros", "ones", "grey", "gradient-h", "gradient-v")
RANDOM_KIND = "random"
IMAGE_PREFIX = "image:"
# Width x height of the synthetic images: neither square nor the model's size, so that the crop
# and the resize of the preprocessing both run on them (CelebA's 178x218, halved).
STRUCTURED_SOURCE_SIZE = (89, 109)

PARITY_PROVIDERS = ("cpu", "cuda")
TF32_SETTINGS = ("off", "on")


# --- tolerances -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """Elementwise ``|actual - expected| <= atol + rtol * |expected|``."""

    atol: float
    rtol: float

    def __str__(self) -> str:
        return f"atol {self.atol:g}, rtol {self.rtol:g}"


@dataclasses.dataclass(frozen=True)
class Tolerances:
    prob: Tolerance
    logits: Tolerance
    basis: str  # where they come from: "default for cpu", "default for cuda with tf32 off", ...

    def to_dict(self) -> dict[str, Any]:
        return {
            "prob": dataclasses.asdict(self.prob),
            "logits": dataclasses.asdict(self.logits),
            "basis": self.basis,
        }


# Why these numbers: docs/PARITY.md. Keyed by provider and TF32 setting (None: does not apply).
DEFAULT_TOLERANCES: dict[tuple[str, str | None], tuple[Tolerance, Tolerance]] = {
    ("cpu", None): (Tolerance(1e-5, 1e-4), Tolerance(1e-5, 1e-4)),
    ("cuda", "off"): (Tolerance(1e-4, 1e-3), Tolerance(1e-4, 1e-3)),
    ("cuda", "on"): (Tolerance(5e-3, 1e-2), Tolerance(2e-2, 1e-2)),
}


@dataclasses.dataclass(frozen=True)
class ToleranceOverrides:
    """What the user passed with --atol/--rtol (probabilities) and --logit-atol/--logit-rtol."""

    atol: float | None = None
    rtol: float | None = None
    logit_atol: float | None = None
    logit_rtol: float | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in dataclasses.astuple(self))


@dataclasses.dataclass(frozen=True)
class Target:
    """One provider to run on, with its TF32 setting where it has one (CUDA)."""

    provider: str  # short name: cpu, cuda
    tf32: str | None = None  # "off" | "on" on CUDA; None where it does not apply

    def session_config(self) -> SessionConfig:
        options = {"use_tf32": "1" if self.tf32 == "on" else "0"} if self.tf32 else {}
        return SessionConfig(provider=self.provider, provider_options=options)

    def tolerances(self, overrides: ToleranceOverrides | None = None) -> Tolerances:
        prob, logits = DEFAULT_TOLERANCES[(self.provider, self.tf32)]
        basis = f"default for {self.provider}" + (f" with tf32 {self.tf32}" if self.tf32 else "")
        o = overrides or ToleranceOverrides()
        if o:
            prob = Tolerance(_pick(o.atol, prob.atol), _pick(o.rtol, prob.rtol))
            logits = Tolerance(_pick(o.logit_atol, logits.atol), _pick(o.logit_rtol, logits.rtol))
            basis += ", overridden on the command line"
        return Tolerances(prob, logits, basis)


def _pick(override: float | None, default: float) -> float:
    return default if override is None else float(override)


def make_targets(providers: Sequence[str], tf32: str = "off") -> list[Target]:
    """Targets for short provider names; ``tf32`` is off, on or both (CUDA only)."""
    settings = TF32_SETTINGS if tf32 == "both" else (tf32,)
    if any(s not in TF32_SETTINGS for s in settings):
        raise OnnxEdgeError(f"unknown TF32 setting {tf32!r}; expected off, on or both")
    targets: list[Target] = []
    for short in providers:
        if short not in PARITY_PROVIDERS:
            raise OnnxEdgeError(
                f"parity has no tolerances for provider {short!r}; expected one of: "
                + ", ".join(PARITY_PROVIDERS)
            )
        if short == "cuda":
            targets += [Target("cuda", s) for s in settings]
        else:
            targets.append(Target(short))
    return list(dict.fromkeys(targets))


# --- golden inputs ----------------------------------------------------------------------------


def structured_image(kind: str, size: tuple[int, int] = STRUCTURED_SOURCE_SIZE) -> Any:
    """The synthetic 8-bit RGB PIL image for one of `STRUCTURED_KINDS`."""
    from PIL import Image

    width, height = size
    if kind == "zeros":
        pixels = np.zeros((height, width), dtype=np.uint8)
    elif kind == "ones":
        pixels = np.full((height, width), 255, dtype=np.uint8)
    elif kind == "grey":
        pixels = np.full((height, width), 128, dtype=np.uint8)
    elif kind == "gradient-h":
        ramp = np.round(np.linspace(0, 255, width)).astype(np.uint8)
        pixels = np.broadcast_to(ramp[None, :], (height, width))
    elif kind == "gradient-v":
        ramp = np.round(np.linspace(0, 255, height)).astype(np.uint8)
        pixels = np.broadcast_to(ramp[:, None], (height, width))
    else:
        raise ValueError(f"unknown structured input {kind!r}")
    rgb = np.repeat(np.ascontiguousarray(pixels)[:, :, None], 3, axis=2)
    return Image.fromarray(rgb, mode="RGB")


def structured_input(kind: str, preprocessing: Mapping[str, Any]) -> np.ndarray:
    """A structured input row [C, H, W]: its synthetic image through `preprocess_image`."""
    return preprocess_image(structured_image(kind), preprocessing)


def random_rows(
    count: int, preprocessing: Mapping[str, Any], *, batch: int, seed: int = GOLDEN_SEED
) -> np.ndarray:
    """``count`` rows [N, C, H, W] of uniform random pixel values in [0, 255), continuous (not
    rounded to 8 bits), scaled and normalised as the preprocessing states."""
    height, width = (int(v) for v in preprocessing["resize"])
    rng = np.random.default_rng([seed, batch])
    pixels = rng.random((count, height, width, 3), dtype=np.float32) * np.float32(255.0)
    return normalize(pixels, preprocessing)


def golden_inputs(
    batch: int,
    preprocessing: Mapping[str, Any],
    *,
    images: Sequence[tuple[str, np.ndarray]] = (),
    seed: int = GOLDEN_SEED,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """The inputs of one golden batch and what each row is.

    The first rows are the structured inputs, then the real images (``images``: name and
    preprocessed array), as many as fit while leaving at least one random row; the rest is random.
    So batch 1 is one random row, batch 2 is zeros and a random row, batch 7 has every structured
    input and two random rows.
    """
    if batch < 1:
        raise OnnxEdgeError(f"expected a batch size of at least 1, found {batch}")
    fixed: list[tuple[str, np.ndarray]] = [
        (kind, structured_input(kind, preprocessing)) for kind in STRUCTURED_KINDS
    ]
    fixed += [(f"{IMAGE_PREFIX}{name}", array) for name, array in images]
    fixed = fixed[: batch - 1]
    rows = [array[None] for _, array in fixed]
    rows.append(random_rows(batch - len(fixed), preprocessing, batch=batch, seed=seed))
    kinds = tuple(kind for kind, _ in fixed) + (RANDOM_KIND,) * (batch - len(fixed))
    return np.ascontiguousarray(np.concatenate(rows), dtype=np.float32), kinds


def _canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


# --- the reference --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ReferenceBatch:
    """One batch of reference data: inputs and PyTorch's outputs for them."""

    inputs: np.ndarray  # float32 [N, C, H, W]
    kinds: tuple[str, ...]  # what each row is: zeros, ..., image:<name>, random
    prob: np.ndarray  # float64 [N, 1]: the float64 model on the float64 inputs (the truth)
    logits: np.ndarray  # float64 [N, 1]: the Sigmoid's input
    prob_f32: np.ndarray  # float32 [N, 1]: the float32 model, for comparison
    logits_f32: np.ndarray

    @property
    def batch(self) -> int:
        return int(self.inputs.shape[0])


@dataclasses.dataclass(frozen=True)
class Reference:
    """What parity compares against: reference batches and the preprocessing they were made with."""

    source: str  # "golden" or "live"
    description: str
    preprocessing: Mapping[str, Any]
    batches: Mapping[int, ReferenceBatch]
    logits_name: str | None = None  # the pre-sigmoid tensor in model.onnx, where recorded
    seed: int = GOLDEN_SEED

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        return tuple(sorted(self.batches))

    def batch(self, size: int) -> ReferenceBatch:
        if size not in self.batches:
            raise OnnxEdgeError(
                f"the {self.source} reference has no batch of {size}: it holds batch sizes "
                f"{', '.join(map(str, self.batch_sizes))} (re-export, or use --reference live "
                "to compute any batch size)"
            )
        return self.batches[size]

    def select(self, sizes: Sequence[int]) -> Reference:
        """The same reference limited to ``sizes`` (each must be present)."""
        batches = {size: self.batch(size) for size in sizes}
        return dataclasses.replace(self, batches=batches)


def _key(batch: int, what: str) -> str:
    return f"{what}_b{batch}"


def golden_npz_bytes(reference: Reference, meta: Mapping[str, Any]) -> bytes:
    """``golden.npz`` for a reference: an uncompressed npz, no pickled objects, byte-identical for
    identical contents (fixed timestamps, fixed order)."""
    arrays: dict[str, np.ndarray] = {
        "meta": np.frombuffer(_canonical_json(dict(meta)), dtype=np.uint8)
    }
    for size in reference.batch_sizes:
        b = reference.batches[size]
        arrays[_key(size, "inputs")] = np.asarray(b.inputs, dtype=np.float32)
        arrays[_key(size, "kinds")] = np.asarray(b.kinds, dtype=np.str_)
        arrays[_key(size, "prob") + "_f64"] = np.asarray(b.prob, dtype=np.float64)
        arrays[_key(size, "logits") + "_f64"] = np.asarray(b.logits, dtype=np.float64)
        arrays[_key(size, "prob") + "_f32"] = np.asarray(b.prob_f32, dtype=np.float32)
        arrays[_key(size, "logits") + "_f32"] = np.asarray(b.logits_f32, dtype=np.float32)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def load_golden(bundle: Bundle) -> Reference:
    """The golden reference of a bundle; its file's sha256 is checked against the manifest.

    A bundle without golden data, a missing, altered or unreadable file, or one that lacks what
    the manifest says it holds is a `BundleError` naming the file and what was wrong.
    """
    block = bundle.manifest.get("golden")
    if not isinstance(block, Mapping) or "file" not in block:
        raise BundleError(
            f"{bundle.path} has no golden data: its manifest has no 'golden' block (exported by "
            "an older onnxedge?); re-export it, or use --reference live where torch is installed"
        )
    name = str(block["file"])
    path = bundle.file(name)  # verifies the sha256 against the manifest's file list
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise BundleError(
            f"cannot read {path}: expected a numpy .npz archive, found: {first_line(e)}"
        ) from None
    meta = _golden_meta(path, arrays)
    stated = bundle.input.shape
    if len(stated) < 2 or not all(isinstance(d, int) for d in stated[1:]):
        raise BundleError(
            f"{bundle.path}/manifest.json: expected the input shape as [batch, C, H, W] with "
            f"fixed C, H, W, found {list(stated)!r}"
        )
    input_shape = [int(d) for d in stated[1:]]
    batches = {}
    for size in meta["batch_sizes"]:
        batches[int(size)] = _golden_batch(path, arrays, int(size), input_shape)
    if list(block.get("batch_sizes", meta["batch_sizes"])) != list(meta["batch_sizes"]):
        raise BundleError(
            f"{path} holds batch sizes {meta['batch_sizes']}, the manifest says "
            f"{block.get('batch_sizes')}"
        )
    logits_name = block.get("logits", meta.get("logits"))
    return Reference(
        source="golden",
        description=f"{name} (sha256 {bundle.manifest['files'][name]['sha256'][:12]}…, "
        f"{meta.get('reference', 'PyTorch')})",
        preprocessing=meta["preprocessing"],
        batches=batches,
        logits_name=str(logits_name) if logits_name else None,
        seed=int(meta.get("seed", GOLDEN_SEED)),
    )


def _golden_meta(path: Path, arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    if "meta" not in arrays:
        raise BundleError(f"{path} is not golden data: expected a 'meta' entry, found none")
    try:
        meta = json.loads(arrays["meta"].astype(np.uint8).tobytes())
    except (ValueError, UnicodeDecodeError) as e:
        raise BundleError(f"{path}: its 'meta' entry is not JSON: {first_line(e)}") from None
    found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
    if found != GOLDEN_FORMAT or meta.get("format_version") != GOLDEN_VERSION:
        raise BundleError(
            f"{path}: expected golden format {GOLDEN_FORMAT!r} version {GOLDEN_VERSION}, found "
            f"{found!r} version {meta.get('format_version') if isinstance(meta, dict) else None!r}"
        )
    sizes = meta.get("batch_sizes")
    if (
        not isinstance(sizes, list)
        or not sizes
        or not all(isinstance(b, int) and b > 0 for b in sizes)
    ):
        raise BundleError(f"{path}: expected a list of batch sizes in its meta, found {sizes!r}")
    if not isinstance(meta.get("preprocessing"), dict):
        raise BundleError(f"{path}: expected the preprocessing in its meta, found none")
    return meta


def _golden_batch(
    path: Path, arrays: Mapping[str, np.ndarray], size: int, input_shape: list[int]
) -> ReferenceBatch:
    def get(key: str, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
        if key not in arrays:
            raise BundleError(f"{path} lacks {key!r} (batch {size} is listed in its meta)")
        array = arrays[key]
        if array.dtype != dtype or tuple(array.shape) != shape:
            raise BundleError(
                f"{path}: {key!r} should be {np.dtype(dtype).name} {list(shape)}, found "
                f"{array.dtype.name} {list(array.shape)}"
            )
        return array

    shape_in = (size, *input_shape)
    kinds_key = _key(size, "kinds")
    if kinds_key not in arrays or arrays[kinds_key].shape != (size,):
        raise BundleError(f"{path} lacks {kinds_key!r} with {size} entries")
    return ReferenceBatch(
        inputs=get(_key(size, "inputs"), np.float32, tuple(shape_in)),
        kinds=tuple(str(k) for k in arrays[kinds_key]),
        prob=get(_key(size, "prob") + "_f64", np.float64, (size, 1)),
        logits=get(_key(size, "logits") + "_f64", np.float64, (size, 1)),
        prob_f32=get(_key(size, "prob") + "_f32", np.float32, (size, 1)),
        logits_f32=get(_key(size, "logits") + "_f32", np.float32, (size, 1)),
    )


# --- the check-only graph ---------------------------------------------------------------------

# Ops that may sit between the Sigmoid and the graph output without changing values.
_PASS_THROUGH = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze"}


def find_logits_tensor(model: onnx.ModelProto, output: str | None = None) -> str:
    """The name of the tensor that feeds the Sigmoid producing the graph's (first) output."""
    name = output or model.graph.output[0].name
    node = walk_back(name, producers_of(model.graph), set(), _PASS_THROUGH, stop={"Sigmoid"})
    if node is not None and node.op_type == "Sigmoid":
        return node.input[0]
    raise OnnxEdgeError(
        f"expected the output {name!r} to come from a Sigmoid, found "
        + (f"{node.op_type} node {node.name!r}" if node is not None else "no Sigmoid before it")
    )


def with_logits_output(model: onnx.ModelProto, logits_name: str) -> onnx.ModelProto:
    """A check-only copy of ``model`` that also outputs ``logits_name``; the shipped graph keeps
    its one output."""
    produced = {out for node in model.graph.node for out in node.output}
    if logits_name not in produced:
        raise OnnxEdgeError(
            f"model.onnx has no tensor {logits_name!r} (the pre-sigmoid tensor the golden data "
            "was recorded for)"
        )
    checked = copy.deepcopy(model)
    if logits_name not in {o.name for o in checked.graph.output}:
        checked.graph.output.append(
            onnx.helper.make_tensor_value_info(logits_name, onnx.TensorProto.FLOAT, None)
        )
    return checked


# --- preprocessing ----------------------------------------------------------------------------


PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


@dataclasses.dataclass(frozen=True)
class PreprocessingCheck:
    """The bundle's preprocessing against the one the reference was made with. Truthy only when
    it was checked and passed; ``skipped`` says that nothing could be re-made (never a pass)."""

    status: str  # passed | failed | skipped
    detail: str

    def __bool__(self) -> bool:
        return self.status == PASSED

    def __str__(self) -> str:
        return f"{self.status.upper()} | preprocessing | {self.detail}"

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
        json.loads(_canonical_json(dict(stated))),
        json.loads(_canonical_json(dict(reference.preprocessing))),
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
        )
    return PreprocessingCheck(
        PASSED,
        f"{same}; the {checked} structured rows, re-made by this runtime's preprocess_image as "
        "the manifest states, match bit for bit",
    )


# --- rows and the report ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LabelAgreement:
    """The 0.5-threshold labels of actual against reference probabilities."""

    agree: int
    total: int
    flips_outside_tolerance: tuple[int, ...]  # rows whose label flipped though the reference
    # probability is farther from the threshold than the tolerance

    def __bool__(self) -> bool:
        return not self.flips_outside_tolerance


def label_agreement(
    actual: np.ndarray, expected: np.ndarray, *, threshold: float, tolerance: Tolerance
) -> LabelAgreement:
    a = np.asarray(actual, dtype=np.float64).reshape(-1)
    e = np.asarray(expected, dtype=np.float64).reshape(-1)
    flipped = (a >= threshold) != (e >= threshold)
    near = np.abs(e - threshold) <= tolerance.atol + tolerance.rtol * np.abs(e)
    bad = tuple(int(i) for i in np.flatnonzero(flipped & ~near))
    return LabelAgreement(int((~flipped).sum()), int(a.size), bad)


@dataclasses.dataclass(frozen=True)
class ParityRow:
    """One provider (and TF32 setting) at one batch size. Truthy only when it ran and passed."""

    provider: str
    batch: int
    status: str  # passed | failed | skipped
    tolerances: Tolerances
    tf32: str | None = None
    # Whether onnxruntime reported the TF32 setting it runs with (None: no session, or no TF32).
    tf32_confirmed: bool | None = None
    prob: Comparison | None = None
    logits: Comparison | None = None
    labels: LabelAgreement | None = None
    # Informational: the same outputs against PyTorch's float32 reference.
    prob_vs_f32: Comparison | None = None
    logits_vs_f32: Comparison | None = None
    reason: str = ""  # why it failed or was skipped
    required: bool = False

    def __bool__(self) -> bool:
        return self.status == PASSED

    @property
    def ran(self) -> bool:
        return self.prob is not None

    @property
    def tf32_label(self) -> str:
        """``tf32 on``/``tf32 off`` as onnxruntime reported it; where it did not report it, the
        setting is only what was requested, and the label says so."""
        if not self.tf32:
            return "tf32 n/a"
        if self.ran and not self.tf32_confirmed:
            return f"tf32 {self.tf32} (requested, not confirmed by onnxruntime)"
        return f"tf32 {self.tf32}"

    def __str__(self) -> str:
        head = f"{self.status.upper()} | {self.provider} | batch {self.batch} | {self.tf32_label}"
        if not self.ran:
            return f"{head} | {self.reason}"
        parts = [head, _describe("prob", self.prob), _describe("logits", self.logits)]
        if self.labels is not None:
            parts.append(f"labels {self.labels.agree}/{self.labels.total} agree")
        if self.reason:
            parts.append(self.reason)
        return " | ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "line": str(self),
            "provider": self.provider,
            "provider_name": provider_name(self.provider),
            "batch": self.batch,
            "tf32": self.tf32,
            "tf32_confirmed": self.tf32_confirmed,
            "tf32_label": self.tf32_label,
            "status": self.status,
            "required": self.required,
            "reason": self.reason,
            "tolerances": self.tolerances.to_dict(),
            "prob": _comparison_dict(self.prob),
            "logits": _comparison_dict(self.logits),
            "labels": None
            if self.labels is None
            else {
                "threshold_agree": self.labels.agree,
                "total": self.labels.total,
                "flips_outside_tolerance": list(self.labels.flips_outside_tolerance),
            },
            "vs_float32_reference": {
                "prob": _comparison_dict(self.prob_vs_f32),
                "logits": _comparison_dict(self.logits_vs_f32),
            },
        }


def _describe(name: str, c: Comparison | None) -> str:
    if c is None:
        return f"{name} n/a"
    text = (
        f"{name} max_abs {c.max_abs_error:.2g} max_rel {c.max_rel_error:.2g} "
        f"mean_abs {c.mean_abs_error:.2g} (atol {c.atol:g}, rtol {c.rtol:g})"
    )
    return text + (f" {c.detail}" if c.detail else "")


def _comparison_dict(c: Comparison | None) -> dict[str, Any] | None:
    return None if c is None else c.to_dict()


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


# --- running ----------------------------------------------------------------------------------


# onnxruntime's session config key for where a model loaded from bytes finds its external data.
_EXTERNAL_DATA_FOLDER = "session.model_external_initializers_file_folder_path"


@dataclasses.dataclass(frozen=True)
class _Sessions:
    shipped: Any
    checked: Any
    tf32_confirmed: bool | None  # None where the target has no TF32 setting


def run_parity(
    bundle: Bundle,
    reference: Reference,
    *,
    targets: Sequence[Target],
    batch_sizes: Sequence[int] | None = None,
    overrides: ToleranceOverrides | None = None,
    required: Sequence[str] = (),
) -> ParityReport:
    """Run ``model.onnx`` on every target at every batch size and compare with ``reference``.

    1. A target whose provider cannot run here (`ProviderUnavailable`) gives SKIPPED rows with the
       reason (FAILED where it is required).
    2. Any other failure to make its sessions (onnxruntime cannot load the model, a TF32 setting
       it did not take) gives FAILED rows: a model that does not load is not "not tested".
    3. External data: the shipped model is loaded from its path, so its external data resolves
       as on the device; the in-memory logits copy is told the bundle's directory. Either way
       the external files must lie inside the bundle and match the manifest
       (`check_external_data`).
    """
    sizes = tuple(batch_sizes) if batch_sizes else reference.batch_sizes
    # The preprocessing check re-makes the structured rows of every batch the reference holds.
    preprocessing = check_preprocessing(bundle.preprocessing, reference)
    reference = reference.select(sizes)
    check_external_data(bundle)

    try:
        model = onnx.load(str(bundle.model_path), load_external_data=False)
    except Exception as e:
        raise BundleError(f"{bundle.model_path} is not an ONNX model: {first_line(e)}") from None
    found = find_logits_tensor(model)
    logits_name = reference.logits_name or found
    if logits_name != found:
        raise BundleError(
            f"the golden data was recorded for the pre-sigmoid tensor {logits_name!r}, but in "
            f"{bundle.model_path} the Sigmoid's input is {found!r}"
        )
    checked_bytes = with_logits_output(model, logits_name).SerializeToString()

    rows: list[ParityRow] = []
    for target in targets:
        tolerances = target.tolerances(overrides)
        is_required = target.provider in required
        try:
            sessions = _open_sessions(target, bundle, checked_bytes)
        except OnnxEdgeError as e:
            if isinstance(e, ProviderUnavailable) and not is_required:  # 1.
                status, why = SKIPPED, str(e)
            elif isinstance(e, ProviderUnavailable):
                status, why = FAILED, f"required, but it did not run: {e}"
            else:  # 2.
                status, why = FAILED, f"cannot run the model here: {e}"
            rows += [
                ParityRow(
                    target.provider,
                    size,
                    status,
                    tolerances,
                    tf32=target.tf32,
                    reason=why,
                    required=is_required,
                )
                for size in sizes
            ]
            continue
        for size in sizes:
            rows.append(
                _run_row(
                    target,
                    sessions,
                    reference.batches[size],
                    input_name=bundle.input.name,
                    logits_name=logits_name,
                    tolerances=tolerances,
                    threshold=bundle.threshold,
                    required=is_required,
                )
            )
    return ParityReport(
        bundle=str(bundle.path),
        reference=reference.description,
        preprocessing=preprocessing,
        rows=tuple(rows),
    )


def _open_sessions(target: Target, bundle: Bundle, checked_bytes: bytes) -> _Sessions:
    config = target.session_config()
    shipped = make_session(bundle.model_path, config)  # 3.: a path, as the device loads it
    entries = {**config.config_entries, _EXTERNAL_DATA_FOLDER: str(bundle.model_path.parent)}
    checked = make_session(checked_bytes, dataclasses.replace(config, config_entries=entries))
    confirmed = [_tf32_confirmed(target, session) for session in (shipped, checked)]
    return _Sessions(shipped, checked, None if target.tf32 is None else all(confirmed))


def _tf32_confirmed(target: Target, session: Any) -> bool:
    """Whether onnxruntime reports running with the TF32 setting requested (False where it does
    not report ``use_tf32``); an error where it reports another one."""
    if target.tf32 is None:
        return False
    options = session.get_provider_options().get(provider_name(target.provider), {})
    effective = options.get("use_tf32")
    wanted = "1" if target.tf32 == "on" else "0"
    if effective is None:
        return False
    if str(effective) != wanted:
        raise OnnxEdgeError(
            f"asked onnxruntime for use_tf32={wanted} on {target.provider}, it runs with "
            f"use_tf32={effective}"
        )
    return True


def _run_row(
    target: Target,
    sessions: _Sessions,
    ref: ReferenceBatch,
    *,
    input_name: str,
    logits_name: str,
    tolerances: Tolerances,
    threshold: float,
    required: bool,
) -> ParityRow:
    feeds = {input_name: ref.inputs}
    row = ParityRow(
        target.provider,
        ref.batch,
        FAILED,
        tolerances,
        tf32=target.tf32,
        tf32_confirmed=sessions.tf32_confirmed,
        required=required,
    )
    try:
        prob = sessions.shipped.run(None, feeds)[0]
        logits = sessions.checked.run([logits_name], feeds)[0]
    except Exception as e:  # onnxruntime's own error types
        return dataclasses.replace(row, reason=f"onnxruntime failed: {first_line(e)}")
    prob_c = compare_arrays(prob, ref.prob, atol=tolerances.prob.atol, rtol=tolerances.prob.rtol)
    logits_c = compare_arrays(
        logits, ref.logits, atol=tolerances.logits.atol, rtol=tolerances.logits.rtol
    )
    labels = (
        label_agreement(prob, ref.prob, threshold=threshold, tolerance=tolerances.prob)
        if prob_c.shape_ok
        else None
    )
    failures = []
    for name, comparison, actual, expected, tolerance in (
        ("prob", prob_c, prob, ref.prob, tolerances.prob),
        ("logits", logits_c, logits, ref.logits, tolerances.logits),
    ):
        if comparison:
            continue
        if not comparison.shape_ok:
            failures.append(f"{name}: {comparison.detail}")
        else:
            rows = _rows_outside(actual, expected, tolerance, ref.kinds)
            failures.append(f"{name} outside the tolerance in rows {rows}")
    if labels is not None and not labels:
        failures.append(f"labels flipped in rows {list(labels.flips_outside_tolerance)}")
    return dataclasses.replace(
        row,
        status=FAILED if failures else PASSED,
        prob=prob_c,
        logits=logits_c,
        labels=labels,
        prob_vs_f32=compare_arrays(
            prob, ref.prob_f32, atol=tolerances.prob.atol, rtol=tolerances.prob.rtol
        ),
        logits_vs_f32=compare_arrays(
            logits, ref.logits_f32, atol=tolerances.logits.atol, rtol=tolerances.logits.rtol
        ),
        reason="; ".join(failures),
    )


def _rows_outside(
    actual: np.ndarray, expected: np.ndarray, tol: Tolerance, kinds: Sequence[str], most: int = 4
) -> str:
    """Which rows broke the tolerance, and what they are: ``0 (zeros), 5 (random), …``."""
    a = np.asarray(actual, dtype=np.float64).reshape(len(kinds), -1)
    e = np.asarray(expected, dtype=np.float64).reshape(len(kinds), -1)
    ok = np.isfinite(a) & (np.abs(a - e) <= tol.atol + tol.rtol * np.abs(e))
    rows = [f"{i} ({kinds[i]})" for i in np.flatnonzero(~ok.all(axis=1))]
    more = f", and {len(rows) - most} more" if len(rows) > most else ""
    return ", ".join(rows[:most]) + more
