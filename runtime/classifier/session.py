"""How `onnxedge.runtime.classifier.classifier.Classifier.from_bundle` gets its ONNX Runtime
session: the provider asked for (``auto``, ``cpu``, ``cuda``), the one used, and the session's
settings; and how a call that cannot allocate its memory is run in halves (`run_halving`).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.bundle.verify import external_data_files, read_model
from onnxedge.runtime.engines.onnxruntime.session import (
    SessionConfig,
    available_providers,
    make_session,
)
from onnxedge.runtime.errors import ArgumentError, OnnxEdgeError, first_line

log = logging.getLogger(__name__)

PROVIDER_CHOICES = ("auto", "cpu", "cuda")


def provider_key(provider: Any) -> str:
    key = provider.strip().lower() if isinstance(provider, str) else None
    if key not in PROVIDER_CHOICES:
        raise ArgumentError(
            f"unknown provider {provider!r}; expected one of: {', '.join(PROVIDER_CHOICES)}"
        )
    return key


# On the CPU EP, ONNX Runtime's intra-op threads do not spin between runs: a spinning thread
# takes the core on which `predict_files` decodes the next batch (docs/RUNTIME.md, "Image files
# end to end"). A batch-1 `predict_array` call pays for it: 0.31 ms instead of 0.24 ms there.
_NO_SPINNING = {"session.intra_op.allow_spinning": "0"}


def session_for(model: Path | bytes, provider: str, threads: int | None) -> tuple[Any, str]:
    """(session, provider name used) for ``provider`` in `PROVIDER_CHOICES`; ``model`` the
    verified bytes of `Bundle.model_bytes` (or a path)."""
    key = provider_key(provider)
    if key == "auto":
        if "CUDAExecutionProvider" in available_providers():
            try:
                session = make_session(model, SessionConfig(provider="cuda", threads=threads))
                return session, "CUDAExecutionProvider"
            except OnnxEdgeError as e:
                log.info("provider auto: the CUDA EP did not load (%s); using the CPU", e)
        key = "cpu"
    config = SessionConfig(provider=key, threads=threads, config_entries=_NO_SPINNING)
    session = make_session(model, config)
    return session, session.get_providers()[0]


def cuda_missing(variant: str, asked: str, error: BaseException) -> str:
    """One line for a CUDA EP that did not load: what needs it and what to do instead (the
    loader's own message, which names a library and runs long, is an info log line: -v)."""
    log.info("the CUDA execution provider did not load: %s", first_line(error))
    if asked == "cuda":
        needs, instead = "--providers cuda needs", "or use --providers cpu here"
    else:
        needs, instead = f"the {variant} variant needs", "or use --variant fp32 or int8 here"
    return (
        f"{needs} the CUDA execution provider, which did not load here: install onnxedge[cuda] "
        f"on a GPU machine, {instead}"
    )


def check_external_data(bundle: Bundle) -> list[str]:
    """The external-data files of the bundle's model, each confined to the bundle, listed and
    verified: what `Bundle.open` has already checked (`bundle.external_data`), checked again."""
    return list(external_data_files(bundle, read_model(bundle.model_path)))


# How ONNX Runtime and OpenVINO say that an allocation failed.
_ALLOCATION = re.compile(r"alloc|out of memory|std::bad_alloc|not enough memory", re.IGNORECASE)


def run_halving(
    run: Callable[[np.ndarray], np.ndarray],
    part: np.ndarray,
    k: int,
    *,
    output_name: str,
    provider: str,
) -> np.ndarray:
    """One engine call ``run`` on ``part``, expected to give [N, ``k``]; where the engine (or
    numpy) cannot allocate its memory, the two halves one after the other, and so on down to one
    image, which then fails with one line saying so."""
    try:
        result = run(np.ascontiguousarray(part))
    except MemoryError as e:
        reason = first_line(e) if str(e) else "out of memory"
    except Exception as e:  # the engine's own error types
        if not _ALLOCATION.search(str(e)):
            raise
        reason = first_line(e)
    else:
        if result.shape != (part.shape[0], k):
            raise OnnxEdgeError(
                f"the model's output {output_name!r}: expected shape "
                f"[{part.shape[0]}, {k}], found {list(result.shape)}"
            )
        return result
    if len(part) == 1:
        raise OnnxEdgeError(
            f"{provider} cannot allocate the memory to run one image of shape "
            f"{list(part.shape[1:])}: {reason}"[:300]
        )
    half = len(part) // 2
    log.info(
        "%d images in one call did not fit in memory (%s); running them %d and %d",
        len(part),
        reason[:80],
        half,
        len(part) - half,
    )
    again = functools.partial(run_halving, run, k=k, output_name=output_name, provider=provider)
    return np.concatenate([again(part[:half]), again(part[half:])])
