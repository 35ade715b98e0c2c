"""States, gaps and sample shards of one log file (no Ray)."""

import json

import numpy as np
import pytest

from rliv_ray import schema as S
from rliv_ray.mdp import samples as SM
from rliv_ray.mdp.state import StateLayout, build_states, gap_bucket, gap_requests
from rliv_ray.mdp.stitching import StitchConfig
from tests.logtables import make_log_table


@pytest.fixture(scope="module")
def table():
    return make_log_table(n_users=4, requests_per_user=30, seed=2, items_per_request=1)


def test_gap_counts_the_users_own_requests():
    request = np.array([0, 1, 2, 5, 5, 9])
    previous = np.array([-1, 0, -1, 1, 2, 3])
    assert gap_requests(request, previous).tolist() == [0, 1, 0, 4, 3, 4]
    assert gap_bucket(np.array([0, 1, 2, 3, 4, 1000, 10**9]), 20).tolist() == [
        0, 1, 2, 2, 3, 10, 20]


def test_state_layout_and_values(table):
    layout = StateLayout.from_schema(table.schema)
    gap = np.arange(table.num_rows)
    states = build_states(table, gap)
    assert states.shape == (table.num_rows, layout.dim) and states.dtype == np.float32
    assert layout.names[layout.pair][0] == "pair/log1p_ua_exposure_count"
    assert np.allclose(states[:, layout.pair][:, 0], np.log1p(table[S.UA_EXPOSURE_COUNT]))
    assert np.allclose(states[:, layout.gap][:, 0], np.log1p(gap))
    first = (table[S.UA_EXPOSURE_COUNT].to_numpy() == 0).astype(np.float32)
    assert np.array_equal(states[:, layout.gap][:, 1], first)


def test_prepare_links_each_interaction_to_its_pair_neighbours(table):
    prep = SM.prepare(table, SM.SampleConfig(stitch=StitchConfig(sequence_length=10**6)))
    user = table[S.USER_ID].to_numpy()
    author = table[S.AUTHOR_ID].to_numpy()
    has_next = np.flatnonzero(prep.next_row >= 0)
    nxt = prep.next_row[has_next]
    assert (user[nxt] == user[has_next]).all() and (author[nxt] == author[has_next]).all()
    assert (nxt > has_next).all()
    # With an unbounded exposure sequence every next interaction stitches back.
    assert np.array_equal(prep.stitched_next >= 0, prep.next_row >= 0)
    tuples = SM.asa_tuples(prep)
    assert tuples.num_rows == int((prep.stitched_prev >= 0).sum())


def test_sort_by_user_restores_order(table):
    shuffled = table.take(np.random.default_rng(0).permutation(table.num_rows))
    assert SM.sort_by_user(shuffled).equals(table)


@pytest.mark.parametrize("mode", ["asa", "no_asa", "hybrid"])
def test_sample_table_modes(table, mode):
    config = SM.SampleConfig(stitch=StitchConfig(sequence_length=5), mode=mode)
    prep = SM.prepare(table, config)
    layout = StateLayout.from_schema(table.schema)
    predicted = np.full_like(prep.states, -7.0)
    shard = SM.sample_table(prep, predicted, layout, config, ("gift",))
    assert shard.schema.equals(S.rl_sample_schema(layout.dim), check_metadata=False)
    assert json.loads(shard.schema.metadata[SM.META_ABSENT_REWARDS]) == ["gift"]
    stitched = shard[S.STITCHED].to_numpy(zero_copy_only=False)
    nxt = np.stack(shard[S.NEXT_STATE].to_numpy(zero_copy_only=False))
    true = np.stack(shard[S.TRUE_NEXT_STATE].to_numpy(zero_copy_only=False))
    assert np.isnan(true[~stitched]).all() and np.isfinite(true[stitched]).all()
    rows = np.flatnonzero(prep.stitched_next >= 0) if mode == "no_asa" else slice(None)
    logged = prep.table[S.RANK_SCORE].to_numpy()[rows]
    assert np.array_equal(shard[S.RANK_SCORE].to_numpy(), logged) and np.ptp(logged) > 0
    if mode == "no_asa":
        assert stitched.all() and shard.num_rows == int((prep.stitched_next >= 0).sum())
    else:
        assert shard.num_rows == table.num_rows and 0 < stitched.sum() < len(stitched)
        expect_asa = ~stitched if mode == "hybrid" else np.ones(len(stitched), bool)
        assert (nxt[expect_asa] == -7.0).all()
        if mode == "hybrid":
            assert np.array_equal(nxt[stitched], true[stitched])


def test_asa_mode_needs_predictions(table):
    config = SM.SampleConfig()
    prep = SM.prepare(table, config)
    with pytest.raises(ValueError, match="needs ASA predictions"):
        SM.sample_table(prep, None, StateLayout.from_schema(table.schema), config)
    with pytest.raises(ValueError, match="mode must be"):
        SM.SampleConfig(mode="true")
