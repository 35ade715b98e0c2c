"""A columnar pre-learner: RL sample shards straight to arrays, no episode objects.

RLlib's default ``OfflinePreLearner`` turns every row into a one-step episode in Python (about
5,000 rows/s per actor on these machines, ``../shared/RLLIB_NOTES.md``). Here a whole Arrow
batch becomes a flat dict of NumPy arrays keyed ``"<module_id>/<column>"`` that the learner
turns into tensors directly:

    obs (B, d) = state            new_obs (B, d) = next_state       actions (B,) int64
    rewards (B,) = the first label's reward, reward_<label> (B,) for each of the four labels
    terminateds, truncateds (B,) = False (the pair MDP is lifelong, EQUATIONS 2.1(k))
    user_id, author_id (B,) int64 for the hashed embeddings; user_group (B,) int64

:func:`shard_batch_to_arrays` is the pure function (tested without Ray); the class is the thin
shell RLlib's ``OfflineData`` maps over the dataset with ``batch_format="pyarrow"``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.offline.offline_prelearner import OfflinePreLearner

from rliv_ray import schema as S

REWARD_COLUMNS = tuple(S.reward_column(label) for label in S.LABELS)
_REQUIRED = (S.STATE, S.NEXT_STATE, S.ACTION, S.USER_ID, S.AUTHOR_ID, S.USER_GROUP,
             *REWARD_COLUMNS)


class ShardError(ValueError):
    """A sample shard that cannot be trained on; the message names the column."""


def required_columns(next_state: str = "asa") -> tuple[str, ...]:
    """The columns training reads; w/o ASA also the stitched flag and the true next state."""
    return _REQUIRED + ((S.STITCHED, S.TRUE_NEXT_STATE) if next_state == "stitched" else ())


def shard_batch_to_arrays(batch: pa.Table, *, n_actions: int | None = None,
                          next_state: str = "asa", reward: str = "per_tower",
                          module_id: str = DEFAULT_MODULE_ID) -> dict[str, np.ndarray]:
    """One Arrow batch of an RL sample shard as the learner's flat dict of arrays.

    ``next_state="stitched"`` is the w/o-ASA buffer (EQUATIONS 2.1(j)): only the rows whose
    next state stitching found, with that true next state. ``reward="summed"`` gives every
    reward column the sum of the four (the DQN baseline's one reward).
    """
    missing = [c for c in required_columns(next_state) if c not in batch.column_names]
    if missing:
        raise ShardError(f"sample shard lacks column '{missing[0]}' (is it an rliv sample "
                         f"shard? columns: {batch.column_names})")
    if next_state == "stitched":
        batch = batch.filter(batch[S.STITCHED])
    obs = _finite(batch, S.STATE)
    new_obs = _finite(batch, S.TRUE_NEXT_STATE if next_state == "stitched" else S.NEXT_STATE)
    actions = batch[S.ACTION].to_numpy().astype(np.int64)
    if n_actions is not None and len(actions) and (actions.min() < 0 or actions.max() >= n_actions):
        bad = int(np.flatnonzero((actions < 0) | (actions >= n_actions))[0])
        raise ShardError(f"column '{S.ACTION}', row {bad}: action {actions[bad]} is outside "
                         f"the grid of {n_actions} actions")
    rewards = {c: batch[c].to_numpy().astype(np.float32) for c in REWARD_COLUMNS}
    if reward == "summed":
        total = sum(rewards.values())
        rewards = dict.fromkeys(REWARD_COLUMNS, total)
    done = np.zeros(len(actions), dtype=bool)
    out = {
        Columns.OBS: obs, Columns.NEXT_OBS: new_obs, Columns.ACTIONS: actions,
        Columns.REWARDS: rewards[REWARD_COLUMNS[0]], Columns.TERMINATEDS: done,
        Columns.TRUNCATEDS: done, **rewards,
        S.USER_ID: batch[S.USER_ID].to_numpy().astype(np.int64),
        S.AUTHOR_ID: batch[S.AUTHOR_ID].to_numpy().astype(np.int64),
        S.USER_GROUP: batch[S.USER_GROUP].to_numpy().astype(np.int64),
    }
    return {f"{module_id}/{key}": value for key, value in out.items()}


def _finite(batch: pa.Table, column: str) -> np.ndarray:
    matrix = S.arrow_to_matrix(batch[column])
    bad = ~np.isfinite(matrix).all(axis=1)
    if bad.any():
        raise ShardError(f"column '{column}', row {int(np.flatnonzero(bad)[0])}: NaN or "
                         "infinite value")
    return matrix


class ColumnarPreLearner(OfflinePreLearner):
    """RLlib pre-learner that maps Arrow batches with :func:`shard_batch_to_arrays`.

    It skips the parent ``__init__`` on purpose: no module copy and no learner connector
    pipeline are needed to slice columns (RLLIB_NOTES, "A columnar pre-learner"). It reads
    ``n_actions`` and ``next_state`` from the config and fails if the config lacks them, so an
    ablation (w/o ASA: ``next_state="stitched"``) cannot silently train on the default buffer.
    """

    def __init__(self, *, config=None, spaces=None, module_state=None, **kwargs):
        if not all(hasattr(config, name) for name in ("next_state", "n_actions", "reward")):
            raise TypeError(f"ColumnarPreLearner needs a config with next_state, n_actions and "
                            f"reward (an RLIVUAConfig), got {type(config).__name__}")
        self.n_actions = config.n_actions
        self.next_state = config.next_state
        self.reward = config.reward

    def __call__(self, batch) -> dict[str, np.ndarray]:
        table = batch if isinstance(batch, pa.Table) else pa.table(batch)
        return shard_batch_to_arrays(table, n_actions=self.n_actions,
                                     next_state=self.next_state, reward=self.reward)
