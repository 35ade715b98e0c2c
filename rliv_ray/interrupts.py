"""SIGTERM stops every ``rliv`` command as Ctrl-C does.

A scheduler, ``kill`` or ``docker stop`` sends SIGTERM, and Python's default is to die at once,
without the clean-up a Ctrl-C gets (``OUT.tmp-<pid>`` removed, Ray shut down, one line, exit
status 128 + the signal). :func:`sigterm_as_interrupt` makes SIGTERM raise :class:`Terminated`,
a ``KeyboardInterrupt``, so that every ``except KeyboardInterrupt`` and ``finally`` of the
commands runs for both. ``rliv train`` handles both signals itself, stopping after the iteration
in progress (:class:`StopSignals`, :class:`TrainingInterrupted`). The exit status and the line
of an interrupt are :func:`rliv_ray.checks.interrupted`'s.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the signal finds the main thread."""

    signum = signal.SIGTERM


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` inside the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def signal_of(interrupt: BaseException) -> signal.Signals:
    """The signal behind a KeyboardInterrupt: SIGTERM for :class:`Terminated` (and the
    training loop's aborts, which carry theirs), else SIGINT."""
    return signal.Signals(getattr(interrupt, "signum", signal.SIGINT))


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training; ``checkpoint`` is the newest one kept (None if none
    was written yet) and ``iteration`` the last one completed. A KeyboardInterrupt, so that
    whatever cleans up after Ctrl-C cleans up after it too."""

    def __init__(self, signum: int, checkpoint: Path | None, iteration: int | None):
        self.signum, self.checkpoint, self.iteration = signum, checkpoint, iteration
        name = signal.Signals(signum).name
        if checkpoint is None:
            text = f"interrupted ({name}) before the first checkpoint; nothing to resume"
        else:
            text = (f"interrupted ({name}); kept the checkpoint of iteration {iteration} "
                    f"({checkpoint}): run the same command with --resume to continue")
        super().__init__(text)


class Abort(KeyboardInterrupt):
    """Raised by :class:`StopSignals` where the signal finds the main thread: training stops at
    once. A KeyboardInterrupt, so that no ``except Exception`` inside Ray or RLlib swallows it
    and Ray cancels what it was waiting for."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class StopSignals:
    """SIGINT and SIGTERM handlers for a training run (module docstring); only in the main
    thread (elsewhere, a Tune trial, it does nothing). ``armed`` once Ray is up: the first
    signal then only sets ``signum``, which the loop reads before and after each iteration.
    Otherwise, and on a second signal, the handler raises :class:`Abort`. While the run
    closes (``closing``) signals are recorded only; a third one ends the process at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.armed = False
        self.closing = False
        self._count = 0
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def install(self) -> None:
        """(Re)install the handlers: Ray's core worker replaces SIGTERM's when it starts."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in self.SIGNALS:
            previous = signal.signal(signum, self._handle)
            if signum not in self._previous:
                self._previous[signum] = previous

    def _handle(self, signum: int, frame) -> None:
        self._count += 1
        if self.signum is None:
            self.signum = signum
        if self.closing:
            if self._count >= 3:
                os._exit(128 + self.signum)
            return
        if self.armed and self._count == 1:
            return  # the loop stops after this iteration
        raise Abort(self.signum)

    def __enter__(self) -> StopSignals:
        self.install()
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            # None: a handler not set from Python (Ray's C++ one); the default is the safe one
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()
