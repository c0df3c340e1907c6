"""Image decoding in worker processes, in order: `process_map`, the process twin of
`onnxedge.runtime.classifier.decode.ordered_map`.

Threads share one interpreter: the parts of a file's decode that hold the GIL (Pillow's header
parsing in Python, its bookkeeping, numpy's wrapping) run one at a time, and the process that runs
the model cannot keep two cores busy (docs/RUNTIME.md, "Where a file's time goes"). Worker
processes each have their own interpreter; they take the files in chunks, decode them with the
same function a thread would call, and hand the uint8 pixels back pickled (12 KB an image at
64x64x3: a batch of 64 is 0.8 MB through a pipe, a small part of its decode).

1. Results come back in input order; at most ``ahead`` items are in flight, so memory is bounded
   however many items there are.
2. On Linux the workers are forked (`START_METHOD`): they start at once, share the calling
   process's modules, and run nothing of it but ``fn`` (Pillow and numpy: neither ONNX Runtime
   nor OpenVINO, whose threads a fork does not copy). ``spawn`` would import the caller's
   ``__main__`` script again in each worker, which a script without an ``if __name__ ==
   "__main__"`` guard cannot take; elsewhere (macOS, where forking is unsafe, and Windows) it is
   still what runs. What the calling process holds is frozen for the garbage collector across
   the fork (``gc.freeze``): a worker's collections never run the destructor of an ONNX Runtime
   session or OpenVINO model left in a reference cycle, whose threads the worker does not have
   (it would wait for them for ever). SIGINT is blocked in a worker from its first instruction
   on, then ignored, and SIGTERM takes its default action: Ctrl-C reaches the calling process,
   which stops the pool, and a worker never prints a traceback of its own.
3. A worker whose parent is gone (killed with SIGKILL, so that no ``finally`` ran) exits by
   itself within `PARENT_POLL_S`.
4. PIL's decompression-bomb settings of the calling process at the start (``MAX_IMAGE_PIXELS`` and
   whether its warning is an error, as ``onnxedge predict`` sets them) are the workers' too.
5. Closing the iterator (a consumer that stops, Ctrl-C, an error) cancels the chunks not yet
   started and waits for the workers to exit.
6. A worker that ends abruptly (killed, out of memory) is an `OnnxEdgeError` (`BROKEN`) at the
   turn of the chunk it held, and the others stop.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import itertools
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from onnxedge.runtime.errors import OnnxEdgeError

T = TypeVar("T")
R = TypeVar("R")

# 6.: what a worker that ended abruptly is.
BROKEN = (
    "expected the worker processes to hand back the files they decode, found one ended abruptly "
    "(killed, or out of memory); --decode-threads decodes in threads instead"
)

# 2.: how the workers are started.
START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"

# 3.: how often a worker looks whether the process that started it is still there.
PARENT_POLL_S = 0.5

# The function each worker applies, set once by `_init_worker` (sent once, not with every chunk).
_worker_fn: Callable[[Any], Any] | None = None


def process_map(
    fn: Callable[[T], R], items: Iterable[T], *, workers: int, ahead: int, chunk: int
) -> Iterator[tuple[T, R]]:
    """``(item, fn(item))`` for each item, in input order, computed by ``workers`` processes
    (module docstring). ``fn``, the items and the results must pickle; ``fn`` must not raise for a
    bad item (return the error as a value): an exception it raises anyway comes out of here at
    its item's turn, and the pool stops. Chunks of ``chunk`` items go to a worker at a time."""
    from PIL import Image

    window = max(1, -(-max(ahead, workers * chunk) // chunk))  # chunks in flight
    source = _chunks(iter(items), chunk)
    queue: collections.deque[tuple[list[T], Future[list[R]]]] = collections.deque()
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context(START_METHOD),
        initializer=_init_worker,
        initargs=(fn, os.getpid(), Image.MAX_IMAGE_PIXELS, _bomb_warning_action()),
    )
    try:
        with _sigint_blocked(), _gc_frozen():  # 2.: each submit may start a worker
            for part in source:
                queue.append((part, _submit(pool, part)))
                if len(queue) >= window:
                    break
        while queue:
            part, future = queue.popleft()
            try:
                results = future.result()
            except BrokenProcessPool:
                raise OnnxEdgeError(BROKEN) from None
            for more in source:
                queue.append((more, _submit(pool, more)))
                break
            yield from zip(part, results, strict=True)
    finally:  # 5.
        for _, future in queue:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _submit(pool: ProcessPoolExecutor, part: list[Any]) -> Future[list[Any]]:
    """``part`` submitted to ``pool``; 6. where a worker has already ended abruptly (the pool
    refuses new work before the future of the chunk it held has been waited for)."""
    try:
        return pool.submit(_apply, part)
    except BrokenProcessPool:
        raise OnnxEdgeError(BROKEN) from None


def _chunks(items: Iterator[T], size: int) -> Iterator[list[T]]:
    while True:
        part = list(itertools.islice(items, size))
        if not part:
            return
        yield part


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """SIGINT blocked in the calling thread while workers are started (2.): a process inherits
    the signal mask of the thread that starts it, through exec, so a worker never sees a Ctrl-C,
    while one sent to this process in that window waits and is delivered when it is over."""
    if not hasattr(signal, "pthread_sigmask"):  # not on Windows
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


@contextlib.contextmanager
def _gc_frozen() -> Iterator[None]:
    """Every object of this process in the collector's permanent generation while workers are
    forked (2.): they keep it there; this process takes them back after."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _bomb_warning_action() -> str:
    """What `warnings` does here with PIL's ``DecompressionBombWarning`` (4.): the action of the
    first filter that applies to it, "default" where none does."""
    from PIL import Image

    for action, message, category, module, lineno in warnings.filters:
        if (
            issubclass(Image.DecompressionBombWarning, category)
            and (message is None or message.match("") is not None)
            and module is None
            and lineno == 0
        ):
            return str(action)
    return "default"


def _init_worker(
    fn: Callable[[Any], Any], parent: int, max_image_pixels: int | None, bomb_action: str
) -> None:
    global _worker_fn
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # 2.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = max_image_pixels  # 4.
    warnings.simplefilter(bomb_action, Image.DecompressionBombWarning)  # type: ignore[arg-type]
    _worker_fn = fn
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()  # 3.


def _exit_with_parent(parent: int) -> None:
    while True:
        time.sleep(PARENT_POLL_S)
        if os.getppid() != parent:
            os._exit(0)


def _apply(part: list[Any]) -> list[Any]:
    assert _worker_fn is not None, "process_map's worker was not initialised"
    return [_worker_fn(item) for item in part]


__all__ = ["BROKEN", "PARENT_POLL_S", "START_METHOD", "process_map"]
