"""Joining Ray: the extra that brings it, the addresses `--ray` takes, and a session that starts
or joins a cluster and leaves it as it found it."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from typing import Any

from onnxedge.runtime.errors import OnnxEdgeError, first_line

log = logging.getLogger(__name__)

INSTALL = "pip install 'onnxedge[ray]'"

# "auto": the cluster `ray start` made on this machine (RAY_ADDRESS when set); "local": a new Ray
# of this process's own; HOST:PORT a head node's GCS; ray://HOST:PORT a Ray Client server.
AUTO, LOCAL = "auto", "local"
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}$")


def require_ray() -> Any:
    """The ``ray`` module with Ray Data, or an `OnnxEdgeError` saying what to install."""
    try:
        import ray
        import ray.data  # the part used; `ray` alone comes without pyarrow
    except ImportError as e:
        raise OnnxEdgeError(
            f"running on Ray needs Ray Data, which is not installed here ({first_line(e)}); "
            f"install it with: {INSTALL}"
        ) from None
    return ray


def check_address(address: str | None) -> str | None:
    """``address`` if Ray can take it (None: start or join a local Ray), else a `ValueError`
    naming the forms it could be."""
    if address is None or address in (AUTO, LOCAL) or address.startswith("ray://"):
        return address
    if _HOST_PORT.match(address):
        return address
    raise ValueError(
        f"expected a Ray address (auto, local, HOST:PORT or ray://HOST:PORT), found {address!r}"
    )


@contextlib.contextmanager
def ray_session(address: str | None = None, *, verbose: bool = False) -> Iterator[Any]:
    """Ray, connected: a session the caller already holds (``ray.init`` done) is used as it is;
    otherwise ``address`` is joined (None: the local Ray `ray start` made, else a new one of this
    process) and left when the block ends (a Ray this process started stops with it).

    ``verbose``: Ray's own INFO lines and the workers' output on stderr; otherwise warnings only.
    """
    ray = require_ray()
    with _ray_messages_on_stderr():
        if ray.is_initialized():
            yield ray
            return
        with _joined(ray, address, verbose=verbose):
            yield ray


@contextlib.contextmanager
def _joined(ray: Any, address: str | None, *, verbose: bool) -> Iterator[None]:
    check_address(address)
    try:
        # ERROR while joining: starting a local Ray warns about the token it generates.
        ray.init(
            address=address,
            logging_level=logging.INFO if verbose else logging.ERROR,
            log_to_driver=verbose,
        )
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        where = address or "this machine"
        raise OnnxEdgeError(f"cannot start or join Ray at {where}: {first_line(e)}") from None
    # Without -v: Ray's warnings; Ray Data's errors only (it warns that its progress bars are
    # off, which they are on purpose: the command draws its own).
    logging.getLogger("ray").setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("ray.data").setLevel(logging.INFO if verbose else logging.ERROR)
    log.info("Ray: %s", ray.cluster_resources())
    try:
        yield
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _ray_messages_on_stderr() -> Iterator[None]:
    """The driver prints the cluster's messages (an actor died, its task is retried) on stdout,
    where a command's results go; within the block they go to stderr. Ray's own printer is
    wrapped (``ray._private.worker.print_to_stdstream``, looked up at each message); where a
    Ray release has no such function, nothing changes."""
    try:
        from ray._private import worker
    except ImportError:
        worker = None
    printer = getattr(worker, "print_to_stdstream", None)
    if printer is None:
        yield
        return

    def on_stderr(data: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        printer({**data, "is_err": True}, *args, **kwargs)

    worker.print_to_stdstream = on_stderr
    try:
        yield
    finally:
        worker.print_to_stdstream = printer


def cluster_cpus(ray: Any) -> int:
    """The CPUs of the cluster Ray is connected to (at least 1)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def cluster_gpus(ray: Any) -> int:
    """The GPUs of the cluster Ray is connected to (0 without any)."""
    return int(ray.cluster_resources().get("GPU", 0))


__all__ = [
    "AUTO",
    "INSTALL",
    "LOCAL",
    "check_address",
    "cluster_cpus",
    "cluster_gpus",
    "ray_session",
    "require_ray",
]
