"""Image decoding in a thread pool, in order, overlapped with whatever consumes the results; and
the choice between it and decoder processes (`DecodePool`, `decode_pool`;
`onnxedge.runtime.classifier.procpool` is the process pool).

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
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from onnxedge.runtime.errors import ArgumentError

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# Decoder threads: one per CPU this process may use, at most this many (a 64x64 model gains
# nothing from more, and each holds a decoded image).
MAX_DECODE_WORKERS = 8
# Decoder processes one may ask for (each is an interpreter of its own, about 60 MB).
MAX_DECODE_PROCESSES = 64


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_decode_workers() -> int:
    """One decoder thread per CPU this process may run on (at most `MAX_DECODE_WORKERS`)."""
    return max(1, min(usable_cpus(), MAX_DECODE_WORKERS))


@dataclasses.dataclass(frozen=True)
class DecodePool:
    """Who decodes the files of `Classifier.predict_files`: ``workers`` threads of this process
    (1: the calling thread, one file after another), or ``workers`` processes
    (`onnxedge.runtime.classifier.procpool.process_map`) when ``processes``; with ``batches``
    too, each of those processes decodes whole batches and runs them on a model session of its
    own (`onnxedge.runtime.classifier.files.stream_files`, "batch processes")."""

    workers: int
    processes: bool = False
    batches: bool = False

    @property
    def name(self) -> str:
        """Its kind as `POOLS` names it: batches, processes or threads."""
        if self.batches:
            return "batches"
        return "processes" if self.processes else "threads"

    @classmethod
    def named(cls, name: str, workers: int) -> DecodePool:
        """The pool of kind ``name`` (one of `POOLS`) with ``workers``."""
        pool_arguments(name, workers)  # an unknown name: ArgumentError
        return cls(workers, processes=name != "threads", batches=name == "batches")

    def describe(self) -> str:
        """The pool in words: "2 batch processes", "1 decoder process", "2 decoding threads"."""
        if self.batches:
            kind, unit, units = "batch", "process", "processes"
        elif self.processes:
            kind, unit, units = "decoder", "process", "processes"
        else:
            kind, unit, units = "decoding", "thread", "threads"
        return f"{self.workers} {kind} {unit if self.workers == 1 else units}"


# Batch processes one may ask for: each holds a session of the model and a batch's activations.
MAX_BATCH_PROCESSES = 64


def default_decode_pool(batch_sessions: bool = False) -> DecodePool:
    """The pool `Classifier.predict_files` uses when given no count (`DEFAULT_POOL_HELP`). Where
    the classifier can give each process a session of its own (``batch_sessions``: ONNX Runtime's
    CPU EP with its threads left to the default) and processes are forked, one batch
    process per CPU: every core decodes and runs the model, and none waits for another
    (docs/RUNTIME.md, "Batch processes"); else decoder processes beside the process that runs
    the model, which measured as fast as threads or faster (docs/BENCHMARKS.md, "Decoder
    processes against threads"); on one CPU, the calling thread alone."""
    from onnxedge.runtime.classifier.procpool import START_METHOD

    if usable_cpus() <= 1:
        return DecodePool(1)
    if batch_sessions and START_METHOD == "fork":
        return DecodePool(default_batch_processes(), processes=True, batches=True)
    return DecodePool(default_decode_processes(), processes=True)


def default_decode_processes() -> int:
    """One decoder process per two CPUs this process may run on, at least one."""
    return max(1, usable_cpus() // 2)


def default_batch_processes() -> int:
    """One batch process per CPU this process may run on, at most `MAX_DECODE_WORKERS` (each
    holds a session and a batch's activations; on more CPUs each session takes its share of
    them as threads: 8 processes of 8 threads on 64 CPUs)."""
    return default_decode_workers()


# The mean size of the first batch's files from which, where no pool is asked for, threads
# decode them (`threads_pool`, `large_files`).
LARGE_FILE_BYTES = 32 * 1024


DEFAULT_POOL_HELP = (
    "on ONNX Runtime's CPU EP with its threads left to the default, one batch process per CPU; "
    "else one decoder process per two CPUs; on one CPU, one file after another; files that "
    f"fit in one batch, or of {LARGE_FILE_BYTES // 1024} KB or more on average, a thread per CPU"
)


def decode_pool(
    threads: int | None,
    processes: int | None,
    batches: int | None = None,
    *,
    batch_sessions: bool = False,
) -> DecodePool:
    """The pool for ``decode_threads`` / ``decode_processes`` / ``batch_processes`` (counts
    already checked): one of them, or `default_decode_pool` (with ``batch_sessions``) where none
    is given; more than one is an `ArgumentError`."""
    given = {
        "decode_threads": threads,
        "decode_processes": processes,
        "batch_processes": batches,
    }
    named = [f"{k} ({v})" for k, v in given.items() if v is not None]
    if len(named) > 1:
        raise ArgumentError(
            "expected one of decode_threads, decode_processes and batch_processes, got "
            + " and ".join(named)
        )
    if batches is not None:
        return DecodePool(batches, processes=True, batches=True)
    if processes is not None:
        return DecodePool(processes, processes=True)
    if threads is not None:
        return DecodePool(threads)
    return default_decode_pool(batch_sessions)


def threads_pool() -> DecodePool:
    """The pool for a run of one batch or less, or of large files (`large_files`), where none
    is asked for: the calling process's threads, one per CPU (`default_decode_workers`), the
    batches run one at a time on the classifier's own session.

    Large files: decoding them is C work with the GIL released, which threads share as well
    as processes do, without their hand-overs or their coarser shares; a single decoder
    process (OpenVINO's default on 2 CPUs) was the bottleneck. `onnxedge predict`, int8, the
    2-core Zen 3, the default pool against ``--decode-threads 2``: 600 JPEGs of 400x300 (32 KB
    each), fast decode, OpenVINO 1.40-1.47 s against 1.15-1.17, ONNX Runtime 1.02-1.16
    against 1.00-1.03; 300 of 640x480 (77 KB) OpenVINO 1.06-1.09 against 0.85-0.86 (fast),
    1.37-1.53 against 1.07-1.10 (exact), ONNX Runtime the same; 40 of 1600x1200 (480 KB)
    and of 4000x3000 (3 MB), both engines and decodes, threads faster by 8-50%. CelebA's
    178x218 JPEGs (6-10 KB) stay with the processes, measured faster there
    (docs/BENCHMARKS.md, "Decoder processes against threads").

    One batch: a pool of processes pays off over many batches, not one: starting it (forking,
    a session in each batch process, OpenVINO's second compile for its streams) costs more
    than the decoding it would share, and one batch process decodes a whole batch alone
    (`onnxedge predict`, the 2-core Zen 3: one file, int8, OpenVINO 0.67-0.84 s against
    0.79-0.98 before, ONNX Runtime 0.53-0.60 against 0.51-0.64; 16 photos of 4000x3000, exact
    decode, 1.72-1.86 s against 3.41-3.51 on ONNX Runtime, 1.98-2.02 against 3.49-3.85 on
    OpenVINO)."""
    return DecodePool(default_decode_workers())


def file_pool(
    decode_threads: int | None,
    decode_processes: int | None,
    batch_processes: int | None,
    *,
    batch_sessions: bool,
    tuned: Any = None,
    files: int | None = None,
    batch_size: int | None = None,
    sample: Sequence[Any] = (),
    why_not: str = "one built on a session",
) -> DecodePool:
    """`Classifier.file_pool`: the counts checked (an `ArgumentError` for one out of range, more
    than one, or batch processes where the classifier has no ``batch_sessions``, ``why_not``,
    or processes are not forked), then `decode_pool`; where none is given, `threads_pool` for
    ``files`` (where known) that fit in one batch of ``batch_size``, else ``tuned``'s pool (a
    `FilesSetup` of `onnxedge tune --images`, measured on the user's files; one this classifier
    cannot have is a warning), else `threads_pool` where the ``sample`` (the first batch's
    paths) are `large_files`, else `default_decode_pool`."""
    none_given = (decode_threads, decode_processes, batch_processes) == (None,) * 3
    if none_given and files is not None and batch_size is not None and files <= batch_size:
        return threads_pool()
    if tuned is None and none_given and large_files(sample):
        return threads_pool()
    if tuned is not None and none_given:
        chosen = tuned.pool_arguments()
        try:
            return file_pool(
                chosen.get("decode_threads"),
                chosen.get("decode_processes"),
                chosen.get("batch_processes"),
                batch_sessions=batch_sessions,
                why_not=why_not,
            )
        except ArgumentError as e:
            log.warning("the tuned pool (%s) cannot run: %s", tuned.describe(), e)
    from onnxedge.runtime.classifier.args import check_count
    from onnxedge.runtime.classifier.procpool import START_METHOD
    from onnxedge.runtime.engines.onnxruntime.session import MAX_THREADS

    threads = check_count(decode_threads, "decode_threads", optional=True, maximum=MAX_THREADS)
    processes = check_count(
        decode_processes, "decode_processes", optional=True, maximum=MAX_DECODE_PROCESSES
    )
    batches = check_count(
        batch_processes, "batch_processes", optional=True, maximum=MAX_BATCH_PROCESSES
    )
    pool = decode_pool(threads, processes, batches, batch_sessions=batch_sessions)
    if pool.batches and (not batch_sessions or START_METHOD != "fork"):
        found = (
            f"processes started with {START_METHOD} on {sys.platform}"
            if START_METHOD != "fork"
            else why_not
        )
        raise ArgumentError(
            "expected a classifier from Classifier.from_bundle on ONNX Runtime's CPU EP with its "
            f"threads left to the default, forked on Linux, for batch_processes; found {found}"
        )
    return pool


def large_files(paths: Sequence[Any]) -> bool:
    """Whether the files of ``paths`` that are there average `LARGE_FILE_BYTES` or more (one
    ``stat`` each; what is not a path or cannot be read is left out)."""
    sizes = []
    for path in paths:
        if isinstance(path, (str, os.PathLike)):
            try:
                sizes.append(os.stat(path).st_size)
            except (OSError, ValueError):
                continue
    return bool(sizes) and sum(sizes) >= LARGE_FILE_BYTES * len(sizes)


# The pools `Classifier.predict_files` can decode with, by name, and the argument sizing each.
POOL_ARGUMENTS = {
    "batches": "batch_processes",
    "processes": "decode_processes",
    "threads": "decode_threads",
}
POOLS = tuple(POOL_ARGUMENTS)


def pool_arguments(pool: str, workers: int | None = None) -> dict[str, int]:
    """``predict_files``' argument for the named pool (`POOLS`) with ``workers``, by default its
    default size: one batch process per CPU, one decoder process per two CPUs (as
    `default_decode_pool`), or one thread per CPU."""
    if pool not in POOL_ARGUMENTS:
        raise ArgumentError(f"unknown decode pool {pool!r}; expected one of: {', '.join(POOLS)}")
    if workers is None:
        sizes = {
            "batches": default_batch_processes,
            "processes": default_decode_processes,
            "threads": default_decode_workers,
        }
        workers = sizes[pool]()
    return {POOL_ARGUMENTS[pool]: workers}


def process_chunk(batch_size: int) -> int:
    """Files a decoder process takes at a time: a quarter of a batch, from 1 to 16 (fewer hand-
    overs than one file at a time; several processes share a batch)."""
    return max(1, min(16, batch_size // 4))


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


__all__ = [
    "DEFAULT_POOL_HELP",
    "LARGE_FILE_BYTES",
    "MAX_BATCH_PROCESSES",
    "MAX_DECODE_PROCESSES",
    "MAX_DECODE_WORKERS",
    "POOLS",
    "DecodePool",
    "decode_pool",
    "default_batch_processes",
    "default_decode_pool",
    "default_decode_processes",
    "default_decode_workers",
    "file_pool",
    "large_files",
    "ordered_map",
    "pool_arguments",
    "process_chunk",
    "threads_pool",
]
