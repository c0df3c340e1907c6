"""The from-files rows: images/s from a folder of image files to predictions, through the code
``onnxedge predict`` runs (`Classifier.from_bundle`, then `Classifier.predict_files`): decoding,
preprocessing and inference, however that path overlaps them.

1. Rows: mode ``from-files``, device ``cpu``, one per engine (ONNX Runtime's CPU EP, OpenVINO),
   model, decode (``--decode``: exact and fast by default) and, where ``--decode-pool`` names
   them, decoding pool (batches, processes, threads; else predict's default, which the row's
   settings name) of the run, at one batch size (``--images-batch-size``: predict's
   ``--batch-size``, default `DEFAULT_BATCH_SIZE`), which need not be among ``--batch-sizes``;
   the report sets each beside its model's model-only throughput at that batch size in the
   same run (`model_only_ratio`). ``batches`` where the classifier cannot have batch processes
   (``--threads`` given) is a skipped row with the reason.
2. One timed call is a whole pass over the files; the row's throughput is files / mean pass time
   (`LatencyStats.images_per_call`), its latencies are per pass.
3. Checked before timing, instead of against the reference engine (whose input is random
   numbers, not these files): every file classified, and each probability equal (atol
   `FILES_ATOL`) to the same classifier's output on the same files decoded one after another
   with `load_pixels` (the row's decode), in batches of the same size: a faster file path must
   not change the pixels. A row that fails its check is ``failed`` and not timed.
4. An engine or model that cannot run here, or not on the CPU: a skipped row with the reason.
5. Files that cannot be read (`readable_files`) are left out of every row before timing, and
   the report says how many and which: a folder with one bad file still gets its rows, as
   predict still classifies the other files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onnxedge.runtime.bench.engines import FILES, ORT, AnyEngine, EngineInfo, SkippedEngine
from onnxedge.runtime.bench.models import BenchModel
from onnxedge.runtime.classifier import decode as decode_module
from onnxedge.runtime.classifier.decode import pool_arguments
from onnxedge.runtime.classifier.files import files_batches
from onnxedge.runtime.classifier.preprocess import DECODES, ImageReadError, load_pixels
from onnxedge.runtime.engines import ONNXRUNTIME, OPENVINO
from onnxedge.runtime.errors import OnnxEdgeError, first_line

# 3.: the same classifier on the same pixels in batches of the same shape gives the same numbers;
# this only absorbs a last-bit difference between kernels chosen for different buffers.
FILES_ATOL = 1e-6


class _FilesRunner:
    """2.: a pass over the files; 3.: `self_check`."""

    def __init__(
        self, classifier: Any, paths: Sequence[str], batch_size: int, pool: str | None
    ) -> None:
        self._classifier = classifier
        self._pool = pool_arguments(pool) if pool else {}
        self._paths = list(paths)
        self._batch = batch_size
        self._last: list[Any] = []
        self.images_per_call = len(self._paths)
        self.extras: Mapping[str, Any] = {"files": len(self._paths)}

    def run(self) -> None:
        self._last = list(
            self._classifier.predict_files(self._paths, batch_size=self._batch, **self._pool)
        )

    def output(self) -> np.ndarray:
        if not self._last:
            self.run()
        return np.array([_probability(r) for r in self._last], dtype=np.float64)

    def self_check(self) -> tuple[bool, str]:
        """3.: (passed, what was found)."""
        got = self.output()
        failed = [r for r in self._last if not r]
        if failed or len(self._last) != len(self._paths):
            first = f"; first: {failed[0].file}: {failed[0].error}" if failed else ""
            return False, (
                f"{len(failed)} of {len(self._paths)} files not classified "
                f"({len(self._last)} results){first}"
            )
        want = serial_probabilities(self._classifier, self._paths, self._batch)
        worst = float(np.max(np.abs(got - want)))
        if worst > FILES_ATOL:
            return False, (
                f"probabilities differ from a serial decode of the same files: max abs error "
                f"{worst:.3g} > {FILES_ATOL:g}"
            )
        return True, (
            f"PASSED: {len(self._paths)} files classified, probabilities as a serial decode's "
            f"(max abs error {worst:.2g}, atol {FILES_ATOL:g})"
        )

    def close(self) -> None:
        self._last = []


UNREADABLE_LISTED = 10  # 5.: the unreadable files a report names


@dataclasses.dataclass(frozen=True)
class ReadableFiles:
    """5.: the files every decode of the run reads, and those it cannot (file: reason)."""

    files: tuple[str, ...] = ()
    unreadable: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        """One line on what was left out ("" where nothing was)."""
        if not self.unreadable:
            return ""
        total = len(self.files) + len(self.unreadable)
        path, reason = self.unreadable[0]
        return (
            f"{len(self.unreadable)} of {total} image files cannot be read and are left out "
            f"(first: {path}: {reason})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "unreadable": len(self.unreadable),
            "unreadable_first": [f"{p}: {r}" for p, r in self.unreadable[:UNREADABLE_LISTED]],
        }


def readable_files(
    paths: Sequence[str], preprocessing: Mapping[str, Any], decodes: Sequence[str]
) -> ReadableFiles:
    """5.: ``paths`` split into those that each of ``decodes`` reads with `load_pixels` and
    those that one of them cannot (an `ImageReadError`: not an image, truncated, too large...).
    A run times the files a user's predict would classify; one that fails would be an ``ERROR``
    line there, and here it would fail every row's check (3.). An error where none is left."""
    kept: list[str] = []
    unreadable: list[tuple[str, str]] = []
    for path in paths:
        try:
            for decode in decodes:
                load_pixels(path, preprocessing, decode=decode)
        except ImageReadError as e:
            unreadable.append((path, e.reason))
        else:
            kept.append(path)
    if unreadable and not kept:
        path, reason = unreadable[0]
        raise OnnxEdgeError(
            f"--images: expected image files that can be read, found none of {len(paths)} "
            f"(first: {path}: {reason})"
        )
    return ReadableFiles(tuple(kept), tuple(unreadable))


def serial_probabilities(classifier: Any, paths: Sequence[str], batch_size: int) -> np.ndarray:
    """3.'s reference: ``classifier``'s probability of each file (a K-class model's top one),
    the files decoded one after another with `load_pixels` (its decode) and run in batches of
    ``batch_size``."""
    out = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        pixels = [load_pixels(p, classifier.preprocessing, decode=classifier.decode) for p in chunk]
        batch = classifier.model_input(np.stack(pixels))
        want = classifier.probabilities(batch, batch_size=batch_size)
        out.append(want if want.ndim == 1 else want.max(axis=1))
    return np.concatenate(out).astype(np.float64)


def _probability(result: Any) -> float:
    return float(result.prediction.probability) if result.prediction is not None else np.nan


class FilesEngine:
    """A classifier on a list of image files (module docstring)."""

    compare_with_reference = False  # 3.

    def __init__(
        self,
        info: EngineInfo,
        classifier: Any,
        paths: Sequence[str],
        batch_size: int,
        pool: str | None = None,
    ) -> None:
        self.info = info
        self._pool = pool
        self.batch_sizes = (batch_size,)
        self._classifier: Any = classifier
        self._paths = tuple(paths)

    def prepare(self, x: np.ndarray) -> _FilesRunner:
        if self._classifier is None:
            raise OnnxEdgeError(f"{self.info.label} was closed")
        return _FilesRunner(self._classifier, self._paths, int(x.shape[0]), self._pool)

    def close(self) -> None:
        self._classifier = None


def files_engines(
    bundle: Path,
    models: Sequence[BenchModel],
    engines: Sequence[str],
    paths: Sequence[str],
    *,
    batch_size: int,
    threads: int | None,
    decodes: Sequence[str] = DECODES,
    pools: Sequence[str] = (),
) -> list[AnyEngine]:
    """One from-files engine per engine (``onnxruntime``, ``openvino``), model, decode and pool
    (``pools``, `POOLS`; none: predict's default pool, unnamed), in that order (module
    docstring). ``threads``: the engine's threads as `onnxedge predict --threads` takes them
    (None: predict's default, which runs concurrent batches on ONNX Runtime's CPU EP and
    OpenVINO)."""
    out: list[AnyEngine] = []
    for engine in (e for e in (ONNXRUNTIME, OPENVINO) if e in engines):
        for model in models:
            for decode in decodes:
                for pool in pools or (None,):
                    out.append(
                        _files_engine(
                            bundle, model, engine, decode, paths, batch_size, threads, pool
                        )
                    )
    return out


def _files_engine(
    bundle: Path,
    model: BenchModel,
    engine: str,
    decode: str,
    paths: Sequence[str],
    batch_size: int,
    threads: int | None,
    pool: str | None = None,
) -> AnyEngine:
    from onnxedge.runtime.classifier.classifier import Classifier

    info = EngineInfo(
        engine,
        ORT if engine == ONNXRUNTIME else OPENVINO,
        "cpu",
        FILES,
        "CPUExecutionProvider" if engine == ONNXRUNTIME else "OpenVINO CPU",
        {
            "model": model.path.name,
            "files": len(paths),
            "batch_size": batch_size,
            "path": "Classifier.from_bundle(provider='cpu') + predict_files, as onnxedge predict",
            "model_only_variant": model.pixels_of or model.variant,
            "threads": threads if threads is not None else "predict's default",
        },
        variant=model.variant,
        decode=f"{decode} {pool}" if pool else decode,
    )
    if not model.made_for("cpu"):
        return SkippedEngine(info, model.not_made_for("the CPU"), (batch_size,))
    if engine == OPENVINO and model.format != "onnx":
        reason = f"OpenVINO reads ONNX files, not the {model.format.upper()} format"
        return SkippedEngine(info, reason, (batch_size,))
    try:
        classifier = Classifier.from_bundle(
            bundle, "cpu", threads, engine=engine, variant=model.variant, decode=decode
        )
    except OnnxEdgeError as e:
        return SkippedEngine(info, first_line(e), (batch_size,))
    try:
        given = pool_arguments(pool) if pool else {}
        chosen = classifier.file_pool(
            **given, files=len(paths), batch_size=batch_size, sample=paths[:batch_size]
        )
    except OnnxEdgeError as e:
        return SkippedEngine(info, first_line(e), (batch_size,))
    settings = {**info.settings, "provider": classifier.provider, "pool": chosen.describe()}
    try:
        batches = files_batches(classifier, chosen, decode_module.usable_cpus())
    except OnnxEdgeError as e:  # OpenVINO's compile of the streams
        return SkippedEngine(info, first_line(e), (batch_size,))
    if batches:
        settings["batches"] = batches
    info = dataclasses.replace(info, settings=settings)
    return FilesEngine(info, classifier, paths, batch_size, pool)


__all__ = [
    "FILES_ATOL",
    "FilesEngine",
    "ReadableFiles",
    "files_engines",
    "readable_files",
    "serial_probabilities",
]
