"""SL-MGAC training samples from a live-stream allocation log (pure functions of Arrow tables).

Every request row j of a user becomes one transition (s_j, a_j, T^l_j, T^v_j, n_j, s_{j+1}): the
log row itself, plus the same user's next request's :data:`~rliv_ray.schema.NEXT_STATE_COLUMNS`
as ``next_<column>`` (the next state, and the next request's logged action and watch times for
the bins of EQUATIONS.md 1.12), its activity group (EQUATIONS.md 1.8), its session state and
``done``. On the user's last row the ``next_`` columns repeat the row itself.

The paper's MDP (Eq. 2) is an infinite request-level CMDP: a user's requests form one
trajectory across sessions, so a session end is not a terminal state. ``terminal`` says which
transitions are ``done`` (the TD target drops V(s_{t+1})):

* ``user_end`` (default): only the user's last request in the log. TD sees cross-session
  effects (an unwanted live stream that makes the user leave costs the next sessions' reward);
  the end of the log is treated as the end of the user's trajectory.
* ``none``: no row is done. The last row bootstraps from itself (its ``next_`` columns repeat
  it): the log window truncates the user, it does not end them (time-limit bootstrapping), and
  keeping the row keeps its reward in the data. Its ``next_new_session`` is True, so with
  per-session discounting too the self-loop is discounted by gamma and Q stays finite.
* ``session``: the user's last request and every session end (the behaviour before issue 13,
  for comparison): TD never sees an effect beyond the session.

Session state (state inputs of the network, and ``next_`` of both for s_{t+1}):
``session_index_log1p`` = log1p(number of the user's sessions that ended before this request,
counted from the user's first request in the log) and ``request_gap_log1p_s`` = log1p(seconds
since the user's previous request), 0 on the user's first request. ``next_new_session`` says
that the next request starts a new session (this row ended one, or it is the user's last row);
the learner turns it into the per-transition discount (``SLMGACSettings.discount``).
:class:`SessionClock` computes the same state online, for a policy that sees requests as the
world serves them.

Activity groups (MG-SD): group 0 holds zero 3-week live watch time, groups 1..K-1 are quantile
bins of the positive values. The edges must come from the whole dataset (:func:`group_edges`
over every user), not from one bucket, or the same user falls into different groups per file.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from rliv_ray import schema as S
from rliv_ray.grouping import group_starts

TERMINAL_MODES = ("user_end", "none", "session")
"""Which transitions are ``done``; see the module docstring."""
DEFAULT_TERMINAL = "user_end"


def group_edges(values: np.ndarray, groups: int) -> np.ndarray:
    """Edges [0, q_1, ..., q_{K-2}] of K activity groups from one value per user.

    ``values`` are users' 3-week live watch times (one per user: the caller decides which,
    e.g. :func:`user_watch_3w`); q_j is the j/(K-1) quantile of the positive ones. Needs at
    least K users with positive watch time.
    """
    if groups < 2:
        raise ValueError(f"group count K must be >= 2, got {groups}")
    values = np.asarray(values, dtype=np.float64)
    if np.isnan(values).any():
        raise ValueError("live watch times contain NaN")
    positive = values[values > 0]
    if groups > len(positive):
        raise ValueError(f"group count K={groups} is larger than the number of users with live "
                         f"watch time ({len(positive)})")
    inner = np.quantile(positive, np.arange(1, groups - 1) / (groups - 1))
    return np.concatenate([[0.0], inner])


def assign_groups(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Group of each value: 0 if <= 0, else the number of edges <= value (1..len(edges)), int16.

    A value equal to an edge goes to the higher group.
    """
    values = np.asarray(values, dtype=np.float64)
    groups = np.searchsorted(np.asarray(edges, np.float64), values, side="right")
    return np.where(values > 0, groups, 0).astype(np.int16)


def user_watch_3w(log: pa.Table) -> np.ndarray:
    """Each user's 3-week live watch time at their first request in ``log`` (one per user):
    the per-user values :func:`group_edges` is meant for."""
    user = log[S.USER_ID].to_numpy()
    _, first = np.unique(user, return_index=True)
    return log[S.LIVE_WATCH_3W_S].to_numpy()[first]


def check_terminal(terminal: str) -> str:
    """``terminal`` if it is one of :data:`TERMINAL_MODES`, else a one-line ValueError."""
    if terminal not in TERMINAL_MODES:
        raise ValueError(f"terminal must be one of {TERMINAL_MODES}, got {terminal!r}")
    return terminal


def session_state(user: np.ndarray, ts_ms: np.ndarray,
                  session_end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(session_index_log1p, request_gap_log1p_s), both (N,) float32, of rows sorted by user,
    then time: log1p(sessions ended before the row since the user's first row) and
    log1p(seconds since the user's previous row), 0 on a user's first row."""
    user, ts = np.asarray(user), np.asarray(ts_ms, dtype=np.int64)
    ended = np.asarray(session_end, dtype=bool).astype(np.int64)
    starts = group_starts(user) if len(user) else np.zeros(0, bool)
    first = np.flatnonzero(starts)
    before = np.cumsum(ended) - ended  # (N,) session ends before each row, over all users
    index = before - np.repeat(before[first], np.diff(np.append(first, len(user))))
    gap = np.zeros(len(user))
    gap[1:] = np.where(starts[1:], 0.0, (ts[1:] - ts[:-1]) / 1000.0)
    if (gap < 0).any():
        raise ValueError("rows must be sorted by user, then time")
    return np.log1p(index).astype(np.float32), np.log1p(gap).astype(np.float32)


class SessionClock:
    """:func:`session_state` online: a policy that sees each user's requests in time order,
    one call per step (any number of rows per user), keeps each user's last time and session
    count here. ``new_session`` (B,) says a request starts a new session. A request at or
    before the user's last one starts the user afresh (a new run of the world)."""

    def __init__(self):
        self._last: dict[int, tuple[int, int]] = {}  # user -> (last ts_ms, sessions before it)

    def observe(self, user: np.ndarray, ts_ms: np.ndarray,
                new_session: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(session_index_log1p, request_gap_log1p_s) (B,) float32 of the rows, in their order."""
        user, ts = np.asarray(user, np.int64), np.asarray(ts_ms, np.int64)
        order = np.lexsort((ts, user))
        u, t, new = user[order], ts[order], np.asarray(new_session, bool)[order]
        starts = group_starts(u) if len(u) else np.zeros(0, bool)
        first = np.flatnonzero(starts)
        base = np.zeros(len(first), np.int64)
        prev = np.full(len(first), -1, np.int64)
        for k, row in enumerate(first):
            last = self._last.get(int(u[row]))
            if last is not None and t[row] > last[0]:
                prev[k], base[k] = last
        fresh = prev < 0
        inc = new.astype(np.int64)
        inc[first[fresh]] = 0  # a user's first request is session 0
        sizes = np.diff(np.append(first, len(u)))
        cum = np.cumsum(inc)
        index = np.repeat(base, sizes) + cum - np.repeat(cum[first] - inc[first], sizes)
        gap = np.zeros(len(u))
        gap[1:] = np.where(starts[1:], 0.0, (t[1:] - t[:-1]) / 1000.0)
        gap[first] = np.where(fresh, 0.0, (t[first] - prev) / 1000.0)
        ends = np.append(first[1:], len(u)) - 1
        for row in ends:
            self._last[int(u[row])] = (int(t[row]), int(index[row]))
        out_index, out_gap = np.empty(len(u), np.float32), np.empty(len(u), np.float32)
        out_index[order], out_gap[order] = np.log1p(index), np.log1p(gap)
        return out_index, out_gap


def live_samples(log: pa.Table, *, groups: int = 6, edges: np.ndarray | None = None,
                 terminal: str = DEFAULT_TERMINAL) -> pa.Table:
    """Turn one bucket's log (whole users) into SL-MGAC transitions (see the module docstring).

    ``edges`` (from :func:`group_edges` over the whole dataset) set the activity groups;
    without them they are computed from this table alone, which is right only when it holds
    the whole dataset. Rows come out sorted by user, then request.
    """
    check_terminal(terminal)
    missing = [name for name in S.LIVE_LOG_COLUMNS if name not in log.column_names]
    if missing:
        raise ValueError(f"not a live-stream allocation log: missing columns {missing}")
    if edges is None:
        edges = group_edges(user_watch_3w(log), groups)
    elif len(edges) != groups - 1:
        raise ValueError(f"{len(edges)} edges make {len(edges) + 1} groups, not K={groups}")
    user = log[S.USER_ID].to_numpy()
    order = np.lexsort((log[S.USER_REQUEST_IDX].to_numpy(), user))
    table = log.select(list(S.LIVE_LOG_COLUMNS)).take(pa.array(order))
    starts = group_starts(table[S.USER_ID].to_numpy())
    last = np.append(starts[1:], True)  # (N,) the user's last row
    n = table.num_rows
    nxt = np.where(last, np.arange(n), np.arange(n) + 1)  # (N,) row of the next request
    group = assign_groups(table[S.LIVE_WATCH_3W_S].to_numpy(), edges)
    session_end = table[S.SESSION_END].to_numpy()
    index, gap = session_state(table[S.USER_ID].to_numpy(), table[S.TS_MS].to_numpy(),
                               session_end)
    done = {"user_end": last, "none": np.zeros(n, bool), "session": session_end | last}[terminal]
    added = {S.USER_GROUP: pa.array(group, pa.int16()), S.SESSION_INDEX: pa.array(index),
             S.REQUEST_GAP: pa.array(gap), S.DONE: pa.array(done),
             S.NEXT_NEW_SESSION: pa.array(session_end | last)}
    for name, values in added.items():
        table = table.append_column(pa.field(name, values.type, nullable=False), values)
    following = table.select(list(S.NEXT_STATE_COLUMNS)).take(pa.array(nxt))
    for name in S.NEXT_STATE_COLUMNS:
        table = table.append_column(S.next_column(name), following[name])
    schema = S.live_sample_schema(log.schema)
    return table.cast(schema)
