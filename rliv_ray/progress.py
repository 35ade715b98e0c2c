"""Progress for long commands on stderr: a tqdm bar in a terminal; on other streams (logs of
cluster jobs, CI) a plain line every ``every_s`` seconds, so logs stay readable."""

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
        self.every_s = every_s if every_s is not None else 10.0
        self.done = 0
        self.start = time.perf_counter()
        self._last = 0.0
        self._bar = None
        if enabled and self.stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=total >= 10_000,
                             file=self.stream, dynamic_ncols=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.perf_counter()
        if now - self._last >= self.every_s and self.done < self.total:
            self._last = now
            self._line(final=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        else:
            self._line(final=True)

    def _line(self, *, final: bool) -> None:
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
        self.stream.write(line + "\n")
        self.stream.flush()
