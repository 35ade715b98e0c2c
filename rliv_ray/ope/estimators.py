"""Per-decision (contextual-bandit) off-policy estimators, pure NumPy.

Each row i is one decision: context x_i, logged action a_i ~ mu(. | x_i) with propensity
mu_i = mu(a_i | x_i) (``behavior_prob``), reward r_i; the target policy's distribution
pi(. | x_i) is a row of ``target_probs`` (n, A) and a value model's predictions q(x_i, .) a row
of ``q_hat`` (n, A). With w_i = pi(a_i | x_i) / mu_i, v_i = sum_a pi(a | x_i) q(x_i, a) and
q_i = q(x_i, a_i), the value V(pi) = E_x E_{a ~ pi}[r] is estimated by

    IPS        (1/n) sum_i min(w_i, c) r_i                     Horvitz & Thompson 1952; clipped:
                                                               Bottou et al. 2013
    SNIPS      sum_i min(w_i, c) r_i / sum_i min(w_i, c)       Swaminathan & Joachims 2015
                                                               (c < inf: per-row NCIS,
                                                               Gilotte et al. 2018)
    DM         (1/n) sum_i v_i                                 Dudik et al. 2011 (sec. 2)
    DR         (1/n) sum_i [v_i + w_i (r_i - q_i)]             Dudik et al. 2011, Eq. 2
    SNDR       (1/n) sum_i v_i + sum_i w_i (r_i - q_i) / sum_i w_i
                                                               self-normalised DR (Kallus &
                                                               Uehara 2019; OBP's SNDR)
    Switch-DR  (1/n) sum_i [v_i + w_i 1{w_i <= tau} (r_i - q_i)]
                                                               Wang et al. 2017, sec. 4.1

What each assumes. All assume the rows are i.i.d. decisions whose logged action was drawn
from mu(. | x_i) with the probability ``behavior_prob`` says, the context x_i being drawn
independently of the policy (no state shift). IPS and DR are unbiased when that holds and
mu covers pi (:mod:`rliv_ray.ope.support`); DR also when only q is right. Clipping (c < inf)
and Switch's tau trade bias for variance; SNIPS and SNDR are biased O(1/n) but consistent and
stay within the range of the rewards (SNIPS) or of the model's corrections. DM is exactly as
good as q: its interval holds q fixed, so it does not cover the model's own error.

RLIV-UA's logs break the first assumption. ``behavior_prob`` is the probability that the
candidate *drew* its weight a, but a row exists only because the candidate then won the
exposure, which a boosted weight makes more likely (README, "Logging-policy caveat"). Among
logged rows P(a | x, exposed) = mu(a|x) P(exposed | a, x) / P(exposed | x) != mu(a|x), and
which candidate is exposed depends on the policy. On exposure-selected rows, then:

* IPS, SNIPS and NCIS value the logging policy itself right (every w_i = 1: the on-log mean,
  which is its true value) and every other target wrongly: the weights use the wrong
  propensity and the rows the wrong context distribution;
* DM, DR, SNDR and Switch-DR are biased even for the logging policy: DM weighs q(x, a) by
  pi(a|x) = mu(a|x), but among logged rows a is not distributed as mu(. | x), and DR's control
  variate v_i - q_i has mean 0 only when a_i ~ mu(. | x_i);
* no per-row reweighting fixes it. Treating the request as the decision does: the joint draw
  of all N candidates' weights, propensity prod_j mu(a_j | x_j), reward of whatever was
  exposed; this needs every candidate's draw in the log, not only the exposed one's.

``tests/unit/test_ope_selection.py`` shows each of these. The per-row estimators fit
SL-MGAC's log, where the inject decision is made on every request and logged whatever its
outcome.

The bootstrap resamples rows (:mod:`rliv_ray.ope.common`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from rliv_ray.ope.common import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_LEVEL,
    OPEEstimate,
    bootstrap_interval,
    check_options,
    kish_ess,
)
from rliv_ray.ope.support import (
    CheckedLog,
    check_action_space,
    checked_bandit,
    logged_target_prob,
)

__all__ = ["direct_method", "doubly_robust", "ips", "self_normalised_dr", "snips",
           "switch_dr"]


def _check_cap(name: str, cap: float) -> None:
    if isinstance(cap, bool) or not isinstance(cap, int | float) or not cap > 0:
        raise ValueError(f"{name} must be a number > 0 (math.inf: none), got {cap!r}")


def _estimate(name: str, value_fn: Callable[[np.ndarray], float], n: int, ess: float, *,
              n_bootstrap: int, seed: int, level: float) -> OPEEstimate:
    """``value_fn(k)`` at k = 1 and its percentile interval over resamples of the n rows."""
    check_options(n_bootstrap, level)
    value = value_fn(np.ones(n))
    if math.isnan(value):
        raise ValueError(f"{name}: every importance weight is 0: the target never takes a "
                         f"logged action")
    low, high = bootstrap_interval(value_fn, n, n_bootstrap=n_bootstrap, seed=seed,
                                   level=level)
    return OPEEstimate(name, value, low, high, ess, n, "rows", level)


def _mean(terms: np.ndarray) -> Callable[[np.ndarray], float]:
    return lambda k: float(k @ terms / k.sum())


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> Callable[[np.ndarray], float]:
    def value(k: np.ndarray) -> float:
        total = k @ denominator
        return float(k @ numerator / total) if total > 0 else math.nan
    return value


def _with_model(log: CheckedLog) -> tuple[np.ndarray, np.ndarray]:
    """(v_i, q_i): the model's value of pi at x_i and of the logged action."""
    if log.q_hat is None:
        raise ValueError("q_hat (n, n_actions) is required: this estimator uses a value model")
    return (log.target_probs * log.q_hat).sum(axis=1), logged_target_prob(log.action, log.q_hat)


def ips(action, behavior_prob, target_probs, rewards, *, cap: float = math.inf,
        behavior_probs=None, n_bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0,
        level: float = DEFAULT_LEVEL) -> OPEEstimate:
    """Inverse propensity scoring, (1/n) sum_i min(w_i, c) r_i (module docstring).

    Unbiased for c = inf; a finite cap c biases it down for rewards >= 0. ESS is Kish's of the
    clipped weights. ``behavior_probs`` (n, A), the logging policy's full distribution, makes
    the support check per row (:func:`rliv_ray.ope.support.check_support`).
    """
    _check_cap("cap", cap)
    log = checked_bandit(action, behavior_prob, target_probs, rewards,
                         behavior_probs=behavior_probs)
    w = np.minimum(log.ratios, cap)
    return _estimate("ips", _mean(w * log.rewards), log.n, kish_ess(w),
                     n_bootstrap=n_bootstrap, seed=seed, level=level)


def snips(action, behavior_prob, target_probs, rewards, *, cap: float = math.inf,
          behavior_probs=None, n_bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0,
          level: float = DEFAULT_LEVEL) -> OPEEstimate:
    """Self-normalised IPS, sum_i min(w_i, c) r_i / sum_i min(w_i, c) (Swaminathan & Joachims
    2015); with a finite cap it is NCIS (Gilotte et al. 2018) on one-step trajectories
    (``ncis.py``)."""
    _check_cap("cap", cap)
    log = checked_bandit(action, behavior_prob, target_probs, rewards,
                         behavior_probs=behavior_probs)
    w = np.minimum(log.ratios, cap)
    return _estimate("snips", _ratio(w * log.rewards, w), log.n, kish_ess(w),
                     n_bootstrap=n_bootstrap, seed=seed, level=level)


def direct_method(target_probs, q_hat, *, action=None, n_bootstrap: int = DEFAULT_BOOTSTRAP,
                  seed: int = 0, level: float = DEFAULT_LEVEL) -> OPEEstimate:
    """Direct method, (1/n) sum_i sum_a pi(a | x_i) q(x_i, a): no propensities, and only as
    good as ``q_hat``; the interval resamples the contexts with q fixed. Give ``action`` to
    check that the target is over the log's action space."""
    q_hat = np.asarray(q_hat, dtype=np.float64)
    target = np.asarray(target_probs, dtype=np.float64)
    logged = np.zeros(len(target), dtype=np.int64) if action is None else action
    _, target = check_action_space(logged, target, q_hat=q_hat)
    if not np.all(np.isfinite(q_hat)):
        raise ValueError("q_hat must be finite")
    n = len(target)
    return _estimate("dm", _mean((target * q_hat).sum(axis=1)), n, float(n),
                     n_bootstrap=n_bootstrap, seed=seed, level=level)


def doubly_robust(action, behavior_prob, target_probs, rewards, q_hat, *,
                  cap: float = math.inf, behavior_probs=None,
                  n_bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0,
                  level: float = DEFAULT_LEVEL) -> OPEEstimate:
    """Doubly robust, (1/n) sum_i [v_i + min(w_i, c) (r_i - q_i)] (Dudik et al. 2011, Eq. 2):
    unbiased (c = inf) if the propensities are right, whatever q; low variance if q is good."""
    _check_cap("cap", cap)
    log = checked_bandit(action, behavior_prob, target_probs, rewards, q_hat=q_hat,
                         behavior_probs=behavior_probs)
    v, q = _with_model(log)
    w = np.minimum(log.ratios, cap)
    return _estimate("dr", _mean(v + w * (log.rewards - q)), log.n, kish_ess(w),
                     n_bootstrap=n_bootstrap, seed=seed, level=level)


def self_normalised_dr(action, behavior_prob, target_probs, rewards, q_hat, *,
                       behavior_probs=None, n_bootstrap: int = DEFAULT_BOOTSTRAP,
                       seed: int = 0, level: float = DEFAULT_LEVEL) -> OPEEstimate:
    """Self-normalised DR, (1/n) sum_i v_i + sum_i w_i (r_i - q_i) / sum_i w_i: the DR
    correction as a weighted mean; biased O(1/n), bounded where DR's weights explode."""
    log = checked_bandit(action, behavior_prob, target_probs, rewards, q_hat=q_hat,
                         behavior_probs=behavior_probs)
    v, q = _with_model(log)
    w = log.ratios
    correction = _ratio(w * (log.rewards - q), w)
    direct = _mean(v)

    def value(k: np.ndarray) -> float:
        return direct(k) + correction(k)

    return _estimate("sndr", value, log.n, kish_ess(w), n_bootstrap=n_bootstrap, seed=seed,
                     level=level)


def switch_dr(action, behavior_prob, target_probs, rewards, q_hat, *, tau: float,
              behavior_probs=None, n_bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0,
              level: float = DEFAULT_LEVEL) -> OPEEstimate:
    """Switch-DR, (1/n) sum_i [v_i + w_i 1{w_i <= tau} (r_i - q_i)] (Wang et al. 2017, sec.
    4.1): DR on the actions whose weight is at most tau, the model alone on the rest (summing
    Wang's per-action split over a ~ pi leaves this per-row form). tau = inf is DR; tau -> 0
    is DM. ESS is Kish's of the weights kept."""
    _check_cap("tau", tau)
    log = checked_bandit(action, behavior_prob, target_probs, rewards, q_hat=q_hat,
                         behavior_probs=behavior_probs)
    v, q = _with_model(log)
    kept = np.where(log.ratios <= tau, log.ratios, 0.0)
    return _estimate("switch_dr", _mean(v + kept * (log.rewards - q)), log.n, kish_ess(kept),
                     n_bootstrap=n_bootstrap, seed=seed, level=level)
