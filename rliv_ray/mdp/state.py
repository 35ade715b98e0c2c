"""The SCRI-MDP state vector of an interaction, built from a log table (pure NumPy/Arrow).

    s = {f_u, f_a, f_ua, Delta}                                   (RLIV-UA Eq. 6, Thm 2.2)

laid out as one float32 vector per interaction:

    [ user features | author features | pair features | gap features ]

* pair features f_ua (known before the exposure): log1p of the pair's exposure, click,
  effective-view, follow and gift counts, and log1p of the days since first contact;
* gap features: log1p(Delta) and a first-contact flag, where Delta is the number of the user's
  own requests since the pair's previous interaction (adjacent requests give 1,
  EQUATIONS.md 2.1(i)); a first interaction has Delta = 0 and the flag set.

The discrete gap bucket (for the gap embedding) is ``0`` for a first contact and
``1 + floor(log2(Delta))`` otherwise, capped at ``max_gap_bucket``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from rliv_ray import schema as S

PAIR_STATE_NAMES = (
    "log1p_ua_exposure_count",
    "log1p_ua_click_count",
    "log1p_ua_effective_view_count",
    "log1p_ua_follow_count",
    "log1p_ua_gift_count",
    "log1p_ua_days_since_first",
)
PAIR_COUNT_COLUMNS = (S.UA_EXPOSURE_COUNT, *S.PAIR_COUNT_BY_LABEL.values())
GAP_STATE_NAMES = ("log1p_gap_requests", "first_contact")
EXPOSURE_SLOT = 0  # index of the exposure count among the pair features
LABEL_SLOT = {label: i + 1 for i, label in enumerate(S.LABELS)}  # count index of each label


@dataclass(frozen=True)
class StateLayout:
    """Names and positions of the state vector's parts."""

    user_names: tuple[str, ...]
    author_names: tuple[str, ...]

    @classmethod
    def from_schema(cls, schema: pa.Schema) -> StateLayout:
        return cls(tuple(S.feature_names(schema, S.META_USER_FEATURES)),
                   tuple(S.feature_names(schema, S.META_AUTHOR_FEATURES)))

    @property
    def names(self) -> tuple[str, ...]:
        return (*(f"user/{n}" for n in self.user_names),
                *(f"author/{n}" for n in self.author_names),
                *(f"pair/{n}" for n in PAIR_STATE_NAMES), *(f"gap/{n}" for n in GAP_STATE_NAMES))

    @property
    def dim(self) -> int:
        return len(self.names)

    @property
    def user(self) -> slice:
        return slice(0, len(self.user_names))

    @property
    def author(self) -> slice:
        start = len(self.user_names)
        return slice(start, start + len(self.author_names))

    @property
    def pair(self) -> slice:
        start = len(self.user_names) + len(self.author_names)
        return slice(start, start + len(PAIR_STATE_NAMES))

    @property
    def gap(self) -> slice:
        start = self.pair.stop
        return slice(start, start + len(GAP_STATE_NAMES))


def gap_requests(request_idx: np.ndarray, previous_row: np.ndarray) -> np.ndarray:
    """Delta: the user's requests since the pair's previous interaction, 0 for a first one."""
    prev = np.where(previous_row >= 0, request_idx[np.maximum(previous_row, 0)], request_idx)
    return (request_idx - prev).astype(np.int64)


def gap_bucket(gap: np.ndarray, max_bucket: int) -> np.ndarray:
    """0 for a first contact (gap 0), else 1 + floor(log2(gap)), capped at ``max_bucket``."""
    safe = np.maximum(gap, 1)
    bucket = 1 + np.floor(np.log2(safe)).astype(np.int64)
    return np.where(gap <= 0, 0, np.minimum(bucket, max_bucket)).astype(np.int32)


def pair_gap_features(counts: np.ndarray, days: np.ndarray, gap: np.ndarray) -> np.ndarray:
    """The pair and gap parts of the state for any leading shape: (..., 8) float64.

    ``counts`` (..., 5) are the pair's exposure, click, effective-view, follow and gift counts
    before the exposure, ``days`` the days since first contact and ``gap`` Delta.
    """
    counts = np.asarray(counts, dtype=np.float64)
    first = counts[..., EXPOSURE_SLOT] == 0
    return np.concatenate([np.log1p(counts), np.log1p(np.asarray(days, np.float64))[..., None],
                           np.log1p(np.maximum(gap, 0))[..., None], first[..., None]], axis=-1)


def build_states(table: pa.Table, gap: np.ndarray) -> np.ndarray:
    """The (n, dim) float32 state matrix of a log table, given each row's Delta."""
    user = S.arrow_to_matrix(table[S.USER_FEATURES])
    author = S.arrow_to_matrix(table[S.AUTHOR_FEATURES])
    counts = [table[c].fill_null(0).to_numpy(zero_copy_only=False) for c in PAIR_COUNT_COLUMNS]
    pair_gap = pair_gap_features(np.column_stack(counts), table[S.UA_DAYS_SINCE_FIRST].to_numpy(),
                                 gap)
    out = np.concatenate([user, author, pair_gap], axis=1)
    return np.ascontiguousarray(out, dtype=np.float32)


def rewards_matrix(table: pa.Table) -> np.ndarray:
    """(n, 4) float32 rewards r_click, r_effective_view, r_follow, r_gift (Eq. 2); an absent
    label (KuaiRand's gift) reads as 0 and is declared absent in the shard metadata."""
    cols = [table[label].fill_null(0).to_numpy(zero_copy_only=False) for label in S.LABELS]
    return np.column_stack(cols).astype(np.float32)
