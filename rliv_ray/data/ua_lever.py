"""Does the synthetic world have a long-term lever? Compare reference policies over seeds.

A world is only worth learning in if a policy that knows the latent state beats both the
constant-weight RankingModel and the immediate-reward-greedy policy on long-term value
(``../shared/DESIGN.md``, data sources 1); otherwise a myopic policy is already optimal and RL
has nothing to find. Long-term value per user over the horizon is

    LTV = sum_l value_l * (number of label-l events)       (default values 1, 1, 5, 20)

for click, effective view, follow, gift; session length and watch time are reported beside it.
Each seed simulates fresh users (a new population draw of the same world); intervals are 95%
t-intervals over seeds.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import stats

from rliv_ray import schema as S
from rliv_ray.data.ua_config import UAWorldConfig
from rliv_ray.data.ua_policies import ConstantPolicy, GreedyPolicy, OraclePolicy, Policy
from rliv_ray.data.ua_population import Population
from rliv_ray.data.ua_world import simulate_users

LTV_LABEL_VALUES = (1.0, 1.0, 5.0, 20.0)
ORACLE_INVESTMENT = 0.02
SESSION_GAP_MS = 30 * 60_000
"""Requests more than 30 minutes apart belong to different sessions (for session length)."""
METRICS = ("ltv", "requests", "session_length", "watch_time_min", "clicks", "follows", "gifts")


def reference_policies(config: UAWorldConfig,
                       label_values=LTV_LABEL_VALUES) -> dict[str, Policy]:
    """RankingModel (constant), immediate-greedy, and the latent-state oracle."""
    grid = config.action_grid
    return {
        "RankingModel": ConstantPolicy(config.logging_default_action),
        "Greedy": GreedyPolicy(grid, label_values),
        "Oracle": OraclePolicy(grid, config.k_potential, config.potential_threshold,
                               ORACLE_INVESTMENT, label_values),
    }


def policy_metrics(config: UAWorldConfig, policy: Policy, seed: int,
                   label_values=LTV_LABEL_VALUES) -> dict[str, float]:
    """Per-user means of long-term metrics for one seed's users under ``policy``."""
    world = dataclasses.replace(config, seed=seed)
    pop = Population.build(world)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    cols = simulate_users(world, pop, np.arange(world.n_users), policy, rng).columns
    n = world.n_users
    counts = {label: float(cols[label].sum()) for label in S.LABELS}
    sessions = _sessions(cols)
    return {
        "ltv": sum(v * counts[label] for v, label in zip(label_values, S.LABELS, strict=True)) / n,
        "requests": len(np.unique(cols[S.REQUEST_ID])) / n,
        "session_length": len(np.unique(cols[S.REQUEST_ID])) / max(sessions, 1),
        "watch_time_min": float(cols[S.WATCH_TIME_S].sum()) / 60.0 / n,
        "clicks": counts[S.CLICK] / n,
        "follows": counts[S.FOLLOW] / n,
        "gifts": counts[S.GIFT] / n,
    }


def session_numbers(cols: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The (user, time) order of the rows and each row's session number in that order, from 1:
    a user's requests more than SESSION_GAP_MS apart belong to different sessions."""
    order = np.lexsort((cols[S.TS_MS], cols[S.USER_ID]))
    user, ts = cols[S.USER_ID][order], cols[S.TS_MS][order]
    new = np.ones(len(user), dtype=bool)
    new[1:] = (user[1:] != user[:-1]) | (ts[1:] - ts[:-1] > SESSION_GAP_MS)
    return order, np.cumsum(new)


def _sessions(cols: dict[str, np.ndarray]) -> int:
    """Number of sessions (see :func:`session_numbers`)."""
    numbers = session_numbers(cols)[1]
    return int(numbers[-1]) if len(numbers) else 0


def compare_policies(config: UAWorldConfig, seeds: list[int],
                     policies: dict[str, Policy] | None = None) -> dict[str, dict]:
    """For each policy and metric: per-seed values, mean and 95% interval."""
    policies = policies or reference_policies(config)
    out = {}
    for name, policy in policies.items():
        runs = [policy_metrics(config, policy, seed) for seed in seeds]
        out[name] = {m: interval([r[m] for r in runs]) for m in METRICS}
    return out


def interval(values: list[float], level: float = 0.95) -> dict:
    """Mean and a t-interval over seeds (zero width with one seed)."""
    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean())
    half = 0.0
    if len(x) > 1:
        half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return {"mean": mean, "low": mean - half, "high": mean + half, "values": x.tolist()}


def paired_margin(result: dict[str, dict], better: str, worse: str,
                  metric: str = "ltv") -> dict:
    """Paired margin (better - worse) per seed over the mean of ``worse``, with its interval.

    Policies are compared on the same population and random stream of each seed, so the
    population's variance cancels and the interval reflects the policies' difference only.
    NaN when ``worse`` is zero on every seed.
    """
    b = np.asarray(result[better][metric]["values"])
    w = np.asarray(result[worse][metric]["values"])
    scale = w.mean() if w.mean() != 0 else np.nan
    return interval(((b - w) / scale).tolist())


def format_comparison(result: dict[str, dict], baseline: str,
                      metrics: tuple[str, ...] = METRICS) -> str:
    """Per-user means per policy, then each policy's paired margin over ``baseline`` (95% CI)."""
    lines = [f"{'per user':<24}" + "".join(f"{m:>20}" for m in metrics)]
    for name, values in result.items():
        lines.append(f"{name:<24}" + "".join(f"{values[m]['mean']:20.3f}" for m in metrics))
    for name in result:
        if name == baseline:
            continue
        cells = []
        for m in metrics:
            r = paired_margin(result, name, baseline, m)
            cells.append("n/a" if np.isnan(r["mean"]) else
                         f"{100 * r['mean']:+.1f}% [{100 * r['low']:+.0f},{100 * r['high']:+.0f}]")
        lines.append(f"{name + ' vs ' + baseline:<24}" + "".join(f"{c:>20}" for c in cells))
    return "\n".join(lines)


def separated(result: dict[str, dict], better: str, worse: str, metric: str = "ltv") -> bool:
    """True when the 95% interval of the paired margin of ``better`` over ``worse`` is > 0."""
    return paired_margin(result, better, worse, metric)["low"] > 0
