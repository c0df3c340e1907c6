"""A heartbeat for a command's slow steps: the library reports each step as it starts (a
``progress`` callback taking one line, e.g. ``"computing the golden data"``); `Heartbeat` is that
callback, and shows a step that runs longer than `AFTER_S`:

- on a terminal, a spinner on stderr with the step and its elapsed seconds (rich), gone when the
  command ends;
- off a terminal (a CI log, a pipe), one line on stderr every `EVERY_S` seconds the step runs:
  ``onnxedge: still computing the golden data (20 s)``.

A step that ends sooner shows nothing. With ``-v`` each step is also printed as it starts (as
`echo_progress` does); with ``-q`` nothing is. `tick` does the work and reads the injected clock,
so a test drives it without waiting; `Heartbeat.running` calls it from a thread every
`TICK_S` seconds while the command runs.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import click

from onnxedge.runtime.cli.output import echo_progress, verbosity

AFTER_S = 2.0  # a step shorter than this shows nothing
EVERY_S = 10.0  # off a terminal: one line per this many seconds of a step
TICK_S = 0.25


class Heartbeat:
    """The progress callback of a command with slow steps (see the module docstring)."""

    def __init__(
        self,
        *,
        tty: bool,
        clock: Callable[[], float] = time.monotonic,
        write: Callable[[str], None] | None = None,
        spinner: Any = None,
        enabled: bool = True,
        echo: Callable[[str], None] = echo_progress,
    ) -> None:
        self.tty = tty
        self.clock = clock
        self.write = write or (lambda line: click.echo(line, err=True))
        self.spinner = spinner  # rich's Status on a terminal (made in `running`)
        self.enabled = enabled
        self.echo = echo  # each step as it starts: at -v only by default
        self._lock = threading.Lock()
        self._step = ""
        self._started = 0.0
        self._lines = 0  # lines printed for the current step (off a terminal)
        self._shown = False  # the spinner is up

    def __call__(self, msg: str) -> None:
        """A new step starts: ``msg`` says what it does."""
        self.echo(msg)
        with self._lock:
            self._step, self._started, self._lines = msg, self.clock(), 0
            self._hide()

    def done(self) -> None:
        """No step runs any more (a fast part follows, or the command prints its results)."""
        with self._lock:
            self._step = ""
            self._hide()

    def tick(self) -> None:
        """Show the current step where it has run `AFTER_S` or longer."""
        with self._lock:
            if not self.enabled or not self._step:
                return
            elapsed = self.clock() - self._started
            if elapsed < AFTER_S:
                return
            text = f"{self._step} ({elapsed:.0f} s)"
            if self.tty and self.spinner is not None:
                self.spinner.update(text)
                if not self._shown:
                    self.spinner.start()
                    self._shown = True
            elif not self.tty and elapsed >= EVERY_S * (self._lines + 1):
                self._lines = int(elapsed // EVERY_S)
                self.write(f"onnxedge: still {text}")

    def _hide(self) -> None:
        if self._shown and self.spinner is not None:
            self.spinner.stop()
        self._shown = False

    @classmethod
    @contextlib.contextmanager
    def running(
        cls, *, stream: Any = None, echo: Callable[[str], None] = echo_progress
    ) -> Iterator[Heartbeat]:
        """A heartbeat for the command running now, ticked by a thread until the block ends:
        a spinner where ``stream`` (stderr) is a terminal, lines otherwise; nothing with -q."""
        stream = stream or sys.stderr
        tty = bool(getattr(stream, "isatty", lambda: False)())
        spinner = None
        if tty:
            from rich.console import Console

            spinner = Console(file=stream).status("")
        heartbeat = cls(tty=tty, spinner=spinner, enabled=verbosity() >= 0, echo=echo)
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(TICK_S):
                heartbeat.tick()

        thread = threading.Thread(target=beat, name="onnxedge-heartbeat", daemon=True)
        thread.start()
        try:
            yield heartbeat
        finally:
            stop.set()
            thread.join()
            heartbeat.done()
