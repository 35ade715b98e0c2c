"""The estimators on real logs with a known answer: Bernoulli Thompson Sampling's click rate on
the Open Bandit Dataset, estimated from the uniform-random policy's log (pure NumPy).

This is the protocol of Saito, Aihara, Matsutani & Narita, "Open Bandit Dataset and Pipeline"
(NeurIPS 2021 Datasets and Benchmarks): OBD holds a week of logs of a uniform-random policy and
of a BTS policy on the same site (:mod:`rliv_ray.data.obd`), so BTS's value can be estimated
off-policy from the random log and set beside the BTS log's own mean click rate.

The value. A row is one impression: item a_i at position p_i in {0, 1, 2}, click r_i, and the
logging policy's probability mu_i = mu(a_i | p_i) of that item at that position (1/80 for the
random policy). With the position as the context, each row is one decision of the
per-decision estimators (:mod:`rliv_ray.ope.estimators`), w_i = pi(a_i | p_i) / mu_i, and

    V(pi) = E_p E_{a ~ pi(. | p)} [r | a, p]

is the click rate per impression, over positions as often as they occur in the log (about a
third each): obp's "policy value", the mean reward per row. The on-policy answer is the mean
click of the BTS log's rows.

The evaluation policy. BTS ranks the items by theta_a ~ Beta(alpha_a, beta_a), the top
``len_list`` filling positions 0, 1, 2. ZOZOTOWN's prior (obp's ``prior_bts.yaml``) is
context-free, so pi(a | p) is the same on every row; :func:`bts_action_dist` computes it by
Monte Carlo exactly as obp's ``BernoulliTS.compute_batch_action_dist`` does.

The reward model of DM, DR, SNDR and Switch-DR is a smoothed click rate per (item, position),

    q(a, p) = (clicks(a, p) + m ctr(p)) / (rows(a, p) + m),     m = ``prior_rows``

shrunk towards the position's click rate, and cross-fitted: the rows of each of ``folds``
random folds get the q fitted on the other folds, so no row's own click enters its q.

Caveats of the known answer. The prior is the BTS policy at the *start* of the week: the BTS
log's own propensities agree with :func:`bts_action_dist` in its first hour and drift away as
the production policy updated (:func:`propensity_agreement`). The BTS log's mean is the value of
that drifting policy, not of the frozen one estimated here, and it is itself one sample of
10,000 impressions (its own interval). Both caveats belong to the protocol, as obp runs it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rliv_ray.data.obd import LEN_LIST, ObdLog
from rliv_ray.ope.common import (
    DEFAULT_LEVEL,
    OPEEstimate,
    bootstrap_interval,
    check_options,
)
from rliv_ray.ope.estimators import (
    direct_method,
    doubly_robust,
    ips,
    self_normalised_dr,
    snips,
    switch_dr,
)
from rliv_ray.ope.ncis import DEFAULT_CAP, ncis_steps

__all__ = ["ESTIMATORS", "OBDCheckConfig", "bts_action_dist", "comparison_table",
           "cross_fitted_q", "estimate_all", "on_policy", "propensity_agreement",
           "smoothed_ctr", "target_probs", "uniform_action_dist"]

ESTIMATORS = ("ips", "snips", "ncis", "dm", "dr", "sndr", "switch_dr")
NAMES = {"on_policy": "on-policy mean", "ips": "IPS", "snips": "SNIPS", "ncis": "NCIS",
         "dm": "DM", "dr": "DR", "sndr": "SNDR", "switch_dr": "Switch-DR"}


@dataclass(frozen=True)
class OBDCheckConfig:
    """Settings of the OBD check; the defaults are those of obp's OBD example where it has one."""

    n_sim: int = 100_000
    """Monte Carlo rankings for BTS's action distribution (obp's default and its example's)."""
    sim_seed: int = 12345
    """Seed of the simulation's ``np.random.RandomState`` (obp's example: random_state=12345)."""
    sim_chunk: int = 10_000
    """Rankings drawn per NumPy call (memory only: the result does not depend on it)."""
    n_bootstrap: int = 1000
    """Bootstrap resamples of the rows for every interval."""
    seed: int = 0
    """Seed of the bootstrap and of the cross-fitting folds."""
    level: float = DEFAULT_LEVEL
    """Coverage of the intervals."""
    prior_rows: float = 100.0
    """m: pseudo-rows at the position's click rate added to each (item, position) cell of the
    reward model (a cell of the 10,000-row log holds about 42 rows and 0.17 clicks)."""
    folds: int = 5
    """Cross-fitting folds of the reward model."""
    switch_tau: float = DEFAULT_CAP
    """Switch-DR's tau: the importance-weighted correction on rows with w <= tau. 10, ten times
    the mean weight E_mu[w] = 1, the same rule as NCIS's cap."""
    ncis_cap: float = DEFAULT_CAP
    """NCIS's cap c on each row's weight (ncis.py's default)."""

    def __post_init__(self):
        for name in ("n_sim", "sim_chunk", "folds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.folds < 2:
            raise ValueError(f"folds must be >= 2 (cross-fitting), got {self.folds}")
        if not self.prior_rows > 0:
            raise ValueError(f"prior_rows must be > 0, got {self.prior_rows}")
        for name in ("switch_tau", "ncis_cap"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        check_options(self.n_bootstrap, self.level)


def bts_action_dist(alpha, beta, *, len_list: int = LEN_LIST, n_sim: int = 100_000,
                    seed: int = 12345, chunk: int = 10_000) -> np.ndarray:
    """pi(a | p), (n_items, len_list): the share of ``n_sim`` simulated BTS rankings that put
    item a at position p; each column sums to 1.

    Each simulation draws theta_a ~ Beta(alpha_a, beta_a) for every item and fills positions
    0 .. len_list - 1 with the items of the largest theta, in order. This is obp 0.4.1's
    ``BernoulliTS.compute_batch_action_dist`` (Saito et al. 2021) vectorised: obp draws one
    ``RandomState.beta`` vector per simulation from ``np.random.RandomState(random_state)`` and
    takes ``argsort()[::-1][:len_list]``; drawing ``chunk`` simulations per call takes the same
    numbers from the same legacy stream in the same order, so for one seed and ``n_sim`` the
    result is obp's to the last bit (checked against obp's own code). obp tiles it over the
    rounds: the prior is context-free, so the distribution is the same on every row.
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    if alpha.ndim != 1 or alpha.shape != beta.shape:
        raise ValueError(f"alpha and beta must be (n_items,), got {alpha.shape}, {beta.shape}")
    n_items = len(alpha)
    if not 1 <= len_list <= n_items:
        raise ValueError(f"len_list must be in [1, {n_items}], got {len_list}")
    if n_sim < 1 or chunk < 1:
        raise ValueError(f"n_sim and chunk must be >= 1, got {n_sim}, {chunk}")
    rng = np.random.RandomState(seed)
    counts = np.zeros((n_items, len_list))
    for start in range(0, n_sim, chunk):
        theta = rng.beta(alpha, beta, size=(min(chunk, n_sim - start), n_items))  # (s, A)
        ranked = np.argsort(theta, axis=1)[:, ::-1][:, :len_list]  # (s, L)
        for position in range(len_list):
            counts[:, position] += np.bincount(ranked[:, position], minlength=n_items)
    return counts / n_sim


def uniform_action_dist(n_items: int, len_list: int = LEN_LIST) -> np.ndarray:
    """The uniform-random policy's pi(a | p) = 1 / n_items, (n_items, len_list)."""
    return np.full((n_items, len_list), 1.0 / n_items)


def target_probs(dist: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Each row's target distribution over items at its position: (n, n_items)."""
    return np.ascontiguousarray(dist[:, position].T)


def smoothed_ctr(item: np.ndarray, position: np.ndarray, click: np.ndarray, n_items: int, *,
                 prior_rows: float, len_list: int = LEN_LIST) -> np.ndarray:
    """q(a, p) = (clicks(a, p) + m ctr(p)) / (rows(a, p) + m), (n_items, len_list)."""
    cell = item * len_list + position
    rows = np.bincount(cell, minlength=n_items * len_list).reshape(n_items, len_list)
    clicks = np.bincount(cell, weights=click, minlength=n_items * len_list).reshape(
        n_items, len_list)
    ctr = clicks.sum(axis=0) / np.maximum(rows.sum(axis=0), 1)  # (L,)
    return (clicks + prior_rows * ctr) / (rows + prior_rows)


def cross_fitted_q(log: ObdLog, *, folds: int, prior_rows: float, seed: int) -> np.ndarray:
    """q_hat (n, n_items): row i's q(., p_i) from :func:`smoothed_ctr` fitted on the folds
    other than row i's (folds drawn at random, as equal as possible)."""
    fold = np.random.default_rng(seed).permutation(log.n) % folds  # (n,)
    q_hat = np.empty((log.n, log.n_items))
    for k in range(folds):
        train, held = fold != k, fold == k
        table = smoothed_ctr(log.item[train], log.position[train], log.click[train],
                             log.n_items, prior_rows=prior_rows)  # (A, L)
        q_hat[held] = table[:, log.position[held]].T
    return q_hat


def _mean_estimate(name: str, values: np.ndarray, config: OBDCheckConfig,
                   seed: int) -> OPEEstimate:
    n = len(values)
    low, high = bootstrap_interval(lambda k: float(k @ values / k.sum()), n,
                                   n_bootstrap=config.n_bootstrap, seed=seed,
                                   level=config.level)
    return OPEEstimate(name, float(values.mean()), low, high, float(n), n, "rows",
                       config.level)


def on_policy(log: ObdLog, config: OBDCheckConfig) -> OPEEstimate:
    """The log's own mean click per impression, with its bootstrap interval over rows."""
    return _mean_estimate("on_policy", log.click, config, config.seed + 1)


def estimate_all(log: ObdLog, dist: np.ndarray, config: OBDCheckConfig) -> list[OPEEstimate]:
    """Every estimator of :data:`ESTIMATORS` of the policy ``dist`` (n_items, len_list) from
    ``log``, in that order; the reward model is :func:`cross_fitted_q` on ``log``."""
    if dist.shape != (log.n_items, LEN_LIST):
        raise ValueError(f"dist must be ({log.n_items}, {LEN_LIST}), got {dist.shape}")
    target = target_probs(dist, log.position)  # (n, A)
    q_hat = cross_fitted_q(log, folds=config.folds, prior_rows=config.prior_rows,
                           seed=config.seed)  # (n, A)
    logged = (log.item, log.propensity, target, log.click)
    options = {"n_bootstrap": config.n_bootstrap, "seed": config.seed, "level": config.level}
    ratios = target[np.arange(log.n), log.item] / log.propensity
    ncis = ncis_steps(log.click, ratios, np.ones(log.n, dtype=bool), kind="trajectory",
                      cap=config.ncis_cap, **options)
    return [
        ips(*logged, **options),
        snips(*logged, **options),
        OPEEstimate("ncis", ncis.value, ncis.ci_low, ncis.ci_high,
                    ncis.effective_sample_size, log.n, "rows", config.level),
        direct_method(target, q_hat, action=log.item, **options),
        doubly_robust(*logged, q_hat, **options),
        self_normalised_dr(*logged, q_hat, **options),
        switch_dr(*logged, q_hat, tau=config.switch_tau, **options),
    ]


def propensity_agreement(log: ObdLog, dist: np.ndarray,
                         edges_hours: tuple[float, ...] = (0.0, 1.0, 6.0, math.inf)
                         ) -> list[tuple[float, float, int, float]]:
    """Pearson correlation of the log's propensities with dist[a_i, p_i] over the rows in each
    window [edges[j], edges[j + 1]) hours after the log's first row: (start, end, rows, r)."""
    hours = (log.timestamp - log.timestamp[0]) / np.timedelta64(1, "h")  # (n,)
    simulated = dist[log.item, log.position]  # (n,)
    out = []
    for start, end in zip(edges_hours[:-1], edges_hours[1:], strict=True):
        rows = (hours >= start) & (hours < end)
        r = (float(np.corrcoef(simulated[rows], log.propensity[rows])[0, 1])
             if rows.sum() > 2 else math.nan)
        out.append((start, end, int(rows.sum()), r))
    return out


def _percent(value: float) -> str:
    return f"{100 * value:.3f}%"


def comparison_table(estimates: list[OPEEstimate], truth: OPEEstimate) -> str:
    """Markdown: the known answer, then each estimate with its interval, Kish ESS, relative
    error (estimate - truth) / truth and whether its interval holds truth's value."""
    level = f"{100 * truth.level:g}%"
    lines = [f"| estimator | click rate | {level} interval | ESS | relative error | interval "
             f"holds the answer |", "| --- | --- | --- | --- | --- | --- |",
             f"| {NAMES[truth.estimator]} (the answer) | {_percent(truth.value)} | "
             f"[{_percent(truth.ci_low)}, {_percent(truth.ci_high)}] | {truth.n:,} | | |"]
    for est in estimates:
        error = (est.value - truth.value) / truth.value
        lines.append(f"| {NAMES[est.estimator]} | {_percent(est.value)} | "
                     f"[{_percent(est.ci_low)}, {_percent(est.ci_high)}] | "
                     f"{est.effective_sample_size:,.0f} | {error:+.1%} | "
                     f"{'yes' if est.covers(truth.value) else 'no'} |")
    return "\n".join(lines)
