"""`Classifier.from_bundle`'s work: the bundle opened and verified, the tuned choice resolved, and
the session built on the requested engine and provider (`Classifier.from_bundle`
documents the arguments)."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
import os
import threading
from collections.abc import Iterable, Sized
from pathlib import Path
from typing import Any

from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.bundle.verify import Replaced
from onnxedge.runtime.classifier.args import check_batch_size, check_count, check_threshold
from onnxedge.runtime.classifier.decode import usable_cpus
from onnxedge.runtime.classifier.files import (
    FilesRun,
    concurrent_batches,
    files_batches,
    image_loader,
    stream_files,
)
from onnxedge.runtime.classifier.preprocess import FAST, check_decode, fast_decode_vouched
from onnxedge.runtime.classifier.session import cuda_missing, provider_key, session_for
from onnxedge.runtime.engines import (
    DEFAULT_PRECISION,
    ONNXRUNTIME,
    check_engine,
    check_precision,
    open_session,
)
from onnxedge.runtime.engines.cpu import int8_pairs_saturate
from onnxedge.runtime.engines.onnxruntime.session import MAX_THREADS
from onnxedge.runtime.errors import ArgumentError, OnnxEdgeError
from onnxedge.runtime.variants.manifest import (
    EIGHT_BIT_IMAGE_CONV,
    made_with_8_bit_image_conv,
    provider_for,
    variant_key,
)

log = logging.getLogger(__name__)

# Images per ONNX Runtime call, for arrays as for files: smile_cnn's activations take about 0.6 MB
# an image, so a call's memory stays bounded however large the batch handed in.
DEFAULT_BATCH_SIZE = 32
# Images per ONNX Runtime call where one thread classifies a batch (a batch process's session, or
# a one-thread session of concurrent batches): on one thread a call costs more an image as it
# grows, once its activations outgrow the core's caches (measured on the Intel Xeon, 1 thread,
# ms of CPU an image at 8 against 32: smile_cnn 0.72-0.82 against 0.74-0.84 (0.80-0.88 at 64),
# mobilenetv3_small 2.96 against 3.59, squeezenet 5.31 against 6.07, resnet18 about equal;
# docs/RUNTIME.md, "Batch processes"). The batch itself is still decoded and handed over whole.
ONE_THREAD_RUN = 8
# Images per OpenVINO call on a stream of concurrent batches (`OpenVinoStreams`): measured on the
# 2-vCPU AMD EPYC Zen 3, two streams of one thread, ms of CPU an image at 8 / 16 / 32 / 64:
# smile_cnn int8 0.75 / 0.74 / 0.72 / 0.73, fp32 1.41 / 1.38 / 1.41 / 1.40. Two batches in flight
# at 32 images a call hold the activations of one call of 64 on the LATENCY compile.
STREAM_RUN = 32


def load_classifier(
    cls: Any,
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
) -> Any:
    """``cls`` (`Classifier`) built from the bundle at ``path``, as `from_bundle` says."""
    provider_key(provider)
    variant_key(variant)
    if decode is not None:
        check_decode(decode)
    check_precision(engine, precision)
    threads = check_count(threads, "threads", optional=True, maximum=MAX_THREADS)
    if threshold is not None:
        check_threshold(threshold)
    size = check_batch_size(batch_size)
    if not (tuned is None or isinstance(tuned, (bool, str, os.PathLike))):
        raise ArgumentError(
            f"expected tuned as True, False, None or a tuning file's path, got {tuned!r}"
        )
    bundle = Bundle.open(path)
    choice = None
    threads_given = threads is not None  # by the caller: tune's are for its session alone
    if tuned is not None and tuned is not False:  # 5.
        from onnxedge.runtime.tune.choice import resolve_tuned

        given = {
            "variant": variant is not None,
            "engine": engine != ONNXRUNTIME,
            "precision": precision != DEFAULT_PRECISION,
            "threads": threads is not None,
        }
        if any(given.values()):
            named = ", ".join(k for k, v in given.items() if v)
            raise ArgumentError(
                f"tuned chooses the engine, variant, precision and threads; got {named} too"
            )
        choice = resolve_tuned(bundle, tuned, size, for_files=for_files, decode=decode)
        if choice.files is not None:  # predict's threads; `predict_files` takes its pool
            variant, engine = choice.files.variant, choice.files.engine
            precision = choice.files.precision
        elif choice.setup is not None:
            setup = choice.setup
            variant, engine = setup.variant, setup.engine
            precision, threads = setup.precision, setup.threads
        else:
            log.warning("%s", choice.line())
    try:
        model = bundle.model_bytes(variant)  # 4.: the bytes checked are the bytes loaded
    except Replaced:  # another run replaced the bundle since it was opened: read it again
        bundle, model = Bundle.open_model(path, variant)
    if check_engine(engine) == ONNXRUNTIME:
        chosen = provider_for(bundle.variants, variant, provider_key(provider))
        try:
            session, used = session_for(model, chosen, threads)
        except OnnxEdgeError as e:
            if chosen != "cuda":
                raise
            raise OnnxEdgeError(
                cuda_missing(variant_key(variant), provider_key(provider), e)
            ) from None
    else:  # 3.
        entry = bundle.variants.get(variant_key(variant))
        if entry is not None and entry.format != "onnx":  # OpenVINO reads ONNX, not .ort
            raise OnnxEdgeError(
                f"{engine} cannot run the {entry.name} variant: expected an ONNX model, found "
                f"{entry.file} in ONNX Runtime's ORT format; use --variant "
                f"{entry.name.removesuffix('-ort')} (the model it was converted from)"
            )
        session = open_session(
            engine, model, provider=provider, threads=threads, precision=precision
        )
        used = session.describe()
    log.info("%s (%s) runs on %s", bundle.path, variant_key(variant), used)
    classifier = cls(
        session,
        bundle.manifest,
        provider=used,
        threshold=threshold,
        path=bundle.path,
        decode=decode,
        input_spec=bundle.variant_input(variant),
    )
    if classifier.decode == FAST and not fast_decode_vouched(bundle.manifest):
        log.warning(
            "%s: --decode fast is not gated on this bundle (no passed gate in its manifest's "
            "'decodes' block, and its model was trained on exact pixels); onnxedge optimize "
            "--fast-decode measures it",
            bundle.path,
        )
    warn_if_8_bit_image_conv(bundle, variant)
    classifier.variant = variant_key(variant)
    classifier.tuned = choice
    classifier.no_batch_sessions = (  # why batch processes cannot run it, where they cannot
        "an OpenVINO classifier" if engine != ONNXRUNTIME
        else f"one on {used}" if used != "CPUExecutionProvider"
        else "one with its threads given"
    )  # fmt: skip
    if engine == ONNXRUNTIME and used == "CPUExecutionProvider" and not threads_given:
        # Not OpenVINO: its compile_model in a forked process waits for ever on an executor
        # thread of the parent's that the fork did not copy (seen in the test suite).
        classifier.batch_session = SessionRecipe(model)
        classifier.one_thread = OneThreadSession(classifier.batch_session)
    elif engine != ONNXRUNTIME and not threads_given:
        classifier.one_thread = OpenVinoStreams(model, precision)
    return classifier


def warn_if_8_bit_image_conv(bundle: Bundle, variant: str | None) -> None:
    """One warning where ``variant`` is an int8 model quantised before the image's convolution
    got 7-bit weights and runs on a CPU whose int8 kernels add in pairs into 16 bits; what
    `load_classifier` and `onnxedge parity --variant` both say."""
    if made_with_8_bit_image_conv(bundle.variants, variant) and int8_pairs_saturate():
        log.warning(EIGHT_BIT_IMAGE_CONV.format(path=bundle.path, variant=variant_key(variant)))


@dataclasses.dataclass(frozen=True)
class SessionRecipe:
    """How a batch process of `Classifier.predict_files` makes a session of its own: the
    classifier's model (the verified bytes, or its verified path) on ONNX Runtime's CPU EP with
    ``threads`` threads (1 where there is a process per CPU: the processes are the parallelism);
    made where it is called, after the fork, never shared with the process that holds the
    recipe. ONNX Runtime only: OpenVINO's compile hangs in a forked process
    (`load_classifier`)."""

    model: Path | bytes

    def __call__(self, threads: int = 1) -> Any:
        session, _ = session_for(self.model, "cpu", threads)
        return session


class OneThreadSession:
    """The classifier's model in an ONNX Runtime CPU session of one intra-op thread, made at the
    first call and kept: what `Classifier.predict_files` runs its concurrent batches on
    (`onnxedge.runtime.classifier.files.concurrent_batches`), from the classifier's
    `SessionRecipe`; one session for every batch in flight (its ``run`` is thread-safe), the
    model called on `ONE_THREAD_RUN` images at a time."""

    run = ONE_THREAD_RUN

    def __init__(self, recipe: SessionRecipe) -> None:
        self._recipe = recipe
        self._session: Any = None
        self._lock = threading.Lock()

    def __call__(self, runs: int = 1) -> Any:
        with self._lock:
            if self._session is None:
                self._session = self._recipe(1)
            return self._session

    def describe(self, runs: int) -> str:
        return (
            f"{runs} batches at once on one ONNX Runtime CPU session of 1 intra-op thread, "
            f"{self.run} images a call"
        )


class OpenVinoStreams:
    """OpenVINO's counterpart of `OneThreadSession`: the classifier's model compiled again with
    ``runs`` streams of one thread each (`OpenVinoConfig.streams`), at the first call for that
    count and kept, so that each batch in flight runs on a stream of its own (an infer request
    per calling thread, `OpenVinoSession`), `STREAM_RUN` images a call. With one stream of two
    threads (the LATENCY compile) every parallel operator waits for the thread a decoder
    process holds back; measured on the 2-core Zen 3 with int8 smile_cnn: 0.87 ms of CPU an
    image on two streams against 1.07 (docs/RUNTIME.md). Compiled in the process that runs the
    batches, never in a forked one (`load_classifier`)."""

    run = STREAM_RUN

    def __init__(self, model: Path | bytes, precision: str) -> None:
        self._model = model
        self._precision = precision
        self._sessions: dict[int, Any] = {}
        self._lock = threading.Lock()

    def __call__(self, runs: int = 1) -> Any:
        from onnxedge.runtime.engines.openvino import OpenVinoConfig, open_openvino

        with self._lock:
            if runs not in self._sessions:
                config = OpenVinoConfig(
                    precision=self._precision, threads=runs, hint="THROUGHPUT", streams=runs
                )
                self._sessions[runs] = open_openvino(self._model, config)
            return self._sessions[runs]

    def describe(self, runs: int) -> str:
        return f"{runs} batches at once on {self(runs).describe()}, {self.run} images a call"


class BatchRows:
    """What a batch process of `Classifier.predict_files` classifies its batches with, made there
    (`onnxedge.runtime.classifier.files.BatchWork`): a copy of the classifier on a session of
    its own from the classifier's `SessionRecipe` (``threads`` threads), as a `PredictRows` at
    ``threshold``."""

    def __init__(self, classifier: Any, threshold: float | None, threads: int = 1) -> None:
        self._classifier = classifier
        self._threshold = threshold
        self._threads = threads

    def __call__(self) -> Any:
        worker = copy.copy(self._classifier)
        worker.session = self._classifier.batch_session(self._threads)
        worker.one_thread = worker.batch_session = None
        run = ONE_THREAD_RUN if self._threads == 1 else None
        return prediction_rows(worker, self._threshold, run)


def prediction_rows(classifier: Any, threshold: float | None, run: int | None = None) -> Any:
    """The classifier's `PredictRows` at ``threshold``: a stacked batch of pixels -> per row
    its `Prediction`, or why it has none; the model called on ``run`` images at a time (None:
    the whole batch at once)."""

    def rows(batch: Any) -> list[Any]:
        raw = classifier._outputs(classifier.model_input(batch), run or len(batch))
        return classifier._prediction_rows(raw, threshold)

    return rows


def file_runner(classifier: Any, runs: int) -> Any:
    """What `predict_files` runs its batches on: the classifier itself for one batch at a time,
    else a copy of it on its `OneThreadSession` or `OpenVinoStreams` for ``runs`` batches."""
    one_thread = getattr(classifier, "one_thread", None)
    if runs <= 1 or one_thread is None:
        return classifier
    runner = copy.copy(classifier)
    runner.session = one_thread(runs)
    return runner


def files_run(
    classifier: Any,
    paths: Iterable[Any],
    batch_size: int,
    threshold: float | None,
    max_pixels: int | None,
    counts: tuple[int | None, int | None, int | None],
) -> FilesRun:
    """`Classifier.predict_files` of its checked arguments (``counts``: its decode threads,
    decode processes and batch processes). `Classifier.file_pool` chooses the pool for the
    counts, the number of paths and the first batch's paths (one batch or fewer, or large
    files: `onnxedge.runtime.classifier.decode.threads_pool`): at the call where a pool is
    asked for (its counts checked there) or ``paths`` has a length; else at the first result,
    from the first ``batch_size + 1`` paths read then."""
    known = len(paths) if isinstance(paths, Sized) else None
    now = known is not None or counts != (None, None, None)

    def start() -> tuple[Any, str | None, Any]:
        items, files = paths, known
        if now:
            sample = list(itertools.islice(paths, batch_size)) if known is not None else []
        else:
            rest = iter(paths)
            sample = list(itertools.islice(rest, batch_size + 1))
            files = len(sample) if len(sample) <= batch_size else None
            items = itertools.chain(sample, rest)
        chosen = classifier.file_pool(
            *counts, files=files, batch_size=batch_size, sample=sample[:batch_size]
        )
        cpus = usable_cpus()
        load = image_loader(
            classifier.preprocessing, max_pixels=max_pixels, decode=classifier.decode
        )
        runs = concurrent_batches(chosen, cpus, one_thread=classifier.one_thread is not None)
        runner = file_runner(classifier, runs)
        run = None if runner is classifier else getattr(classifier.one_thread, "run", None)
        rows = prediction_rows(runner, threshold, run)
        batch_rows = BatchRows(classifier, threshold, max(1, cpus // chosen.workers))
        results = stream_files(load, rows, items, batch_size, chosen, runs, batch_rows)
        return chosen, files_batches(classifier, chosen, cpus), results

    return FilesRun(start, now=now)
