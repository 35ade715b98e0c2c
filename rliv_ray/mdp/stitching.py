"""Which interactions can be stitched to their pair's previous one (pure NumPy, no Ray).

Industrial systems keep per user a fixed-length, truncated behaviour sequence of length L
(``../shared/DESIGN.md``, data contracts); stitching may only look there. At the time of request
t the sequence holds the L most recent *stored* events of the user before t, where the stored
events are every exposure (``content="exposures"``) or only engagements, i.e. rows with a click,
effective view, follow or gift (``content="engagements"``, as the paper's behaviour log,
rliv-ua line 149). An interaction is *stitchable* when its pair's previous interaction is one of
those stored events. A pair's first interaction never is.

All functions take the rows of whole users sorted by (user_id, user_request_idx), as every log
file written by rliv-ray is.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

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
    new_pair = np.ones(n, dtype=bool)
    new_pair[1:] = (u[1:] != u[:-1]) | (a[1:] != a[:-1])
    new_request = new_pair.copy()
    new_request[1:] |= r[1:] != r[:-1]
    # The row just before the first row of this (pair, request) group is the pair's previous
    # interaction, unless this group is the pair's first.
    group_start = np.maximum.accumulate(np.where(new_request, np.arange(n), 0))
    prev_sorted = np.where(new_pair[group_start], -1, group_start - 1)
    out = np.full(n, -1, dtype=np.int64)
    out[order] = np.where(prev_sorted >= 0, order[np.maximum(prev_sorted, 0)], -1)
    return out


def stitchable(user_id: np.ndarray, author_id: np.ndarray, request_idx: np.ndarray,
               engaged: np.ndarray, *, sequence_length: int,
               content: SequenceContent = "exposures") -> np.ndarray:
    """Boolean mask: the pair's previous interaction is in the user's truncated sequence.

    ``engaged`` marks rows with any positive label (used when ``content="engagements"``).
    """
    if sequence_length < 1:
        raise ValueError(f"sequence_length must be >= 1, got {sequence_length}")
    if content not in ("exposures", "engagements"):
        raise ValueError(f"content must be 'exposures' or 'engagements', got {content!r}")
    prev = previous_pair_row(user_id, author_id, request_idx)
    stored = np.ones(len(user_id), bool) if content == "exposures" else engaged.astype(bool)
    # entries_before[i]: stored events of this user strictly before row i (rows are sorted).
    user_start = np.ones(len(user_id), dtype=bool)
    user_start[1:] = user_id[1:] != user_id[:-1]
    cum = np.cumsum(stored) - stored
    entries_before = cum - cum[np.flatnonzero(user_start)][np.cumsum(user_start) - 1]
    request_start = user_start.copy()
    request_start[1:] |= request_idx[1:] != request_idx[:-1]
    first_row_of_request = np.maximum.accumulate(np.where(request_start, np.arange(len(prev)), 0))
    seen_at_request = entries_before[first_row_of_request]  # stored events visible at request t
    has_prev = prev >= 0
    safe_prev = np.where(has_prev, prev, 0)
    newer = seen_at_request - entries_before[safe_prev]  # stored events from prev onwards
    return has_prev & stored[safe_prev] & (newer <= sequence_length)


def history_bucket(exposure_count: np.ndarray) -> np.ndarray:
    """Pair-history bucket of each interaction: 0 first contact, 1 for 2-5, 2 for 6+.

    ``exposure_count`` is the number of the pair's earlier interactions.
    """
    return np.select([exposure_count == 0, exposure_count <= 4], [0, 1], 2)
