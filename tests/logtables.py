"""Small, valid interaction-log tables for tests (exactly ``log_schema(...)``, no Ray)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rliv_ray import schema as s
from rliv_ray.actions import ActionGrid
from rliv_ray.data.io import LOG_DIR, part_name

DAY_MS = 86_400_000
START_MS = s.REQUEST_EPOCH_MS + DAY_MS  # first request of user 0


def make_log_table(n_users: int = 5, requests_per_user: int = 20, seed: int = 0,
                   n_user_features: int = 3, n_author_features: int = 2, *,
                   items_per_request: int = 2, n_authors: int = 6,
                   source: str = "test") -> pa.Table:
    """A valid log: ``n_users * requests_per_user * items_per_request`` rows sorted by
    (user_id, user_request_idx), user ids ``0..n_users-1``, the default :class:`ActionGrid`,
    uniform logging (``behavior_prob = 1 / n_actions``) and pair counts computed from the rows.
    Feature names are ``u0, u1, ...`` and ``a0, a1, ...`` (at least one of each).
    """
    if min(n_user_features, n_author_features) < 1:
        raise ValueError("feature groups need at least one feature (Parquet drops empty lists)")
    rng = np.random.default_rng(seed)
    grid = ActionGrid().weights
    per_user = requests_per_user * items_per_request
    n = n_users * per_user
    user = np.repeat(np.arange(n_users, dtype=np.int64), per_user)
    uri = np.tile(np.repeat(np.arange(requests_per_user, dtype=np.int64), items_per_request),
                  n_users)
    gaps = rng.integers(1_000, 600_000, size=(n_users, requests_per_user)).cumsum(axis=1)
    ts = np.repeat((START_MS + np.arange(n_users)[:, None] * 1_000 + gaps).ravel(),
                   items_per_request)
    author = rng.integers(0, n_authors, size=n)
    action = rng.integers(0, len(grid), size=n)
    click = rng.random(n) < 0.3
    effective_view = click & (rng.random(n) < 0.5)
    follow = effective_view & (rng.random(n) < 0.3)
    gift = follow & (rng.random(n) < 0.3)
    labels = dict(zip(s.LABELS, (click, effective_view, follow, gift), strict=True))
    columns = {
        s.REQUEST_ID: s.make_request_id(ts, user),
        s.USER_REQUEST_IDX: uri,
        s.TS_MS: ts,
        s.USER_ID: user,
        s.AUTHOR_ID: author,
        s.ITEM_ID: author * 1_000 + rng.integers(0, 50, size=n),
        s.RANK_SCORE: rng.random(n).astype(np.float32),
        s.ACTION: action.astype(np.int16),
        s.ACTION_WEIGHT: np.asarray(grid, np.float32)[action],
        s.BEHAVIOR_PROB: np.full(n, 1 / len(grid), np.float32),
        **{label: v.astype(np.int8) for label, v in labels.items()},
        s.WATCH_TIME_S: (rng.exponential(10.0, n) * (1 + click)).astype(np.float32),
        s.DURATION_S: rng.uniform(5.0, 120.0, n).astype(np.float32),
        s.USER_GROUP: (user % 3).astype(np.int16),
        s.USER_FEATURES: s.vectors_to_arrow(rng.normal(size=(n_users, n_user_features))[user]),
        s.AUTHOR_FEATURES: s.vectors_to_arrow(
            rng.normal(size=(n_authors, n_author_features))[author]),
        **_pair_features(user, author, ts, labels),
    }
    schema = s.log_schema([f"u{i}" for i in range(n_user_features)],
                          [f"a{i}" for i in range(n_author_features)],
                          source=source, action_grid=grid)
    return pa.table(columns, schema=schema)


def _pair_features(user, author, ts, labels: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The user-author counts known before each row (rows are in time order per user)."""
    frame = pd.DataFrame({"u": user, "a": author, "ts": ts,
                          **{k: v.astype(np.int32) for k, v in labels.items()}})
    pair = frame.groupby(["u", "a"], sort=False)
    out = {s.UA_EXPOSURE_COUNT: pair.cumcount().to_numpy(np.int32)}
    for label, column in s.PAIR_COUNT_BY_LABEL.items():
        out[column] = (pair[label].cumsum() - frame[label]).to_numpy(np.int32)
    first = pair["ts"].transform("min")
    out[s.UA_DAYS_SINCE_FIRST] = ((frame["ts"] - first) / DAY_MS).to_numpy(np.float32)
    return out


def write_log(table: pa.Table, directory: str | Path, n_files: int = 1) -> Path:
    """Write ``table`` as ``directory/log/part-00000.parquet`` ... with whole users per file
    (consecutive blocks of users in order of appearance); returns the ``log`` directory."""
    log_dir = Path(directory) / LOG_DIR
    log_dir.mkdir(parents=True, exist_ok=True)
    user_ids = table.column(s.USER_ID)
    users = pc.unique(user_ids)  # in order of first appearance; a null or NaN id is kept too
    for i, block in enumerate(np.array_split(np.arange(len(users)), n_files)):
        part = table.filter(pc.is_in(user_ids, value_set=users.take(block)))
        pq.write_table(part, log_dir / part_name(i))
    return log_dir
