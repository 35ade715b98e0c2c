"""Importance weights in log space, per trajectory and per step (pure NumPy).

Rows are sorted by trajectory, then time; ``traj`` (n,) is each row's trajectory index in
[0, N), ``pos`` (n,) its step t within the trajectory and ``length`` (N,) the lengths L_i.

    log w_{i,t} = sum_{t' <= t} log rho_{i,t'}          cumulative ratio (-inf after a 0)
    D_t         = sum_i k_i w_{i, min(t, L_i - 1)}       step-t normaliser

D_t is the weighted-per-decision normaliser of Precup et al. (2000) and Thomas & Brunskill
(2016, WDR): a trajectory that has ended is an absorbing state (reward 0, ratio 1), so it keeps
its last weight in later steps' normalisers. k_i is a bootstrap multiplicity (1 on the data as
drawn), passed as log k. Working in log space keeps products of many ratios finite.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["cumulative_log_ratios", "group_logsumexp", "is_empty", "log", "log_kish_ess",
           "log_step_denominators", "logsumexp", "shares", "trajectory_layout"]


def log(values: np.ndarray) -> np.ndarray:
    """log(values), -inf at 0 without a warning."""
    with np.errstate(divide="ignore"):
        return np.log(values)


def logsumexp(values: np.ndarray) -> float:
    """log sum exp(values); -inf when empty or all -inf."""
    top = values.max(initial=-np.inf)
    if not np.isfinite(top):
        return float(top)
    return float(top + np.log(np.exp(values - top).sum()))


def group_logsumexp(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """log sum exp(values) per group id in [0, n_groups), -inf for empty groups."""
    top = np.full(n_groups, -np.inf)
    np.maximum.at(top, groups, values)
    shift = np.where(np.isfinite(top), top, 0.0)
    sums = np.bincount(groups, weights=np.exp(values - shift[groups]), minlength=n_groups)
    return log(sums) + shift


def log_kish_ess(log_weights: np.ndarray) -> float:
    """Kish's effective sample size (sum w)^2 / sum w^2 from log w, without leaving log space
    (0 when every weight is 0)."""
    total = logsumexp(log_weights)
    if not np.isfinite(total):
        return 0.0
    return float(np.exp(2 * total - logsumexp(2 * log_weights)))


def trajectory_layout(starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                    np.ndarray]:
    """(start_idx (N,), traj (n,), pos (n,), length (N,)) from ``starts`` (n,) bool, True on
    each trajectory's first row."""
    start_idx = np.flatnonzero(starts)
    traj = np.cumsum(starts) - 1
    pos = np.arange(len(starts)) - start_idx[traj]
    length = np.diff(np.append(start_idx, len(starts)))
    return start_idx, traj, pos, length


def cumulative_log_ratios(ratios: np.ndarray, start_idx: np.ndarray,
                          traj: np.ndarray) -> np.ndarray:
    """log prod_{t' <= t} rho_{i,t'} per row (rows sorted by trajectory, then time); -inf from
    a trajectory's first zero ratio on."""
    zero = ratios == 0
    logs = np.log(np.where(zero, 1.0, ratios))
    summed = np.cumsum(logs)
    within = summed - (summed - logs)[start_idx][traj]
    zeros = np.cumsum(zero)
    seen_zero = zeros - (zeros - zero)[start_idx][traj] > 0
    return np.where(seen_zero, -np.inf, within)


def log_step_denominators(log_w: np.ndarray, log_w_last: np.ndarray, traj: np.ndarray,
                          pos: np.ndarray, length: np.ndarray, log_k: np.ndarray) -> np.ndarray:
    """(T,) log D_t for t < T = max L_i, ended trajectories keeping their last weight.

    ``log_w`` (n,) per row, ``log_w_last`` (N,) each trajectory's last log weight, ``log_k``
    (N,) log multiplicities.
    """
    horizon = int(length.max())
    alive = group_logsumexp(log_w + log_k[traj], pos, horizon)  # (T,) over trajectories at t
    ended_at = group_logsumexp(log_w_last + log_k, length, horizon + 1)[:horizon]
    return np.logaddexp(alive, np.logaddexp.accumulate(ended_at))


def shares(log_numerator: np.ndarray, log_denominator: np.ndarray) -> np.ndarray:
    """exp(log_numerator - log_denominator), 0 where both are -inf."""
    with np.errstate(invalid="ignore"):
        share = np.exp(log_numerator - log_denominator)
    return np.where(np.isnan(share), 0.0, share)


def is_empty(log_denominator: float) -> bool:
    """True when a normaliser is 0 (every weight 0): the weighted estimate is undefined."""
    return not math.isfinite(log_denominator)
