"""Runs of equal keys in sorted arrays: the one helper every per-group NumPy pass needs."""

from __future__ import annotations

import numpy as np


def group_starts(*keys: np.ndarray) -> np.ndarray:
    """True at row 0 and wherever any key differs from the previous row (rows sorted by keys)."""
    start = np.zeros(len(keys[0]), dtype=bool)
    if len(start):
        start[0] = True
        for key in keys:
            start[1:] |= key[1:] != key[:-1]
    return start
