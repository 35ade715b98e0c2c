"""Sequential off-policy estimators over trajectories, pure NumPy.

Rows are steps, sorted by trajectory then time, ``trajectory`` (n,) holding each row's id (one
contiguous run per id; ``ncis.py``'s convention). Per step: logged action a_t, its logging
propensity mu_t (``behavior_prob``), the target's distribution pi(. | s_t) (``target_probs``,
(n, A)), reward r_t and optionally a value model q(s_t, .) of the *target* policy (``q_hat``,
(n, A); e.g. from :mod:`rliv_ray.ope.fqe`). With rho_t = pi(a_t|s_t) / mu_t,

    w_t = prod_{t' <= t} rho_t',  w_{-1} = 1,  v_t = sum_a pi(a|s_t) q(s_t, a),  q_t = q(s_t, a_t)

the value V(pi) = E[sum_t gamma^t r_t] of one trajectory is estimated by

    PDIS   (1/N) sum_i sum_t gamma^t w_{i,t} r_{i,t}                 Precup et al. 2000, Eq. 3
    WPDIS  sum_t gamma^t sum_i w_{i,t} r_{i,t} / sum_i w_{i,t}      Precup et al. 2000;
                                                                   Thomas 2015 (CWPDIS)
    DR     (1/N) sum_i sum_t gamma^t [w_{i,t} (r_{i,t} - q_{i,t}) + w_{i,t-1} v_{i,t}]
                                                                   Jiang & Li 2016, Eq. 10;
                                                                   Thomas & Brunskill 2016, Eq. 5
    WDR    the same with w_{i,t} -> w_{i,t} / sum_j w_{j,t}        Thomas & Brunskill 2016, Eq. 6
    MAGIC  x* . g, g_j the WDR-style j-step returns (DM at j = -1, WDR at j = H - 1), x* on the
           simplex minimising x' (Omega + b b') x                   Thomas & Brunskill 2016, Alg. 1

A trajectory that has ended is an absorbing state (ratio 1, reward 0, q = v = 0): in the
weighted forms it keeps its last weight in later steps' normalisers, so a target equal to the
logging policy gets exactly the mean logged return from WPDIS. Every estimate is of the return
over the *logged* horizon: for SL-MGAC's infinite MDP a trajectory cut at the end of the log
is valued over the steps it has (FQE, by contrast, bootstraps past a non-terminal last step).

What each assumes. All: the logged actions were drawn from mu with the logged propensities
(sequential ignorability, no hidden confounders), pi covered by mu (:mod:`rliv_ray.ope.support`)
and whole trajectories independent. PDIS and DR are unbiased under that (DR for any q);
WPDIS, WDR and MAGIC are biased O(1/N) and consistent, with far lower variance when weights are
uneven. DR/WDR/MAGIC lean on q; the Markov property matters only for q being right. The
bootstrap resamples whole trajectories (:mod:`rliv_ray.ope.common`). On RLIV-UA's
exposure-selected rows every one of them inherits the per-row bias described in
:mod:`rliv_ray.ope.estimators` (the propensity is of the weight draw, not of the exposure):
PDIS and WPDIS still value the logging policy itself right (all weights 1) and no other;
DR, WDR and MAGIC are biased even for the logging policy (their control variate
w_{t-1} v_t - w_t q_t has mean 0 only when a_t ~ mu(. | s_t)).

Kish's effective sample size is reported over the trajectory weights W_i = w_{i, L_i - 1}.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import optimize

from rliv_ray.grouping import group_starts
from rliv_ray.ope.common import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_LEVEL,
    OPEEstimate,
    bootstrap_interval,
    bootstrap_values,
    check_options,
    percentile_interval,
)
from rliv_ray.ope.support import CheckedLog, checked_bandit, logged_target_prob
from rliv_ray.ope.weights import (
    cumulative_log_ratios,
    is_empty,
    log,
    log_kish_ess,
    log_step_denominators,
    logsumexp,
    shares,
    trajectory_layout,
)

__all__ = ["DEFAULT_BIAS_LEVEL", "DEFAULT_HORIZONS", "MagicBlend", "Steps", "checked_steps",
           "doubly_robust_steps", "magic", "magic_blend", "partial_returns", "pdis",
           "weighted_dr", "wpdis"]

DEFAULT_HORIZONS = 10
"""MAGIC blends at most this many j-step returns, evenly spaced over j = -1 .. H - 1 (both
ends always in): Thomas & Brunskill's J; more adds cost, not accuracy (their Fig. 2)."""
DEFAULT_BIAS_LEVEL = 0.9
"""MAGIC's bias of g_j is its distance to a bootstrap interval of WDR (Thomas & Brunskill
2016, Alg. 1); 90%, as in the COBS implementation (Voloshin et al. 2019)."""


@dataclass(frozen=True)
class Steps:
    """Validated trajectories: the per-row log, the layout and the cumulative log weights."""

    log: CheckedLog
    traj: np.ndarray  # (n,) trajectory index in [0, N)
    pos: np.ndarray  # (n,) t within the trajectory
    length: np.ndarray  # (N,) L_i
    start_idx: np.ndarray  # (N,) first row of each trajectory
    log_w: np.ndarray  # (n,) log w_{i,t}
    discount: np.ndarray  # (n,) gamma^t

    @property
    def n_trajectories(self) -> int:
        return len(self.length)

    @property
    def log_w_last(self) -> np.ndarray:  # (N,) log W_i
        return self.log_w[self.start_idx + self.length - 1]

    def log_w_prev(self) -> np.ndarray:  # (n,) log w_{i,t-1}, 0 at t = 0
        prev = np.concatenate([[0.0], self.log_w[:-1]])
        return np.where(self.pos == 0, 0.0, prev)


def checked_steps(action, behavior_prob, target_probs, rewards, trajectory, *, gamma: float,
                  q_hat=None, behavior_probs=None) -> Steps:
    """Every support check of :func:`rliv_ray.ope.support.checked_bandit`, then the layout."""
    if not 0 <= gamma <= 1:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    log_ = checked_bandit(action, behavior_prob, target_probs, rewards, q_hat=q_hat,
                          behavior_probs=behavior_probs)
    trajectory = np.asarray(trajectory)
    if trajectory.shape != (log_.n,):
        raise ValueError(f"trajectory has shape {trajectory.shape}, expected ({log_.n},)")
    starts = group_starts(trajectory)
    if starts.sum() != len(np.unique(trajectory)):
        raise ValueError("trajectory ids must form one contiguous run each (rows sorted by "
                         "trajectory, then time)")
    start_idx, traj, pos, length = trajectory_layout(starts)
    log_w = cumulative_log_ratios(log_.ratios, start_idx, traj)
    return Steps(log_, traj, pos, length, start_idx, log_w, float(gamma) ** pos)


def _model_terms(steps: Steps) -> tuple[np.ndarray, np.ndarray]:
    """(v_t, q_t) per row from the value model."""
    log_ = steps.log
    if log_.q_hat is None:
        raise ValueError("q_hat (n, n_actions) is required: this estimator uses a value model")
    return (log_.target_probs * log_.q_hat).sum(axis=1), logged_target_prob(log_.action,
                                                                           log_.q_hat)


def _estimate(name: str, steps: Steps, value_fn: Callable[[np.ndarray], float], *,
              n_bootstrap: int, seed: int, level: float) -> OPEEstimate:
    """``value_fn(k)`` at k = 1 and its interval over resamples of whole trajectories."""
    check_options(n_bootstrap, level)
    n = steps.n_trajectories
    value = value_fn(np.ones(n))
    if math.isnan(value):
        raise ValueError(f"{name}: every trajectory has importance weight 0 from its first "
                         f"step: the target never takes the logged first actions")
    low, high = bootstrap_interval(value_fn, n, n_bootstrap=n_bootstrap, seed=seed, level=level)
    return OPEEstimate(name, value, low, high, log_kish_ess(steps.log_w_last), n,
                       "trajectories", level)


def _per_trajectory_mean(steps: Steps, row_terms: np.ndarray) -> Callable[[np.ndarray], float]:
    """k-weighted mean over trajectories of sum_t row_terms."""
    per_trajectory = np.add.reduceat(row_terms, steps.start_idx)  # (N,)
    return lambda k: float(k @ per_trajectory / k.sum())


def _normalised(steps: Steps, k: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(k_i w_{i,t} / D_t, k_i w_{i,t-1} / D_{t-1}) per row, D_{-1} = sum k; None if D_0 = 0."""
    log_k = log(k)
    denominator = log_step_denominators(steps.log_w, steps.log_w_last, steps.traj, steps.pos,
                                        steps.length, log_k)  # (T,)
    if is_empty(denominator[0]):
        return None
    rows = steps.log_w + log_k[steps.traj]
    before = np.concatenate([[logsumexp(log_k)], denominator])  # (T + 1,) D_{t-1} at t
    return (shares(rows, denominator[steps.pos]),
            shares(steps.log_w_prev() + log_k[steps.traj], before[steps.pos]))


def pdis(action, behavior_prob, target_probs, rewards, trajectory, *, gamma: float = 1.0,
         behavior_probs=None, n_bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0,
         level: float = DEFAULT_LEVEL) -> OPEEstimate:
    """Per-decision importance sampling, (1/N) sum_i sum_t gamma^t w_{i,t} r_{i,t}: unbiased,
    variance growing with the horizon (module docstring)."""
    steps = checked_steps(action, behavior_prob, target_probs, rewards, trajectory, gamma=gamma,
                          behavior_probs=behavior_probs)
    terms = steps.discount * np.exp(steps.log_w) * steps.log.rewards
    return _estimate("pdis", steps, _per_trajectory_mean(steps, terms),
                     n_bootstrap=n_bootstrap, seed=seed, level=level)


def wpdis(action, behavior_prob, target_probs, rewards, trajectory, *, gamma: float = 1.0,
          behavior_probs=None, n_bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0,
          level: float = DEFAULT_LEVEL) -> OPEEstimate:
    """Weighted per-decision IS, sum_t gamma^t sum_i w_{i,t} r_{i,t} / D_t (module docstring;
    equals ``ncis_steps(kind="per_decision", cap=inf)``)."""
    steps = checked_steps(action, behavior_prob, target_probs, rewards, trajectory, gamma=gamma,
                          behavior_probs=behavior_probs)
    discounted = steps.discount * steps.log.rewards

    def value(k: np.ndarray) -> float:
        normalised = _normalised(steps, k)
        return math.nan if normalised is None else float(normalised[0] @ discounted)

    return _estimate("wpdis", steps, value, n_bootstrap=n_bootstrap, seed=seed, level=level)


def doubly_robust_steps(action, behavior_prob, target_probs, rewards, trajectory, q_hat, *,
                        gamma: float = 1.0, behavior_probs=None,
                        n_bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0,
                        level: float = DEFAULT_LEVEL) -> OPEEstimate:
    """Sequential doubly robust (Jiang & Li 2016), (1/N) sum_i sum_t gamma^t [w_{i,t} (r_{i,t}
    - q_{i,t}) + w_{i,t-1} v_{i,t}]: unbiased for any q when the propensities are right."""
    steps = checked_steps(action, behavior_prob, target_probs, rewards, trajectory, gamma=gamma,
                          q_hat=q_hat, behavior_probs=behavior_probs)
    v, q = _model_terms(steps)
    terms = steps.discount * (np.exp(steps.log_w) * (steps.log.rewards - q)
                              + np.exp(steps.log_w_prev()) * v)
    return _estimate("dr_steps", steps, _per_trajectory_mean(steps, terms),
                     n_bootstrap=n_bootstrap, seed=seed, level=level)


def partial_returns(steps: Steps, k: np.ndarray) -> np.ndarray:
    """(H + 1,) the WDR-style j-step returns g_j for j = -1 .. H - 1 (Thomas & Brunskill 2016,
    Eq. 9 with weighted weights), nan when D_0 = 0:

        g_j = sum_{t <= j} gamma^t sum_i [u_{i,t} (r_{i,t} - q_{i,t}) + u_{i,t-1} v_{i,t}]
              + gamma^{j+1} sum_i u_{i,j} v_{i,j+1},         u_{i,t} = k_i w_{i,t} / D_t

    so g_{-1} is DM (the k-weighted mean of v at the first step) and g_{H-1} is WDR.
    """
    horizon = int(steps.length.max())
    normalised = _normalised(steps, k)
    if normalised is None:
        return np.full(horizon + 1, math.nan)
    now, before = normalised
    v, q = _model_terms(steps)
    carried = steps.discount * before * v  # (n,) gamma^t u_{t-1} v_t
    step = np.bincount(steps.pos, steps.discount * now * (steps.log.rewards - q) + carried,
                       minlength=horizon)  # (H,)
    tail = np.bincount(steps.pos, carried, minlength=horizon)  # (H,) B_t
    return np.concatenate([[0.0], np.cumsum(step)]) + np.append(tail, 0.0)


def weighted_dr(action, behavior_prob, target_probs, rewards, trajectory, q_hat, *,
                gamma: float = 1.0, behavior_probs=None, n_bootstrap: int = DEFAULT_BOOTSTRAP,
                seed: int = 0, level: float = DEFAULT_LEVEL) -> OPEEstimate:
    """Weighted doubly robust (Thomas & Brunskill 2016, Eq. 6): DR with the step weights
    normalised per step; biased O(1/N), usually the lowest-error IS-based estimate."""
    steps = checked_steps(action, behavior_prob, target_probs, rewards, trajectory, gamma=gamma,
                          q_hat=q_hat, behavior_probs=behavior_probs)
    return _estimate("wdr", steps, lambda k: float(partial_returns(steps, k)[-1]),
                     n_bootstrap=n_bootstrap, seed=seed, level=level)


@dataclass(frozen=True)
class MagicBlend:
    """MAGIC's estimate with the blend it chose."""

    estimate: OPEEstimate
    horizons: np.ndarray  # (m,) j of each blended return (-1: DM, H - 1: WDR)
    partial: np.ndarray  # (m,) g_j on the data as drawn
    weights: np.ndarray  # (m,) x*, on the simplex
    bias: np.ndarray  # (m,) b_j, distance of g_j to WDR's bootstrap interval


def _simplex_minimum(matrix: np.ndarray) -> np.ndarray:
    """argmin_x x' M x over the probability simplex (M symmetric PSD, m small)."""
    m = len(matrix)
    scale = max(float(np.abs(matrix).max()), 1e-300)
    result = optimize.minimize(lambda x: x @ matrix @ x / scale, np.full(m, 1.0 / m),
                               jac=lambda x: 2 * matrix @ x / scale, method="SLSQP",
                               bounds=[(0.0, 1.0)] * m,
                               constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1}])
    x = np.clip(result.x, 0.0, None)
    return x / x.sum()


def magic_blend(action, behavior_prob, target_probs, rewards, trajectory, q_hat, *,
                gamma: float = 1.0, horizons: int = DEFAULT_HORIZONS,
                bias_level: float = DEFAULT_BIAS_LEVEL, behavior_probs=None,
                n_bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0,
                level: float = DEFAULT_LEVEL) -> MagicBlend:
    """MAGIC (Thomas & Brunskill 2016, Alg. 1): the blend x* . g of the j-step returns of
    :func:`partial_returns` for ``horizons`` values of j, with Omega the bootstrap covariance of
    g over resampled trajectories and b_j the distance of g_j to WDR's ``bias_level``
    bootstrap interval. The interval holds x* fixed (one bootstrap, not a nested one)."""
    steps = checked_steps(action, behavior_prob, target_probs, rewards, trajectory, gamma=gamma,
                          q_hat=q_hat, behavior_probs=behavior_probs)
    check_options(n_bootstrap, level)
    if n_bootstrap < 2:
        raise ValueError(f"n_bootstrap must be >= 2 for MAGIC (its covariance), got "
                         f"{n_bootstrap}")
    if not 0 < bias_level < 1:
        raise ValueError(f"bias_level must be in (0, 1), got {bias_level}")
    if horizons < 2:
        raise ValueError(f"horizons must be >= 2 (DM and WDR at least), got {horizons}")
    n = steps.n_trajectories
    top = int(steps.length.max())
    chosen = np.unique(np.round(np.linspace(-1, top - 1, min(horizons, top + 1))).astype(int))
    g = partial_returns(steps, np.ones(n))[chosen + 1]  # (m,)
    if np.isnan(g).any():
        raise ValueError("magic: every trajectory has importance weight 0 from its first step")
    draws = bootstrap_values(lambda k: partial_returns(steps, k)[chosen + 1], n, n_bootstrap,
                             seed)  # (B, m)
    draws = draws[np.isfinite(draws).all(axis=1)]
    low, high = percentile_interval(draws[:, -1], bias_level)
    bias = np.maximum(low - g, 0.0) + np.maximum(g - high, 0.0)  # (m,)
    x = _simplex_minimum(np.cov(draws, rowvar=False) + np.outer(bias, bias))
    ci_low, ci_high = percentile_interval(draws @ x, level)
    estimate = OPEEstimate("magic", float(x @ g), ci_low, ci_high,
                           log_kish_ess(steps.log_w_last), n, "trajectories", level)
    return MagicBlend(estimate, chosen, g, x, bias)


def magic(*args, **kwargs) -> OPEEstimate:
    """:func:`magic_blend`'s estimate alone (same arguments)."""
    return magic_blend(*args, **kwargs).estimate
