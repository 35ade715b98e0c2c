"""Sequential OPE estimators (rliv_ray.ope.sequential): hand-computed values on a five-step log
of two trajectories, and coverage of the true value on a small synthetic MDP."""

import math

import numpy as np
import pytest

from rliv_ray.ope import ncis_steps
from rliv_ray.ope.sequential import (
    _simplex_minimum,
    checked_steps,
    doubly_robust_steps,
    magic,
    magic_blend,
    partial_returns,
    pdis,
    weighted_dr,
    wpdis,
)
from tests.ope_worlds import MDP

# Trajectory 7 (3 steps) then trajectory 3 (2 steps); every mu = 0.5, gamma = 0.5.
# pi(logged a): 0.25, 0.75, 1 | 0.75, 0.25 -> rho 0.5, 1.5, 2 | 1.5, 0.5
# -> w 0.5, 0.75, 1.5 | 1.5, 0.75.
TRAJ = np.array([7, 7, 7, 3, 3])
ACTION = np.array([0, 1, 1, 0, 1])
BEHAVIOR = np.full(5, 0.5)
TARGET = np.array([[0.25, 0.75], [0.25, 0.75], [0.0, 1.0], [0.75, 0.25], [0.75, 0.25]])
REWARDS = np.array([1.0, 2.0, 3.0, 4.0, 1.0])
Q_HAT = np.array([[1.0, 2.0], [2.0, 0.0], [3.0, 1.0], [2.0, 2.0], [0.0, 4.0]])
# v = sum_a pi q = 1.75, 0.5, 1 | 2, 1; q(s, a) = 1, 0, 1 | 2, 4; r - q = 0, 2, 2 | 2, -3.
LOG = (ACTION, BEHAVIOR, TARGET, REWARDS, TRAJ)
GAMMA = 0.5


def test_pdis_by_hand():
    est = pdis(*LOG, gamma=GAMMA, n_bootstrap=0)
    first = 0.5 * 1 + 0.5 * 0.75 * 2 + 0.25 * 1.5 * 3  # 2.375
    second = 1.5 * 4 + 0.5 * 0.75 * 1  # 6.375
    assert est.value == pytest.approx((first + second) / 2)
    assert (est.estimator, est.n, est.unit) == ("pdis", 2, "trajectories")
    assert est.effective_sample_size == pytest.approx(2.25**2 / (1.5**2 + 0.75**2))


def test_wpdis_by_hand_and_equal_to_per_decision_ncis():
    est = wpdis(*LOG, gamma=GAMMA, n_bootstrap=0)
    step0 = (0.5 * 1 + 1.5 * 4) / 2.0
    step1 = GAMMA * (0.75 * 2 + 0.75 * 1) / 1.5
    step2 = GAMMA**2 * (1.5 * 3) / (1.5 + 0.75)  # trajectory 3 ended: its last weight stays
    assert est.value == pytest.approx(step0 + step1 + step2)
    ratios = TARGET[np.arange(5), ACTION] / BEHAVIOR
    ncis = ncis_steps(REWARDS, ratios, np.array([1, 0, 0, 1, 0], dtype=bool),
                      kind="per_decision", cap=math.inf, gamma=GAMMA, n_bootstrap=0)
    assert est.value == pytest.approx(ncis.value)


def test_sequential_dr_by_hand():
    est = doubly_robust_steps(*LOG, Q_HAT, gamma=GAMMA, n_bootstrap=0)
    # sum_t gamma^t [w_t (r_t - q_t) + w_{t-1} v_t], w_{-1} = 1
    first = (0.5 * 0 + 1.75) + GAMMA * (0.75 * 2 + 0.5 * 0.5) + GAMMA**2 * (1.5 * 2 + 0.75 * 1)
    second = (1.5 * 2 + 2.0) + GAMMA * (0.75 * -3 + 1.5 * 1)
    assert est.value == pytest.approx((first + second) / 2)


def test_weighted_dr_and_partial_returns_by_hand():
    # u_t = w_t / D_t with D_-1 = 2, D_0 = 2, D_1 = 1.5, D_2 = 1.5 + 0.75:
    # u = 0.25, 0.5, 2/3 | 0.75, 0.5; u_{t-1} = 0.5, 0.25, 0.5 | 0.5, 0.75.
    rows = [0.25 * 0 + 0.5 * 1.75, GAMMA * (0.5 * 2 + 0.25 * 0.5),
            GAMMA**2 * (2 / 3 * 2 + 0.5 * 1), 0.75 * 2 + 0.5 * 2, GAMMA * (0.5 * -3 + 0.75 * 1)]
    est = weighted_dr(*LOG, Q_HAT, gamma=GAMMA, n_bootstrap=0)
    assert est.value == pytest.approx(sum(rows))
    steps = checked_steps(*LOG, gamma=GAMMA, q_hat=Q_HAT)
    g = partial_returns(steps, np.ones(2))
    dm = 0.5 * 1.75 + 0.5 * 2.0  # g_-1
    g0 = rows[0] + rows[3] + GAMMA * (0.25 * 0.5 + 0.75 * 1)  # + gamma u_0 v_1
    g1 = sum(rows[:2]) + rows[3] + rows[4] + GAMMA**2 * 0.5 * 1  # + gamma^2 u_1 v_2
    np.testing.assert_allclose(g, [dm, g0, g1, sum(rows)])


def test_magic_blend_solver_and_blend_by_hand():
    # min x' diag(1, 4) x on the simplex: x proportional to (1/1, 1/4) -> (0.8, 0.2).
    np.testing.assert_allclose(_simplex_minimum(np.diag([1.0, 4.0])), [0.8, 0.2], atol=1e-6)
    blend = magic_blend(*LOG, Q_HAT, gamma=GAMMA, n_bootstrap=50)
    steps = checked_steps(*LOG, gamma=GAMMA, q_hat=Q_HAT)
    np.testing.assert_array_equal(blend.horizons, [-1, 0, 1, 2])
    np.testing.assert_allclose(blend.partial, partial_returns(steps, np.ones(2)))
    assert blend.weights.sum() == pytest.approx(1.0) and (blend.weights >= 0).all()
    assert blend.estimate.value == pytest.approx(blend.weights @ blend.partial)
    assert blend.estimate.estimator == "magic"


def test_target_equal_to_logging_gives_the_mean_return():
    rng = np.random.default_rng(0)
    traj = np.repeat(np.arange(40), rng.integers(1, 6, 40))
    n = len(traj)
    action = rng.integers(0, 2, n)
    probs = np.where(rng.random((n, 1)) < 0.5, [[0.3, 0.7]], [[0.6, 0.4]])
    behavior = probs[np.arange(n), action]
    rewards = rng.normal(size=n)
    mean_return = np.bincount(traj, rewards).mean()
    for estimator in (pdis, wpdis):
        est = estimator(action, behavior, probs, rewards, traj, n_bootstrap=0)
        assert est.value == pytest.approx(mean_return)
        assert est.effective_sample_size == pytest.approx(40)


def test_trajectories_must_be_contiguous_runs():
    with pytest.raises(ValueError, match="one contiguous run each"):
        pdis(ACTION, BEHAVIOR, TARGET, REWARDS, np.array([7, 3, 7, 3, 3]))
    with pytest.raises(ValueError, match="gamma must be in"):
        pdis(*LOG, gamma=1.5)
    with pytest.raises(ValueError, match="n_bootstrap must be >= 2 for MAGIC"):
        magic(*LOG, Q_HAT, n_bootstrap=0)


# --- synthetic MDP: truth inside the interval --------------------------------------------------
# Fixed seeds. Over 30 other log seeds the intervals held the truth 93-100% of the time for
# every estimator and both policies (MAGIC with a model 0.5 off: 67%, hence not tested there).
WORLD = MDP.build(seed=2)
LOGGING = np.array([[0.5, 0.5], [0.7, 0.3], [0.4, 0.6]])  # (S, A)
TARGET_POLICY = np.array([[0.2, 0.8], [0.2, 0.8], [0.2, 0.8]])  # value 1.036 vs 0.890
N_EPISODES = 1500


def _estimates(policy: np.ndarray, seed: int, q_shift: float = 0.0) -> list:
    log = WORLD.log(LOGGING, N_EPISODES, seed=seed)
    args = (log["action"], log["behavior_prob"], policy[log["s"]], log["reward"],
            log["episode"])
    q_hat = WORLD.q(policy)[log["s"]] + q_shift
    kw = {"gamma": WORLD.gamma}
    return [pdis(*args, **kw), wpdis(*args, **kw), doubly_robust_steps(*args, q_hat, **kw),
            weighted_dr(*args, q_hat, **kw), magic(*args, q_hat, **kw)]


def test_every_sequential_estimator_covers_the_logging_policys_own_value():
    truth = WORLD.value(LOGGING)
    for est in _estimates(LOGGING, seed=21):
        assert est.covers(truth), (est.estimator, est.value, est.ci_low, est.ci_high, truth)
        assert est.n == N_EPISODES and est.effective_sample_size == pytest.approx(N_EPISODES)


def test_sequential_estimators_cover_another_targets_value():
    truth = WORLD.value(TARGET_POLICY)
    assert abs(truth - WORLD.value(LOGGING)) > 0.1
    # The unbiased ones (PDIS, DR) and, at this size, the consistent weighted ones.
    for est in _estimates(TARGET_POLICY, seed=22):
        assert est.covers(truth), (est.estimator, est.value, est.ci_low, est.ci_high, truth)
        assert est.effective_sample_size < 0.8 * N_EPISODES


def test_sequential_dr_corrects_a_wrong_model():
    truth = WORLD.value(TARGET_POLICY)
    _, _, dr, wdr, _ = _estimates(TARGET_POLICY, seed=23, q_shift=0.5)
    assert dr.covers(truth) and wdr.covers(truth)
