"""Image decoding in a thread pool, in order, overlapped with whatever consumes the results.

`predict` and `evaluate` spend most of their time decoding and resizing JPEGs, one image after
another on one core, while the model waits (about 400 images/s for 178x218 JPEGs where the model
alone does 1,800). Pillow releases the GIL while it decodes and resizes, so threads decode several
images at once and the caller runs the model on one batch while the next is being decoded.

`ordered_map` is the pool: results come back in the order of the inputs, the inputs are consumed
lazily and at most ``ahead`` of them are in flight, so memory stays bounded however many there are.
The pixels are exactly those of a serial decode: each image goes through the same function.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Decoder threads: one per CPU this process may use, at most this many (a 64x64 model gains
# nothing from more, and each holds a decoded image).
MAX_DECODE_WORKERS = 8


def default_decode_workers() -> int:
    """One decoder thread per CPU this process may run on (at most `MAX_DECODE_WORKERS`)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_DECODE_WORKERS))


def ordered_map(
    fn: Callable[[T], R], items: Iterable[T], *, workers: int, ahead: int
) -> Iterator[tuple[T, R]]:
    """``(item, fn(item))`` for each item, in input order, computed by ``workers`` threads.

    1. ``workers`` <= 1: computed in the calling thread, one at a time (no pool).
    2. Otherwise at most ``ahead`` items (at least ``workers``) are taken from ``items`` and in
       flight before the first result is yielded; each result yielded lets one more in.
    3. ``fn`` must not raise for a bad item (return the error as a value instead); an exception it
       raises anyway propagates from here when its result's turn comes, and the pool stops.
    4. Closing the iterator early (a consumer that stops) cancels what has not started.
    """
    if workers <= 1:  # 1.
        for item in items:
            yield item, fn(item)
        return
    window = max(ahead, workers)
    source = iter(items)
    queue: collections.deque[tuple[T, Future[R]]] = collections.deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="onnxedge-decode") as pool:
        try:
            for item in source:  # 2.
                queue.append((item, pool.submit(fn, item)))
                if len(queue) >= window:
                    break
            while queue:
                item, future = queue.popleft()
                result = future.result()  # 3.
                for more in source:
                    queue.append((more, pool.submit(fn, more)))
                    break
                yield item, result
        finally:  # 4., and 3.: nothing left running behind an error
            for _, future in queue:
                future.cancel()


__all__ = ["MAX_DECODE_WORKERS", "default_decode_workers", "ordered_map"]
