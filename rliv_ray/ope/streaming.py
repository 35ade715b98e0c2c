"""Off-policy estimates from a log streamed in blocks: block -> sums, merge, finalize (pure NumPy).

Every estimator that streams is a function of k-weighted *sums* over units (rows, or whole
trajectories), so a block reduces to a few numbers and blocks merge by addition; memory does
not grow with the log. With the same rows, :func:`finalize` returns the value and effective
sample size of the in-memory estimator of :mod:`rliv_ray.ope.estimators` / ``ncis.py`` /
``sequential.py`` (to float tolerance):

    per row (any block split, any order)       unit        in-memory reference
    ips         S(min(w,c) r) / S(1)           request     estimators.ips(cap=c)
    snips       S(min(w,c) r) / S(min(w,c))    request     estimators.snips(cap=c)
    dm          S(v) / S(1)                    request     estimators.direct_method
    dr          S(v + min(w,c)(r - q)) / S(1)  request     estimators.doubly_robust(cap=c)
    sndr        S(v)/S(1) + S(w(r - q))/S(w)   request     estimators.self_normalised_dr
    switch_dr   S(v + w 1{w<=tau}(r - q))/S(1) request     estimators.switch_dr(tau=tau)
    per trajectory (blocks must hold whole trajectories, rows in time order)
    ncis                 step-wise NCIS        user        ncis_steps(kind="stepwise")
    ncis_trajectory      trajectory NCIS       user        ncis_steps(kind="trajectory")
    ncis_per_decision    per-decision NCIS     user        ncis_steps(kind="per_decision")
    pdis                 PDIS                  user        sequential.pdis

S(x) = sum_i k_i x_i. w = pi(a|x) / mu(a|x), v = sum_a pi(a|x) q(x, a), q = q(x, a_logged),
c = ``cap``, tau = ``tau``; the NCIS kinds use ``ncis_cap`` (a number: a quantile cap needs
every weight first, so it does not stream). Per-decision NCIS also keeps one sum per step
position t (its normaliser D_t), so its state grows with the longest trajectory, not the log.
WPDIS, the sequential DR family, MAGIC and FQE normalise or fit over all trajectories at once:
they need the whole log in memory (the functions of ``sequential.py`` / ``fqe.py``).

Intervals: a *Poisson bootstrap* (Hanley & MacGibbon 2006; Chamandy et al. 2012). Replicate b
gives unit i the multiplicity k_{b,i} ~ Poisson(1), drawn from a counter-based hash of
(``seed``, b, the unit's key: request id for rows, user id for trajectories), so a unit gets the
same k wherever a block boundary falls and the replicate sums merge across blocks like the
estimate's own (row 0 of every sum table is k = 1: the data as drawn). The 95% interval is
the percentile interval of the B replicate values; the resample size varies around n, which
for n in the thousands and up gives the intervals of the multinomial bootstrap of
``common.py``.

The support check (:mod:`rliv_ray.ope.support`) runs per block on the action space and the
propensities, and once at the end on the support: an action the target gives mass to that
the whole log never holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from rliv_ray.data.io import mix64
from rliv_ray.grouping import group_starts
from rliv_ray.ope.common import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_LEVEL,
    OPEEstimate,
    check_options,
    percentile_interval,
)
from rliv_ray.ope.ncis import DEFAULT_CAP
from rliv_ray.ope.support import (
    check_action_space,
    check_propensities,
    check_rewards,
    logged_target_prob,
)
from rliv_ray.ope.weights import cumulative_log_ratios, log, trajectory_layout

__all__ = ["DEFAULT_ESTIMATORS", "ESTIMATORS", "MODEL_ESTIMATORS", "ROW_ESTIMATORS",
           "TRAJECTORY_ESTIMATORS", "Stats", "StreamResult", "StreamSettings", "block_stats",
           "finalize", "merge", "poisson_weights"]

ROW_ESTIMATORS = ("ips", "snips", "dm", "dr", "sndr", "switch_dr")
TRAJECTORY_ESTIMATORS = ("ncis", "ncis_trajectory", "ncis_per_decision", "pdis")
ESTIMATORS = ROW_ESTIMATORS + TRAJECTORY_ESTIMATORS
MODEL_ESTIMATORS = ("dm", "dr", "sndr", "switch_dr")
"""Need a reward model q(x, a)."""
DEFAULT_ESTIMATORS = ("ips", "snips", "ncis", "dm", "dr")
DEFAULT_TAU = 10.0
"""Switch-DR's weight threshold: DR on rows with w <= tau, the model alone above."""
CHUNK = 8192
"""Units per bootstrap product: bounds the (B + 1, CHUNK) multiplicity matrix (~13 MB)."""

ROW_TERMS = ("one", "w", "w2", "wc", "wc2", "wc_r", "w_d", "wc_d", "v", "kept", "kept2",
             "kept_d")
TRAJ_TERMS = ("one", "steps", "step_wr", "step_w", "step_w2", "step_capped", "traj_w",
              "traj_w2", "traj_wg", "traj_capped", "pdis", "pdis_w", "pdis_w2", "pd_last",
              "pd_last2", "pd_capped")
_POSITION_KEYS = ("pd_num", "pd_alive", "pd_ended")  # (B + 1, H[+1]): padded when merged

Stats = dict[str, np.ndarray]
"""Additive sufficient statistics of one block, or of many merged (:func:`merge`)."""


@dataclass(frozen=True)
class StreamSettings:
    """What to estimate and how (defaults: those of the in-memory estimators)."""

    estimators: tuple[str, ...] = DEFAULT_ESTIMATORS
    cap: float = math.inf
    """c, the weight clip of IPS, SNIPS and DR (inf: none; the estimators' default)."""
    ncis_cap: float = DEFAULT_CAP
    """c of the NCIS kinds (``ncis.py``'s default 10)."""
    tau: float = DEFAULT_TAU
    """Switch-DR's threshold."""
    gamma: float = 1.0
    """Discount of the per-trajectory estimators (1: the paper's cumulative reward)."""
    n_bootstrap: int = DEFAULT_BOOTSTRAP
    """Poisson bootstrap replicates B (0: no interval)."""
    seed: int = 0
    level: float = DEFAULT_LEVEL

    def __post_init__(self):
        unknown = [e for e in self.estimators if e not in ESTIMATORS]
        if unknown or not self.estimators:
            raise ValueError(f"estimators must be some of {ESTIMATORS}, got "
                             f"{list(self.estimators)}")
        for name in ("cap", "ncis_cap", "tau"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name} must be a number > 0 (inf: none), got {value!r}")
        if not 0 <= self.gamma <= 1:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        check_options(self.n_bootstrap, self.level)

    @property
    def rows(self) -> bool:
        return any(e in ROW_ESTIMATORS for e in self.estimators)

    @property
    def trajectories(self) -> bool:
        return any(e in TRAJECTORY_ESTIMATORS for e in self.estimators)


def _poisson_table() -> np.ndarray:
    """k(u) for u in [0, 2^16): the Poisson(1) quantile at (u + 1/2) / 2^16, uint8."""
    k = np.arange(16)
    pmf = np.exp(-1.0) / np.cumprod(np.maximum(k, 1)).astype(np.float64)
    cdf = np.cumsum(pmf)
    u = (np.arange(1 << 16) + 0.5) / (1 << 16)
    return np.searchsorted(cdf, u, side="right").astype(np.uint8)


_POISSON = _poisson_table()


def poisson_weights(keys: np.ndarray, n_bootstrap: int, seed: int) -> np.ndarray:
    """(n_bootstrap, n) uint8 multiplicities k_{b,i} ~ Poisson(1), a function of (seed, b,
    keys[i]) only: one 64-bit hash per key and four replicates gives four 16-bit uniforms,
    each mapped through the Poisson(1) quantile table (resolution 2^-16: k <= 7)."""
    keys = np.asarray(keys, dtype=np.int64)
    base = mix64(keys, seed).view(np.int64)  # (n,)
    out = np.empty((4 * math.ceil(n_bootstrap / 4), len(keys)), np.uint8)
    for j in range(len(out) // 4):
        h = mix64(base, j + 1)
        for c in range(4):
            out[4 * j + c] = _POISSON[((h >> np.uint64(16 * c)) & np.uint64(0xFFFF))
                                      .astype(np.intp)]
    return out[:n_bootstrap]


def _weighted_sums(terms: np.ndarray, keys: np.ndarray, settings: StreamSettings
                   ) -> np.ndarray:
    """(B + 1, m): row 0 the plain sums of ``terms`` (n, m), row b the sums with unit i
    counted k_{b,i} times."""
    out = np.zeros((settings.n_bootstrap + 1, terms.shape[1]))
    out[0] = terms.sum(axis=0)
    if settings.n_bootstrap:
        for lo in range(0, len(keys), CHUNK):
            k = poisson_weights(keys[lo:lo + CHUNK], settings.n_bootstrap, settings.seed)
            out[1:] += k.astype(np.float64) @ terms[lo:lo + CHUNK]
    return out


def _multiplicities(keys: np.ndarray, settings: StreamSettings) -> np.ndarray:
    """(B + 1, n) float64, row 0 all ones."""
    k = np.ones((settings.n_bootstrap + 1, len(keys)))
    if settings.n_bootstrap:
        k[1:] = poisson_weights(keys, settings.n_bootstrap, settings.seed)
    return k


@dataclass(frozen=True)
class _Block:
    """A block's validated columns and its importance ratios."""

    action: np.ndarray  # (n,) int64 in [0, A)
    target: np.ndarray  # (n, A) pi(. | x_i)
    rewards: np.ndarray  # (n,)
    ratios: np.ndarray  # (n,) w_i
    q_hat: np.ndarray | None  # (n, A)


def _checked(action, behavior_prob, target_probs, rewards, q_hat) -> _Block:
    """The checks of ``support.checked_bandit`` that hold block by block (the support check,
    which needs every block, runs in :func:`finalize`)."""
    action, target = check_action_space(action, target_probs, q_hat=q_hat)
    behavior = check_propensities(behavior_prob)
    if behavior.shape != action.shape:
        raise ValueError(f"behavior_prob has shape {behavior.shape} but action {action.shape}")
    rewards = check_rewards(rewards, len(action))
    if q_hat is not None:
        q_hat = np.asarray(q_hat, dtype=np.float64)
        if not np.all(np.isfinite(q_hat)):
            raise ValueError("q_hat must be finite")
    return _Block(action, target, rewards, logged_target_prob(action, target) / behavior, q_hat)


def _row_terms(block: _Block, settings: StreamSettings) -> np.ndarray:
    """(n, len(ROW_TERMS)) per-row terms of the per-decision estimators."""
    w, r = block.ratios, block.rewards
    wc = np.minimum(w, settings.cap)
    kept = np.where(w <= settings.tau, w, 0.0)
    if block.q_hat is None:
        v = d = np.zeros_like(w)
    else:
        v = (block.target * block.q_hat).sum(axis=1)
        d = r - logged_target_prob(block.action, block.q_hat)
    columns = {"one": np.ones_like(w), "w": w, "w2": w * w, "wc": wc, "wc2": wc * wc,
               "wc_r": wc * r, "w_d": w * d, "wc_d": wc * d, "v": v, "kept": kept,
               "kept2": kept * kept, "kept_d": kept * d}
    return np.stack([columns[name] for name in ROW_TERMS], axis=1)


def block_stats(action, behavior_prob, target_probs, rewards, *, row_keys, user=None,
                q_hat=None, settings: StreamSettings) -> Stats:
    """The sums of one block (see the module docstring).

    ``action`` (n,) int, ``behavior_prob`` (n,) mu(a_i|x_i), ``target_probs`` (n, A),
    ``rewards`` (n,), ``q_hat`` (n, A) or None, ``row_keys`` (n,) int64 unique row ids (the
    request id) keying the rows' bootstrap multiplicities. With trajectory estimators,
    ``user`` (n,) int64: the block holds whole trajectories, one contiguous run per user in
    time order (the user id keys their multiplicities).
    """
    block = _checked(action, behavior_prob, target_probs, rewards, q_hat)
    n_actions = block.target.shape[1]
    stats: Stats = {
        "n_rows": np.array([len(block.action)], dtype=np.float64),
        "logged": np.bincount(block.action, minlength=n_actions).astype(np.float64),
        "mass": block.target.sum(axis=0),
    }
    keys = np.asarray(row_keys, dtype=np.int64)
    if keys.shape != block.action.shape:
        raise ValueError(f"row_keys has shape {keys.shape}, action {block.action.shape}")
    if settings.rows:
        stats["rows"] = _weighted_sums(_row_terms(block, settings), keys, settings)
    if settings.trajectories:
        if user is None:
            raise ValueError("the per-trajectory estimators need each row's user")
        stats.update(_trajectory_stats(block, np.asarray(user, np.int64), settings))
    return stats


def _trajectory_stats(block: _Block, user: np.ndarray, settings: StreamSettings) -> Stats:
    if user.shape != block.action.shape:
        raise ValueError(f"user has shape {user.shape}, action {block.action.shape}")
    starts = group_starts(user)
    start_idx, traj, pos, length = trajectory_layout(starts)
    if len(start_idx) != len(np.unique(user)):
        raise ValueError("a block must hold each user's rows as one contiguous run (rows "
                         "sorted by user, then time)")
    last = start_idx + length - 1
    discounted = block.rewards * settings.gamma ** pos
    log_cap = math.log(settings.ncis_cap)
    log_ratios = log(block.ratios)
    step_w = np.exp(np.minimum(log_ratios, log_cap))  # (n,) capped step ratios
    log_w = cumulative_log_ratios(block.ratios, start_idx, traj)  # (n,) log w_{i,t}
    capped = np.exp(np.minimum(log_w, log_cap))  # (n,) min(c, w_{i,t})
    with np.errstate(over="ignore", invalid="ignore"):
        w = np.exp(log_w)  # (n,) uncapped, for PDIS
        per_row = {"step_wr": step_w * discounted, "step_w": step_w, "step_w2": step_w ** 2,
                   "step_capped": (log_ratios > log_cap).astype(np.float64),
                   "pdis": w * discounted, "pd_capped": (log_w > log_cap).astype(np.float64)}
        per_traj = {"one": np.ones(len(start_idx)), "steps": length.astype(np.float64),
                    "traj_w": capped[last], "traj_w2": capped[last] ** 2,
                    "traj_wg": capped[last] * np.add.reduceat(discounted, start_idx),
                    "traj_capped": (log_w[last] > log_cap).astype(np.float64),
                    "pdis_w": w[last], "pdis_w2": w[last] ** 2,
                    "pd_last": capped[last], "pd_last2": capped[last] ** 2}
        per_traj.update({name: np.add.reduceat(values, start_idx)
                         for name, values in per_row.items()})
    terms = np.stack([per_traj[name] for name in TRAJ_TERMS], axis=1)  # (N, m)
    keys = user[start_idx]
    stats = {"traj": _weighted_sums(terms, keys, settings)}
    if "ncis_per_decision" in settings.estimators:
        stats.update(_position_sums(capped, discounted, start_idx, pos, length, keys,
                                    settings))
    return stats


def _position_sums(capped, discounted, start_idx, pos, length, keys, settings) -> Stats:
    """Per step position t: sum_i k_i w_{i,t} gamma^t r_{i,t} (pd_num), sum over trajectories
    alive at t of k_i w_{i,t} (pd_alive) and, at index L_i, k_i w_{i,L_i-1} (pd_ended); D_t =
    pd_alive_t + sum_{L <= t} pd_ended_L (``weights.log_step_denominators``)."""
    from scipy import sparse

    horizon, n_traj = int(length.max()), len(length)
    shapes = {"pd_num": horizon, "pd_alive": horizon, "pd_ended": horizon + 1}
    out = {name: np.zeros((settings.n_bootstrap + 1, size)) for name, size in shapes.items()}
    ends = np.append(start_idx[1:], len(pos))
    for lo in range(0, n_traj, CHUNK):
        hi = min(lo + CHUNK, n_traj)
        rows = slice(start_idx[lo], ends[hi - 1])  # the chunk's trajectories' rows
        traj = np.repeat(np.arange(hi - lo), length[lo:hi])
        last = ends[lo:hi] - 1
        values = {"pd_num": (capped[rows] * discounted[rows], pos[rows], traj),
                  "pd_alive": (capped[rows], pos[rows], traj),
                  "pd_ended": (capped[last], length[lo:hi], np.arange(hi - lo))}
        k = _multiplicities(keys[lo:hi], settings).T  # (chunk, B + 1)
        for name, (x, at, of) in values.items():
            matrix = sparse.csr_matrix((x, (at, of)), shape=(shapes[name], hi - lo))
            out[name] += (matrix @ k).T
    return out


def merge(a: Stats, b: Stats) -> Stats:
    """a + b, key by key; per-position sums are padded with zeros to the longer horizon."""
    out = dict(a)
    for key, value in b.items():
        if key not in out:
            out[key] = value
            continue
        mine = out[key]
        if key in _POSITION_KEYS and mine.shape[-1] != value.shape[-1]:
            width = max(mine.shape[-1], value.shape[-1])
            mine, value = (np.pad(x, ((0, 0), (0, width - x.shape[-1]))) for x in (mine, value))
        elif mine.shape != value.shape:
            raise ValueError(f"blocks disagree on {key!r}: shapes {mine.shape} and "
                             f"{value.shape} (one action space and one bootstrap per run)")
        out[key] = mine + value
    return out


@dataclass(frozen=True)
class StreamResult:
    """Estimates in the order asked, and one line for each estimator that could not run."""

    estimates: list[OPEEstimate]
    skipped: dict[str, str] = field(default_factory=dict)
    n_rows: int = 0
    n_trajectories: int = 0
    capped_share: dict[str, float] = field(default_factory=dict)  # NCIS kinds: share above c


def _check_support(stats: Stats) -> None:
    """``support.check_support`` without the logging policy's distribution, over every
    block: an action the target ever gives mass to must occur in the log."""
    never = (stats["mass"] > 0) & (stats["logged"] == 0)
    if never.any():
        act = int(np.flatnonzero(never)[0])
        raise ValueError(
            f"the target puts mass on action {act} (mean probability "
            f"{stats['mass'][act] / stats['n_rows'][0]:.3g}), which the logging policy never "
            f"takes in this log: no importance weight can estimate it")


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _kish(total: float, square: float) -> float:
    return float(total * total / square) if square > 0 else 0.0


def _row_values(s: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, float]]:
    """Per-decision estimator -> (values (B + 1,), ESS)."""
    n = s["one"]
    return {
        "ips": (_ratio(s["wc_r"], n), _kish(s["wc"][0], s["wc2"][0])),
        "snips": (_ratio(s["wc_r"], s["wc"]), _kish(s["wc"][0], s["wc2"][0])),
        "dm": (_ratio(s["v"], n), float(n[0])),
        "dr": (_ratio(s["v"] + s["wc_d"], n), _kish(s["wc"][0], s["wc2"][0])),
        "sndr": (_ratio(s["v"], n) + _ratio(s["w_d"], s["w"]), _kish(s["w"][0], s["w2"][0])),
        "switch_dr": (_ratio(s["v"] + s["kept_d"], n), _kish(s["kept"][0], s["kept2"][0])),
    }


def _per_decision_values(stats: Stats) -> np.ndarray:
    """sum_t pd_num_t / D_t per replicate (0 where D_t = 0), nan where D_0 = 0."""
    num, alive = stats["pd_num"], stats["pd_alive"]
    horizon = num.shape[1]
    ended = np.pad(stats["pd_ended"], ((0, 0), (0, max(0, horizon + 1 -
                                                       stats["pd_ended"].shape[1]))))
    denominator = alive + np.cumsum(ended, axis=1)[:, :horizon]
    values = np.nansum(_ratio(num, denominator), axis=1)
    return np.where(denominator[:, 0] > 0, values, np.nan)


def _trajectory_values(s: dict[str, np.ndarray], stats: Stats
                       ) -> dict[str, tuple[np.ndarray, float]]:
    out = {
        "ncis": (_ratio(s["step_wr"], s["step_w"]) * _ratio(s["steps"], s["one"]),
                 _kish(s["step_w"][0], s["step_w2"][0])),
        "ncis_trajectory": (_ratio(s["traj_wg"], s["traj_w"]),
                            _kish(s["traj_w"][0], s["traj_w2"][0])),
        "pdis": (_ratio(s["pdis"], s["one"]), _kish(s["pdis_w"][0], s["pdis_w2"][0])),
    }
    if "pd_num" in stats:
        out["ncis_per_decision"] = (_per_decision_values(stats),
                                    _kish(s["pd_last"][0], s["pd_last2"][0]))
    return out


def _why_undefined(name: str, overflow: bool) -> str:
    if overflow:
        return ("the importance weights overflow float64 (a product of many ratios): use an "
                "NCIS kind with a finite cap")
    if name in ("ncis_trajectory", "ncis_per_decision"):
        return ("every trajectory has importance weight 0 from its first step: the target "
                "never takes the logged first actions")
    return "every importance weight is 0: the target never takes a logged action"


def finalize(stats: Stats, settings: StreamSettings, *, has_model: bool = True
             ) -> StreamResult:
    """The estimates of ``settings.estimators`` from merged sums. Model estimators are
    skipped (with a line saying why) when ``has_model`` is False; an estimator whose value is
    undefined (all weights 0, overflow) is skipped with its reason."""
    _check_support(stats)
    values: dict[str, tuple[np.ndarray, float]] = {}
    units: dict[str, tuple[str, int]] = {}
    n_rows = int(stats["n_rows"][0])
    if "rows" in stats:
        rows = {name: stats["rows"][:, i] for i, name in enumerate(ROW_TERMS)}
        values.update(_row_values(rows))
        units.update({name: ("rows", n_rows) for name in ROW_ESTIMATORS})
    n_traj, shares = 0, {}
    if "traj" in stats:
        traj = {name: stats["traj"][:, i] for i, name in enumerate(TRAJ_TERMS)}
        values.update(_trajectory_values(traj, stats))
        n_traj = int(traj["one"][0])
        units.update({name: ("trajectories", n_traj) for name in TRAJECTORY_ESTIMATORS})
        shares = {"ncis": traj["step_capped"][0] / traj["steps"][0],
                  "ncis_trajectory": traj["traj_capped"][0] / n_traj,
                  "ncis_per_decision": traj["pd_capped"][0] / traj["steps"][0]}
    estimates, skipped = [], {}
    for name in settings.estimators:
        if name in MODEL_ESTIMATORS and not has_model:
            skipped[name] = "no reward model"
            continue
        replicate_values, ess = values[name]
        value = float(replicate_values[0])
        if not math.isfinite(value):
            table = "traj" if name in TRAJECTORY_ESTIMATORS else "rows"
            skipped[name] = _why_undefined(name, not np.isfinite(stats[table][0]).all())
            continue
        low, high = (percentile_interval(replicate_values[1:], settings.level)
                     if settings.n_bootstrap else (math.nan, math.nan))
        unit, n = units[name]
        estimates.append(OPEEstimate(name, value, low, high, ess, n, unit, settings.level))
    return StreamResult(estimates, skipped, n_rows, n_traj,
                        {k: float(v) for k, v in shares.items() if k in settings.estimators})
