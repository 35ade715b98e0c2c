"""Normalised capped importance sampling (NCIS): off-policy value of a target policy from a log.

SL-MGAC section 4.4 (EQUATIONS.md 1.19 and 3) reports "the cumulative reward across all
trajectories of test users" estimated by NCIS. A trajectory i is one user's requests in the
held-out log, in time order (t = 0, 1, ..., L_i - 1), and

    rho_{i,t} = pi(a_{i,t} | s_{i,t}) / pi_beta(a_{i,t} | s_{i,t})       step ratio
    W_i       = prod_t rho_{i,t},    W̄_i = min(c, W_i)                  capped trajectory weight
    G_i       = sum_t gamma^t r_{i,t}                                     (gamma = 1: the paper)
    J         = sum_i W̄_i G_i / sum_i W̄_i                               (EQUATIONS.md 3)

J estimates the mean per-trajectory (per-user) return of the target policy; the paper does
not say whether it reports J or the total N * J (:attr:`NCISEstimate.total`).

Bias and variance. Over 40+ requests W_i is a product of many ratios: its logarithm is a
random walk, so W_i is log-normal-like and a handful of trajectories hold almost all the
weight (the effective sample size collapses) while the rest are ~0. Self-normalisation makes
J a weighted mean of observed returns (always inside their range, biased O(1/N), consistent);
the cap c bounds any one trajectory's influence, which cuts the variance but biases J towards
the returns of trajectories that are likely under *both* policies (with c -> 0 every
trajectory with W_i > c gets the same weight and J tends to the mean return of those). c = inf
is plain weighted importance sampling. Since E_beta[W_i] = 1, a fixed c reads "at most c times
an average trajectory's weight"; ``cap="quantile:q"`` caps the top (1 - q) share instead.
Weights are computed in log space (log W_i = sum_t log rho_{i,t}, then shifted by their
maximum, which self-normalisation cancels), so no product over- or underflows.

In the live world (benchmarks/ncis_accuracy.py) this bias is large for targets far from the
logging policy: trajectories whose logged actions all agree with such a target are short, so
the weight lands on short, low-return users (always-inject: ~5 requests per user by weight
against 29 on-policy) and J comes out 60-90% low, whatever the cap. Check the effective sample
size before trusting J.

The per-decision variant (``kind="per_decision"``, weighted per-decision IS, Precup et al.
2000; Thomas 2015) weights each reward by its capped cumulative ratio up to that step,
w_{i,t} = min(c, prod_{t' <= t} rho_{i,t'}), normalised per step over all trajectories:

    J_pd = sum_t sum_i w_{i,t} gamma^t r_{i,t} / sum_i w_{i,t}

A trajectory that has ended is an absorbing state (reward 0, ratio 1): it keeps its last
weight in later steps' denominators, so target == behaviour gives the mean return exactly.
Early rewards are not multiplied by later ratios, so its variance is lower over long
trajectories; like J it is biased for finite N and c.

The step-wise variant (``kind="stepwise"``, EQUATIONS.md 3's form for long horizons) weights
each step by its own capped ratio only, rhō_{i,t} = min(c, rho_{i,t}):

    J_step = (1/N) sum_{i,t} rhō_{i,t} gamma^t r_{i,t} / mean_{i,t}(rhō_{i,t})

It is the target's mean reward per request on the *logged* states times the logged requests
per user: it ignores how the policy changes the states visited (session length, affinity
drift), so it is biased wherever those effects are large, but its variance does not grow with
the trajectory length. In the live world the state shift is small and J_step is the usable
one (benchmarks/ncis_accuracy.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from rliv_ray import schema as S
from rliv_ray.data.live_metrics import allocation_rewards
from rliv_ray.grouping import group_starts
from rliv_ray.ope.common import DEFAULT_BOOTSTRAP, bootstrap_interval, check_options
from rliv_ray.ope.weights import (
    cumulative_log_ratios,
    is_empty,
    log_kish_ess,
    log_step_denominators,
    shares,
    trajectory_layout,
)
from rliv_ray.ope.weights import log as _log
from rliv_ray.ope.weights import logsumexp as _logsumexp

__all__ = ["DEFAULT_BOOTSTRAP", "DEFAULT_CAP", "DEFAULT_KIND", "KINDS", "NCISEstimate",
           "evaluate_policy_ncis", "ncis", "ncis_steps", "resolve_log_cap", "step_ratios"]

DEFAULT_CAP: float | str = 10.0
"""Default c = 10: ten times the expected trajectory weight E_beta[W] = 1, the middle of the
values EQUATIONS.md 3 suggests (5, 10, 100). Fixed rather than a quantile so that every policy
is scored with the same rule. On the live world (benchmarks/ncis_accuracy.py) it is as good as
any cap for targets near the logging policy; no cap rescues targets far from it."""
KINDS = ("trajectory", "per_decision", "stepwise")
DEFAULT_KIND = "stepwise"
"""The step-wise form: on the live world it is within 10% of the true value for every target
tried (mean absolute error 2.7-6.2%), where trajectory and per-decision weights are 50-90% low
for targets far from the logging policy (benchmarks/RESULTS.md, "NCIS accuracy")."""
_QUANTILE = "quantile:"


@dataclass(frozen=True)
class NCISEstimate:
    """An NCIS estimate of a target policy's mean per-trajectory return, with diagnostics."""

    value: float  # J, mean return per trajectory (per user)
    ci_low: float  # bootstrap percentile interval over trajectories (nan without resamples)
    ci_high: float
    cap: float  # c actually used (a quantile cap resolved to its value)
    capped_share: float  # share of trajectory weights (per_decision, stepwise: step weights)
    # above c
    effective_sample_size: float  # (sum W̄)^2 / sum W̄^2 of the capped trajectory weights
    # (stepwise: of the capped step ratios)
    effective_sample_size_uncapped: float  # the same for W
    n_trajectories: int
    kind: str

    @property
    def total(self) -> float:
        """N * J: the cumulative reward over all trajectories of the held-out users."""
        return self.value * self.n_trajectories


def step_ratios(target_prob_of_logged_action, behavior_prob) -> np.ndarray:
    """rho = pi(a_logged | s) / pi_beta(a_logged | s) per step, float64 (shape of the inputs).

    Raises ValueError naming the argument unless both are finite and of one shape, target
    probabilities lie in [0, 1] and behaviour probabilities in (0, 1].
    """
    target = np.asarray(target_prob_of_logged_action, dtype=np.float64)
    behavior = np.asarray(behavior_prob, dtype=np.float64)
    if target.shape != behavior.shape:
        raise ValueError(f"target_prob_of_logged_action has shape {target.shape} but "
                         f"behavior_prob has shape {behavior.shape}")
    if not np.all(np.isfinite(target) & (target >= 0) & (target <= 1)):
        raise ValueError("target_prob_of_logged_action must be finite probabilities in [0, 1]")
    if not np.all(np.isfinite(behavior) & (behavior > 0) & (behavior <= 1)):
        raise ValueError("behavior_prob must be finite probabilities in (0, 1]")
    return target / behavior


def resolve_log_cap(cap: float | str, log_weights: np.ndarray) -> float:
    """log c for ``cap``: a number c > 0 (``math.inf``: no cap) or ``"quantile:q"``, q in
    (0, 1], the empirical q-quantile (inverted CDF) of the weights ``exp(log_weights)``."""
    if isinstance(cap, str):
        if not cap.startswith(_QUANTILE):
            raise ValueError(f"cap must be a number > 0 or 'quantile:q', got {cap!r}")
        try:
            q = float(cap[len(_QUANTILE):])
        except ValueError:
            raise ValueError(f"cap must be a number > 0 or 'quantile:q', got {cap!r}") from None
        if not 0 < q <= 1:
            raise ValueError(f"cap quantile must be in (0, 1], got {q}")
        log_cap = float(np.quantile(log_weights, q, method="inverted_cdf"))
        if log_cap == -np.inf:
            raise ValueError(f"cap {cap!r} is 0: at least that share of the weights are 0")
        return log_cap
    if isinstance(cap, bool) or not isinstance(cap, int | float) or not cap > 0:
        raise ValueError(f"cap must be a number > 0 or 'quantile:q', got {cap!r}")
    return math.log(cap)


def _cap_value(cap: float | str, log_cap: float) -> float:
    """c as reported: the number given, or the resolved quantile."""
    return float(cap) if not isinstance(cap, str) else math.exp(log_cap)


def _bootstrap(value_fn: Callable[[np.ndarray], float], n: int, n_bootstrap: int, seed: int,
               level: float) -> tuple[float, float]:
    """Percentile interval of ``value_fn(log k)`` over resamples of the n trajectories, k_i =
    how often trajectory i is drawn (a weighted estimator with multiplicity k_i is the
    estimator on the resample; :func:`rliv_ray.ope.common.bootstrap_interval`)."""
    return bootstrap_interval(lambda k: value_fn(_log(k)), n, n_bootstrap=n_bootstrap,
                              seed=seed, level=level)


def _bootstrapped(value_fn: Callable[[np.ndarray], float], n: int, empty: str, *,
                  n_bootstrap: int, seed: int, level: float) -> tuple[float, float, float]:
    """``value_fn`` on the n trajectories as drawn, and its bootstrap interval; ``empty`` is the
    error when it is nan (every weight 0)."""
    estimate = value_fn(np.zeros(n))
    if math.isnan(estimate):
        raise ValueError(empty)
    return (estimate, *_bootstrap(value_fn, n, n_bootstrap, seed, level))


def _trajectory_value(log_w: np.ndarray, returns: np.ndarray) -> float:
    """sum_i w_i G_i / sum_i w_i with w = exp(log_w); nan if every weight is 0."""
    total = _logsumexp(log_w)
    if not np.isfinite(total):
        return math.nan
    return float(np.exp(log_w - total) @ returns)


def ncis(returns, *, log_weights=None, weights=None, cap: float | str = DEFAULT_CAP,
         n_bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0, level: float = 0.95
         ) -> NCISEstimate:
    """Trajectory-level NCIS, J = sum_i min(c, W_i) G_i / sum_i min(c, W_i) (EQUATIONS.md 3).

    ``returns`` (N,) are the G_i; give the trajectory weights either as ``log_weights`` (N,)
    log W_i (-inf for W_i = 0; preferred: products of many ratios overflow) or ``weights``
    (N,) W_i >= 0. The interval resamples trajectories with the cap held fixed.
    """
    returns = np.asarray(returns, dtype=np.float64)
    if (log_weights is None) == (weights is None):
        raise ValueError("give exactly one of log_weights and weights")
    if log_weights is None:
        weights = np.asarray(weights, dtype=np.float64)
        if not np.all(np.isfinite(weights) & (weights >= 0)):
            raise ValueError("weights must be finite and >= 0")
        log_weights = _log(weights)
    log_weights = np.asarray(log_weights, dtype=np.float64)
    if returns.ndim != 1 or log_weights.shape != returns.shape or len(returns) == 0:
        raise ValueError(f"returns and weights must be non-empty (N,) arrays of one shape, got "
                         f"{returns.shape} and {log_weights.shape}")
    if not np.all(np.isfinite(returns)):
        raise ValueError("returns must be finite")
    if np.isnan(log_weights).any() or (log_weights == np.inf).any():
        raise ValueError("log_weights must be finite or -inf")
    check_options(n_bootstrap, level)
    log_cap = resolve_log_cap(cap, log_weights)
    capped = np.minimum(log_weights, log_cap)
    value = _trajectory_value(capped, returns)
    if math.isnan(value):
        raise ValueError("every trajectory has importance weight 0: the target policy never "
                         "takes a logged trajectory's actions")
    low, high = _bootstrap(lambda log_k: _trajectory_value(capped + log_k, returns),
                           len(returns), n_bootstrap, seed, level)
    return NCISEstimate(value, low, high, _cap_value(cap, log_cap),
                        float(np.mean(log_weights > log_cap)), log_kish_ess(capped),
                        log_kish_ess(log_weights), len(returns), "trajectory")


def _per_decision_value(log_w: np.ndarray, log_w_last: np.ndarray, traj: np.ndarray,
                        pos: np.ndarray, length: np.ndarray, discounted: np.ndarray,
                        log_k: np.ndarray) -> float:
    """sum_t sum_i w_{i,t} gamma^t r_{i,t} / sum_i w_{i,t}, ended trajectories keeping their
    last weight (times multiplicity k_i); nan if every weight is 0."""
    denominator = log_step_denominators(log_w, log_w_last, traj, pos, length, log_k)  # (T,)
    if is_empty(denominator[0]):
        return math.nan
    return float(shares(log_w + log_k[traj], denominator[pos]) @ discounted)


def _check_steps(rewards: np.ndarray, ratios: np.ndarray, starts: np.ndarray) -> None:
    if rewards.ndim != 1 or len(rewards) == 0:
        raise ValueError(f"rewards must be a non-empty (n,) array, got shape {rewards.shape}")
    for name, values in (("ratios", ratios), ("starts", starts)):
        if values.shape != rewards.shape:
            raise ValueError(f"{name} has shape {values.shape}, rewards {rewards.shape}")
    if not np.all(np.isfinite(rewards)):
        raise ValueError("rewards must be finite")
    if not np.all(np.isfinite(ratios) & (ratios >= 0)):
        raise ValueError("ratios must be finite and >= 0")
    if not starts[0]:
        raise ValueError("starts[0] must be True (row 0 starts a trajectory)")


def _stepwise(discounted: np.ndarray, ratios: np.ndarray, start_idx: np.ndarray, *,
              cap: float | str, n_bootstrap: int, seed: int, level: float) -> NCISEstimate:
    """J_step = (1/N) sum rhō r / mean(rhō) (module docstring), bootstrapped over
    trajectories."""
    log_ratios = _log(ratios)
    log_cap = resolve_log_cap(cap, log_ratios)
    capped = np.exp(np.minimum(log_ratios, log_cap))
    weighted = np.add.reduceat(capped * discounted, start_idx)  # (N,) per trajectory
    weight = np.add.reduceat(capped, start_idx)
    steps = np.diff(np.append(start_idx, len(ratios))).astype(np.float64)

    def value(log_k: np.ndarray) -> float:
        k = np.exp(log_k)
        if not k @ weight > 0:
            return math.nan
        return float((k @ weighted) / (k @ weight) * (k @ steps) / k.sum())

    estimate, low, high = _bootstrapped(
        value, len(start_idx), "every step has importance weight 0: the target policy never "
        "takes a logged action", n_bootstrap=n_bootstrap, seed=seed, level=level)
    return NCISEstimate(estimate, low, high, _cap_value(cap, log_cap),
                        float(np.mean(log_ratios > log_cap)), log_kish_ess(_log(capped)),
                        log_kish_ess(log_ratios), len(start_idx), "stepwise")


def ncis_steps(rewards, ratios, starts, *, kind: str = DEFAULT_KIND,
               cap: float | str = DEFAULT_CAP, gamma: float = 1.0,
               n_bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0, level: float = 0.95
               ) -> NCISEstimate:
    """NCIS from steps: ``rewards`` (n,) r_t, ``ratios`` (n,) rho_t (see :func:`step_ratios`)
    and ``starts`` (n,) bool, True on each trajectory's first row; rows sorted by trajectory,
    then time. ``kind`` is ``"trajectory"`` (EQUATIONS.md 3's main form), ``"per_decision"`` or
    ``"stepwise"`` (module docstring; the default, :data:`DEFAULT_KIND`). A quantile cap is
    taken over all steps' cumulative weights (per-decision) or step ratios (step-wise).
    G_i = sum_t gamma^t r_{i,t}, t counting from 0 per trajectory.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    ratios = np.asarray(ratios, dtype=np.float64)
    starts = np.asarray(starts, dtype=bool)
    _check_steps(rewards, ratios, starts)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not 0 <= gamma <= 1:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    check_options(n_bootstrap, level)
    start_idx, traj, pos, length = trajectory_layout(starts)  # (N,), (n,), (n,), (N,)
    discounted = rewards * gamma**pos
    if kind == "stepwise":
        return _stepwise(discounted, ratios, start_idx, cap=cap, n_bootstrap=n_bootstrap,
                         seed=seed, level=level)
    log_w = cumulative_log_ratios(ratios, start_idx, traj)
    last = start_idx + length - 1
    if kind == "trajectory":
        return ncis(np.add.reduceat(discounted, start_idx), log_weights=log_w[last], cap=cap,
                    n_bootstrap=n_bootstrap, seed=seed, level=level)
    log_cap = resolve_log_cap(cap, log_w)
    capped = np.minimum(log_w, log_cap)

    def value(log_k: np.ndarray) -> float:
        return _per_decision_value(capped, capped[last], traj, pos, length, discounted, log_k)

    estimate, low, high = _bootstrapped(
        value, len(start_idx), "every trajectory has importance weight 0 from its first step: "
        "the target policy never takes the logged first actions", n_bootstrap=n_bootstrap,
        seed=seed, level=level)
    return NCISEstimate(estimate, low, high, _cap_value(cap, log_cap),
                        float(np.mean(log_w > log_cap)),
                        log_kish_ess(capped[last]), log_kish_ess(log_w[last]), len(start_idx),
                        "per_decision")


LogTable = pa.Table | pd.DataFrame | dict
_LOG_COLUMNS = (S.USER_ID, S.USER_REQUEST_IDX, S.ACTION, S.BEHAVIOR_PROB, S.LIVE_WATCH_S,
                S.VIDEO_WATCH_S, S.N_VIDEOS)


def _column_names(log: LogTable) -> list[str]:
    if isinstance(log, pa.Table):
        return log.column_names
    return list(log.columns) if isinstance(log, pd.DataFrame) else list(log)


def _column(log: LogTable, name: str) -> np.ndarray:
    return log[name].to_numpy() if isinstance(log, pa.Table) else np.asarray(log[name])


def evaluate_policy_ncis(log: LogTable, target_prob_fn: Callable[[LogTable], np.ndarray], *,
                         beta: float, cap: float | str = DEFAULT_CAP, gamma: float = 1.0,
                         kind: str = DEFAULT_KIND, n_bootstrap: int = DEFAULT_BOOTSTRAP,
                         seed: int = 0, level: float = 0.95) -> NCISEstimate:
    """NCIS value of a target policy on a live-stream allocation log (SL-MGAC section 4.4).

    ``log`` is an Arrow table, a DataFrame or a dict of column arrays with the log columns
    USER_ID, USER_REQUEST_IDX, ACTION, BEHAVIOR_PROB, LIVE_WATCH_S, VIDEO_WATCH_S, N_VIDEOS
    (and LIVE_ID), in any row order; ``target_prob_fn(log)`` returns the target policy's
    P(a = 1) for its rows, shape (n,), in the same order. Where LIVE_ID = -1 (nothing on air)
    the world forces a = 0 for every policy, so the target's P(a = 1) is taken as 0 there.
    Rewards are SL-MGAC Eq. 5 with ``beta``; a trajectory is one user's rows ordered by
    USER_REQUEST_IDX. Returns J, the mean (discounted with ``gamma``) return per user.
    """
    missing = [name for name in _LOG_COLUMNS if name not in _column_names(log)]
    if missing:
        raise ValueError(f"not a live-stream allocation log: missing columns {missing}")
    if not beta >= 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    cols = {name: _column(log, name) for name in _LOG_COLUMNS}
    n = len(cols[S.USER_ID])
    p_inject = np.asarray(target_prob_fn(log), dtype=np.float64)
    if p_inject.shape != (n,) or not np.all((p_inject >= 0) & (p_inject <= 1)):
        raise ValueError(f"target_prob_fn must return ({n},) probabilities in [0, 1], got "
                         f"shape {p_inject.shape}")
    action = cols[S.ACTION]
    if not np.all((action == 0) | (action == 1)):
        raise ValueError(f"{S.ACTION} must be 0 or 1")
    if S.LIVE_ID in _column_names(log):
        p_inject = np.where(_column(log, S.LIVE_ID) == S.NO_LIVE, 0.0, p_inject)
    rho = step_ratios(np.where(action == 1, p_inject, 1.0 - p_inject), cols[S.BEHAVIOR_PROB])
    reward = allocation_rewards(action, cols[S.LIVE_WATCH_S], cols[S.VIDEO_WATCH_S],
                                cols[S.N_VIDEOS], beta)
    order = np.lexsort((cols[S.USER_REQUEST_IDX], cols[S.USER_ID]))
    return ncis_steps(reward[order], rho[order], group_starts(cols[S.USER_ID][order]),
                      kind=kind, cap=cap, gamma=gamma, n_bootstrap=n_bootstrap, seed=seed,
                      level=level)
