"""The states the UA world shows a learned policy are the states the log would record."""

import dataclasses

import numpy as np

from rliv_ray.data.ua_config import UAWorldConfig
from rliv_ray.data.ua_generate import bucket_tables
from rliv_ray.data.ua_policies import Candidates
from rliv_ray.data.ua_population import Population
from rliv_ray.data.ua_world import simulate_users
from rliv_ray.mdp.samples import SampleConfig, prepare


class RecordingRankingModel:
    """Action 0 everywhere (the ranker decides); records the exposed candidate's state."""

    observes_state = True

    def __init__(self):
        self.exposed: list[np.ndarray] = []

    def act(self, cand: Candidates, rng):
        top = np.argmax(cand.rank_score, axis=1)  # weight 1 for all: the top rank score wins
        self.exposed.append(cand.state[np.arange(len(top)), top])
        shape = cand.rank_score.shape
        return np.zeros(shape, np.int16), np.ones(shape, np.float32)


def test_observed_states_equal_the_logged_states():
    # No pool refresh: an author leaving and re-entering a pool is the one documented mismatch.
    config = UAWorldConfig(n_users=60, n_authors=300, days=7, seed=5, pool_refresh_prob=0.0)
    policy = RecordingRankingModel()
    result = simulate_users(config, Population.build(config), np.arange(config.n_users), policy,
                            np.random.default_rng(0))
    log, _ = bucket_tables(config, result, None)
    cols = result.columns
    order = np.lexsort((cols["user_request_idx"], cols["user_id"]))
    seen = np.concatenate(policy.exposed)[order]
    logged = prepare(log, SampleConfig()).states
    assert logged.shape == seen.shape and len(seen) > 1000
    assert (logged[:, -1] == 0).any() and (logged[:, -2] > np.log1p(1)).any()  # repeats, gaps
    np.testing.assert_array_equal(seen, logged)


def test_reference_policies_are_not_shown_states():
    config = dataclasses.replace(UAWorldConfig(n_users=5, n_authors=200, days=1, seed=1))
    seen = []

    class Peek:
        def act(self, cand, rng):
            seen.append(cand.state)
            shape = cand.rank_score.shape
            return np.zeros(shape, np.int16), np.ones(shape, np.float32)

    simulate_users(config, Population.build(config), np.arange(5), Peek(),
                   np.random.default_rng(0))
    assert seen and all(s is None for s in seen)
