"""A stopping rule a reader can check on a learning curve (pure function, no torch).

A run is converged at checkpoint k when its curve (an off-policy estimate of J on held-out
users, or any evaluation metric: never a training loss) has moved by at most ``rel_tol`` of its
size over the last ``patience`` intervals between checkpoints:

    converged at k  iff  max_{k - patience <= j <= k} |v_j - v_k| <= rel_tol * |v_k|

The earliest such checkpoint is where the table is made. A reader checks it by looking at the
curve: every point in the window lies inside the band v_k (1 +- rel_tol).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def stopping_step(steps: Sequence[int], values: Sequence[float], *, rel_tol: float = 0.02,
                  patience: int = 2) -> int | None:
    """The first step whose last ``patience`` + 1 checkpoints lie within ``rel_tol`` of its
    value, or None when the curve never settles (train longer)."""
    if len(steps) != len(values):
        raise ValueError(f"{len(steps)} steps but {len(values)} values")
    if list(steps) != sorted(set(steps)):
        raise ValueError(f"steps must be strictly increasing, got {list(steps)}")
    if rel_tol < 0 or patience < 1:
        raise ValueError(f"need rel_tol >= 0 and patience >= 1, got {rel_tol}, {patience}")
    v = np.asarray(values, dtype=np.float64)
    for k in range(patience, len(v)):
        window = v[k - patience:k + 1]
        if np.all(np.isfinite(window)) and np.abs(window - v[k]).max() <= rel_tol * abs(v[k]):
            return int(steps[k])
    return None
