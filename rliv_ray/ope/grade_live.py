"""The live-stream world (SL-MGAC's inject decision) for ``rliv ope-grade``.

Per seed s: a world of ``users`` x ``days`` with world seed s. Its users live once under the
logging policy (the log) and once under each target policy (the truth), every run from the
random stream ``(s, TRUTH_STREAM, 0)`` of :func:`rliv_ray.ope.evaluate.true_value_runs`: the
world's draws are counter-based per (user, request index), so the log and every truth run
meet the same schedules, warm-up and per-request randomness (common random numbers) and the
logging policy's truth is its own log's expected return.

While the log is written, a recorder asks every target for its P(inject) on the logged
requests (the oracles read the world's latent state, which the log does not keep) and keeps
the latent expected gain g(s) = E[T^l] - beta E[T^v / n] of each request.

* Long-term truth: J = the mean over users of sum_t gamma^t E[r_t | s_t, a_t] of the
  target's on-policy run (``true_value_runs``, expected rewards, per request from each
  user's first request; terminal at the user's last request).
* Per-decision truth: the mean over logged requests of pi(1 | s) g(s): the target's expected
  reward per request on the logged states, the quantity the per-decision estimators target.
* Rewards in the log: Eq. 5, r = a (T^l - beta T^v / n), realised.
* The per-decision reward model (DM, DR, SNDR, Switch-DR): q(s, 0) = 0 (Eq. 5), q(s, 1) a
  ridge regression of r on the state and its squares over the logged injects, cross-fitted
  over two halves of the users. FQE's state: the 9 user and 5 live-stream features,
  log1p(3-week live watch / 60 s), whether a stream is on air, and the session state
  (log1p of the session index and of the gap to the previous request).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from rliv_ray import schema as S
from rliv_ray.data.live_config import LiveWorldConfig
from rliv_ray.data.live_metrics import allocation_rewards
from rliv_ray.data.live_policies import (
    AlwaysPolicy,
    LookaheadOracle,
    OraclePolicy,
    expected_gain,
    logging_policy,
)
from rliv_ray.data.live_population import LivePopulation
from rliv_ray.data.live_samples import session_state
from rliv_ray.data.live_world import LivePolicy, simulate_live_users
from rliv_ray.data.ua_truth import discounted_returns
from rliv_ray.ope.evaluate import TRUTH_STREAM, true_value_runs
from rliv_ray.ope.grade import Graded, with_extra_policies
from rliv_ray.ope.grade_suite import DecisionLog, SuiteSettings, ridge_cross_fit, run_suite

__all__ = ["LiveGradeSettings", "LiveMixture", "grade_live_seed", "live_family"]

WORLD = "live"
CAUTIOUS_MARGIN_S = 20.0
"""The cautious oracle injects only where the immediate expected gain exceeds 20 s (a margin
from ``rliv check-live-world``'s grid, fixed before any grading)."""
LOOKAHEAD = {"future_value_s": 0.0, "potential_value_s": 100.0}
"""The long-horizon oracle's V and W as ``rliv check-live-world`` tuned them on its own seeds
for the shipped world (benchmarks/RESULTS.md: V = 0 s, W = 100 s)."""
EXPLORATION = 0.2
"""Eq. 16's exploration, for the epsilon-greedy oracle."""


@dataclass(frozen=True)
class LiveMixture:
    """P(inject) = sum_k w_k P_k(inject): a noisy mixture of policies (an epsilon-greedy
    policy is a mixture with the fair coin ``AlwaysPolicy(0.5)``)."""

    parts: tuple
    weights: tuple[float, ...]

    def inject_probability(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return sum(w * np.asarray(p.inject_probability(obs), np.float64)
                   for w, p in zip(self.weights, self.parts, strict=True))

    def reset_sessions(self) -> None:
        for part in self.parts:
            if hasattr(part, "reset_sessions"):
                part.reset_sessions()


def mixture_label(base: str, other: str, rate: float) -> str:
    return f"{base}+{other} {rate:.0%}"


def live_family(config: LiveWorldConfig, mix: tuple[float, ...] = (0.25, 0.5, 0.75),
                extra: dict[str, LivePolicy] | None = None) -> dict[str, LivePolicy]:
    """The graded policies: logging, always-inject, the immediate, cautious and long-horizon
    oracles, the epsilon-greedy oracle, logging mixed with the immediate oracle at each rate
    of ``mix`` and with always-inject at 50%, then ``extra`` (trained policies)."""
    log = logging_policy(config)
    oracle = OraclePolicy(config.beta)
    always = AlwaysPolicy(1.0)
    family: dict[str, LivePolicy] = {
        "logging": log,
        "always inject": always,
        "immediate oracle": oracle,
        "cautious oracle": OraclePolicy(config.beta, CAUTIOUS_MARGIN_S),
        "long-horizon oracle": LookaheadOracle(config.beta, 0.9, **LOOKAHEAD),
        f"immediate oracle eps {EXPLORATION:g}": LiveMixture(
            (oracle, AlwaysPolicy(0.5)), (1 - EXPLORATION, EXPLORATION)),
    }
    for rate in mix:
        family[mixture_label("logging", "oracle", rate)] = LiveMixture((log, oracle),
                                                                      (1 - rate, rate))
    family[mixture_label("logging", "always", 0.5)] = LiveMixture((log, always), (0.5, 0.5))
    return with_extra_policies(family, extra)


@dataclass(frozen=True)
class LiveGradeSettings:
    """The live world's scale and objective for the grading."""

    users: int = 300
    days: int = 1
    gamma: float = 0.9
    """Discount per request of J (0.9: the objective SL-MGAC trains and ``rliv
    check-live-world`` checks)."""
    mix: tuple[float, ...] = (0.25, 0.5, 0.75)
    world: dict = field(default_factory=dict)
    """LiveWorldConfig overrides (``--set``)."""

    def config(self, seed: int) -> LiveWorldConfig:
        return LiveWorldConfig.from_dict({**self.world, "n_users": self.users,
                                          "days": self.days, "seed": seed})


class _Recorder:
    """The logging policy, recording every target's P(inject), the logging policy's own and
    the latent expected gain on each request it serves."""

    def __init__(self, behaviour: LivePolicy, targets: dict[str, LivePolicy], beta: float):
        self.behaviour, self.targets, self.beta = behaviour, targets, beta
        self.request_ids: list[np.ndarray] = []
        self.gain: list[np.ndarray] = []
        self.logging: list[np.ndarray] = []
        self.seen: dict[str, list[np.ndarray]] = {name: [] for name in targets}

    def inject_probability(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        on_air = np.asarray(obs[S.LIVE_ID]) >= 0
        self.request_ids.append(np.asarray(obs[S.REQUEST_ID]))
        self.gain.append(expected_gain(obs, self.beta))
        for name, policy in self.targets.items():
            p = np.asarray(policy.inject_probability(obs), np.float64)
            self.seen[name].append(np.where(on_air, p, 0.0))
        p = np.asarray(self.behaviour.inject_probability(obs), np.float64)
        self.logging.append(np.where(on_air, p, 0.0))
        return p


def _states(cols: dict[str, np.ndarray]) -> np.ndarray:
    """FQE's state per row (module docstring), rows sorted by user then request."""
    index, gap = session_state(cols[S.USER_ID], cols[S.TS_MS], cols[S.SESSION_END])
    return np.column_stack([
        cols[S.USER_FEATURES], cols[S.LIVE_FEATURES],
        np.log1p(cols[S.LIVE_WATCH_3W_S] / 60.0), (cols[S.LIVE_ID] >= 0).astype(np.float64),
        index, gap]).astype(np.float32)


def _two_actions(p_inject: np.ndarray) -> np.ndarray:
    return np.column_stack([1.0 - p_inject, p_inject])


def grade_live_seed(seed: int, settings: LiveGradeSettings, suite: SuiteSettings, *,
                    extra: Callable[[LiveWorldConfig], dict[str, LivePolicy]] | None = None,
                    say: Callable[[str], None] = print) -> tuple[list[Graded], list[dict]]:
    """Grade every estimator on one seed of the live world: (graded estimates, one fact row
    per policy: its truths and injection ratio)."""
    began = time.perf_counter()
    config = settings.config(seed)
    pop = LivePopulation.build(config)
    users = np.arange(config.n_users)
    policies = live_family(config, settings.mix, extra(config) if extra else None)
    for policy in policies.values():
        if hasattr(policy, "reset_sessions"):
            policy.reset_sessions()
    recorder = _Recorder(logging_policy(config), policies, config.beta)
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, TRUTH_STREAM, 0]))
    cols = simulate_live_users(config, pop, users, recorder, rng).columns
    if not np.array_equal(np.concatenate(recorder.request_ids), cols[S.REQUEST_ID]):
        raise RuntimeError("the recorder's requests are not the log's")  # a broken invariant
    order = np.lexsort((cols[S.USER_REQUEST_IDX], cols[S.USER_ID]))
    cols = {k: v[order] for k, v in cols.items()}
    gain = np.concatenate(recorder.gain)[order]
    p_log = np.concatenate(recorder.logging)[order]
    action = cols[S.ACTION].astype(np.int64)
    rewards = allocation_rewards(action, cols[S.LIVE_WATCH_S], cols[S.VIDEO_WATCH_S],
                                 cols[S.N_VIDEOS], config.beta)
    states = _states(cols)
    on_air = cols[S.LIVE_ID] >= 0
    injected = action == 1
    q1 = (ridge_cross_fit(states, rewards, states, cols[S.USER_ID], fit_rows=injected)
          if injected.any() else np.zeros(len(action)))
    q_hat = np.column_stack([np.zeros(len(action)), np.where(on_air, q1, 0.0)])
    log = DecisionLog(action=action, behavior_prob=cols[S.BEHAVIOR_PROB].astype(np.float64),
                      behavior_probs=_two_actions(p_log), rewards=rewards,
                      user=cols[S.USER_ID], q_hat=q_hat, states=states)
    logged_j = float(discounted_returns(action * gain, log.starts, settings.gamma)[log.starts]
                     .mean())  # the logging policy's expected J along its own log
    say(f"live seed {seed}: {log.n:,} logged requests of {log.users:,} users, "
        f"{action.mean():.1%} injected ({time.perf_counter() - began:.0f}s)")
    graded, facts = [], []
    for name, policy in policies.items():
        t0 = time.perf_counter()
        p_target = np.concatenate(recorder.seen[name])[order]
        run = true_value_runs(policy, config, users, (0,), beta=config.beta,
                              gamma=settings.gamma, population=pop)[0]
        if len(run.user_return) != log.users:
            raise RuntimeError(f"{name}: {len(run.user_return)} users in the truth run, "
                               f"{log.users} in the log")  # common random numbers broken
        truth_j = float(run.user_return.mean())
        if policy is policies["logging"] and not np.isclose(truth_j, logged_j, rtol=1e-9):
            raise RuntimeError(f"the logging policy's truth {truth_j} is not its log's "
                               f"{logged_j}: the log and the truth do not share their random "
                               "numbers")
        truth_step = float(np.mean(p_target * gain))
        results = run_suite(log, _two_actions(p_target), suite)
        for r in results:
            e = r.estimate
            truth = truth_step if r.question == "per-decision" else truth_j
            graded.append(Graded(WORLD, seed, name, r.estimator, r.question,
                                 e.value if e else float("nan"),
                                 e.ci_low if e else float("nan"),
                                 e.ci_high if e else float("nan"),
                                 e.effective_sample_size if e else float("nan"),
                                 truth, truth_j, r.note))
        facts.append({"world": WORLD, "seed": seed, "policy": name, "truth_long_term": truth_j,
                      "truth_se": float(run.user_return.std(ddof=1)
                                        / np.sqrt(len(run.user_return))),
                      "truth_per_decision": truth_step,
                      "injection_ratio": run.injection_ratio_with_live,
                      "logged_inject_share": float(np.mean(p_target[on_air]))
                      if on_air.any() else 0.0})
        say(f"  {name:>26}: true J {truth_j:9.3f}, per request {truth_step:7.3f}; "
            f"{len(results)} estimates ({time.perf_counter() - t0:.0f}s)")
    return graded, facts
