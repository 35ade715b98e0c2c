"""Sample-shard inspection before training: layout from metadata, errors naming the column."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rliv_ray import schema as S
from rliv_ray.mdp.samples import META_STATE_NAMES
from rliv_ray.offline.prelearner import ShardError, shard_batch_to_arrays
from rliv_ray.offline.shards import inspect_shards
from tests.sampleshards import STATE_NAMES, sample_table, write_shards


def test_layout_comes_from_the_metadata(tmp_path):
    info = inspect_shards(write_shards(tmp_path, rows=200, files=2))
    assert len(info.files) == 2 and info.rows == 200
    assert info.state_dim == len(STATE_NAMES) and info.gap_index == 4
    assert info.labels == S.LABELS and info.mode == "asa"


def test_absent_rewards_drop_their_labels(tmp_path):
    info = inspect_shards(write_shards(tmp_path, rows=20, files=1, absent_rewards=("gift",)))
    assert info.labels == ("click", "effective_view", "follow")


def _write(path, table):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def test_missing_column_is_named(tmp_path):
    table = sample_table(10).drop_columns([S.NEXT_STATE])
    with pytest.raises(ShardError, match="lacks column 'next_state'"):
        inspect_shards(_write(tmp_path / "a.parquet", table))


def test_wrong_state_width_is_named(tmp_path):
    table = sample_table(10)
    wide = S.vectors_to_arrow(np.zeros((10, 7), np.float32))
    index = table.schema.get_field_index(S.NEXT_STATE)
    table = table.set_column(index, pa.field(S.NEXT_STATE, wide.type), wide)
    with pytest.raises(ShardError, match="column 'next_state' must be a fixed-size list of 6"):
        inspect_shards(_write(tmp_path / "a.parquet", table))


def test_files_with_different_states_are_refused(tmp_path):
    _write(tmp_path / "samples" / "part-0.parquet", sample_table(10))
    other = sample_table(10)
    names = list(STATE_NAMES)
    names[1] = "user/other"
    other = other.replace_schema_metadata({**other.schema.metadata,
                                           META_STATE_NAMES: json.dumps(names)})
    _write(tmp_path / "samples" / "part-1.parquet", other)
    with pytest.raises(ShardError, match="part-1.parquet: column 'state' has features"):
        inspect_shards(tmp_path)


def test_foreign_and_missing_inputs(tmp_path):
    with pytest.raises(ShardError, match="no such sample directory"):
        inspect_shards(tmp_path / "nope")
    with pytest.raises(ShardError, match="no Parquet sample shards"):
        inspect_shards(tmp_path)
    (tmp_path / "x.parquet").write_text("not parquet")
    with pytest.raises(ShardError, match="not a readable Parquet file"):
        inspect_shards(tmp_path)
    plain = pa.table({"a": [1]})
    with pytest.raises(ShardError, match="no feature names"):
        inspect_shards(_write(tmp_path / "y" / "p.parquet", plain))


def test_wo_asa_keeps_stitched_rows_with_their_true_next_state():
    table = sample_table(64, seed=3)
    true_next = S.arrow_to_matrix(table[S.TRUE_NEXT_STATE]) + 1.0
    index = table.schema.get_field_index(S.TRUE_NEXT_STATE)
    table = table.set_column(index, table.schema.field(index), S.vectors_to_arrow(true_next))
    stitched = table[S.STITCHED].to_numpy(zero_copy_only=False)
    out = shard_batch_to_arrays(table, next_state="stitched")
    assert len(out["default_policy/obs"]) == stitched.sum() < 64
    np.testing.assert_array_equal(out["default_policy/new_obs"], true_next[stitched])
    asa = shard_batch_to_arrays(table)
    assert len(asa["default_policy/obs"]) == 64
