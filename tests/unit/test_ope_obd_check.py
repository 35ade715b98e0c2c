"""The OBD check (rliv_ray.ope.obd_check): BTS's action distribution against hand values and
obp's own loop, the reward model, and the estimators on the real Open Bandit Dataset sample
(tests with ``obd_root`` skip without it, fail under CI)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rliv_ray.data.obd import ObdLog, load_log, load_prior
from rliv_ray.ope.obd_check import (
    ESTIMATORS,
    OBDCheckConfig,
    bts_action_dist,
    comparison_table,
    cross_fitted_q,
    estimate_all,
    on_policy,
    propensity_agreement,
    smoothed_ctr,
    uniform_action_dist,
)

FAST = OBDCheckConfig(n_sim=20_000, n_bootstrap=200)


def _obp_loop(alpha, beta, len_list, n_sim, seed):
    """obp 0.4.1's BernoulliTS.compute_batch_action_dist, as written there (Apache 2.0):
    select_action draws random_.beta(alpha, beta) and takes argsort()[::-1][:len_list]."""
    random_ = np.random.RandomState(seed)
    action_count = np.zeros((len(alpha), len_list))
    for _ in range(n_sim):
        selected = random_.beta(a=alpha, b=beta).argsort()[::-1][:len_list]
        for pos in range(len_list):
            action_count[selected[pos], pos] += 1
    return action_count / n_sim


def test_bts_dist_is_obps_loop_whatever_the_chunk():
    rng = np.random.default_rng(0)
    alpha, beta = rng.uniform(0.5, 50, 12), rng.uniform(0.5, 500, 12)
    reference = _obp_loop(alpha, beta, 3, 300, seed=12345)
    for chunk in (1, 7, 300, 1000):
        dist = bts_action_dist(alpha, beta, n_sim=300, seed=12345, chunk=chunk)
        np.testing.assert_array_equal(dist, reference)


def test_bts_dist_by_hand():
    # Beta(1e6, 1) ~ 1, Beta(1, 1) uniform, Beta(1, 1e6) ~ 0: positions 0, 1, 2 are items 1, 2, 0.
    dist = bts_action_dist([1, 1e6, 1], [1e6, 1, 1], n_sim=1000, seed=0)
    np.testing.assert_array_equal(dist, [[0, 0, 1], [1, 0, 0], [0, 1, 0]])
    # X ~ Beta(2, 1) (density 2x) beats U ~ Beta(1, 1) with P = int_0^1 2x * x dx = 2/3.
    n_sim = 40_000
    dist = bts_action_dist([2, 1], [1, 1], len_list=2, n_sim=n_sim, seed=0)
    tolerance = 4 * np.sqrt(2 / 9 / n_sim)
    np.testing.assert_allclose(dist, [[2 / 3, 1 / 3], [1 / 3, 2 / 3]], atol=tolerance)


def test_bts_dist_columns_are_distributions(obd_root):
    dist = bts_action_dist(*load_prior("all", obd_root), n_sim=2000, seed=1)
    assert dist.shape == (80, 3)
    np.testing.assert_allclose(dist.sum(axis=0), 1.0)
    assert np.all(dist.sum(axis=1) <= 1 + 1e-12)  # an item fills at most one position


def _tiny_log(click):
    item = np.array([0, 0, 1, 1, 0, 1])
    position = np.array([0, 0, 0, 1, 1, 1])
    stamps = np.datetime64("2019-11-24T00:00") + np.arange(6) * np.timedelta64(20, "m")
    return ObdLog("random", "all", 2, item, position, np.asarray(click, dtype=float),
                  np.full(6, 0.5), stamps)


def test_smoothed_ctr_by_hand():
    log = _tiny_log([1, 0, 0, 1, 0, 1])
    q = smoothed_ctr(log.item, log.position, log.click, 2, prior_rows=2.0)
    # position 0: ctr 1/3, cells (item 0: 1 of 2 rows, item 1: 0 of 1); position 1: ctr 2/3,
    # (item 0: 0 of 1, item 1: 2 of 2); position 2: no rows, ctr 0.
    expected = [[(1 + 2 / 3) / 4, (0 + 4 / 3) / 3, 0.0],
                [(0 + 2 / 3) / 3, (2 + 4 / 3) / 4, 0.0]]
    np.testing.assert_allclose(q, expected)


def test_cross_fitting_keeps_a_rows_click_out_of_its_own_q():
    log = _tiny_log([1, 0, 0, 1, 0, 1])
    flipped = _tiny_log([0, 0, 0, 1, 0, 1])
    q = cross_fitted_q(log, folds=3, prior_rows=2.0, seed=0)
    q_flipped = cross_fitted_q(flipped, folds=3, prior_rows=2.0, seed=0)
    assert q.shape == (6, 2)
    np.testing.assert_array_equal(q[0], q_flipped[0])
    assert not np.array_equal(q, q_flipped)  # other folds' rows do see it


def test_propensity_agreement_windows():
    log = _tiny_log([0] * 6)
    dist = np.array([[0.2, 0.3, 0.5], [0.8, 0.7, 0.5]])
    log = dataclasses.replace(log, propensity=dist[log.item, log.position])
    windows = propensity_agreement(log, dist, edges_hours=(0.0, 1.0, np.inf))
    assert [(lo, hi, n) for lo, hi, n, _ in windows] == [(0.0, 1.0, 3), (1.0, np.inf, 3)]
    assert windows[0][3] == pytest.approx(1.0) and windows[1][3] == pytest.approx(1.0)


def test_config_names_the_bad_setting():
    with pytest.raises(ValueError, match="folds must be >= 2"):
        OBDCheckConfig(folds=1)
    with pytest.raises(ValueError, match="prior_rows must be > 0"):
        OBDCheckConfig(prior_rows=0)


@pytest.fixture(scope="module")
def logs(obd_root):
    return load_log("random", "all", obd_root), load_log("bts", "all", obd_root)


def test_random_policy_on_its_own_log(logs):
    """Target = the logging policy (uniform): every weight is 1, so IPS, SNIPS and NCIS are the
    log's mean by construction; DM and the DR family are not (cross-fitted q), and the check is
    that their intervals hold it."""
    random_log, _ = logs
    mean = random_log.click.mean()
    estimates = estimate_all(random_log, uniform_action_dist(80), FAST)
    assert [e.estimator for e in estimates] == list(ESTIMATORS)
    by_name = {e.estimator: e for e in estimates}
    for name in ("ips", "snips", "ncis"):
        assert by_name[name].value == pytest.approx(mean)
    for name in ("dr", "sndr", "switch_dr"):
        assert by_name[name].covers(mean), by_name[name]
    # DM's interval holds q fixed (it cannot cover q's error); its value is the cross-fitted
    # model's mean, within 5% of the log's.
    assert by_name["dm"].value == pytest.approx(mean, rel=0.05)


def test_bts_estimates_beside_the_bts_log(logs, obd_root):
    """The README's comparison at a smaller n_sim: every estimate gets a finite interval. The
    BTS log's mean lies inside the IPS and SNIPS intervals: a fact of this data (reported in
    the README), not of the construction."""
    random_log, bts_log = logs
    dist = bts_action_dist(*load_prior("all", obd_root), n_sim=FAST.n_sim, seed=FAST.sim_seed)
    estimates = estimate_all(random_log, dist, FAST)
    for est in estimates:
        assert np.isfinite([est.value, est.ci_low, est.ci_high]).all(), est
        assert est.ci_low < est.ci_high and 0 < est.effective_sample_size <= random_log.n
    truth = on_policy(bts_log, FAST)
    assert truth.value == pytest.approx(0.0042)
    assert truth.ci_low < truth.value < truth.ci_high
    by_name = {e.estimator: e for e in estimates}
    assert by_name["ips"].covers(truth.value) and by_name["snips"].covers(truth.value)
    table = comparison_table(estimates, truth)
    assert len(table.splitlines()) == 3 + len(ESTIMATORS)
    assert table.splitlines()[2].startswith("| on-policy mean (the answer) | 0.420% | [")
    assert table.splitlines()[3].startswith(f"| IPS | {100 * by_name['ips'].value:.3f}% | [")


@pytest.mark.slow
def test_reproduces_obps_published_ips(logs, obd_root):
    """obp 0.4.1's README ("Example with Open Bandit Dataset"): IPW of BTS (n_sim 100,000,
    random_state 12345) on the random/all sample over the random log's mean is 1.198126..."""
    random_log, _ = logs
    config = OBDCheckConfig(n_bootstrap=0)
    dist = bts_action_dist(*load_prior("all", obd_root), n_sim=config.n_sim,
                           seed=config.sim_seed)
    ips_value = estimate_all(random_log, dist, config)[0].value
    assert ips_value / random_log.click.mean() == pytest.approx(1.198126, abs=1e-6)
