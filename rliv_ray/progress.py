"""A small progress display for long commands (stderr, throttled; one line per update on
non-terminals so logs of cluster jobs stay readable)."""

from __future__ import annotations

import sys
import time


class Progress:
    """Counts work done towards ``total`` and shows rate and ETA.

    Usage: ``with Progress(total, "generate", unit="rows") as bar: bar.update(n)``.
    ``enabled=False`` makes it silent (tests, library use).
    """

    def __init__(self, total: int, desc: str, *, unit: str = "it", enabled: bool = True,
                 every_s: float | None = None, stream=None):
        self.total, self.desc, self.unit, self.enabled = total, desc, unit, enabled
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every_s = every_s if every_s is not None else (0.2 if self.tty else 10.0)
        self.done = 0
        self.start = time.perf_counter()
        self._last = 0.0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self._last >= self.every_s and self.done < self.total:
            self._last = now
            self._show(final=False)

    def close(self) -> None:
        self._show(final=True)

    def _show(self, *, final: bool) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if final:
            self.total = max(self.total, self.done)
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = max(self.total - self.done, 0) / rate if rate > 0 else 0.0
        line = (f"{self.desc}: {self.done:,}/{self.total:,} {self.unit} ({pct:5.1f}%) "
                f"{rate:,.0f} {self.unit}/s, {elapsed:.0f}s elapsed"
                + ("" if final else f", ETA {eta:.0f}s"))
        end = "\n" if final or not self.tty else ""
        prefix = "\r" if self.tty else ""
        self.stream.write(prefix + line + end)
        self.stream.flush()
