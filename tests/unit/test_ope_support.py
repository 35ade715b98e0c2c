"""The support and input checks every OPE estimator runs (rliv_ray.ope.support): each bad input
fails with one ValueError of one line, in every estimator."""

import math

import numpy as np
import pytest

from rliv_ray.ope.estimators import doubly_robust, ips, self_normalised_dr, snips, switch_dr
from rliv_ray.ope.sequential import doubly_robust_steps, magic, pdis, weighted_dr, wpdis
from rliv_ray.ope.support import check_propensities, check_support, checked_bandit

ACTION = np.array([0, 1, 2, 1])
BEHAVIOR = np.array([0.5, 0.25, 0.25, 0.5])
TARGET = np.array([[0.2, 0.6, 0.2], [0.1, 0.5, 0.4], [0.0, 0.5, 0.5], [0.3, 0.3, 0.4]])
REWARDS = np.array([1.0, 2.0, 0.5, 3.0])
Q_HAT = np.ones((4, 3))
TRAJ = np.array([0, 0, 1, 1])


def _run_all(action, behavior, target, rewards=REWARDS, q_hat=Q_HAT, **kwargs):
    """Every propensity-based estimator on the same inputs; yields the raised errors."""
    calls = [
        lambda: ips(action, behavior, target, rewards, **kwargs),
        lambda: snips(action, behavior, target, rewards, **kwargs),
        lambda: doubly_robust(action, behavior, target, rewards, q_hat, **kwargs),
        lambda: self_normalised_dr(action, behavior, target, rewards, q_hat, **kwargs),
        lambda: switch_dr(action, behavior, target, rewards, q_hat, tau=5.0, **kwargs),
        lambda: pdis(action, behavior, target, rewards, TRAJ, **kwargs),
        lambda: wpdis(action, behavior, target, rewards, TRAJ, **kwargs),
        lambda: doubly_robust_steps(action, behavior, target, rewards, TRAJ, q_hat, **kwargs),
        lambda: weighted_dr(action, behavior, target, rewards, TRAJ, q_hat, **kwargs),
        lambda: magic(action, behavior, target, rewards, TRAJ, q_hat, **kwargs),
    ]
    for call in calls:
        with pytest.raises(ValueError) as caught:
            call()
        yield str(caught.value)


def assert_one_line_everywhere(match: str, *args, **kwargs) -> None:
    messages = list(_run_all(*args, **kwargs))
    assert len(messages) == 10
    for message in messages:
        assert "\n" not in message
        assert match in message, message
    assert len(set(messages)) == 1  # the same words whichever estimator is asked


@pytest.mark.parametrize(
    ("behavior", "match"),
    [
        ([0.5, np.nan, 0.25, 0.5], "behavior_prob is missing (NaN or infinite) on 1 of 4 rows "
                                   "(first: row 1)"),
        ([0.5, None, 0.25, None], "behavior_prob is missing (NaN or infinite) on 2 of 4 rows"),
        ([0.5, 0.25, 0.0, 0.5], "behavior_prob is 0 on 1 of 4 rows (first: row 2)"),
        ([0.5, 0.25, -0.1, 0.5], "behavior_prob is negative"),
        ([0.5, 1.25, 0.25, 0.5], "behavior_prob is above 1"),
    ],
)
def test_missing_or_zero_propensities_fail_in_one_line(behavior, match):
    assert_one_line_everywhere(match, ACTION, np.array(behavior, dtype=object), TARGET)


def test_a_missing_propensity_is_never_filled_with_the_targets():
    # Filling behavior_prob with pi(a|x) would give weight 1 and a finite estimate; instead:
    with pytest.raises(ValueError, match="never fill it in"):
        check_propensities([0.5, math.nan])


def test_a_policy_over_another_action_space_fails_in_one_line():
    two_actions = TARGET[:, :2] / TARGET[:, :2].sum(axis=1, keepdims=True)
    assert_one_line_everywhere(
        "the log holds action 2 (row 2) but target_probs covers actions 0..1: "
        "the target policy is over another action space",
        ACTION, BEHAVIOR, two_actions, q_hat=Q_HAT[:, :2])
    with pytest.raises(ValueError, match="q_hat has shape \\(4, 2\\) but target_probs has "
                                         "\\(4, 3\\): not one action space"):
        doubly_robust(ACTION, BEHAVIOR, TARGET, REWARDS, Q_HAT[:, :2])
    not_a_distribution = TARGET * 0.8
    assert_one_line_everywhere("target_probs row 0 sums to 0.8, not 1", ACTION, BEHAVIOR,
                         not_a_distribution)


def test_target_mass_on_an_action_the_log_never_holds_fails_in_one_line():
    action = np.array([0, 1, 0, 1])  # action 2 never logged, yet the target gives it mass
    assert_one_line_everywhere("the target puts mass on action 2 (mean probability 0.375), which "
                         "the logging policy never takes in this log", action,
                         np.array([0.5, 0.25, 0.5, 0.5]), TARGET)
    only_logged = np.array([[0.5, 0.5, 0.0]] * 4)
    assert ips(action, [0.5, 0.25, 0.5, 0.5], only_logged, REWARDS, n_bootstrap=0).n == 4


def test_per_row_support_with_the_logging_policys_full_distribution():
    behavior_probs = np.array([[0.5, 0.5, 0.0], [0.5, 0.25, 0.25], [0.5, 0.25, 0.25],
                               [0.5, 0.5, 0.0]])  # row 0 can never take action 2
    with pytest.raises(ValueError) as caught:
        ips(ACTION, BEHAVIOR, TARGET, REWARDS, behavior_probs=behavior_probs)
    assert str(caught.value) == (
        "the target puts mass where the logging policy never does (2 of 4 rows; first: row 0, "
        "action 2, target probability 0.2): no importance weight can estimate it")
    with pytest.raises(ValueError, match="behavior_probs disagrees with behavior_prob"):
        checked_bandit(ACTION, [0.5, 0.25, 0.25, 0.5], TARGET, REWARDS,
                       behavior_probs=np.tile([0.5, 0.25, 0.25], (4, 1)))
    check_support(ACTION, TARGET, np.tile([0.5, 0.25, 0.25], (4, 1)))  # full support: fine


def test_other_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="rewards must be finite"):
        ips(ACTION, BEHAVIOR, TARGET, [1.0, np.inf, 0.0, 0.0])
    with pytest.raises(ValueError, match="action must be integer"):
        ips(ACTION.astype(float), BEHAVIOR, TARGET, REWARDS)
    with pytest.raises(ValueError, match="behavior_prob has shape"):
        ips(ACTION, BEHAVIOR[:3], TARGET, REWARDS)
    with pytest.raises(ValueError, match="q_hat must be finite"):
        doubly_robust(ACTION, BEHAVIOR, TARGET, REWARDS, np.full((4, 3), np.nan))
