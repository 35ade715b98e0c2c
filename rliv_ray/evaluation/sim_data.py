"""What a learned user simulator learns from and replays, taken from any log in the schema.

Pure NumPy/Arrow. :func:`extract` reads an interaction log (synthetic or converted KuaiRand)
sorted by user and request and returns

* :class:`FitRows`, one row per exposure: the SCRI-MDP state (``mdp/state.py`` layout) known
  before it, the ranker's logit, the labels, the watch time, whether the session ended after
  this request (sessions split at 30 idle minutes, as the metrics split them) and the request's
  position in its session;
* :class:`Replay`, what a rollout replays per user: the user features of each of their
  requests, their session start times, the authors they met (the candidate pool) with each
  pair's history at its first logged row, and the authors' features.

Nothing here knows the world's latent state: a simulator fitted from a synthetic log sees
exactly what one fitted from KuaiRand would.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

from rliv_ray import schema as S
from rliv_ray.data.ua_lever import SESSION_GAP_MS
from rliv_ray.grouping import group_starts
from rliv_ray.mdp.state import PAIR_COUNT_COLUMNS, build_states, gap_requests
from rliv_ray.mdp.stitching import previous_pair_row

NEEDED = (S.USER_ID, S.AUTHOR_ID, S.USER_REQUEST_IDX, S.TS_MS, S.WATCH_TIME_S, *S.LABELS,
          S.USER_FEATURES, S.AUTHOR_FEATURES, S.RANK_SCORE, *S.PAIR_FEATURES)


@dataclass
class FitRows:
    """Training rows of the response, quit and ranker models, one per exposure."""

    state: np.ndarray  # (n, D) float32
    rank_logit: np.ndarray  # (n,) float32, 0 where the log has no ranker score
    labels: np.ndarray  # (n, 4) float32 in S.LABELS order, 0 for an absent label
    watch_s: np.ndarray  # (n,) float32
    session_end: np.ndarray  # (n,) float32: the session ended after this row's request
    session_pos: np.ndarray  # (n,) int64: the request's index within its session
    user_id: np.ndarray  # (n,) int64


@dataclass
class Replay:
    """Per-user data a rollout replays; ragged arrays with ``*_offsets`` of length U + 1."""

    user_ids: np.ndarray  # (U,) sorted
    user_features: np.ndarray  # (R, F_u) at each request, the user's requests in order
    request_offsets: np.ndarray
    session_start_ms: np.ndarray  # (sessions,)
    session_offsets: np.ndarray
    pool_author: np.ndarray  # (P,) authors each user met, the candidate pool
    pool_counts: np.ndarray  # (P, 5) int64 pair counts before the pair's first logged row
    pool_days: np.ndarray  # (P,) days since first contact at that row
    pool_first_ms: np.ndarray  # (P,) time of that row
    pool_offsets: np.ndarray
    author_ids: np.ndarray  # (A,) sorted
    author_features: np.ndarray  # (A, F_a)

    def arrays(self) -> dict[str, np.ndarray]:
        return asdict(self)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)


@dataclass(frozen=True)
class LogFacts:
    """Scalars of the log a rollout needs."""

    has_rank_score: bool
    present_labels: tuple[bool, ...]  # per S.LABELS: False for an absent label (KuaiRand gift)
    exposures_per_request: int  # K, the median exposures per request
    max_session_requests: int
    think_ms: float  # mean time between one request's items ending and the next request
    mean_watch_s: float


def extract(table: pa.Table) -> tuple[FitRows, Replay, LogFacts]:
    """Fit rows, replay data and facts of one log table holding whole users."""
    missing = [c for c in NEEDED if c not in table.column_names]
    if missing:
        raise ValueError(f"not an interaction log: missing columns {missing}")
    absent = S.absent_columns(table.schema)
    order = np.lexsort((table[S.USER_REQUEST_IDX].to_numpy(), table[S.USER_ID].to_numpy()))
    table = table.take(pa.array(order))
    user = table[S.USER_ID].to_numpy().astype(np.int64)
    author = table[S.AUTHOR_ID].to_numpy().astype(np.int64)
    req = table[S.USER_REQUEST_IDX].to_numpy().astype(np.int64)
    ts = table[S.TS_MS].to_numpy().astype(np.int64)
    watch = table[S.WATCH_TIME_S].to_numpy().astype(np.float64)
    state = build_states(table, gap_requests(req, previous_pair_row(user, author, req)))
    has_rank = S.RANK_SCORE not in absent
    rank_logit = (_logit(table[S.RANK_SCORE].to_numpy()) if has_rank
                  else np.zeros(len(user), np.float32))
    labels = np.column_stack([table[c].fill_null(0).to_numpy(zero_copy_only=False)
                              for c in S.LABELS]).astype(np.float32)

    request = _Requests.of(user, req, ts, watch)
    rows = FitRows(state, rank_logit, labels, watch.astype(np.float32),
                   request.session_end[request.of_row].astype(np.float32),
                   request.session_pos[request.of_row], user)
    facts = LogFacts(
        has_rank_score=has_rank,
        present_labels=tuple(c not in absent for c in S.LABELS),
        exposures_per_request=int(np.median(np.diff(np.append(request.first_row, len(user))))),
        max_session_requests=int(request.session_pos.max()) + 1,
        think_ms=request.mean_think_ms(),
        mean_watch_s=float(watch.mean()),
    )
    return rows, _replay(table, user, author, ts, request), facts


@dataclass
class _Requests:
    """Request-level view of rows sorted by (user, request)."""

    first_row: np.ndarray  # (Q,) first row of each request
    of_row: np.ndarray  # (n,) request of each row
    user: np.ndarray  # (Q,)
    ts: np.ndarray  # (Q,)
    watch_s: np.ndarray  # (Q,) summed over the request's items
    session: np.ndarray  # (Q,) global session number
    session_end: np.ndarray  # (Q,) bool: last request of its session
    session_pos: np.ndarray  # (Q,) index within the session

    @classmethod
    def of(cls, user, req, ts, watch) -> _Requests:
        new = group_starts(user, req)
        first = np.flatnonzero(new)
        of_row = np.cumsum(new) - 1
        q_user, q_ts = user[first], ts[first]
        new_session = np.ones(len(first), bool)
        new_session[1:] = (q_user[1:] != q_user[:-1]) | (q_ts[1:] - q_ts[:-1] > SESSION_GAP_MS)
        session = np.cumsum(new_session) - 1
        session_first = np.flatnonzero(new_session)
        return cls(first, of_row, q_user, q_ts, np.bincount(of_row, weights=watch),
                   session, np.append(new_session[1:], True),
                   np.arange(len(first)) - session_first[session])

    def mean_think_ms(self) -> float:
        """Mean of (next request's time - this one's - its watch time) within sessions."""
        same = ~self.session_end[:-1]
        gaps = self.ts[1:][same] - self.ts[:-1][same] - 1000.0 * self.watch_s[:-1][same]
        return float(np.maximum(gaps, 0).mean()) if len(gaps) else 0.0


def _replay(table: pa.Table, user, author, ts, request: _Requests) -> Replay:
    user_ids, request_counts = np.unique(request.user, return_counts=True)
    session_first = np.flatnonzero(np.diff(request.session, prepend=-1))
    order, sorted_user, sorted_author = _sorted_pairs(user, author)
    pair_rows = order[group_starts(sorted_user, sorted_author)]  # each pair's first row
    counts = np.column_stack([table[c].fill_null(0).to_numpy(zero_copy_only=False)
                              for c in PAIR_COUNT_COLUMNS]).astype(np.int64)
    author_ids, author_first = np.unique(author, return_index=True)
    user_matrix = S.arrow_to_matrix(table[S.USER_FEATURES])
    return Replay(
        user_ids=user_ids,
        user_features=user_matrix[request.first_row],
        request_offsets=_offsets(request_counts),
        session_start_ms=request.ts[session_first],
        session_offsets=_offsets(_counts_per(request.user[session_first], user_ids)),
        pool_author=author[pair_rows],
        pool_counts=counts[pair_rows],
        pool_days=table[S.UA_DAYS_SINCE_FIRST].to_numpy()[pair_rows].astype(np.float32),
        pool_first_ms=ts[pair_rows],
        pool_offsets=_offsets(_counts_per(user[pair_rows], user_ids)),
        author_ids=author_ids,
        author_features=S.arrow_to_matrix(table[S.AUTHOR_FEATURES])[author_first],
    )


def _sorted_pairs(user, author):
    """Rows ordered by (user, author, position), with the sorted user and author."""
    order = np.lexsort((np.arange(len(user)), author, user))
    return order, user[order], author[order]


def _counts_per(values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    return np.bincount(np.searchsorted(keys, values), minlength=len(keys))


def _offsets(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p)).astype(np.float32)
