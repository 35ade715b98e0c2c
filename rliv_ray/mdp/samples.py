"""RL training samples of one log file (whole users), as pure functions of Arrow tables.

For every interaction j the shard row is (s_j, a_j, r_j^click..gift, s_hat_{j+1}, gap, group)
(RLIV-UA Algorithm 1 step 2; EQUATIONS.md 2.1(j)), where s_hat is ASA's prediction. Where a later
interaction i of the pair was stitched back to j, row j also carries ``stitched = true`` and the
true next state s_i (NaN elsewhere). Every row keeps the log's ``rank_score`` (null where the
source has none), which `rliv rerank` uses as the base score of Eq. 1. Three modes:

* ``asa`` (the paper): ASA's next state for every interaction;
* ``no_asa`` (the paper's w/o-ASA ablation): only stitched rows, with their true next states;
* ``hybrid`` (our extension): the true next state where stitched, ASA's elsewhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pyarrow as pa

from rliv_ray import schema as S
from rliv_ray.mdp.state import (
    StateLayout,
    build_states,
    gap_bucket,
    gap_requests,
    rewards_matrix,
)
from rliv_ray.mdp.stitching import (
    HISTORY_BUCKETS,
    StitchConfig,
    history_bucket,
    previous_pair_row,
    stitch,
)

SampleMode = Literal["asa", "no_asa", "hybrid"]
META_STATE_NAMES = b"rliv.state_names"
META_MODE = b"rliv.sample_mode"
META_ABSENT_REWARDS = b"rliv.absent_rewards"


@dataclass(frozen=True)
class SampleConfig:
    """How samples are built from a log."""

    stitch: StitchConfig = field(default_factory=StitchConfig)
    mode: SampleMode = "asa"
    max_gap_bucket: int = 20
    """Gap buckets: 0 first contact, 1 + floor(log2 Delta) capped here (EQUATIONS 2.1(i))."""

    def __post_init__(self) -> None:
        if self.mode not in ("asa", "no_asa", "hybrid"):
            raise ValueError(f"mode must be 'asa', 'no_asa' or 'hybrid', got {self.mode!r}")
        if self.max_gap_bucket < 1:
            raise ValueError(f"max_gap_bucket must be >= 1, got {self.max_gap_bucket}")


@dataclass
class PreparedLog:
    """One file's interactions with their states, gaps and stitching, sorted by (user, req)."""

    table: pa.Table
    states: np.ndarray  # (n, dim) float32
    actions: np.ndarray  # (n,) int16
    rewards: np.ndarray  # (n, 4) float32
    gap: np.ndarray  # (n,) Delta in the user's requests, 0 at first contact
    stitched_prev: np.ndarray  # (n,) row stitched as this row's previous interaction, or -1
    next_row: np.ndarray  # (n,) the pair's next interaction in the full log, or -1
    stitched_next: np.ndarray  # (n,) the first row stitched back to this one, or -1

    @property
    def rows(self) -> int:
        return self.table.num_rows


def prepare(table: pa.Table, config: SampleConfig) -> PreparedLog:
    """States, gaps and stitching of a table holding whole users."""
    table = sort_by_user(table)
    user = table[S.USER_ID].to_numpy()
    author = table[S.AUTHOR_ID].to_numpy()
    request = table[S.USER_REQUEST_IDX].to_numpy()
    rewards = rewards_matrix(table)
    prev = previous_pair_row(user, author, request)
    gap = gap_requests(request, prev)
    engaged = rewards.max(axis=1) > 0
    stitched_prev = stitch(user, author, request, table[S.TS_MS].to_numpy(), engaged,
                           config.stitch, previous=prev)
    return PreparedLog(table, build_states(table, gap), table[S.ACTION].to_numpy(), rewards,
                       gap, stitched_prev, _first_successor(prev), _first_successor(stitched_prev))


def _first_successor(predecessor: np.ndarray) -> np.ndarray:
    """Invert a row -> predecessor link: each row's first successor, or -1."""
    out = np.full(len(predecessor), -1, dtype=np.int64)
    rows = np.flatnonzero(predecessor >= 0)[::-1]  # reversed: the first successor wins
    out[predecessor[rows]] = rows
    return out


def sort_by_user(table: pa.Table) -> pa.Table:
    """Sort by (user_id, user_request_idx) unless already sorted (stable)."""
    user = table[S.USER_ID].to_numpy()
    request = table[S.USER_REQUEST_IDX].to_numpy()
    if len(user) < 2 or bool(np.all((user[1:] > user[:-1]) | ((user[1:] == user[:-1])
                                                               & (request[1:] >= request[:-1])))):
        return table
    return table.take(np.lexsort((request, user)))


def asa_tuples(prep: PreparedLog) -> pa.Table:
    """The stitched tuples (s^{T-1}, a^{T-1}, r^{T-1}) -> s^T that train ASA (Eq. 7)."""
    i = np.flatnonzero(prep.stitched_prev >= 0)
    j = prep.stitched_prev[i]
    return pa.table({
        S.USER_ID: prep.table[S.USER_ID].to_numpy()[j],
        S.STATE: S.vectors_to_arrow(prep.states[j]),
        S.ACTION: pa.array(prep.actions[j], pa.int16()),
        "rewards": S.vectors_to_arrow(prep.rewards[j]),
        S.TRUE_NEXT_STATE: S.vectors_to_arrow(prep.states[i]),
    })


def stitch_stats(prep: PreparedLog) -> dict:
    """Counts for the stitching success rate, overall and by pair-history bucket."""
    bucket = history_bucket(prep.table[S.UA_EXPOSURE_COUNT].to_numpy())
    ok = prep.stitched_prev >= 0
    return {
        "rows": prep.rows,
        "stitched": int(ok.sum()),
        "rows_by_history": np.bincount(bucket, minlength=len(HISTORY_BUCKETS)).tolist(),
        "stitched_by_history": np.bincount(bucket[ok], minlength=len(HISTORY_BUCKETS)).tolist(),
    }


def sample_table(prep: PreparedLog, predicted_next: np.ndarray | None, layout: StateLayout,
                 config: SampleConfig, absent_rewards: tuple[str, ...] = ()) -> pa.Table:
    """The RL sample shard of one file (``rl_sample_schema``), in the configured mode."""
    nxt = prep.stitched_next
    stitched = nxt >= 0
    true_next = prep.states[np.maximum(nxt, 0)]
    if config.mode == "no_asa":
        next_state, keep = true_next, stitched
    elif predicted_next is None:
        raise ValueError(f"mode {config.mode!r} needs ASA predictions")
    else:
        keep = np.ones(prep.rows, dtype=bool)
        next_state = (predicted_next if config.mode == "asa"
                      else np.where(stitched[:, None], true_next, predicted_next))
    rows = np.flatnonzero(keep)
    dim = layout.dim
    columns = {
        S.USER_ID: pa.array(prep.table[S.USER_ID].to_numpy()[rows], pa.int64()),
        S.AUTHOR_ID: pa.array(prep.table[S.AUTHOR_ID].to_numpy()[rows], pa.int64()),
        S.STATE: S.vectors_to_arrow(prep.states[rows]),
        S.ACTION: pa.array(prep.actions[rows], pa.int16()),
        **{S.reward_column(label): pa.array(prep.rewards[rows, k], pa.float32())
           for k, label in enumerate(S.LABELS)},
        S.NEXT_STATE: S.vectors_to_arrow(next_state[rows]),
        S.STITCHED: pa.array(stitched[rows]),
        S.TRUE_NEXT_STATE: S.vectors_to_arrow(np.where(stitched[rows, None], true_next[rows],
                                                        np.nan)),
        S.GAP: pa.array(gap_bucket(prep.gap[rows], config.max_gap_bucket), pa.int32()),
        S.USER_GROUP: pa.array(prep.table[S.USER_GROUP].to_numpy()[rows], pa.int16()),
        S.RANK_SCORE: prep.table[S.RANK_SCORE].take(rows).combine_chunks().cast(pa.float32()),
    }
    schema = S.rl_sample_schema(dim).with_metadata({
        META_STATE_NAMES: json.dumps(list(layout.names)),
        META_MODE: config.mode,
        META_ABSENT_REWARDS: json.dumps(list(absent_rewards)),
    })
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)
