"""What every off-policy estimate reports, and the bootstrap they share (pure NumPy).

* :class:`OPEEstimate`: the estimate, its bootstrap percentile interval, Kish's effective
  sample size and the number of resampled units.
* :func:`bootstrap_values` / :func:`bootstrap_interval`: Efron's nonparametric bootstrap over
  *units*: rows for the per-decision (bandit) estimators, whole trajectories (clusters) for
  the sequential ones, since the steps of one user are not independent. A resample is
  represented by multiplicities k_i (how often unit i is drawn, sum k_i = n): every estimator
  here is a function of k-weighted sums, so the estimator on the resample is
  ``value_fn(k)`` without copying rows.
  The percentile interval is the default; :func:`normal_interval` serves estimators that can
  afford only a few resamples.
* :func:`kish_ess`: Kish (1965), n_eff = (sum_i w_i)^2 / sum_i w_i^2.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

__all__ = ["DEFAULT_BOOTSTRAP", "DEFAULT_LEVEL", "UNITS", "OPEEstimate", "bootstrap_interval",
           "bootstrap_values", "check_options", "kish_ess", "normal_interval",
           "percentile_interval"]

DEFAULT_BOOTSTRAP = 200
"""Bootstrap resamples for the interval (0: no interval). 200 puts the 2.5% and 97.5%
percentiles 5 resamples from the ends: enough for a 95% interval that is stable to ~5%."""
DEFAULT_LEVEL = 0.95
"""Coverage of the percentile interval."""
UNITS = ("rows", "trajectories")


@dataclass(frozen=True)
class OPEEstimate:
    """An off-policy estimate of a target policy's value.

    ``value`` is per row (per-decision estimators: the expected reward of one decision) or per
    trajectory (sequential ones: the expected discounted return of one user's trajectory).
    """

    estimator: str  # "ips", "snips", "dm", "dr", "sndr", "switch_dr", "pdis", "wpdis", ...
    value: float
    ci_low: float  # bootstrap percentile interval over units (nan without resamples)
    ci_high: float
    effective_sample_size: float  # Kish n_eff of the importance weights the estimate uses
    # (n when it uses none: DM, FQE)
    n: int  # units: rows or trajectories
    unit: str  # "rows" (per-decision) or "trajectories" (sequential; the bootstrap clusters)
    level: float = DEFAULT_LEVEL

    def __post_init__(self):
        if self.unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, got {self.unit!r}")

    def covers(self, truth: float) -> bool:
        """True when ``truth`` lies in [ci_low, ci_high]."""
        return bool(self.ci_low <= truth <= self.ci_high)


def check_options(n_bootstrap: int, level: float) -> None:
    """Raise ValueError naming the setting unless n_bootstrap >= 0 and level is in (0, 1)."""
    if n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be >= 0, got {n_bootstrap}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")


def bootstrap_values(value_fn: Callable[[np.ndarray], float | np.ndarray], n: int,
                     n_bootstrap: int, seed: int) -> np.ndarray:
    """``value_fn(k)`` for ``n_bootstrap`` resamples of the n units, stacked: (B,) or (B, m)
    when value_fn returns m values. k (n,) float64 holds the multiplicities of a resample
    (n draws with replacement)."""
    rng = np.random.default_rng(seed)
    return np.array([value_fn(np.bincount(rng.integers(0, n, n), minlength=n).astype(float))
                     for _ in range(n_bootstrap)])


def percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """The (1 - level)/2 and (1 + level)/2 percentiles of ``values``, ignoring nan (resamples
    where the estimator is undefined); nan, nan when there are none."""
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).any():
        return math.nan, math.nan
    tail = (1 - level) / 2
    low, high = np.nanquantile(values, [tail, 1 - tail])
    return float(low), float(high)


def normal_interval(value: float, values: np.ndarray, level: float) -> tuple[float, float]:
    """value -/+ z sd(values), z the (1 + level)/2 normal quantile: the "standard" bootstrap
    interval (Efron & Tibshirani 1993, sec. 13.2). With few resamples (FQE's refits) it is far
    steadier than percentiles, which are then the extreme draws (10 resamples, synthetic MDP:
    96% coverage against 84% for the percentile interval); nan, nan with < 2 finite values."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if len(finite) < 2:
        return math.nan, math.nan
    half = NormalDist().inv_cdf((1 + level) / 2) * float(finite.std(ddof=1))
    return value - half, value + half


def bootstrap_interval(value_fn: Callable[[np.ndarray], float], n: int, *, n_bootstrap: int,
                       seed: int, level: float) -> tuple[float, float]:
    """Percentile interval of ``value_fn(k)`` over resamples of the n units (nan, nan when
    ``n_bootstrap`` is 0)."""
    if n_bootstrap == 0:
        return math.nan, math.nan
    return percentile_interval(bootstrap_values(value_fn, n, n_bootstrap, seed), level)


def kish_ess(weights: np.ndarray) -> float:
    """Kish's effective sample size (sum w)^2 / sum w^2 of weights >= 0 (0 if all are 0)."""
    weights = np.asarray(weights, dtype=np.float64)
    square = float(weights @ weights)
    return float(weights.sum() ** 2 / square) if square > 0 else 0.0
