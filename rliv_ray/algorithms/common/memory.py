"""Keep freed tensor memory in the learner's process instead of handing it back to the kernel.

PyTorch's CPU tensors come from ``malloc``. glibc serves a block above its mmap threshold
(128 KiB at start) with fresh pages and gives them back on ``free``, and it trims the heap's top
once more than the trim threshold is free. A learner update allocates and frees the same
activations every time (RLIV-UA's heads: 3 MiB tensors at batch 1,024; SL-MGAC's attention
chunks: 1.6 MiB). Whether glibc then maps and page-faults them in again each update depends on
the order of earlier frees: one RLIV-UA profile had 444k minor page faults in 211 updates, 116k
with the settings below, which make it the same in every run (``benchmarks/RESULTS.md``,
"Learner speed": 1.09x on RLIV-UA's bare update).

:func:`reuse_freed_memory` raises both thresholds with ``mallopt`` (glibc only; elsewhere it
does nothing). The cost is memory the process keeps after a peak, at most about
``TRIM_THRESHOLD`` beyond what it uses.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's <malloc.h>
MMAP_THRESHOLD = 16 << 20
"""Blocks at or above this come from mmap (glibc caps the setting at 32 MiB on 64-bit)."""
TRIM_THRESHOLD = 256 << 20
"""Free memory at the heap's top kept before glibc returns it to the kernel."""
TOP_PAD = 64 << 20
"""Extra memory taken each time the heap grows, so growth needs fewer system calls."""

_applied: bool | None = None


def reuse_freed_memory() -> bool:
    """Apply the thresholds once per process; True where glibc took them."""
    global _applied
    if _applied is None:
        _applied = sys.platform.startswith("linux") and _mallopt_all()
    return _applied


def _mallopt_all() -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
                (M_TOP_PAD, TOP_PAD))
    return all(mallopt(option, value) == 1 for option, value in settings)
