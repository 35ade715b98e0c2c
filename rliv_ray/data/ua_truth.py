"""Ground truth along each user-author pair's chain of interactions (pure NumPy).

A pair's interactions ordered in time form its SCRI-MDP trajectory (one step per interaction,
EQUATIONS.md 2.1(d)). Because the synthetic world logs every exposure, it knows each pair's true
next interaction and the realised discounted return

    G_t = sum_{k >= t} gamma^(k - t) * r_k        (over the same pair's later interactions)

which later issues compare with ASA's predicted next state and with learned Q values.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter


def pair_order(user_id: np.ndarray, author_id: np.ndarray, request_idx: np.ndarray) -> np.ndarray:
    """Row order that groups rows by pair and sorts each pair's rows in time (stable)."""
    return np.lexsort((request_idx, author_id, user_id))


def next_in_group(values: np.ndarray, starts: np.ndarray, missing: int = -1) -> np.ndarray:
    """For rows sorted by group: the next row's value within the same group, else ``missing``."""
    out = np.full(len(values), missing, dtype=values.dtype)
    if len(values) > 1:
        same = ~starts[1:]
        out[:-1] = np.where(same, values[1:], missing)
    return out


def discounted_returns(rewards: np.ndarray, starts: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = r_t + gamma * G_{t+1} within each group of rows sorted by group then time.

    One linear filter over the whole array (returns leak across group boundaries), then the
    leaked part gamma^(n_t) * G(next group's first row) is subtracted, where n_t is the number
    of rows from t to the end of its group. Exact and O(n) with no Python loop over groups.
    """
    n = len(rewards)
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    x = np.asarray(rewards, dtype=np.float64)
    cont = lfilter([1.0], [1.0, -gamma], x[::-1])[::-1]
    start_idx = np.flatnonzero(starts)
    group = np.cumsum(starts) - 1
    next_start = np.append(start_idx[1:], n)[group]  # first row after this row's group
    leaked = np.where(next_start < n, cont[np.minimum(next_start, n - 1)], 0.0)
    with np.errstate(under="ignore"):
        return cont - gamma ** (next_start - np.arange(n)) * leaked
