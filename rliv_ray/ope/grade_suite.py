"""Every estimator of :mod:`rliv_ray.ope` on one logged decision problem, for ``rliv ope-grade``.

A :class:`DecisionLog` is what a world's log becomes once the decision is fixed: per row the
logged action, its propensity, the logging policy's full distribution, the reward, the user
(trajectory, rows sorted by user then time), a per-decision reward model ``q_hat`` (n, A) and,
for FQE, the state vectors. :func:`run_suite` estimates one target, given its distribution
(n, A) on the logged rows, with

* the per-decision estimators (question "per-decision": the target's expected reward per
  logged request, on the logged states): IPS, SNIPS, NCIS (per row: SNIPS with the cap), DM,
  DR, SNDR, Switch-DR, their intervals over rows;
* the long-term ones (question "long-term": the (discounted) return per user): NCIS step-wise,
  trajectory and per-decision (:func:`rliv_ray.ope.ncis.ncis_steps`), PDIS, WPDIS, sequential
  DR, WDR, MAGIC and FQE, their intervals over users. The DR family's value model is FQE's
  Q of the target when FQE runs, else the per-decision reward model (myopic: it sees the next
  reward only).

An estimator that refuses the data (every weight 0, ...) yields its one-line reason instead
of a value. Nothing here knows a world: :mod:`rliv_ray.ope.grade_live` and
:mod:`rliv_ray.ope.grade_ua` build the logs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from rliv_ray.grouping import group_starts
from rliv_ray.ope.common import OPEEstimate
from rliv_ray.ope.estimators import (
    direct_method,
    doubly_robust,
    ips,
    self_normalised_dr,
    snips,
    switch_dr,
)
from rliv_ray.ope.ncis import DEFAULT_CAP, ncis_steps
from rliv_ray.ope.sequential import doubly_robust_steps, magic, pdis, weighted_dr, wpdis

__all__ = ["LONG_TERM", "PER_DECISION", "DecisionLog", "SuiteSettings", "ridge_cross_fit",
           "run_suite"]

PER_DECISION = ("ips", "snips", "ncis", "dm", "dr", "sndr", "switch_dr")
"""Per-decision estimators, in table order (``ncis``: SNIPS with NCIS's cap, per row)."""
LONG_TERM = ("ncis_stepwise", "ncis_trajectory", "ncis_per_decision", "pdis", "wpdis",
             "dr_steps", "wdr", "magic", "fqe")
"""Long-term (per-user) estimators, in table order."""


@dataclass(frozen=True)
class SuiteSettings:
    """How the suite estimates; every number is a documented default of the estimator."""

    gamma: float = 1.0
    """Discount per logged request of the long-term return."""
    n_bootstrap: int = 200
    """Bootstrap resamples of every interval (rows or users)."""
    ncis_cap: float = float(DEFAULT_CAP)
    """NCIS's cap c on the weights (ncis.py's default, 10)."""
    tau: float = 10.0
    """Switch-DR's threshold on the weight (as ``rliv ope``'s default)."""
    fqe: object | None = None
    """An :class:`rliv_ray.ope.fqe.FQEConfig` to run FQE (and use its Q in the DR family);
    None: no FQE."""
    fqe_refits: int = 0
    """FQE's bootstrap refits for its interval (0: no interval; each refit is a full fit)."""
    estimators: tuple[str, ...] = PER_DECISION + LONG_TERM
    seed: int = 0

    def __post_init__(self):
        unknown = [e for e in self.estimators if e not in PER_DECISION + LONG_TERM]
        if unknown:
            raise ValueError(f"unknown estimators {unknown}; known: "
                             f"{', '.join(PER_DECISION + LONG_TERM)}")
        if not 0 <= self.gamma <= 1:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        if self.n_bootstrap < 2:
            raise ValueError(f"bootstrap must be >= 2 (MAGIC needs a covariance), got "
                             f"{self.n_bootstrap}")
        if self.fqe_refits < 0:
            raise ValueError(f"fqe refits must be >= 0, got {self.fqe_refits}")


@dataclass(frozen=True)
class DecisionLog:
    """One world's log as decisions (module docstring); rows sorted by user, then time."""

    action: np.ndarray  # (n,) int
    behavior_prob: np.ndarray  # (n,) mu(a_i | x_i) as the estimators are to use it
    behavior_probs: np.ndarray  # (n, A) the logging policy's distribution (support check)
    rewards: np.ndarray  # (n,) realised rewards
    user: np.ndarray  # (n,) trajectory ids, contiguous
    q_hat: np.ndarray | None = None  # (n, A) per-decision reward model
    states: np.ndarray | None = None  # (n, d) float32, FQE's state (None: no FQE)
    network_fn: Callable | None = None  # FQE's Q network builder (None: fqe's default)

    @property
    def n(self) -> int:
        return len(self.action)

    @property
    def starts(self) -> np.ndarray:
        return group_starts(self.user)

    @property
    def users(self) -> int:
        return int(self.starts.sum())


@dataclass(frozen=True)
class SuiteResult:
    """One estimator's answer: an estimate, or the reason there is none."""

    estimator: str
    question: str  # "per-decision" or "long-term"
    estimate: OPEEstimate | None
    note: str = ""


def _from_ncis(name: str, est) -> OPEEstimate:
    return OPEEstimate(name, est.value, est.ci_low, est.ci_high, est.effective_sample_size,
                       est.n_trajectories, "trajectories")


def _next_rows(starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(next row index, done): the same user's next row; the last row of a user is done and
    points at itself."""
    n = len(starts)
    last = np.append(starts[1:], True)
    return np.where(last, np.arange(n), np.arange(n) + 1), last


def _fqe(log: DecisionLog, target: np.ndarray, settings: SuiteSettings):
    """FQE of the target on standardised states and rewards scaled to unit spread (FQE is
    linear in the rewards: the value and Q are scaled back). Returns (estimate, q (n, A))."""
    from rliv_ray.ope.fqe import fqe

    states = np.asarray(log.states, dtype=np.float64)
    scale_s = states.std(axis=0)
    states = ((states - states.mean(axis=0)) / np.where(scale_s > 0, scale_s, 1.0))
    states = states.astype(np.float32)
    scale = float(np.std(log.rewards)) or 1.0
    nxt, done = _next_rows(log.starts)
    config = replace(settings.fqe, gamma=settings.gamma, seed=settings.seed)
    result = fqe(states, log.action, log.rewards / scale, states[nxt], done, target,
                 target[nxt], log.user, config=config, network_fn=log.network_fn,
                 n_bootstrap=settings.fqe_refits, seed=settings.seed)
    e = result.estimate
    estimate = OPEEstimate("fqe", e.value * scale, e.ci_low * scale, e.ci_high * scale,
                           e.effective_sample_size, e.n, e.unit, e.level)
    return estimate, result.q_values(states) * scale


def run_suite(log: DecisionLog, target: np.ndarray, settings: SuiteSettings,
              progress: Callable[[str], None] | None = None) -> list[SuiteResult]:
    """Every estimator of ``settings.estimators`` for the target of distribution ``target``
    (n, A) on the log's rows (module docstring)."""
    wanted = set(settings.estimators)
    gamma, boot, seed = settings.gamma, settings.n_bootstrap, settings.seed
    base = (log.action, log.behavior_prob, target, log.rewards)
    common = {"n_bootstrap": boot, "seed": seed}
    out: list[SuiteResult] = []

    def run(name: str, question: str, fn: Callable[[], OPEEstimate]) -> None:
        if name not in wanted:
            return
        if progress:
            progress(name)
        try:
            out.append(SuiteResult(name, question, fn()))
        except ValueError as err:
            out.append(SuiteResult(name, question, None, str(err).splitlines()[0]))

    def no_model(name: str, question: str) -> None:
        if name in wanted:
            out.append(SuiteResult(name, question, None, "no reward model"))

    pd, lt = "per-decision", "long-term"
    with_mu = {"behavior_probs": log.behavior_probs}
    run("ips", pd, lambda: ips(*base, **with_mu, **common))
    run("snips", pd, lambda: snips(*base, **with_mu, **common))
    run("ncis", pd, lambda: replace(snips(*base, cap=settings.ncis_cap, **with_mu, **common),
                                    estimator="ncis"))
    if log.q_hat is not None:
        run("dm", pd, lambda: direct_method(target, log.q_hat, action=log.action, **common))
        run("dr", pd, lambda: doubly_robust(*base, log.q_hat, **with_mu, **common))
        run("sndr", pd, lambda: self_normalised_dr(*base, log.q_hat, **with_mu, **common))
        run("switch_dr", pd, lambda: switch_dr(*base, log.q_hat, tau=settings.tau, **with_mu,
                                               **common))
    else:
        for name in ("dm", "dr", "sndr", "switch_dr"):
            no_model(name, pd)

    ratios = target[np.arange(log.n), log.action] / log.behavior_prob
    starts = log.starts
    for kind in ("stepwise", "trajectory", "per_decision"):
        run(f"ncis_{kind}", lt, lambda kind=kind: _from_ncis(
            f"ncis_{kind}", ncis_steps(log.rewards, ratios, starts, kind=kind,
                                       cap=settings.ncis_cap, gamma=gamma, **common)))
    steps = (*base, log.user)
    run("pdis", lt, lambda: pdis(*steps, gamma=gamma, **with_mu, **common))
    run("wpdis", lt, lambda: wpdis(*steps, gamma=gamma, **with_mu, **common))

    q_seq = log.q_hat
    if settings.fqe is not None and log.states is not None and "fqe" in wanted:
        if progress:
            progress("fqe")
        try:
            estimate, q_seq = _fqe(log, target, settings)
            out.append(SuiteResult("fqe", lt, estimate))
        except ValueError as err:
            out.append(SuiteResult("fqe", lt, None, str(err).splitlines()[0]))
    elif "fqe" in wanted:
        out.append(SuiteResult("fqe", lt, None, "not run (no FQE for this world or settings)"))
    if q_seq is not None:
        run("dr_steps", lt, lambda: doubly_robust_steps(*steps, q_seq, gamma=gamma, **with_mu,
                                                        **common))
        run("wdr", lt, lambda: weighted_dr(*steps, q_seq, gamma=gamma, **with_mu, **common))
        run("magic", lt, lambda: magic(*steps, q_seq, gamma=gamma, **with_mu, **common))
    else:
        for name in ("dr_steps", "wdr", "magic"):
            no_model(name, lt)
    order = {name: i for i, name in enumerate(PER_DECISION + LONG_TERM)}
    return sorted(out, key=lambda r: order[r.estimator])


def _design(features: np.ndarray) -> np.ndarray:
    """[1, x, x^2]: a ridge regression's features (squares let it bend once per input)."""
    x = np.asarray(features, dtype=np.float64)
    return np.concatenate([np.ones(x.shape[:-1] + (1,)), x, x * x], axis=-1)


def ridge_cross_fit(fit_features: np.ndarray, y: np.ndarray, predict_features: np.ndarray,
                    groups: np.ndarray, *, fit_rows: np.ndarray | None = None, folds: int = 2,
                    alpha: float = 1.0) -> np.ndarray:
    """Cross-fitted ridge predictions. Row i has features ``fit_features[i]`` (d,) and target
    ``y[i]``, and is fitted on where ``fit_rows`` (default: every row); its alternatives (every
    action or candidate) have ``predict_features[i]`` (..., d). Rows of fold f (by a hash of
    ``groups``, the users) are predicted by the model fitted on the other folds' rows, so no
    row's prediction has seen its own reward. Returns (n, ...). The regression is on [1, x,
    x^2], standardised on the fitting rows; alpha is the penalty on the standardised
    coefficients (the intercept is not penalised)."""
    from rliv_ray.data.io import mix64

    fit_features = np.asarray(fit_features, dtype=np.float64)
    predict_features = np.asarray(predict_features, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    use = np.ones(n, dtype=bool) if fit_rows is None else np.asarray(fit_rows, dtype=bool)
    fold = (mix64(np.asarray(groups, dtype=np.int64), 0x6AD3) % np.uint64(folds)).astype(int)
    out = np.zeros(predict_features.shape[:-1])
    for f in range(folds):
        train, test = use & (fold != f), fold == f
        if not test.any():
            continue
        if not train.any():  # one fold only (a tiny log): fit on every usable row
            train = use
        x = _design(fit_features[train])
        mean, scale = x.mean(axis=0), x.std(axis=0)
        mean[0], scale[0] = 0.0, 1.0
        scale = np.where(scale > 0, scale, 1.0)
        z = (x - mean) / scale
        penalty = alpha * np.eye(z.shape[1])
        penalty[0, 0] = 0.0
        coef = np.linalg.solve(z.T @ z + penalty, z.T @ y[train])
        out[test] = ((_design(predict_features[test]) - mean) / scale) @ coef
    return out
