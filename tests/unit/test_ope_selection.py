"""RLIV-UA's exposure selection and the per-row estimators (rliv_ray.ope.estimators docstring).

Each request has two candidates; each draws a boost with mu(boost) = 0.3, independently; the
boosted one wins the exposure (then the better one, then chance) and only the exposed row is
logged, with ``behavior_prob`` the probability of *its own* draw, as RLIV-UA's world logs it.
Among exposed rows the boost is more common than 0.3, so that propensity is not the
probability of the logged action given the logged row. The true value of a boost policy is
enumerated exactly (tests/ope_worlds.py).
"""

import numpy as np
import pytest

from rliv_ray.ope.estimators import (
    direct_method,
    doubly_robust,
    ips,
    self_normalised_dr,
    snips,
    switch_dr,
)
from tests.ope_worlds import BOOST_PROB, EXPOSED_REWARD, exposure_log, exposure_truth

LOG = exposure_log(10_000, seed=3)
N = len(LOG["action"])
Q_TRUE = EXPOSED_REWARD[LOG["quality"]]  # (n, 2): the true mean reward of the exposed row


def _row_level(p_boost: float) -> dict:
    """Every per-row estimator with the exposed row's own propensity and the true row model."""
    target = np.tile([1 - p_boost, p_boost], (N, 1))
    args = (LOG["action"], LOG["behavior_prob"], target, LOG["reward"])
    return {"ips": ips(*args), "snips": snips(*args), "dm": direct_method(target, Q_TRUE),
            "dr": doubly_robust(*args, Q_TRUE), "sndr": self_normalised_dr(*args, Q_TRUE),
            "switch_dr": switch_dr(*args, Q_TRUE, tau=10.0)}


def _request_level(p_boost: float) -> list:
    """IPS and SNIPS with the request as the decision: the joint draw of both candidates'
    boosts (4 actions), propensity mu(b1) mu(b2), reward of whatever was exposed."""
    boosts = LOG["boosts"]  # (n, 2)
    joint = 2 * boosts[:, 0] + boosts[:, 1]
    mu = np.outer([1 - BOOST_PROB, BOOST_PROB], [1 - BOOST_PROB, BOOST_PROB]).ravel()  # (4,)
    pi = np.outer([1 - p_boost, p_boost], [1 - p_boost, p_boost]).ravel()
    args = (joint, mu[joint], np.tile(pi, (N, 1)), LOG["reward"])
    return [ips(*args), snips(*args)]


def test_exposure_selects_boosted_rows():
    # The logged propensity says 0.3; among exposures the boost is ~0.51 (1 - 0.7^2).
    assert LOG["action"].mean() == pytest.approx(1 - (1 - BOOST_PROB) ** 2, abs=0.01)
    np.testing.assert_allclose(LOG["behavior_prob"][LOG["action"] == 1], BOOST_PROB)


def test_importance_weights_still_value_the_logging_policy():
    # pi = mu: every weight is 1, IPS and SNIPS are the on-log mean, which is the truth.
    truth = exposure_truth(BOOST_PROB)
    estimates = _row_level(BOOST_PROB)
    assert estimates["ips"].covers(truth) and estimates["snips"].covers(truth)


def test_model_based_estimators_are_biased_even_for_the_logging_policy():
    # DM averages the model over mu's draw, but the exposed rows' actions are not mu's draw:
    # E[q(x, a) | exposed] != sum_a mu(a|x) q(x, a), so DM misses, and DR's control variate
    # v(x) - q(x, a) no longer has mean 0: DR, SNDR and Switch-DR miss too, even with the true
    # row model and weights all 1.
    truth = exposure_truth(BOOST_PROB)
    estimates = _row_level(BOOST_PROB)
    for name in ("dm", "dr", "sndr", "switch_dr"):
        est = estimates[name]
        assert not est.covers(truth) and est.value < truth - 0.05, (name, est.value, truth)


@pytest.mark.parametrize("p_boost", [0.7, 0.5])
def test_row_level_estimators_are_biased_for_another_target(p_boost):
    truth = exposure_truth(p_boost)
    assert abs(truth - exposure_truth(BOOST_PROB)) > 0.1
    for name, est in _row_level(p_boost).items():
        assert not est.covers(truth), (name, est.value, est.ci_low, est.ci_high, truth)
        assert abs(est.value - truth) > 0.03, (name, est.value, truth)


@pytest.mark.parametrize("p_boost", [0.7, 0.5])
def test_the_request_level_propensity_removes_the_bias(p_boost):
    truth = exposure_truth(p_boost)
    for est in _request_level(p_boost):
        assert est.covers(truth), (est.estimator, est.value, est.ci_low, est.ci_high, truth)
