"""Stitching: find each interaction's previous one in the user's truncated sequence (pure NumPy).

Industrial systems keep per user a fixed-length, truncated behaviour sequence of length L
(``../shared/DESIGN.md``, data contracts); stitching may only look there. At the time of request
t the sequence holds the L most recent *stored* events of the user before t, where the stored
events are every exposure (``content="exposures"``) or only engagements, i.e. rows with a click,
effective view, follow or gift (``content="engagements"``, as the paper's behaviour log,
rliv-ua line 149). A stitched pair of rows (j -> i) gives the tuple (s^{t-1}, a^{t-1}, r^{t-1},
s^t) that trains ASA (Eq. 7). A pair's first interaction is never stitched.

All functions take the rows of whole users sorted by (user_id, user_request_idx), as every log
file written by rliv-ray is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from rliv_ray.grouping import group_starts

SequenceContent = Literal["exposures", "engagements"]
HISTORY_BUCKETS = ("first_contact", "2-5", "6+")


def previous_pair_row(user_id: np.ndarray, author_id: np.ndarray,
                      request_idx: np.ndarray) -> np.ndarray:
    """Row index of the same pair's previous interaction in an earlier request, -1 if none.

    Two exposures of one pair in the same request are not each other's predecessor: both get
    the pair's last interaction of an earlier request.
    """
    n = len(user_id)
    order = np.lexsort((request_idx, author_id, user_id))
    u, a, r = user_id[order], author_id[order], request_idx[order]
    new_pair = group_starts(u, a)
    new_request = group_starts(u, a, r)
    # The row just before the first row of this (pair, request) group is the pair's previous
    # interaction, unless this group is the pair's first.
    group_start = np.maximum.accumulate(np.where(new_request, np.arange(n), 0))
    prev_sorted = np.where(new_pair[group_start], -1, group_start - 1)
    out = np.full(n, -1, dtype=np.int64)
    out[order] = np.where(prev_sorted >= 0, order[np.maximum(prev_sorted, 0)], -1)
    return out


@dataclass(frozen=True)
class StitchConfig:
    """Where stitching may look and how it searches (rliv-ua section 3.1)."""

    sequence_length: int = 30
    """L: stored events kept per user (the synthetic world's default gives ~46% stitchable)."""
    content: SequenceContent = "exposures"
    """What the sequence stores: every exposure, or only engagements (paper line 149)."""
    window_ms: int = 2_000
    """Half-width of the time window searched around the pair's last-interaction time T."""

    def __post_init__(self) -> None:
        if self.sequence_length < 1:
            raise ValueError(f"sequence_length must be >= 1, got {self.sequence_length}")
        if self.content not in ("exposures", "engagements"):
            raise ValueError(f"content must be 'exposures' or 'engagements', got {self.content!r}")
        if self.window_ms < 0:
            raise ValueError(f"window_ms must be >= 0, got {self.window_ms}")


def stitch(user_id: np.ndarray, author_id: np.ndarray, request_idx: np.ndarray,
           ts_ms: np.ndarray, engaged: np.ndarray, config: StitchConfig,
           previous: np.ndarray | None = None) -> np.ndarray:
    """Row index of the stored event stitched to each interaction, -1 where stitching fails.

    As the paper does: take T, the timestamp of the pair's most recent earlier interaction
    (a pair feature the system keeps), binary-search the user's stored events for the window
    [T - w, T + w], keep only the L most recent events before this request, and pick the event
    of this author nearest to T (the later one on a tie). ``previous`` is
    :func:`previous_pair_row`'s result when the caller already has it.
    """
    n = len(user_id)
    prev = previous_pair_row(user_id, author_id, request_idx) if previous is None else previous
    stored = np.ones(n, bool) if config.content == "exposures" else engaged.astype(bool)
    events = np.flatnonzero(stored)  # table rows of stored events, in (user, time) order
    user_start = group_starts(user_id)
    request_first = np.maximum.accumulate(np.where(group_starts(user_id, request_idx),
                                                   np.arange(n), 0))
    before = np.cumsum(stored) - stored  # stored events strictly before each row
    visible_hi = before[request_first]
    first_of_user = np.maximum.accumulate(np.where(user_start, np.arange(n), 0))
    visible_lo = np.maximum(before[first_of_user], visible_hi - config.sequence_length)
    t_last = np.where(prev >= 0, ts_ms[np.maximum(prev, 0)], ts_ms)
    key, query = _time_keys(user_start, ts_ms, t_last, config.window_ms)
    lo = np.maximum(np.searchsorted(key[events], query - config.window_ms), visible_lo)
    hi = np.minimum(np.searchsorted(key[events], query + config.window_ms, "right"), visible_hi)
    best = np.full(n, -1, dtype=np.int64)
    best_dist = np.full(n, np.iinfo(np.int64).max)
    for offset in range(int(np.max(hi - lo, initial=0))):
        cand = np.minimum(lo + offset, max(len(events) - 1, 0))
        row = events[cand] if len(events) else cand
        dist = np.abs(ts_ms[row] - t_last)
        ok = (lo + offset < hi) & (author_id[row] == author_id) & (dist <= best_dist)
        best = np.where(ok, row, best)
        best_dist = np.where(ok, dist, best_dist)
    return np.where(prev >= 0, best, -1)


def _time_keys(user_start: np.ndarray, ts_ms: np.ndarray, t_last: np.ndarray, window_ms: int):
    """Sortable int64 keys ``user_block * span + (ts - t0)`` of every row, and the same key of
    each row's T: one searchsorted then serves every user, and no window crosses users."""
    if len(ts_ms) == 0:
        return ts_ms.astype(np.int64), ts_ms.astype(np.int64)
    t0 = int(ts_ms.min()) - window_ms
    span = int(ts_ms.max()) - t0 + window_ms + 1
    block = (np.cumsum(user_start) - 1).astype(np.int64)
    if span * (int(block[-1]) + 1) >= 2**62:
        raise ValueError("time span x users too large for one stitching block; split the file")
    return block * span + (ts_ms - t0), block * span + (t_last - t0)


def history_bucket(exposure_count: np.ndarray) -> np.ndarray:
    """Pair-history bucket of each interaction: 0 first contact, 1 for 2-5, 2 for 6+.

    ``exposure_count`` is the number of the pair's earlier interactions.
    """
    return np.select([exposure_count == 0, exposure_count <= 4], [0, 1], 2)
