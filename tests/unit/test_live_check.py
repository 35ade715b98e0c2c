"""The live world's lever check (rliv check-live-world) and the leave law it prices."""

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
from rliv_ray.data.live_world import TRUE_CLICK_PROB, TRUE_LEAVE_PROB, leave_probability
from rliv_ray.grouping import group_starts

TINY = LiveWorldConfig(n_users=100, days=1, seed=3)
NO_LEVER = dataclasses.replace(TINY, leave_rate=0.0)
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
           TRUE_LEAVE_PROB: np.array([0.0, 0.5, 0.5])}
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
                 "--days", "1", "--set", "leave_rate=0", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and "no long-term lever under the trained objective" in err[0]
    assert (tmp_path / "check.json").exists() and (tmp_path / "check.md").exists()
