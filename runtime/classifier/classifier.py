"""The Python API on the device: a bundle's model as a binary image classifier, without torch.

::

    from onnxedge.runtime.classifier.classifier import Classifier

    clf = Classifier.from_bundle("build/smile_cnn")  # sha256 verified, provider "auto"
    for p in clf.predict_images(["a.jpg", "b.png"]):
        print(p.probability, p.label)

`Classifier.from_bundle` is the loader (bundle verified, external data confined to the bundle,
session on the requested provider); `predict_array` runs a validated batch; `predict_images` and
`predict_files` preprocess as the manifest says (`onnxedge.runtime.classifier.preprocess`). One
classifier may be used from many threads at once: it holds no mutable state, and ONNX Runtime's
``run`` is thread-safe.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from onnxedge.runtime.bundle.outputs import BINARY_KINDS, PROBABILITIES, SIGMOID_PROBABILITY
from onnxedge.runtime.bundle.outputs import probabilities as output_probabilities
from onnxedge.runtime.bundle.reader import Bundle, TensorSpec
from onnxedge.runtime.classifier.args import (
    check_batch_size,
    check_max_pixels,
    check_several,
    check_threshold,
    out_of_range,
    pixel_range,
)
from onnxedge.runtime.classifier.decode import DecodePool, file_pool
from onnxedge.runtime.classifier.files import FilesRun, decode_window
from onnxedge.runtime.classifier.loader import DEFAULT_BATCH_SIZE, files_run, load_classifier
from onnxedge.runtime.classifier.predictions import (
    FileResult,
    ModelOutputError,
    Prediction,
    describe_bad,
    first_bad,
    label_names,
    not_probabilities,
)
from onnxedge.runtime.classifier.preprocess import (
    MAX_PIXELS,
    ImageReadError,
    check_decode,
    finish,
    image_pixels,
    load_pixels,
    normalize,
    pads,
    trained_decode,
)
from onnxedge.runtime.classifier.session import PROVIDER_CHOICES, check_external_data, run_halving
from onnxedge.runtime.engines import DEFAULT_PRECISION, ONNXRUNTIME
from onnxedge.runtime.errors import ArgumentError, BundleError, OnnxEdgeError
from onnxedge.runtime.variants.manifest import FP32

log = logging.getLogger(__name__)


class Classifier:
    """A verified bundle's model on one ONNX Runtime execution provider, or on OpenVINO.

    Build it with `from_bundle`. Attributes: ``provider`` (the ONNX Runtime provider it runs on,
    or the OpenVINO device and precision),
    ``input_spec``/``output_spec`` (`TensorSpec`), ``output_kind``
    (`onnxedge.runtime.bundle.outputs`),
    ``preprocessing``, ``labels`` and ``classes`` (from the manifest), ``threshold`` (the default
    for `Prediction.positive`; None for a K-class model, which gives its top class).
    """

    def __init__(
        self,
        session: Any,
        manifest: Mapping[str, Any],
        *,
        provider: str,
        threshold: float | None = None,
        path: Path | None = None,
        decode: str | None = None,
        input_spec: TensorSpec | None = None,
    ) -> None:
        self.session = session
        self.variant = FP32  # which of the bundle's models (`from_bundle`'s ``variant``)
        self.tuned: Any = None  # the `TunedChoice` where `from_bundle` was given ``tuned``
        # `predict_files`' session for concurrent batches, each on one thread (ONNX Runtime:
        # `loader.OneThreadSession`; OpenVINO: `loader.OpenVinoStreams`), and what makes a batch
        # process's own session (`loader.SessionRecipe`), where they can.
        self.one_thread, self.batch_session = None, None  # type: Any, Any
        self.manifest = manifest
        self.path = path
        self.provider = provider
        spec = Bundle.from_manifest(path or Path("."), manifest)  # validated, as in Bundle.open
        # What the model takes: the manifest's input, or a variant's own (uint8 pixels [N, H, W,
        # C] for a variant with the preprocessing in its graph, `optimize --uint8-input`).
        self.input_spec: TensorSpec = input_spec or spec.input
        self.takes_pixels = self.input_spec.dtype == "uint8"
        self._range_warned = False  # `out_of_range` said once
        self.output_spec: TensorSpec = spec.output
        self.preprocessing: Mapping[str, Any] = spec.preprocessing
        self._pixel_range = pixel_range(self.preprocessing)  # what `out_of_range` allows
        self.labels: Mapping[str, Any] = spec.labels
        self.output_kind = spec.output_kind
        self.classes: tuple[str, ...] = spec.classes
        # How files become pixels: the decode the model was trained with, unless asked otherwise.
        self.decode = trained_decode(self.preprocessing) if decode is None else check_decode(decode)
        self.threshold: float | None = None
        if self.output_kind in BINARY_KINDS:
            self.threshold = check_threshold(spec.threshold if threshold is None else threshold)
        else:
            self._threshold(threshold)
        self._check_session()

    def _threshold(self, threshold: float | None) -> float | None:
        """The threshold to use: the given one (checked), else the manifest's; None for K
        classes, which take none."""
        if self.output_kind not in BINARY_KINDS:
            if threshold is not None:
                raise ArgumentError(
                    f"a threshold applies to a model with one output; this one gives "
                    f"{len(self.classes)} class probabilities ({self.output_kind})"
                )
            return None
        return self.threshold if threshold is None else check_threshold(threshold)

    @classmethod
    def from_bundle(
        cls,
        path: str | Path,
        provider: str = "auto",
        threads: int | None = None,
        *,
        threshold: float | None = None,
        engine: str = ONNXRUNTIME,
        precision: str = DEFAULT_PRECISION,
        variant: str | None = None,
        tuned: bool | str | Path | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        decode: str | None = None,
        for_files: bool = False,
    ) -> Classifier:
        """Open a bundle and build its session.

        1. `Bundle.open`, the one reader: every path the manifest names inside the bundle, the
           sha256 of ``model.onnx`` and of its external data (each listed), the model's input and
           output as the manifest states them.
        2. ``provider``: ``cpu``, ``cuda`` (an error naming the available providers when the CUDA
           EP cannot load), or ``auto`` (CUDA when it loads, else CPU). ``threads``: ONNX Runtime's
           intra-op threads, an integer >= 1 (None: one per physical core).
        3. ``engine``: ``onnxruntime`` (as above) or ``openvino`` (the CPU only, ``provider``
           ``auto`` or ``cpu``; compiled at ``precision``, ``f32`` or ``bf16``, with ``threads``
           and the LATENCY hint, `onnxedge.runtime.engines.openvino`); an engine that cannot run
           here is an `EngineUnavailable` saying why. ``provider`` then names the engine and its
           settings.
        4. ``variant``: which of the bundle's models runs: None or ``fp32`` (``model.onnx``), or
           one `onnxedge optimize` added (``int8``, ``fp16``, ``fp32-ort``, ``int8-ort``), its
           file verified as ``model.onnx`` is (`Bundle.variant_model`). fp16 is made for the
           CUDA EP: refused on the CPU EP, and ``auto`` means CUDA for it. A variant made with
           ``--uint8-input`` takes the decoded uint8 pixels (``input_spec`` says so).
        5. ``tuned``: True (the tuning file beside the bundle, `onnxedge tune`'s default) or a
           tuning file's path: the engine, variant, precision and threads `onnxedge tune` found
           fastest on this machine at the batch size nearest ``batch_size``, in place of those
           arguments (giving them too is an error). A file for another machine, engine version
           or bundle, a corrupt one, or one naming a variant the bundle lacks is ignored with
           one warning saying why, and the defaults run (`onnxedge.runtime.tune.choice`);
           ``classifier.tuned`` says which. Tune's threads are this session's: `predict_files`
           still runs batch processes on an ONNX Runtime CPU choice. With ``for_files`` (the
           classifier is for `predict_files`), the fastest from files where the tuning file
           has it for the decode in use (`tune --images`): its engine and variant with the
           default threads, and its decoding pool wherever `predict_files` is given none.
        6. ``decode``: how files become pixels, ``exact`` or ``fast`` (`load_pixels` in
           `onnxedge.runtime.classifier.preprocess`); None: the one the model was trained with
           (the manifest's ``preprocessing.decode``, ``exact`` where it names none). ``fast`` on
           a bundle whose manifest records no passed gate for it (`onnxedge optimize
           --fast-decode`) and whose model was not trained on it is logged as a warning.

        Arguments are checked before the bundle is read: a bad ``threads`` or ``threshold`` is a
        `ValueError`, as the command line refuses them.
        """
        return load_classifier(
            cls,
            path,
            provider,
            threads,
            threshold=threshold,
            engine=engine,
            precision=precision,
            variant=variant,
            tuned=tuned,
            batch_size=batch_size,
            decode=decode,
            for_files=for_files,
        )

    def _check_session(self) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        if self.input_spec.name not in inputs or len(inputs) != 1:
            raise BundleError(
                f"the manifest's input {self.input_spec.name!r} does not match the model's "
                f"inputs: {', '.join(inputs) or 'none'}"
            )
        if self.output_spec.name not in outputs:
            raise BundleError(
                f"the manifest's output {self.output_spec.name!r} does not match the model's "
                f"outputs: {', '.join(sorted(outputs)) or 'none'}"
            )

    def __repr__(self) -> str:
        return f"Classifier({str(self.path)!r}, provider={self.provider!r})"

    # -- arrays -------------------------------------------------------------------------------

    def validate(self, batch: Any) -> np.ndarray:
        """``batch`` if it is what the model takes, else a `ValueError` naming the spec and it."""
        return np.ascontiguousarray(self._checked(batch))

    def _checked(self, batch: Any, chunk: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """`validate` without the copy; the finiteness check runs ``chunk`` rows at a time, so
        its temporaries stay small however large the batch."""
        spec = self.input_spec
        expected = f"expected a {spec.describe()} (input {spec.name!r})"
        if not isinstance(batch, np.ndarray):
            raise ValueError(f"{expected}, got a {type(batch).__name__}, not a numpy array")
        found = f"{batch.dtype} array of shape {list(batch.shape)}"
        if batch.ndim != len(spec.shape):
            raise ValueError(f"{expected}, got a {found} (rank {batch.ndim})")
        for axis, (want, have) in enumerate(zip(spec.shape, batch.shape, strict=True)):
            if isinstance(want, int) and want != have:
                raise ValueError(f"{expected}, got a {found} (axis {axis} is {have})")
        if batch.dtype != np.dtype(spec.dtype):
            raise ValueError(f"{expected}, got a {found}")
        if batch.dtype.kind in "fc" and batch.size:  # one pass; counted only where it fails
            parts = [batch[start : start + chunk] for start in range(0, len(batch), chunk)]
            if not all(np.isfinite(part).all() for part in parts):
                nan = sum(int(np.isnan(part).sum()) for part in parts)
                inf = sum(int(np.isinf(part).sum()) for part in parts)
                raise ValueError(
                    f"{expected} with finite values, got {nan} NaN and {inf} inf values in a "
                    f"{found}"
                )
            if not self._range_warned and batch.dtype.kind == "f":  # said once a classifier
                ends = min(float(p.min()) for p in parts), max(float(p.max()) for p in parts)
                line = out_of_range(*ends, self._pixel_range)
                self._range_warned = line is not None
                if line:
                    log.warning("%s", line)
        return batch

    def _outputs(self, batch: Any, batch_size: int) -> np.ndarray:
        """The model's output for a batch, K values per image (float64 [N, K]), run
        ``batch_size`` images at a time; not yet checked. A call the engine cannot allocate
        memory for is split in two and run again, down to one image (`run_halving`)."""
        batch = self._checked(batch, batch_size)
        k = len(self.classes) if self.output_kind not in BINARY_KINDS else 1
        try:
            out = np.empty((batch.shape[0], k), dtype=np.float64)
        except MemoryError:
            raise OnnxEdgeError(
                f"out of memory for the outputs of {batch.shape[0]:,} images"
            ) from None
        for start in range(0, len(batch), batch_size):
            part = batch[start : start + batch_size]
            out[start : start + len(part)] = self._run_split(part, k)
        return out

    def _run_split(self, part: np.ndarray, k: int) -> np.ndarray:
        return run_halving(
            self._run, part, k, output_name=self.output_spec.name, provider=self.provider
        )

    def _run(self, part: np.ndarray) -> np.ndarray:
        (result,) = self.session.run([self.output_spec.name], {self.input_spec.name: part})
        return np.asarray(result)

    def _class_probabilities(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
        """(probabilities [N, K], the rows whose output is unusable, what an output should be):
        the output itself for the probability kinds (each in [0, 1]), else its sigmoid or
        softmax (each logit finite)."""
        if self.output_kind in (SIGMOID_PROBABILITY, PROBABILITIES):
            return raw, not_probabilities(raw).any(axis=1), "a probability in [0, 1]"
        bad = ~np.isfinite(raw).all(axis=1)
        prob = output_probabilities(np.where(bad[:, None], 0.0, raw), self.output_kind)
        return prob, bad, "a finite logit"

    def _prediction_rows(self, raw: np.ndarray, threshold: float | None) -> list[Any]:
        """A `Prediction` per row of ``raw``, or for an unusable row the one-line reason."""
        prob, bad, what = self._class_probabilities(raw)
        results: list[Any] = []
        for i, row in enumerate(prob):
            if bad[i]:
                value = raw[i, 0] if raw.shape[1] == 1 else first_bad(raw[i], what)
                results.append(
                    f"the model's output {self.output_spec.name!r} is {value:g}, not {what}; "
                    "no label is given"
                )
            else:
                results.append(self._prediction(row, threshold))
        return results

    def probabilities(
        self, batch: np.ndarray, *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> np.ndarray:
        """The model's output for a batch, one probability per image: float64 [N]; for a K-class
        model the class probabilities, float64 [N, K] (a logits output's softmax).

        The batch is checked as `validate` does and run ``batch_size`` images at a time, so
        memory stays bounded for any N. An output that is not a probability in [0, 1] (NaN, an
        infinity) is a `ModelOutputError` naming the rows.
        """
        raw = self._outputs(batch, check_batch_size(batch_size))
        prob, bad_rows, what = self._class_probabilities(raw)
        bad = np.flatnonzero(bad_rows)
        if len(bad):
            shown = raw[:, 0] if raw.shape[1] == 1 else np.array([first_bad(r, what) for r in raw])
            raise ModelOutputError(
                f"the model's output {self.output_spec.name!r} is not {what} "
                f"for {len(bad)} of {len(raw)} images ({describe_bad(shown, bad)}); no label "
                "is given to them",
                rows=bad.tolist(),
            )
        return prob[:, 0] if self.output_kind in BINARY_KINDS else prob

    def predict_array(
        self,
        batch: np.ndarray,
        threshold: float | None = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> list[Prediction]:
        """Predictions for a preprocessed batch, float32 [N, 3, 64, 64] (as the manifest says).

        A wrong rank, shape or dtype, or a NaN/inf value, is a `ValueError` naming the expected
        spec and what it got; an empty batch gives an empty list without running the model. The
        model runs ``batch_size`` images at a time (memory stays bounded for any N); an output
        that is not a probability is a `ModelOutputError`, never a labelled prediction.
        """
        threshold = self._threshold(threshold)
        probabilities = self.probabilities(batch, batch_size=batch_size)
        return [self._prediction(p, threshold) for p in probabilities]

    def _prediction(self, probability: Any, threshold: float | None) -> Prediction:
        """One image's prediction from its probability (one output) or class probabilities."""
        if threshold is None:  # K classes: the top one
            row = np.asarray(probability, dtype=np.float64).reshape(-1)
            top = int(np.argmax(row))
            return Prediction(
                probability=float(row[top]),
                positive=None,
                label=self.classes[top],
                threshold=None,
                class_index=top,
                probabilities=tuple(float(p) for p in row),
                classes=self.classes,
            )
        probability = float(np.asarray(probability).reshape(-1)[0])
        positive_name, negative_name = label_names(self.labels)
        positive = bool(probability >= threshold)
        return Prediction(
            probability=float(probability),
            positive=positive,
            label=positive_name if positive else negative_name,
            threshold=threshold,
        )

    # -- images -------------------------------------------------------------------------------

    def preprocess(self, image: Any, *, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
        """A file path or a PIL image -> float32 [3, H, W] as the manifest's preprocessing says
        (a file decoded as ``decode`` says): `finish` of `pixels`, as `load_image` and
        `preprocess_image` are."""
        return finish(self.pixels(image, max_pixels=max_pixels), self.preprocessing)

    def pixels(self, image: Any, *, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
        """A file path or a PIL image -> uint8 [H, W, 3], `preprocess` before its scaling."""
        max_pixels = check_max_pixels(max_pixels)
        if isinstance(image, (str, bytes, os.PathLike)):
            return load_pixels(image, self.preprocessing, max_pixels=max_pixels, decode=self.decode)
        if hasattr(image, "mode") and hasattr(image, "size"):  # a PIL image
            return image_pixels(image, self.preprocessing, max_pixels=max_pixels)
        raise TypeError(f"expected a file path or a PIL image, got {type(image).__name__}")

    def model_input(self, batch: np.ndarray) -> np.ndarray:
        """uint8 pixels [N, H, W, C] (`pixels`, stacked) -> what the model takes: themselves for
        a model that takes pixels (``takes_pixels``), else `normalize`'s float32 [N, C, H, W]. A
        float32 batch (a resize mode that pads: `preprocess`'s arrays, stacked) is returned as
        it is."""
        if batch.dtype != np.uint8 or self.takes_pixels:
            return batch
        return normalize(batch, self.preprocessing)

    def _batch_item(self, image: Any, max_pixels: int | None) -> np.ndarray:
        """One image as a batch holds it before `model_input`: its uint8 pixels, or for a resize
        mode that pads (each image its own size) the model's float32 input."""
        if pads(self.preprocessing):
            return self.preprocess(image, max_pixels=max_pixels)
        return self.pixels(image, max_pixels=max_pixels)

    def predict_images(
        self,
        images: Iterable[Any],
        threshold: float | None = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_pixels: int | None = MAX_PIXELS,
    ) -> list[Prediction]:
        """Predictions for file paths and/or PIL images, in order.

        A file that is not a usable image raises `ImageReadError` (an `OnnxEdgeError`) naming it;
        `predict_files` reports such files one by one instead.
        """
        threshold = self._threshold(threshold)
        batch_size = check_batch_size(batch_size)
        max_pixels = check_max_pixels(max_pixels)
        results: list[Prediction] = []
        chunk: list[np.ndarray] = []
        for image in check_several(images, "paths or PIL images"):
            chunk.append(self._batch_item(image, max_pixels))
            if len(chunk) >= batch_size:
                batch = self.model_input(np.stack(chunk))
                results += self.predict_array(batch, threshold, batch_size=batch_size)
                chunk = []
        if chunk:
            batch = self.model_input(np.stack(chunk))
            results += self.predict_array(batch, threshold, batch_size=batch_size)
        return results

    def file_pool(
        self,
        decode_threads: int | None = None,
        decode_processes: int | None = None,
        batch_processes: int | None = None,
        **run: Any,
    ) -> DecodePool:
        """The pool `predict_files` decodes with for these counts (1. there), checked; ``run``:
        the number of ``files`` and the ``batch_size`` where known, and the first batch's paths
        (``sample``): for one batch or less, or large files, threads
        (`onnxedge.runtime.classifier.decode.file_pool`)."""
        counts = (decode_threads, decode_processes, batch_processes)
        can, tuned = self.batch_session is not None, getattr(self.tuned, "files", None)
        run.setdefault("why_not", getattr(self, "no_batch_sessions", "one built on a session"))
        return file_pool(*counts, batch_sessions=can, tuned=tuned, **run)

    def predict_files(
        self,
        paths: Iterable[str | Path | ImageReadError],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        threshold: float | None = None,
        max_pixels: int | None = MAX_PIXELS,
        decode_threads: int | None = None,
        decode_processes: int | None = None,
        batch_processes: int | None = None,
    ) -> FilesRun:
        """One `FileResult` per path, in order, streamed: ``paths`` is consumed lazily, and
        memory stays bounded however many there are (`decode_window`). The generator returned
        (`FilesRun`) says what ran them (``pool``, ``batches``) once it is known.

        1. Files are decoded and preprocessed, each through `load_pixels` as in a serial run
           (the same pixels, so the same results), by at most one of: ``batch_processes``
           processes that each decode whole batches and run them on a session of their own
           (their share of the CPUs as threads), ``decode_processes`` processes decoding while
           the model runs here, or ``decode_threads`` threads (1: the calling thread); none
           given: `file_pool`'s default (for paths that fit in one batch, threads).
        2. A file that cannot be used gets a result with its ``error`` and the others go on; so
           does one for which the model's output is not a probability (NaN, an infinity). An
           item that is already an `ImageReadError` (a directory `find_images` could not list)
           passes through as such a result, in its place.
        3. The arguments are checked at the call, not at the first result. Closing the generator
           (or an exception, such as KeyboardInterrupt, while it runs) cancels the decoding not
           yet started and waits for the few images being decoded.
        """
        batch_size = check_batch_size(batch_size)
        threshold = self._threshold(threshold)
        max_pixels = check_max_pixels(max_pixels)
        counts = (decode_threads, decode_processes, batch_processes)
        paths = check_several(paths, "paths")
        return files_run(self, paths, batch_size, threshold, max_pixels, counts)


__all__ = [
    "DEFAULT_BATCH_SIZE",
    "PROVIDER_CHOICES",
    "Classifier",
    "FileResult",
    "ModelOutputError",
    "Prediction",
    "TensorSpec",
    "check_external_data",
    "decode_window",
]
