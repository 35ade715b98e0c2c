"""The columnar offline reader on RL sample shards (no Ray runtime)."""

import numpy as np
import pyarrow as pa
import pytest

from rliv_ray import schema as S
from rliv_ray.algorithms.rliv_ua.config import RLIVUAConfig
from rliv_ray.mdp import samples as SM
from rliv_ray.mdp.state import StateLayout
from rliv_ray.offline.prelearner import ColumnarPreLearner, ShardError, shard_batch_to_arrays
from tests.logtables import make_log_table


@pytest.fixture(scope="module")
def shard():
    table = make_log_table(n_users=3, requests_per_user=10, items_per_request=1)
    config = SM.SampleConfig()
    prep = SM.prepare(table, config)
    return SM.sample_table(prep, prep.states + 1.0, StateLayout.from_schema(table.schema),
                           config)


def test_batch_becomes_flat_learner_arrays(shard):
    out = shard_batch_to_arrays(shard, n_actions=5)
    key = "default_policy/"
    states = S.arrow_to_matrix(shard[S.STATE])
    np.testing.assert_array_equal(out[key + "obs"], states)
    np.testing.assert_array_equal(out[key + "new_obs"], states + 1.0)
    assert out[key + "actions"].dtype == np.int64
    np.testing.assert_array_equal(out[key + "rewards"], out[key + S.reward_column(S.CLICK)])
    assert not out[key + "terminateds"].any() and not out[key + "truncateds"].any()
    assert all(len(v) == shard.num_rows for v in out.values())
    assert ColumnarPreLearner(config=RLIVUAConfig())(shard).keys() == out.keys()


def _replace(table: pa.Table, column: str, values) -> pa.Table:
    return table.set_column(table.schema.get_field_index(column), column, values)


def test_bad_shards_name_the_column(shard):
    with pytest.raises(ShardError, match="lacks column 'next_state'"):
        shard_batch_to_arrays(shard.drop_columns([S.NEXT_STATE]))
    states = S.arrow_to_matrix(shard[S.STATE])
    states[4, 2] = np.nan
    with pytest.raises(ShardError, match="column 'state', row 4: NaN"):
        shard_batch_to_arrays(_replace(shard, S.STATE, S.vectors_to_arrow(states)))
    actions = shard[S.ACTION].to_numpy().copy()
    actions[7] = 9
    with pytest.raises(ShardError, match="column 'action', row 7: action 9 is outside"):
        shard_batch_to_arrays(_replace(shard, S.ACTION, pa.array(actions, pa.int16())),
                              n_actions=5)
