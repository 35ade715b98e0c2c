"""Does the live-stream world reward long-term thinking *under the objective that is trained*?

Before any method trains, the long-horizon oracle (:class:`LookaheadOracle`) must beat the
immediate oracle and the best myopic threshold rule by more than the comparison's resolution,
under the objective the samples define (DESIGN.md, "Data sources"; issue 13):

    J = mean over users of sum_t d_t r_t,   r_t = a_t * (E[T^l] - beta * E[T^v / n])

from each user's first request, terminal at the user's last request; d_t = gamma^t with
``discount="request"`` (gamma on every transition, the samples' default) or gamma^k_t with k_t
the sessions ended before request t (``discount="session"``). Rewards are the world's expected
ones (EQUATIONS.md 1.5), so only the policies' decisions and the users' paths vary.

The policies, all with latent knowledge:

* immediate oracle: inject iff g = E[T^l] - beta E[T^v / n] > 0 (the best rule for gamma = 0);
* myopic threshold: inject iff g > m, m tuned on separate seeds (``tune_seeds``) over a grid
  that includes negative m (inject at a loss now);
* long-horizon oracle: inject iff g - gamma (1 - P(click)) P(leave | unwanted, s) V
  + gamma P(click) potential(s) W > 0, V and W tuned on the same separate seeds (a law that
  is off is not tuned: V = 0 or W = 0);
* never: the reference of the video-time cost (Eq. 5 alone makes a lost user free, so the
  video watch time a policy costs is reported beside J).

Every policy runs on the same evaluation seeds (same population per seed, and common random
numbers per (user, request index): RequestDraws); margins are paired per seed with 95%
Student-t intervals. The check passes when the lower end of the oracle's margin over both
myopic rules is above zero.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

from rliv_ray import schema as S
from rliv_ray.data.live_config import LiveWorldConfig
from rliv_ray.data.live_metrics import policy_run, session_discounted_returns
from rliv_ray.data.live_policies import AlwaysPolicy, LivePolicy, LookaheadOracle, OraclePolicy
from rliv_ray.data.ua_truth import discounted_returns
from rliv_ray.grouping import group_starts

DISCOUNTS = ("request", "session")
TUNE_SEED_OFFSET = 1_000
"""Tuning seeds are ``config.seed + TUNE_SEED_OFFSET + i``: never the evaluation seeds."""
ORACLE, IMMEDIATE, MYOPIC, NEVER = ("long-horizon oracle", "immediate oracle",
                                    "myopic threshold", "never inject")


@dataclass(frozen=True)
class LiveCheckSettings:
    """Scale and objective of :func:`check_live_world`."""

    users: int = 4_000
    seeds: int = 6
    """Evaluation seeds; the intervals have seeds - 1 degrees of freedom."""
    tune_seeds: int = 2
    gamma: float = 0.9
    discount: str = "request"
    """``request``: gamma on every transition; ``session``: only into a new session."""
    margins_s: tuple[float, ...] = (-20.0, -10.0, -5.0, 0.0, 5.0, 10.0, 20.0, 40.0)
    """Thresholds m tried for the myopic rule (seconds of expected reward); negative ones
    inject at a loss now, as a rule that banks on the future would."""
    future_values_s: tuple[float, ...] = (25.0, 50.0, 100.0, 200.0, 400.0)
    """Values V of a lost user's future tried for the long-horizon oracle (leave law on)."""
    potential_values_s: tuple[float, ...] = (25.0, 50.0, 100.0, 200.0, 400.0)
    """Values W of a unit of unlocked affinity tried for the oracle (potential law on)."""

    def __post_init__(self) -> None:
        if self.users < 1 or self.tune_seeds < 1:
            raise ValueError(f"users and tune_seeds must be >= 1, got {self.users} and "
                             f"{self.tune_seeds}")
        if self.seeds < 2:
            raise ValueError(f"seeds must be >= 2 (an interval needs two), got {self.seeds}")
        if not 0 <= self.gamma < 1:
            raise ValueError(f"gamma must be in [0, 1), got {self.gamma}")
        if self.discount not in DISCOUNTS:
            raise ValueError(f"discount must be one of {DISCOUNTS}, got {self.discount!r}")
        if not self.margins_s or not self.future_values_s or not self.potential_values_s:
            raise ValueError("margins_s, future_values_s and potential_values_s must not be "
                             "empty")


def policy_objectives(config: LiveWorldConfig, policy: LivePolicy, users: int, seed: int,
                      gamma: float) -> dict[str, float]:
    """One on-policy run: J under both discounts, video minutes, inject share, requests (per
    user means)."""
    world, cols = policy_run(config, policy, users=users, seed=seed)
    reward = cols[S.ACTION] * (cols[S.TRUE_EXPECTED_LIVE_WATCH_S]
                               - world.beta * cols[S.TRUE_EXPECTED_VIDEO_WATCH_PER_VIDEO_S])
    starts = group_starts(cols[S.USER_ID])
    n = world.n_users
    return {
        "request": float(discounted_returns(reward, starts, gamma)[starts].sum() / n),
        "session": float(session_discounted_returns(reward, cols[S.SESSION_END], starts,
                                                    gamma).sum() / n),
        "video_min": float(cols[S.VIDEO_WATCH_S].sum() / 60 / n),
        "inject": float(cols[S.ACTION].mean()),
        "requests": len(reward) / n,
    }


def interval(values) -> tuple[float, float]:
    """Mean and 95% Student-t half-width over seeds."""
    x = np.asarray(values, dtype=np.float64)
    return float(x.mean()), float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))


def _tune(config: LiveWorldConfig, s: LiveCheckSettings, make: Callable[[float], LivePolicy],
          grid: tuple[float, ...]) -> float:
    """The grid value with the best mean J on the tuning seeds."""
    seeds = [config.seed + TUNE_SEED_OFFSET + i for i in range(s.tune_seeds)]
    score = [np.mean([policy_objectives(config, make(v), s.users, seed, s.gamma)[s.discount]
                      for seed in seeds]) for v in grid]
    return grid[int(np.argmax(score))]


def check_live_world(config: LiveWorldConfig, s: LiveCheckSettings = LiveCheckSettings()) -> dict:
    """Tune the myopic threshold and the oracle's V on separate seeds, run the four policies
    on the evaluation seeds, and compare them (see the module docstring). Returns a
    JSON-ready dict; ``passed`` says whether the oracle beats both myopic rules."""
    beta, gamma = config.beta, s.gamma
    m = _tune(config, s, lambda v: OraclePolicy(beta, v), s.margins_s)
    # a law that is off makes its grid flat: skip it (V = 0, W = 0)
    v = _tune(config, s, lambda x: LookaheadOracle(beta, gamma, x), s.future_values_s
              ) if config.leave_rate > 0 else 0.0
    w = _tune(config, s, lambda x: LookaheadOracle(beta, gamma, v, x), s.potential_values_s
              ) if config.potential_gain > 0 and max(config.potential_shares) > 0 else 0.0
    policies = {ORACLE: (LookaheadOracle(beta, gamma, v, w), f"V = {v:g} s, W = {w:g} s"),
                IMMEDIATE: (OraclePolicy(beta), "m = 0 s"),
                MYOPIC: (OraclePolicy(beta, m), f"m = {m:g} s"),
                NEVER: (AlwaysPolicy(0.0), "")}
    seeds = [config.seed + i for i in range(s.seeds)]
    runs = {name: [policy_objectives(config, p, s.users, seed, gamma) for seed in seeds]
            for name, (p, _) in policies.items()}
    other = DISCOUNTS[1 - DISCOUNTS.index(s.discount)]

    def column(name, key):
        return np.array([r[key] for r in runs[name]])

    rows = []
    oracle_j, never_video = column(ORACLE, s.discount), column(NEVER, "video_min")
    for name, (_, param) in policies.items():
        j = column(name, s.discount)
        margin, half = interval(oracle_j - j)
        cost, cost_half = interval(never_video - column(name, "video_min"))
        rows.append({"policy": name, "parameter": param, "J": interval(j)[0],
                     "J_ci95": interval(j)[1], "oracle_margin": margin,
                     "oracle_margin_ci95": half, "oracle_margin_rel": margin / j.mean()
                     if j.mean() else float("nan"), f"J_{other}": interval(column(name, other))[0],
                     "video_cost_min": cost, "video_cost_ci95": cost_half,
                     "inject_share": float(column(name, "inject").mean()),
                     "requests_per_user": float(column(name, "requests").mean())})
    by_name = {r["policy"]: r for r in rows}
    passed = all(by_name[n]["oracle_margin"] - by_name[n]["oracle_margin_ci95"] > 0
                 for n in (IMMEDIATE, MYOPIC))
    return {"settings": dataclasses.asdict(s), "seeds": seeds, "tuned_margin_s": m,
            "tuned_future_value_s": v, "tuned_potential_value_s": w, "rows": rows, "passed": passed,
            "world": config.to_dict()}


def format_check(result: dict) -> str:
    """The check as a Markdown table plus one verdict line."""
    s = result["settings"]
    other = DISCOUNTS[1 - DISCOUNTS.index(s["discount"])]
    lines = [f"{s['users']} users x {result['world']['days']} days, seeds {result['seeds']}; "
             f"J: gamma {s['gamma']} per {s['discount']}, terminal at the user's last request; "
             f"paired 95% intervals over seeds",
             f"| policy | parameter | J | oracle - policy | J (per {other}) | video cost "
             "(min/user) | inject share | requests/user |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["rows"]:
        rel = r["oracle_margin_rel"]
        margin = ("-" if r["policy"] == ORACLE else
                  f"{r['oracle_margin']:+.2f} ± {r['oracle_margin_ci95']:.2f}"
                  + ("" if np.isnan(rel) else f" ({100 * rel:+.1f}%)"))
        lines.append(f"| {r['policy']} | {r['parameter']} | {r['J']:.2f} ± {r['J_ci95']:.2f} | "
                     f"{margin} | {r[f'J_{other}']:.2f} | {r['video_cost_min']:+.2f} ± "
                     f"{r['video_cost_ci95']:.2f} | {r['inject_share']:.3f} | "
                     f"{r['requests_per_user']:.1f} |")
    return "\n".join(lines)


def failure_line(result: dict) -> str:
    """One line saying which myopic rule the oracle does not clearly beat."""
    rows = {r["policy"]: r for r in result["rows"]}
    worst = min((IMMEDIATE, MYOPIC), key=lambda n: rows[n]["oracle_margin"]
                - rows[n]["oracle_margin_ci95"])
    r = rows[worst]
    return (f"no long-term lever under the trained objective: the long-horizon oracle beats the "
            f"{worst} by {r['oracle_margin']:+.2f} ± {r['oracle_margin_ci95']:.2f} per user "
            f"(95% interval), not more than the interval")
