"""The columnar pre-learner for SL-MGAC samples (``rliv build-live-samples``): Arrow batches
straight to the learner's arrays, as :mod:`rliv_ray.offline.prelearner` does for RLIV-UA.

Every column the objective reads, for the request and for the user's next request
(``next_<column>``): feature vectors (B, d) float32, history id lists (B, 50) int64, ids,
groups, actions and counts int64, watch times and the session state float32, ``done`` and
``next_new_session`` bool.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.offline.offline_prelearner import OfflinePreLearner

from rliv_ray import schema as S
from rliv_ray.algorithms.sl_mgac.objective import OUTCOME_COLUMNS, SESSION_COLUMNS, STATE_COLUMNS
from rliv_ray.offline.prelearner import ShardError

FLOAT_VECTORS = (S.USER_FEATURES, S.LIVE_FEATURES)
ID_VECTORS = (S.LIVE_HISTORY, S.VIDEO_HISTORY)
FLOATS = (S.LIVE_WATCH_S, S.VIDEO_WATCH_S, S.BEHAVIOR_PROB, *SESSION_COLUMNS)
BOOLS = (S.DONE, S.NEXT_NEW_SESSION)


def required_live_columns() -> tuple[str, ...]:
    paired = (S.ACTION, *STATE_COLUMNS, *SESSION_COLUMNS, *OUTCOME_COLUMNS)
    return (S.BEHAVIOR_PROB, *BOOLS, *paired, *(S.next_column(c) for c in paired))


def live_batch_to_arrays(batch: pa.Table, *,
                         module_id: str = DEFAULT_MODULE_ID) -> dict[str, np.ndarray]:
    """One Arrow batch of SL-MGAC samples as the learner's flat dict of arrays."""
    missing = [c for c in required_live_columns() if c not in batch.column_names]
    if missing:
        raise ShardError(f"SL-MGAC sample batch lacks column '{missing[0]}' (is it a "
                         "`rliv build-live-samples` train shard?)")
    out = {}
    for name in required_live_columns():
        base = name.removeprefix(S.NEXT_PREFIX)
        if base in FLOAT_VECTORS:
            out[name] = _finite(name, S.arrow_to_matrix(batch[name]))
        elif base in ID_VECTORS:
            out[name] = S.arrow_to_ids(batch[name]).astype(np.int64)
        elif base in FLOATS:
            out[name] = _finite(name, batch[name].to_numpy().astype(np.float32))
        elif name in BOOLS:
            out[name] = batch[name].to_numpy(zero_copy_only=False).astype(bool)
        else:
            out[name] = batch[name].to_numpy().astype(np.int64)
    actions = out[S.ACTION]
    if len(actions) and not np.isin(actions, (0, 1)).all():
        bad = int(np.flatnonzero(~np.isin(actions, (0, 1)))[0])
        raise ShardError(f"column '{S.ACTION}', row {bad}: action {actions[bad]} is not 0 or 1")
    return {f"{module_id}/{key}": value for key, value in out.items()}


def _finite(column: str, values: np.ndarray) -> np.ndarray:
    bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    if bad.any():
        raise ShardError(f"column '{column}', row {int(np.flatnonzero(bad)[0])}: NaN or "
                         "infinite value")
    return values


class LivePreLearner(OfflinePreLearner):
    """RLlib pre-learner mapping Arrow batches with :func:`live_batch_to_arrays` (it skips the
    parent ``__init__``: no module copy, no connectors)."""

    def __init__(self, *, config=None, spaces=None, module_state=None, **kwargs):
        pass

    def __call__(self, batch) -> dict[str, np.ndarray]:
        table = batch if isinstance(batch, pa.Table) else pa.table(batch)
        return live_batch_to_arrays(table)
