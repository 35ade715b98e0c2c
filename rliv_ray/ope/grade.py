"""Grading off-policy estimators against the truth: pure functions (NumPy, SciPy).

A world whose policies can be rolled out gives each target policy's true value; an estimator
run on the world's log gives an estimate with a 95% interval. Over a family of policies (and
seeds) the grading asks four things of each estimator:

    relative error    (V_hat - V) / |V|                          per policy; nan where V = 0
    coverage          share of 95% intervals [low, high] holding V  (intervals that exist)
    rank correlation  Spearman's rho and Kendall's tau-b between V_hat and V across the
                      policies of one seed (ties averaged; nan with < 2 policies or a
                      constant side)
    regret            max_p V_p - V_{p*}, p* the policy of the highest estimate (ties: the
                      mean of their true values, a random tie-break's expectation); also
                      divided by |max_p V_p|

Relative error and coverage are against the truth of the question the estimator answers (a
per-decision estimator: the target's expected reward per logged request; a long-term one: the
return per user); rank correlation and regret against the long-term truth, the value a policy
choice is about (both are invariant to the scale of the estimate, so a per-decision estimate
can be ranked against it).

:func:`summarise` aggregates :class:`Graded` records per (world, estimator): the mean of the
signed and absolute relative errors over policies and seeds, coverage as hits / intervals, and
the per-seed rank correlations and regrets averaged over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

__all__ = ["Graded", "coverage", "covers", "kendall", "regret", "relative_error",
           "relative_regret", "spearman", "summarise"]


def relative_error(value, truth):
    """(value - truth) / |truth|, element-wise; nan where truth is 0 or either is nan."""
    value = np.asarray(value, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(truth != 0, (value - truth) / np.abs(truth), np.nan)
    return float(out) if out.ndim == 0 else out


def covers(low, high, truth):
    """1.0 where low <= truth <= high, 0.0 where not, nan where the interval is missing (nan
    bounds: an estimate without resamples); element-wise."""
    low, high, truth = (np.asarray(x, dtype=np.float64) for x in (low, high, truth))
    known = np.isfinite(low) & np.isfinite(high)
    out = np.where(known, ((low <= truth) & (truth <= high)).astype(np.float64), np.nan)
    return float(out) if out.ndim == 0 else out


def coverage(low, high, truth) -> tuple[int, int]:
    """(hits, intervals): how many of the intervals that exist hold the truth."""
    hit = np.atleast_1d(covers(low, high, truth))
    known = np.isfinite(hit)
    return int(hit[known].sum()), int(known.sum())


def _pairs(estimates, truths) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(estimates, dtype=np.float64)
    y = np.asarray(truths, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"estimates and truths must be (P,) arrays of one shape, got "
                         f"{x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def _correlation(fn, estimates, truths) -> float:
    x, y = _pairs(estimates, truths)
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    return float(fn(x, y).statistic)


def spearman(estimates, truths) -> float:
    """Spearman's rank correlation of the estimates with the true values across policies
    (average ranks for ties; pairs with a nan dropped; nan if < 2 pairs or a side is
    constant)."""
    return _correlation(stats.spearmanr, estimates, truths)


def kendall(estimates, truths) -> float:
    """Kendall's tau-b across policies (as :func:`spearman`)."""
    return _correlation(stats.kendalltau, estimates, truths)


def regret(estimates, truths) -> float:
    """max V - V of the policy with the highest estimate (the mean V over tied estimates).
    Policies without an estimate (nan) cannot be chosen but still set the best V; nan when no
    policy has an estimate."""
    x = np.asarray(estimates, dtype=np.float64)
    y = np.asarray(truths, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"estimates and truths must be (P,) arrays of one shape, got "
                         f"{x.shape} and {y.shape}")
    if not np.isfinite(x).any():
        return math.nan
    top = np.nanmax(np.where(np.isfinite(x), x, np.nan))
    return float(np.max(y) - y[x == top].mean())


def relative_regret(estimates, truths) -> float:
    """:func:`regret` / |max V| (nan when max V is 0)."""
    best = float(np.max(np.asarray(truths, dtype=np.float64)))
    return regret(estimates, truths) / abs(best) if best != 0 else math.nan


@dataclass(frozen=True)
class Graded:
    """One estimate of one target policy in one seed of one world, beside its truth."""

    world: str
    seed: int
    policy: str
    estimator: str
    question: str  # "per-decision" or "long-term": what ``truth`` is
    value: float  # nan when the estimator could not be computed (``note`` says why)
    ci_low: float
    ci_high: float
    ess: float
    truth: float  # the true value of the estimator's own question
    truth_long_term: float  # the policy's long-term true value (ranking, regret)
    note: str = ""

    @property
    def relative_error(self) -> float:
        return relative_error(self.value, self.truth)

    @property
    def covered(self) -> float:
        return covers(self.ci_low, self.ci_high, self.truth)

    def to_dict(self) -> dict:
        def plain(x):
            return None if isinstance(x, float) and not math.isfinite(x) else x

        return {k: plain(v) for k, v in {**asdict(self), "relative_error": self.relative_error,
                                         "covered": self.covered}.items()}


def with_extra_policies(family: dict, extra: dict | None) -> dict:
    """The reference ``family`` plus the user's policies, whose names may not shadow one."""
    for name, policy in (extra or {}).items():
        if name in family:
            raise ValueError(f"policy name '{name}' is taken by a reference policy")
        family[name] = policy
    return family


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def summarise(records: Iterable[Graded]) -> list[dict]:
    """One row per (world, estimator), in first-seen order: n estimates, failures, mean signed
    and absolute relative error, coverage (hits, intervals), and over seeds the mean Spearman,
    Kendall, regret and relative regret against the long-term truth, and the median ESS."""
    records = list(records)
    rows = []
    for world, estimator in dict.fromkeys((r.world, r.estimator) for r in records):
        group = [r for r in records if (r.world, r.estimator) == (world, estimator)]
        ok = [r for r in group if math.isfinite(r.value)]
        errors = relative_error([r.value for r in ok], [r.truth for r in ok])
        hits, intervals = coverage([r.ci_low for r in ok], [r.ci_high for r in ok],
                                   [r.truth for r in ok])
        per_seed = {"spearman": [], "kendall": [], "regret": [], "relative_regret": []}
        for seed in dict.fromkeys(r.seed for r in group):
            # every policy of the seed (of any estimator) sets the best truth
            policies = {r.policy: r.truth_long_term for r in records
                        if (r.world, r.seed) == (world, seed)}
            by_policy = {r.policy: r.value for r in group if r.seed == seed}
            names = list(policies)
            est = np.array([by_policy.get(p, math.nan) for p in names], dtype=np.float64)
            truth = np.array([policies[p] for p in names], dtype=np.float64)
            per_seed["spearman"].append(spearman(est, truth))
            per_seed["kendall"].append(kendall(est, truth))
            per_seed["regret"].append(regret(est, truth))
            per_seed["relative_regret"].append(relative_regret(est, truth))
        errors = np.atleast_1d(errors)
        rows.append({
            "world": world, "estimator": estimator, "question": group[0].question,
            "estimates": len(ok), "failed": len(group) - len(ok),
            "mean_relative_error": _mean(errors.tolist()),
            "mean_abs_relative_error": _mean(np.abs(errors).tolist()),
            "covered": hits, "intervals": intervals,
            "spearman": _mean(per_seed["spearman"]), "kendall": _mean(per_seed["kendall"]),
            "regret": _mean(per_seed["regret"]),
            "relative_regret": _mean(per_seed["relative_regret"]),
            "median_ess": float(np.median([r.ess for r in ok])) if ok else math.nan,
        })
    return rows
