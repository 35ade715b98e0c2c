"""SL-MGAC training samples from a live-stream allocation log (pure functions of Arrow tables).

Every request row j of a user becomes one transition (s_j, a_j, T^l_j, T^v_j, n_j, s_{j+1}): the
log row itself, plus the same user's next request's :data:`~rliv_ray.schema.NEXT_STATE_COLUMNS`
as ``next_<column>`` (the next state, and the next request's logged action and watch times for
the bins of EQUATIONS.md 1.12), its activity group (EQUATIONS.md 1.8) and ``done``: the session
ended after this request, or it is the user's last request in the log. On the user's last row
the ``next_`` columns repeat the row itself (there is no next request; ``done`` masks them).

Activity groups (MG-SD): group 0 holds zero 3-week live watch time, groups 1..K-1 are quantile
bins of the positive values. The edges must come from the whole dataset (:func:`group_edges`
over every user), not from one bucket, or the same user falls into different groups per file.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from rliv_ray import schema as S
from rliv_ray.grouping import group_starts


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


def live_samples(log: pa.Table, *, groups: int = 6, edges: np.ndarray | None = None) -> pa.Table:
    """Turn one bucket's log (whole users) into SL-MGAC transitions (see the module docstring).

    ``edges`` (from :func:`group_edges` over the whole dataset) set the activity groups;
    without them they are computed from this table alone, which is right only when it holds
    the whole dataset. Rows come out sorted by user, then request.
    """
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
    done = table[S.SESSION_END].to_numpy() | last
    table = table.append_column(pa.field(S.USER_GROUP, pa.int16(), nullable=False),
                                pa.array(group, pa.int16()))
    table = table.append_column(pa.field(S.DONE, pa.bool_(), nullable=False), pa.array(done))
    following = table.select(list(S.NEXT_STATE_COLUMNS)).take(pa.array(nxt))
    for name in S.NEXT_STATE_COLUMNS:
        table = table.append_column(S.next_column(name), following[name])
    schema = S.live_sample_schema(log.schema)
    return table.cast(schema)
