"""The grading metrics of ``rliv ope-grade`` (rliv_ray.ope.grade) on hand-computed inputs, and
RLIV-UA's exposure propensities (rliv_ray.ope.grade_ua) against sampling and by hand."""

import math

import numpy as np
import pytest

from rliv_ray.actions import ActionGrid
from rliv_ray.data.ua_policies import Candidates, ConstantPolicy, EpsilonLoggingPolicy
from rliv_ray.ope.grade import (
    Graded,
    coverage,
    covers,
    kendall,
    regret,
    relative_error,
    relative_regret,
    spearman,
    summarise,
)
from rliv_ray.ope.grade_suite import ridge_cross_fit
from rliv_ray.ope.grade_ua import (
    UAMixture,
    candidate_distribution,
    exposed_index,
    exposure_probabilities,
    final_scores,
)

GRID = ActionGrid()


def test_relative_error_by_hand():
    assert relative_error(12.0, 10.0) == pytest.approx(0.2)
    assert relative_error(-8.0, -10.0) == pytest.approx(0.2)  # over |truth|
    assert math.isnan(relative_error(1.0, 0.0))
    np.testing.assert_allclose(relative_error([9.0, 15.0], [10.0, 10.0]), [-0.1, 0.5])


def test_coverage_counts_only_intervals_that_exist():
    low, high, truth = [0.0, 2.0, math.nan, 1.0], [1.0, 3.0, math.nan, 1.0], [0.5, 1.0, 2.0, 1.0]
    np.testing.assert_array_equal(covers(low, high, truth), [1.0, 0.0, math.nan, 1.0])
    assert coverage(low, high, truth) == (2, 3)  # the bounds are inside


def test_rank_correlations_by_hand():
    # one swap of three: Spearman 1 - 6 * 2 / (3 * 8) = 0.5; Kendall (2 - 1) / 3
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert kendall([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    # a tie in the estimates: ranks 1.5, 1.5, 3 against 1, 2, 3 -> 1.5 / sqrt(1.5 * 2);
    # tau-b: 2 concordant, 0 discordant, one tied pair -> 2 / sqrt(2 * 3)
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(1.5 / math.sqrt(3.0))
    assert kendall([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6.0))
    assert spearman([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)
    # a policy without an estimate drops out; a constant side has no correlation
    assert spearman([1, math.nan, 2, 3], [1, 5, 3, 2]) == pytest.approx(0.5)
    assert math.isnan(spearman([2, 2, 2], [1, 2, 3])) and math.isnan(kendall([1, 2], [4, 4]))
    assert math.isnan(spearman([1], [1]))


def test_regret_by_hand():
    assert regret([1, 3, 2], [5, 4, 6]) == pytest.approx(2.0)  # picks 4, best 6
    assert relative_regret([1, 3, 2], [5, 4, 6]) == pytest.approx(2 / 6)
    assert regret([3, 3, 1], [4, 6, 5]) == pytest.approx(1.0)  # a tie: mean of 4 and 6
    assert regret([math.nan, 1, 0], [10, 2, 3]) == pytest.approx(8.0)  # best is unestimated
    assert regret([0, 2, 1], [1, 3, 2]) == 0.0
    assert math.isnan(regret([math.nan, math.nan], [1, 2]))
    with pytest.raises(ValueError, match="one shape"):
        regret([1, 2], [1, 2, 3])


def _record(seed, policy, value, truth, low=math.nan, high=math.nan, truth_long=None,
            estimator="ips"):
    return Graded("w", seed, policy, estimator, "per-decision", value, low, high, 100.0, truth,
                  truth if truth_long is None else truth_long)


def test_summarise_by_hand():
    records = [
        # seed 0: estimates 11, 18, 30 of truths 10, 20, 25: errors +10%, -10%, +20%;
        # ranks agree (Spearman 1); the top estimate is the best policy (regret 0)
        _record(0, "a", 11.0, 10.0, 9.0, 12.0), _record(0, "b", 18.0, 20.0, 19.0, 21.0),
        _record(0, "c", 30.0, 25.0),
        # seed 1: estimates 10, 30, 20 of truths 10, 20, 25: errors 0, +50%, -20%;
        # Spearman 0.5, Kendall 1/3; picks b (20) over c (25): regret 5, relative 0.2
        _record(1, "a", 10.0, 10.0, 9.0, 11.0), _record(1, "b", 30.0, 20.0),
        _record(1, "c", 20.0, 25.0, 15.0, 24.0),
        _record(1, "a", math.nan, 10.0, estimator="dm"),
    ]
    rows = {r["estimator"]: r for r in summarise(records)}
    ips = rows["ips"]
    assert ips["estimates"] == 6 and ips["failed"] == 0
    assert ips["mean_relative_error"] == pytest.approx((0.1 - 0.1 + 0.2 + 0 + 0.5 - 0.2) / 6)
    assert ips["mean_abs_relative_error"] == pytest.approx((0.1 + 0.1 + 0.2 + 0 + 0.5 + 0.2) / 6)
    assert (ips["covered"], ips["intervals"]) == (3, 4)  # c's [15, 24] misses 25
    assert ips["spearman"] == pytest.approx((1.0 + 0.5) / 2)
    assert ips["kendall"] == pytest.approx((1.0 + 1 / 3) / 2)
    assert ips["regret"] == pytest.approx(2.5)
    assert ips["relative_regret"] == pytest.approx(0.1)
    dm = rows["dm"]
    assert dm["estimates"] == 0 and dm["failed"] == 1 and math.isnan(dm["spearman"])
    # dm estimated no policy in seed 1: no choice, so no regret either
    assert math.isnan(dm["regret"])


def test_graded_record_to_dict_is_plain_json():
    d = _record(0, "a", 12.0, 10.0).to_dict()
    assert d["relative_error"] == pytest.approx(0.2) and d["covered"] is None
    assert d["ci_low"] is None and d["policy"] == "a"


def test_ridge_cross_fit_recovers_a_quadratic_and_never_sees_its_own_fold():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4000, 2))
    y = 1.0 + 2.0 * x[:, 0] - x[:, 1] ** 2
    alternatives = np.stack([x, x + 1.0], axis=1)  # (n, 2, d)
    pred = ridge_cross_fit(x, y, alternatives, np.arange(4000) // 4, alpha=1e-6)
    np.testing.assert_allclose(pred[:, 0], y, atol=1e-3)
    np.testing.assert_allclose(pred[:, 1], 1.0 + 2.0 * (x[:, 0] + 1) - (x[:, 1] + 1) ** 2,
                               atol=1e-3)
    # a row whose reward alone is off is not fitted to it: its fold's model never saw it
    y2 = y.copy()
    y2[0] += 1e3
    moved = ridge_cross_fit(x, y2, x, np.arange(4000) // 4, alpha=1e-6)
    assert abs(moved[0] - y[0]) < abs(moved[0] - y2[0])


def _candidates(rank_score: np.ndarray) -> Candidates:
    zeros = np.zeros(rank_score.shape)
    return Candidates(rank_score.astype(np.float32), *(zeros,) * 9)


def test_exposure_probabilities_by_hand_two_candidates():
    # scores 0.3 and 0.2; weights a in {0, .25, .5, .75, 1} scale them by (1 + a).
    # Candidate 1 wins iff 0.2 (1 + a1) > 0.3 (1 + a0) (ties to candidate 0).
    rank = np.array([[0.3, 0.2]])
    final = final_scores(rank, GRID)
    p0 = np.array([0.5, 0, 0, 0, 0.5])  # candidate 0: weight 0 or 1
    p1 = np.array([0, 0, 0, 0, 1.0])  # candidate 1: always weight 1
    dist = np.array([[p0, p1]])
    (exposure,) = exposure_probabilities(final, [dist])
    # a0 = 0: 0.3 < 0.4, candidate 1 wins; a0 = 1: 0.6 > 0.4, candidate 0 wins
    np.testing.assert_allclose(exposure, [[0.5, 0.5]])
    # a candidate that no weight can lift above the other is never exposed: exactly 0
    (never,) = exposure_probabilities(final_scores(np.array([[0.9, 0.2]]), GRID), [dist])
    assert never[0, 1] == 0.0 and never[0, 0] == 1.0


def test_exposure_ties_go_to_the_lower_index_as_the_world_sorts():
    rank = np.array([[0.5, 0.5, 0.5]])
    constant = np.tile(np.eye(5)[2], (1, 3, 1))
    (exposure,) = exposure_probabilities(final_scores(rank, GRID), [constant])
    np.testing.assert_array_equal(exposure, [[1.0, 0.0, 0.0]])
    assert exposed_index(rank.astype(np.float32), np.full((1, 3), 2), GRID)[0] == 0


def test_exposure_probabilities_match_the_worlds_own_exposures():
    rng = np.random.default_rng(1)
    rank = rng.uniform(0.05, 0.5, (6, 8)).astype(np.float32)
    cand = _candidates(rank)
    logging = EpsilonLoggingPolicy(GRID, 0.3, 0)
    mix = UAMixture((logging, ConstantPolicy(4)), (0.6, 0.4), GRID)
    dists = [candidate_distribution(p, cand, GRID) for p in (logging, mix)]
    exact = exposure_probabilities(final_scores(rank, GRID), dists)
    reps = 4000
    big = _candidates(np.repeat(rank, reps, axis=0))  # each request's candidates, reps times
    for policy, probs in zip((logging, mix), exact, strict=True):
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
        actions, _ = policy.act(big, rng)
        exposed = exposed_index(big.rank_score, actions, GRID).reshape(len(rank), reps)
        freq = np.stack([np.bincount(e, minlength=rank.shape[1]) for e in exposed]) / reps
        np.testing.assert_allclose(freq, probs, atol=0.03)  # ~4 standard errors at p = 0.5


def test_candidate_distributions_of_logging_and_a_mixture():
    cand = _candidates(np.full((2, 3), 0.2))
    logging = EpsilonLoggingPolicy(GRID, 0.3, 0)
    dist = candidate_distribution(logging, cand, GRID)
    np.testing.assert_allclose(dist[0, 0], [0.76, 0.06, 0.06, 0.06, 0.06])
    mix = UAMixture((logging, ConstantPolicy(4)), (0.5, 0.5), GRID)
    np.testing.assert_allclose(candidate_distribution(mix, cand, GRID)[1, 2],
                               [0.38, 0.03, 0.03, 0.03, 0.53])
    actions, probs = mix.act(cand, np.random.default_rng(0))
    np.testing.assert_allclose(probs, candidate_distribution(mix, cand, GRID)[
        np.arange(2)[:, None], np.arange(3), actions])
    with pytest.raises(ValueError, match="not known"):
        candidate_distribution(object(), cand, GRID)
