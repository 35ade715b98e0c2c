"""Tiny RL sample shards with a known optimum, in the exact format of `rliv build-samples`.

The world: a user feature x in {-1, +1} decides the best ranking weight, a*(x) = 4 if x > 0
else 1. Every tower's reward is 1 when the logged action is a*(x), else 0, and the pair's next
state equals its current one (the same x, one request later). So, for discount gamma,

    Q*(s, a*) = 1 / (1 - gamma)        Q*(s, a) = gamma / (1 - gamma)  for a != a*.

Logged actions are uniform over the grid, as an exploring logging policy would give.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rliv_ray import schema as S
from rliv_ray.mdp.samples import META_ABSENT_REWARDS, META_MODE, META_STATE_NAMES

STATE_NAMES = ("user/x", "user/noise", "author/noise", "pair/exposures",
               "gap/log1p_gap_requests", "gap/first_contact")
N_ACTIONS = 5


def best_action(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, 4, 1)


def optimal_q(gamma: float) -> tuple[float, float]:
    """(Q* of the best action, Q* of any other)."""
    return 1.0 / (1.0 - gamma), gamma / (1.0 - gamma)


def make_states(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = len(x)
    return np.column_stack([x, rng.normal(0, 0.1, n), rng.normal(0, 0.1, n),
                            np.full(n, 1.0), np.full(n, np.log1p(1.0)),
                            np.zeros(n)]).astype(np.float32)


def sample_table(rows: int, seed: int = 0, *, users: int = 50, authors: int = 20,
                 absent_rewards: tuple[str, ...] = ()) -> pa.Table:
    rng = np.random.default_rng(seed)
    user = rng.integers(0, users, rows)
    x = np.where(user % 2 == 0, 1.0, -1.0)
    state = make_states(x, rng)
    action = rng.integers(0, N_ACTIONS, rows)
    reward = (action == best_action(x)).astype(np.float32)
    author = rng.integers(0, authors, rows)  # drawn in the order the columns were
    stitched = rng.random(rows) < 0.5
    columns = {
        S.USER_ID: pa.array(user, pa.int64()),
        S.AUTHOR_ID: pa.array(author, pa.int64()),
        S.STATE: S.vectors_to_arrow(state),
        S.ACTION: pa.array(action, pa.int16()),
        **{S.reward_column(label): pa.array(reward) for label in S.LABELS},
        S.NEXT_STATE: S.vectors_to_arrow(state),
        S.STITCHED: pa.array(stitched),
        # as build-samples writes it: NaN where the row was not stitched
        S.TRUE_NEXT_STATE: S.vectors_to_arrow(np.where(stitched[:, None], state, np.nan)),
        S.GAP: pa.array(np.ones(rows), pa.int32()),
        S.USER_GROUP: pa.array(np.zeros(rows), pa.int16()),
        S.RANK_SCORE: pa.array(rng.uniform(0.05, 1.0, rows), pa.float32()),
    }
    schema = S.rl_sample_schema(len(STATE_NAMES)).with_metadata({
        META_STATE_NAMES: json.dumps(list(STATE_NAMES)), META_MODE: "asa",
        META_ABSENT_REWARDS: json.dumps(list(absent_rewards))})
    return pa.table(columns, schema=schema)


def write_shards(out: str | Path, rows: int = 2048, files: int = 2, seed: int = 0,
                 **kwargs) -> Path:
    """``out/samples/part-0000i.parquet``, like a build-samples output; returns ``out``."""
    directory = Path(out) / "samples"
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        table = sample_table(rows // files, seed + i, **kwargs)
        pq.write_table(table, directory / f"part-{i:05d}.parquet")
    return Path(out)
