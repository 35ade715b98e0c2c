"""Checks every off-policy estimator runs before it weighs a single row (pure NumPy).

Importance sampling is only defined where the target policy pi puts mass on actions the
logging policy mu takes (absolute continuity, pi(a|x) > 0 => mu(a|x) > 0; Precup 2000,
Dudik et al. 2011). Where that fails, no weight can estimate the target's value on those
actions, and an estimator silently returns the value of another policy. Where the logged
propensity is missing or zero the log itself is broken: substituting the target's own
probability (a common shortcut) sets the weight to 1 and hides exactly the rows where the
policies differ. So each check raises one ValueError with one line that says what is wrong:

* :func:`check_propensities`: ``behavior_prob`` finite and in (0, 1] on every row;
* :func:`check_action_space`: logged actions, target probabilities, value-model outputs and
  (if given) the logging policy's full distribution over one action space, with target rows
  that are distributions;
* :func:`check_support`: with the logging policy's full distribution ``behavior_probs``
  (n, A), no row may have pi(a|x) > 0 where mu(a|x) = 0; without it, only the actions can be
  checked: an action the target ever gives mass that the log never holds fails.
* :func:`checked_bandit` runs all three and returns float64/int64 copies with the ratios
  w_i = pi(a_i|x_i) / mu(a_i|x_i).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PROBABILITY_ATOL", "CheckedLog", "check_action_space", "check_propensities",
           "check_rewards", "check_support", "checked_bandit", "logged_target_prob"]

PROBABILITY_ATOL = 1e-5
"""How far a target row's sum may be from 1 (float32 softmax outputs sum to 1 within ~1e-6)."""


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def check_propensities(behavior_prob) -> np.ndarray:
    """``behavior_prob`` (n,) as float64; ValueError on a missing (NaN/None), zero, negative or
    > 1 propensity, naming how many rows and the first."""
    try:
        prob = np.asarray(behavior_prob, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("behavior_prob must be numbers (the logging policy's probability "
                         "of each logged action)") from None
    if prob.ndim != 1 or len(prob) == 0:
        raise ValueError(f"behavior_prob must be a non-empty (n,) array, got shape {prob.shape}")
    n = len(prob)
    for bad, what in ((~np.isfinite(prob), "missing (NaN or infinite)"),
                      (prob == 0, "0"), (prob < 0, "negative"), (prob > 1, "above 1")):
        if bad.any():
            raise ValueError(
                f"behavior_prob is {what} on {int(bad.sum())} of {n} rows (first: row "
                f"{_first(bad)}): importance weights need the logging policy's own "
                f"probability of every logged action; fix the log, never fill it in")
    return prob


def check_action_space(action, target_probs, *, q_hat=None,
                       behavior_probs=None) -> tuple[np.ndarray, np.ndarray]:
    """(action (n,) int64, target_probs (n, A) float64) after checking that they, ``q_hat``
    (n, A) and ``behavior_probs`` (n, A) share n rows and one action space [0, A), and that
    every target row is a probability distribution."""
    action = np.asarray(action)
    target = np.asarray(target_probs, dtype=np.float64)
    if target.ndim != 2 or target.shape[1] == 0:
        raise ValueError(f"target_probs must be (n, n_actions), got shape {target.shape}")
    n, n_actions = target.shape
    if action.shape != (n,):
        raise ValueError(f"action has shape {action.shape} but target_probs has {n} rows")
    if not np.issubdtype(action.dtype, np.integer):
        raise ValueError(f"action must be integer action indices, got dtype {action.dtype}")
    outside = (action < 0) | (action >= n_actions)
    if outside.any():
        row = _first(outside)
        raise ValueError(f"the log holds action {int(action[row])} (row {row}) but "
                         f"target_probs covers actions 0..{n_actions - 1}: the target policy "
                         f"is over another action space")
    for name, other in (("q_hat", q_hat), ("behavior_probs", behavior_probs)):
        if other is not None and np.shape(other) != target.shape:
            raise ValueError(f"{name} has shape {np.shape(other)} but target_probs has "
                             f"{target.shape}: not one action space")
    if not np.all(np.isfinite(target) & (target >= 0) & (target <= 1)):
        raise ValueError("target_probs must be finite probabilities in [0, 1]")
    off = np.abs(target.sum(axis=1) - 1) > PROBABILITY_ATOL
    if off.any():
        row = _first(off)
        raise ValueError(f"target_probs row {row} sums to {target[row].sum():.6g}, not 1: "
                         f"a policy over another action space, or not a distribution")
    return action.astype(np.int64), target


def check_support(action: np.ndarray, target_probs: np.ndarray, behavior_probs=None) -> None:
    """ValueError where the target puts mass the logging policy never does (see module)."""
    n, n_actions = target_probs.shape
    if behavior_probs is not None:
        behavior = np.asarray(behavior_probs, dtype=np.float64)
        if not np.all(np.isfinite(behavior) & (behavior >= 0) & (behavior <= 1)):
            raise ValueError("behavior_probs must be finite probabilities in [0, 1]")
        if np.any(behavior[np.arange(n), action] == 0):
            row = _first(behavior[np.arange(n), action] == 0)
            raise ValueError(f"behavior_probs gives the logged action of row {row} "
                             f"probability 0: it is not the policy that wrote this log")
        unsupported = (target_probs > 0) & (behavior == 0)
        if unsupported.any():
            row, act = (int(i[0]) for i in np.nonzero(unsupported))
            rows = int(unsupported.any(axis=1).sum())
            raise ValueError(
                f"the target puts mass where the logging policy never does ({rows} of {n} "
                f"rows; first: row {row}, action {act}, target probability "
                f"{target_probs[row, act]:.3g}): no importance weight can estimate it")
        return
    logged = np.bincount(action, minlength=n_actions)  # (A,)
    mass = target_probs.sum(axis=0)  # (A,)
    never = (mass > 0) & (logged == 0)
    if never.any():
        act = _first(never)
        raise ValueError(
            f"the target puts mass on action {act} (mean probability {mass[act] / n:.3g}), "
            f"which the logging policy never takes in this log: no importance weight can "
            f"estimate it")


def check_rewards(rewards, n: int) -> np.ndarray:
    """``rewards`` (n,) as finite float64."""
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.shape != (n,):
        raise ValueError(f"rewards has shape {rewards.shape}, expected ({n},)")
    if not np.all(np.isfinite(rewards)):
        raise ValueError("rewards must be finite")
    return rewards


def logged_target_prob(action: np.ndarray, target_probs: np.ndarray) -> np.ndarray:
    """pi(a_i | x_i) per row, (n,)."""
    return target_probs[np.arange(len(action)), action]


@dataclass(frozen=True)
class CheckedLog:
    """Validated per-decision inputs, float64 / int64, with the importance ratios."""

    action: np.ndarray  # (n,) int64 in [0, A)
    behavior_prob: np.ndarray  # (n,) mu(a_i | x_i) in (0, 1]
    target_probs: np.ndarray  # (n, A) pi(. | x_i)
    rewards: np.ndarray  # (n,)
    ratios: np.ndarray  # (n,) w_i = pi(a_i | x_i) / mu(a_i | x_i)
    q_hat: np.ndarray | None  # (n, A) value model q(x_i, .), or None

    @property
    def n(self) -> int:
        return len(self.action)


def checked_bandit(action, behavior_prob, target_probs, rewards, *, q_hat=None,
                   behavior_probs=None) -> CheckedLog:
    """Every check of this module, then the ratios: the one entry point of the estimators."""
    action, target = check_action_space(action, target_probs, q_hat=q_hat,
                                        behavior_probs=behavior_probs)
    behavior = check_propensities(behavior_prob)
    if behavior.shape != action.shape:
        raise ValueError(f"behavior_prob has shape {behavior.shape} but action "
                         f"{action.shape}")
    if behavior_probs is not None:
        logged = np.asarray(behavior_probs, dtype=np.float64)[np.arange(len(action)), action]
        off = np.abs(logged - behavior) > PROBABILITY_ATOL
        if off.any():
            raise ValueError(f"behavior_probs disagrees with behavior_prob on the logged "
                             f"action ({int(off.sum())} rows; first: row {_first(off)})")
    check_support(action, target, behavior_probs)
    rewards = check_rewards(rewards, len(action))
    if q_hat is not None:
        q_hat = np.asarray(q_hat, dtype=np.float64)
        if not np.all(np.isfinite(q_hat)):
            raise ValueError("q_hat must be finite")
    ratios = logged_target_prob(action, target) / behavior
    return CheckedLog(action, behavior, target, rewards, ratios, q_hat)
