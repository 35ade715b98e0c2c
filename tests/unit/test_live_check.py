"""The live world's lever check (rliv check-live-world), the laws it prices (leave, hidden
potential) and the common random numbers its paired margins rely on."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rliv_ray import schema as S
from rliv_ray.cli import main
from rliv_ray.data.live_check import (
    IMMEDIATE,
    MYOPIC,
    ORACLE,
    LiveCheckSettings,
    check_live_world,
    format_check,
)
from rliv_ray.data.live_config import LiveWorldConfig
from rliv_ray.data.live_metrics import policy_run, session_discounted_returns
from rliv_ray.data.live_policies import AlwaysPolicy, LookaheadOracle, OraclePolicy
from rliv_ray.data.live_population import LivePopulation
from rliv_ray.data.live_world import (
    TRUE_CLICK_PROB,
    TRUE_LEAVE_PROB,
    TRUE_POTENTIAL,
    leave_probability,
    simulate_live_users,
)
from rliv_ray.grouping import group_starts

TINY = LiveWorldConfig(n_users=100, days=1, seed=3)
NO_LEVER = dataclasses.replace(TINY, leave_rate=0.0, potential_gain=0.0)
TINY_CHECK = LiveCheckSettings(users=120, seeds=2, tune_seeds=1, margins_s=(0.0, 10.0),
                               future_values_s=(50.0, 100.0))


def test_session_discount_applies_gamma_only_into_a_new_session():
    reward = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    end = np.array([False, True, False, True, False])  # user 0: 3 rows, user 1: 2 rows
    starts = group_starts(np.array([0, 0, 0, 1, 1]))
    np.testing.assert_allclose(session_discounted_returns(reward, end, starts, 0.5),
                               [1 + 2 + 0.5 * 4, 8 + 0.5 * 16])


def test_leave_probability_rises_with_unwanted_inserts_and_falls_for_fans():
    c = dataclasses.replace(TINY, leave_rate=0.1, k_leave_repeat=1.0, k_leave_affinity=0.5)
    p = leave_probability(c, np.array([0.0, 0.0, 1.0]), np.array([0, 2, 0]))
    assert p[0] == pytest.approx(0.1)
    assert p[1] > p[0] > p[2]
    assert leave_probability(NO_LEVER, np.zeros(2), np.ones(2)).tolist() == [0.0, 0.0]


def test_users_leave_for_good_only_after_unwanted_inserts():
    c = dataclasses.replace(TINY, leave_rate=0.5)
    _, cols = policy_run(c, AlwaysPolicy(1.0), users=100, seed=0)
    _, never = policy_run(c, AlwaysPolicy(0.0), users=100, seed=0)
    user = cols[S.USER_ID]
    last = np.append(user[1:] != user[:-1], True)
    unwanted = (cols[S.ACTION] == 1) & (cols[S.LIVE_CLICK] == 0)
    assert (cols[S.SESSION_END][last]).all()
    assert unwanted[last].mean() > 0.5  # most users' last request is the insert they left on
    assert len(user) < 0.7 * len(never[S.USER_ID])


def test_lookahead_oracle_prices_the_risk_of_leaving():
    obs = {S.TRUE_EXPECTED_LIVE_WATCH_S: np.array([30.0, 30.0, 30.0]),
           S.TRUE_EXPECTED_VIDEO_WATCH_PER_VIDEO_S: np.array([10.0, 10.0, 10.0]),
           TRUE_CLICK_PROB: np.array([0.5, 0.5, 1.0]),
           TRUE_LEAVE_PROB: np.array([0.0, 0.5, 0.5]),
           TRUE_POTENTIAL: np.zeros(3)}
    oracle = LookaheadOracle(beta=0.5, gamma=0.9, future_value_s=100.0)
    # g = 25; risk = 0.9 * 0.5 * 0.5 * 100 = 22.5 < 25 at V = 100, > 25 at V = 200
    np.testing.assert_array_equal(oracle.inject_probability(obs), [1.0, 1.0, 1.0])
    cautious = dataclasses.replace(oracle, future_value_s=200.0)
    np.testing.assert_array_equal(cautious.inject_probability(obs), [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(OraclePolicy(0.5).inject_probability(obs), [1.0, 1.0, 1.0])


def test_check_settings_name_the_bad_field():
    with pytest.raises(ValueError, match="discount must be one of"):
        LiveCheckSettings(discount="episode")
    with pytest.raises(ValueError, match="seeds must be >= 2"):
        LiveCheckSettings(seeds=1)


def test_a_world_without_a_lever_fails_the_check():
    result = check_live_world(NO_LEVER, TINY_CHECK)
    rows = {r["policy"]: r for r in result["rows"]}
    assert not result["passed"]
    assert rows[IMMEDIATE]["oracle_margin"] == 0.0  # no leave risk: the oracle is immediate
    assert rows[ORACLE]["video_cost_min"] > 0  # inserts take video slots
    assert set(rows) >= {ORACLE, IMMEDIATE, MYOPIC}
    assert "| long-horizon oracle |" in format_check(result)


def test_cli_check_fails_with_one_line(tmp_path, capsys):
    code = main(["check-live-world", "--users", "120", "--seeds", "2", "--tune-seeds", "1",
                 "--days", "1", "--set", "leave_rate=0", "--set", "potential_gain=0", "--out",
                 str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and "no long-term lever under the trained objective" in err[0]
    assert (tmp_path / "check.json").exists() and (tmp_path / "check.md").exists()


class _OnlyUser:
    """Injects for one user only (a policy that differs from never-inject on one user)."""

    def __init__(self, user: int):
        self.user = user

    def inject_probability(self, obs):
        return (obs[S.USER_ID] == self.user).astype(np.float64)


def test_common_random_numbers_keep_other_users_paths():
    """A user's draws hang on (user, request index), not on a shared stream: a policy that
    changes user 0's path leaves every other user's requests exactly as they were."""
    _, never = policy_run(TINY, AlwaysPolicy(0.0), users=60, seed=1)
    _, again = policy_run(TINY, AlwaysPolicy(0.0), users=60, seed=1)
    _, one = policy_run(TINY, _OnlyUser(0), users=60, seed=1)
    assert one[S.ACTION][one[S.USER_ID] == 0].sum() > 0
    for name in never:
        np.testing.assert_array_equal(never[name], again[name])
        np.testing.assert_array_equal(never[name][never[S.USER_ID] > 0],
                                      one[name][one[S.USER_ID] > 0])


def test_counter_draws_keep_the_worlds_rates():
    """Rates of the world without potential under the logging policy, 1,500 users x 2 days:
    the shared-stream draws before common random numbers gave 39.9 requests per user, 18.1%
    injected, 28.2% of inserts clicked and a 36.4 s median live watch (3 seeds)."""
    from rliv_ray.data.live_policies import logging_policy

    c = dataclasses.replace(LiveWorldConfig(), potential_gain=0.0)
    _, cols = policy_run(c, logging_policy(c), users=1500, seed=0)
    inject, click = cols[S.ACTION] == 1, cols[S.LIVE_CLICK] == 1
    assert len(inject) / 1500 == pytest.approx(39.9, rel=0.05)
    assert inject.mean() == pytest.approx(0.181, abs=0.015)
    assert click[inject].mean() == pytest.approx(0.282, abs=0.03)
    assert np.median(cols[S.LIVE_WATCH_S][click]) == pytest.approx(36.4, rel=0.15)


def test_potential_off_leaves_the_population_and_affinity_alone():
    on, off = LivePopulation.build(TINY), LivePopulation.build(NO_LEVER)
    assert (on.potential > 0).any() and not off.potential.any()
    for field in dataclasses.fields(LivePopulation):
        if field.name != "potential":
            np.testing.assert_array_equal(getattr(on, field.name), getattr(off, field.name))
    no_shares = dataclasses.replace(TINY, leave_rate=0.0, potential_shares=(0.0, 0.0, 0.0))
    _, a = policy_run(NO_LEVER, AlwaysPolicy(1.0), users=100, seed=0)
    _, b = policy_run(no_shares, AlwaysPolicy(1.0), users=100, seed=0)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


class _Recorder:
    """Injects always and records the latent affinity and potential the world hands it."""

    def __init__(self):
        self.seen: dict[tuple[int, int], tuple[float, float]] = {}

    def inject_probability(self, obs):
        keys = zip(obs[S.USER_ID].tolist(), obs[S.USER_REQUEST_IDX].tolist(), strict=True)
        values = zip(obs[S.TRUE_LIVE_AFFINITY].tolist(), obs[TRUE_POTENTIAL].tolist(),
                     strict=True)
        self.seen.update(zip(keys, values, strict=True))
        return np.ones(len(obs[S.USER_ID]))


@pytest.mark.parametrize("gain", [0.0, 2.5])
def test_a_first_live_click_unlocks_the_hidden_potential(gain):
    c = dataclasses.replace(TINY, potential_shares=(0.5, 0.5, 0.5), potential_gain=gain)
    recorder = _Recorder()
    cols = simulate_live_users(c, LivePopulation.build(c), np.arange(100), recorder,
                               np.random.default_rng(0), light=True).columns
    user, idx = cols[S.USER_ID].tolist(), cols[S.USER_REQUEST_IDX].tolist()
    rows = [i for i, key in enumerate(zip(user, idx, strict=True))
            if (key[0], key[1] + 1) in recorder.seen]
    before = np.array([recorder.seen[(user[i], idx[i])] for i in rows])
    after = np.array([recorder.seen[(user[i], idx[i] + 1)] for i in rows])
    click = cols[S.LIVE_CLICK][rows] == 1
    first = click & (before[:, 1] > 0)  # a click while the potential is still locked
    jump = after[:, 0] - before[:, 0]
    assert (after[first, 1] == 0).all() and (after[~click, 1] == before[~click, 1]).all()
    if gain:
        assert first.sum() > 5
        assert np.all(jump[first] >= gain - 0.2)  # the sign: affinity rises (less drift decay)
        assert np.all(np.abs(jump[~first]) <= 0.5)
    else:
        assert not before[:, 1].any()


def test_lookahead_oracle_injects_at_a_loss_for_hidden_potential():
    obs = {S.TRUE_EXPECTED_LIVE_WATCH_S: np.array([2.0, 2.0]),
           S.TRUE_EXPECTED_VIDEO_WATCH_PER_VIDEO_S: np.array([10.0, 10.0]),
           TRUE_CLICK_PROB: np.array([0.2, 0.2]), TRUE_LEAVE_PROB: np.zeros(2),
           TRUE_POTENTIAL: np.array([0.0, 2.5])}
    # g = -3; the unlock term 0.9 * 0.2 * 2.5 * 10 = 4.5 > 3 for the second user only
    oracle = LookaheadOracle(beta=0.5, gamma=0.9, future_value_s=0.0, potential_value_s=10.0)
    np.testing.assert_array_equal(oracle.inject_probability(obs), [0.0, 1.0])
    np.testing.assert_array_equal(OraclePolicy(0.5).inject_probability(obs), [0.0, 0.0])
