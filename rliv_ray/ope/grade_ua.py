"""The RLIV-UA user-author world for ``rliv ope-grade``, and its exposure selection.

Per seed s: a world of ``users`` x ``days`` with world seed s. Its users live once under the
logging policy (the log) and once under each target (the truth), every run from the random
stream ``(s, EVAL_STREAM, 0, 0)``: `rliv evaluate`'s rollout of seed 0 in one user bucket, so
the runs share the population, the users' pools and session schedules (common random numbers;
this world's draws are sequential, so the streams part once two policies' choices differ).

**The decision and its propensity.** Each request draws N candidates; every candidate draws a
ranking weight a_j ~ pi(. | candidate j) independently; the top-1 by Eq. 1,
rank_score * (c + a w)^b, is exposed (ties to the lower index, as the world sorts). The log
holds the exposed candidate only, with ``behavior_prob`` = mu(a | that candidate): the
probability of its own draw, not of being the logged row (a boosted weight wins the exposure
more often). Two ways to estimate are graded side by side:

* **as logged** (suffix " (as logged)"): the per-row estimators on the logged rows with the
  logged propensity and the target's probability of the logged weight for the exposed
  candidate. Biased for every target but the logging policy (README, "RLIV-UA's
  exposure-selected logs"); the grading measures by how much.
* **exposure** (no suffix): the decision is *which candidate is exposed*, j in 0..N-1. Its
  probability under any policy that draws the candidates' weights independently is exact:

      P(j exposed) = sum_g p_j(g) prod_{k != j} (1 - sum_h p_k(h) [k beats j at (h, g)])

  (:func:`exposure_probabilities`), where k beats j if its Eq. 1 score is higher, or equal
  with k < j. The exposure is all that moves the world (labels and the next state depend on
  the exposed candidate, not on its weight), so with these propensities the log is an
  ordinary contextual-bandit / sequential log and every estimator's assumptions hold. It
  needs every candidate's rank score and the logging distribution of every candidate, which
  the simulator has and a production log of exposures alone does not.

Rewards: r = click + effective view + 5 follow + 20 gift of the exposure (the weights of
`rliv evaluate`'s LTV). Long-term truth: J = mean over users of sum_t gamma^t E[r_t] of the
target's rollout, E[r_t] the world's true label probabilities of the exposed candidate
(conditional Monte Carlo; gamma = 1: the LTV over the horizon). Per-decision truth: the mean
over logged requests of sum_j P_pi(j exposed) E[r | j]. The per-decision reward model is a
ridge regression of r on the exposed candidate's state (the 18 features `rliv evaluate`'s
learned policies read) and rank score, cross-fitted over two halves of the users, predicted
for every candidate (exposure) or every weight (as logged). FQE is not run in this world
(README, "`rliv ope-grade`").
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from rliv_ray import schema as S
from rliv_ray.actions import ActionGrid
from rliv_ray.data.ua_config import UAWorldConfig
from rliv_ray.data.ua_generate import logging_policy
from rliv_ray.data.ua_lever import LTV_LABEL_VALUES, reference_policies
from rliv_ray.data.ua_policies import (
    Candidates,
    ConstantPolicy,
    EpsilonLoggingPolicy,
    GreedyPolicy,
    OraclePolicy,
    Policy,
    immediate_value,
)
from rliv_ray.data.ua_population import Population
from rliv_ray.data.ua_truth import discounted_returns
from rliv_ray.data.ua_world import simulate_users
from rliv_ray.evaluation.policies import ScoringPolicy
from rliv_ray.evaluation.world import EVAL_STREAM
from rliv_ray.grouping import group_starts
from rliv_ray.ope.grade import Graded, with_extra_policies
from rliv_ray.ope.grade_suite import DecisionLog, SuiteSettings, ridge_cross_fit, run_suite

__all__ = ["AS_LOGGED", "UAGradeSettings", "UAMixture", "candidate_distribution",
           "exposure_probabilities", "grade_ua_seed", "ua_family"]

WORLD = "rliv-ua"
AS_LOGGED = " (as logged)"
AS_LOGGED_ESTIMATORS = ("ips", "snips", "ncis", "dm", "dr", "ncis_stepwise", "pdis", "wpdis")
"""The per-row estimators graded on the exposure-selected rows as RLIV-UA logs them."""
FQE_NOTE = ("not run in this world: J sums hundreds of requests per user, which FQE needs as "
            "many fitted iterations to reach (README)")
_DUMMY = np.random.default_rng(0)  # deterministic policies take an rng they never use


@dataclass(frozen=True)
class UAMixture:
    """Each candidate's weight drawn from sum_k w_k pi_k(. | candidate), independently per
    candidate: a noisy mixture of policies."""

    parts: tuple
    weights: tuple[float, ...]
    grid: ActionGrid

    @property
    def observes_state(self) -> bool:
        return any(getattr(p, "observes_state", False) for p in self.parts)

    def act(self, cand: Candidates, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        dist = candidate_distribution(self, cand, self.grid)  # (A, N, G)
        u = rng.random(dist.shape[:2])
        actions = (u[..., None] > np.cumsum(dist, axis=2)[..., :-1]).sum(axis=2)
        probs = np.take_along_axis(dist, actions[..., None], axis=2)[..., 0]
        return actions.astype(np.int16), probs.astype(np.float32)


def candidate_distribution(policy: Policy, cand: Candidates, grid: ActionGrid) -> np.ndarray:
    """pi(. | candidate) (A, N, G) of the world's reference policies, a trained scorer (its
    epsilon-greedy rule) or a :class:`UAMixture` of them; ValueError for any other policy
    (its distribution is not known without sampling it)."""
    size = grid.size
    if isinstance(policy, EpsilonLoggingPolicy):
        dist = np.full(cand.rank_score.shape + (size,), policy.epsilon / size)
        dist[..., policy.default_action] += 1 - policy.epsilon
        return dist
    if isinstance(policy, ConstantPolicy):
        return _one_hot(np.full(cand.rank_score.shape, policy.action), size)
    if isinstance(policy, GreedyPolicy | OraclePolicy):
        return _one_hot(policy.act(cand, _DUMMY)[0], size)
    if isinstance(policy, ScoringPolicy):
        greedy = dataclasses.replace(policy, epsilon=0.0).act(cand, _DUMMY)[0]
        return (1 - policy.epsilon) * _one_hot(greedy, size) + policy.epsilon / size
    if isinstance(policy, UAMixture):
        return sum(w * candidate_distribution(p, cand, grid)
                   for w, p in zip(policy.weights, policy.parts, strict=True))
    raise ValueError(f"the distribution of {type(policy).__name__} over the weights is not "
                     "known (reference policies, trained scorers and their mixtures are)")


def _one_hot(index: np.ndarray, size: int) -> np.ndarray:
    return np.eye(size)[np.asarray(index, dtype=np.int64)]


def final_scores(rank_score: np.ndarray, grid: ActionGrid) -> np.ndarray:
    """Eq. 1's score of every candidate under every weight, (A, N, G), computed as the world
    computes it (so ties are the world's ties)."""
    actions = np.broadcast_to(np.arange(grid.size, dtype=np.int16),
                              rank_score.shape + (grid.size,))
    return grid.final_score(np.asarray(rank_score)[..., None], actions)


def exposed_index(rank_score: np.ndarray, actions: np.ndarray, grid: ActionGrid) -> np.ndarray:
    """The candidate the world exposes (top-1 of Eq. 1, stable: ties to the lower index),
    (A,)."""
    final = grid.final_score(rank_score, actions)
    return np.argsort(-final, axis=1, kind="stable")[:, 0]


def exposure_probabilities(final: np.ndarray, dists: Sequence[np.ndarray]) -> list[np.ndarray]:
    """P(candidate j is exposed) (A, N) under each per-candidate distribution (A, N, G) of
    ``dists``, weights drawn independently per candidate, top-1 exposure of ``final`` (A, N,
    G) with ties to the lower index (module docstring)."""
    final = np.asarray(final)
    n = final.shape[1]
    mine = final[:, :, :, None, None]  # (A, N_j, G_g, 1, 1)
    other = final[:, None, None, :, :]  # (A, 1, 1, N_k, G_h)
    index = np.arange(n)
    before = (index[None, :] < index[:, None])[None, :, None, :, None]  # k < j
    beats = (other > mine) | ((other == mine) & before)
    below = (~beats).astype(np.float64)
    out = []
    for dist in dists:
        # P(k does not beat j | j has g), summed over k's weights h that do not beat j (so a
        # candidate that cannot win gets exactly 0, not a rounding residue), then its product
        # over the other candidates k != j
        keep = np.einsum("ajgkh,akh->ajgk", below, dist)
        keep[:, index, :, index] = 1.0  # a candidate does not compete with itself
        win = np.prod(keep, axis=3)  # (A, N, G)
        out.append(np.clip((dist * win).sum(axis=2), 0.0, 1.0))  # rounding only
    return out


def ua_family(config: UAWorldConfig, mix: tuple[float, ...] = (0.25, 0.5, 0.75),
              extra: dict[str, Policy] | None = None) -> dict[str, Policy]:
    """The graded policies: Logging, the RankingModel, Greedy, the Oracle, Logging mixed per
    candidate with Greedy at each rate of ``mix`` and with the Oracle at 50%, then ``extra``
    (trained scorers)."""
    grid = config.action_grid
    log = logging_policy(config)
    refs = reference_policies(config, LTV_LABEL_VALUES)
    family: dict[str, Policy] = {"Logging": log, **refs}
    for rate in mix:
        family[f"Logging+Greedy {rate:.0%}"] = UAMixture((log, refs["Greedy"]),
                                                         (1 - rate, rate), grid)
    family["Logging+Oracle 50%"] = UAMixture((log, refs["Oracle"]), (0.5, 0.5), grid)
    return with_extra_policies(family, extra)


@dataclass(frozen=True)
class UAGradeSettings:
    """The user-author world's scale and objective for the grading."""

    users: int = 100
    days: int = 2
    gamma: float = 1.0
    """Discount per request of J (1: the LTV over the horizon, as `rliv evaluate` reports)."""
    mix: tuple[float, ...] = (0.25, 0.5, 0.75)
    world: dict = field(default_factory=dict)
    """UAWorldConfig overrides (``--set``)."""

    def config(self, seed: int) -> UAWorldConfig:
        config = UAWorldConfig.from_dict({**self.world, "n_users": self.users,
                                          "days": self.days, "seed": seed})
        if config.exposures_per_request != 1:
            raise ValueError("rliv ope-grade needs exposures_per_request = 1 (one exposed "
                             "candidate per request: the decision it grades)")
        return config


class _Recorder:
    """The logging policy, recording on every request what the estimators and the truth need:
    each candidate's true expected reward, state and rank score, the exposed candidate, and
    every policy's distribution of the exposed candidate's weight and of the exposure."""

    observes_state = True

    def __init__(self, behaviour: EpsilonLoggingPolicy, targets: dict[str, Policy],
                 grid: ActionGrid):
        self.behaviour, self.targets, self.grid = behaviour, targets, grid
        self.parts: dict[str, list[np.ndarray]] = {
            k: [] for k in ("value", "features", "exposed", "mu_exp", "mu_weight")}
        self.exposure: dict[str, list[np.ndarray]] = {name: [] for name in targets}
        self.weight: dict[str, list[np.ndarray]] = {name: [] for name in targets}

    def act(self, cand: Candidates, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        final = final_scores(cand.rank_score, self.grid)
        dists = [candidate_distribution(p, cand, self.grid) for p in self.targets.values()]
        mu = candidate_distribution(self.behaviour, cand, self.grid)
        *target_exp, mu_exp = exposure_probabilities(final, [*dists, mu])
        actions, probs = self.behaviour.act(cand, rng)
        exposed = exposed_index(cand.rank_score, actions, self.grid)
        rows = np.arange(len(exposed))
        score = np.asarray(cand.rank_score, np.float64)[..., None]
        self.parts["value"].append(immediate_value(cand, LTV_LABEL_VALUES))
        self.parts["features"].append(np.concatenate(
            [cand.state, score, np.log(score / (1 - score))], axis=2).astype(np.float32))
        self.parts["exposed"].append(exposed)
        self.parts["mu_exp"].append(mu_exp)
        self.parts["mu_weight"].append(mu[rows, exposed])
        for name, dist, exp in zip(self.targets, dists, target_exp, strict=True):
            self.exposure[name].append(exp)
            self.weight[name].append(dist[rows, exposed])
        return actions, probs


class _TruthRecorder:
    """A target policy acting as itself, recording the true expected reward of each exposure."""

    def __init__(self, policy: Policy, grid: ActionGrid):
        self.policy, self.grid = policy, grid
        self.observes_state = getattr(policy, "observes_state", False)
        self.value: list[np.ndarray] = []

    def act(self, cand: Candidates, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        actions, probs = self.policy.act(cand, rng)
        exposed = exposed_index(cand.rank_score, actions, self.grid)
        value = immediate_value(cand, LTV_LABEL_VALUES)
        self.value.append(value[np.arange(len(exposed)), exposed])
        return actions, probs


def _user_returns(user: np.ndarray, request: np.ndarray, reward: np.ndarray,
                  gamma: float) -> np.ndarray:
    """sum_t gamma^t r_t per user (t: the user's request index from 0), in user order."""
    order = np.lexsort((request, user))
    starts = group_starts(user[order])
    return discounted_returns(reward[order], starts, gamma)[starts]


def _truth(config: UAWorldConfig, pop: Population, policy: Policy, seed_seq: list[int],
           gamma: float) -> np.ndarray:
    """Each user's J under ``policy`` (users with a request): its rollout on the log's random
    stream, expected rewards."""
    recorder = _TruthRecorder(policy, config.action_grid)
    rng = np.random.default_rng(np.random.SeedSequence(seed_seq))
    cols = simulate_users(config, pop, np.arange(config.n_users), recorder, rng).columns
    return _user_returns(cols[S.USER_ID], cols[S.USER_REQUEST_IDX],
                         np.concatenate(recorder.value), gamma)


def grade_ua_seed(seed: int, settings: UAGradeSettings, suite: SuiteSettings, *,
                  extra: Callable[[UAWorldConfig], dict[str, Policy]] | None = None,
                  say: Callable[[str], None] = print) -> tuple[list[Graded], list[dict]]:
    """Grade every estimator on one seed of the user-author world, exposure level and as
    logged: (graded estimates, one fact row per policy)."""
    began = time.perf_counter()
    config = settings.config(seed)
    grid = config.action_grid
    pop = Population.build(config)
    policies = ua_family(config, settings.mix, extra(config) if extra else None)
    recorder = _Recorder(logging_policy(config), policies, grid)
    seed_seq = [config.seed, EVAL_STREAM, 0, 0]
    rng = np.random.default_rng(np.random.SeedSequence(seed_seq))
    cols = simulate_users(config, pop, np.arange(config.n_users), recorder, rng).columns
    order = np.lexsort((cols[S.USER_REQUEST_IDX], cols[S.USER_ID]))
    cols = {k: v[order] for k, v in cols.items()}

    def recorded(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts)[order]

    value, features = recorded(recorder.parts["value"]), recorded(recorder.parts["features"])
    exposed, mu_exp = recorded(recorder.parts["exposed"]), recorded(recorder.parts["mu_exp"])
    rows = np.arange(len(exposed))
    if not np.allclose(features[rows, exposed, -2], cols[S.RANK_SCORE]):
        raise RuntimeError("the recorder's exposed candidates are not the log's")
    rewards = sum(v * cols[label].astype(np.float64)
                  for v, label in zip(LTV_LABEL_VALUES, S.LABELS, strict=True))
    user = cols[S.USER_ID]
    action = cols[S.ACTION].astype(np.int64)
    exposed_features = features[rows, exposed]  # (n, d) the logged row's candidate
    weights = np.broadcast_to(np.eye(grid.size), (len(rows), grid.size, grid.size))
    as_logged_q = ridge_cross_fit(  # r on the exposed candidate and its weight, every weight
        np.concatenate([exposed_features, weights[rows, action]], axis=1), rewards,
        np.concatenate([np.broadcast_to(exposed_features[:, None, :], weights.shape[:2]
                                        + exposed_features.shape[1:]), weights], axis=2), user)
    as_logged = DecisionLog(action=action, behavior_prob=cols[S.BEHAVIOR_PROB].astype(float),
                            behavior_probs=recorded(recorder.parts["mu_weight"]),
                            rewards=rewards, user=user, q_hat=as_logged_q)
    exposure = DecisionLog(action=exposed, behavior_prob=mu_exp[rows, exposed],
                           behavior_probs=mu_exp, rewards=rewards, user=user,
                           q_hat=ridge_cross_fit(exposed_features, rewards, features, user))
    logged_suite = dataclasses.replace(suite, fqe=None, estimators=tuple(
        e for e in suite.estimators if e in AS_LOGGED_ESTIMATORS))
    exposure_suite = dataclasses.replace(suite, fqe=None)
    logged_j = float(_user_returns(user, cols[S.USER_REQUEST_IDX], value[rows, exposed],
                                   settings.gamma).mean())  # Logging's J along its own log
    say(f"rliv-ua seed {seed}: {exposure.n:,} logged requests of {exposure.users:,} users "
        f"({time.perf_counter() - began:.0f}s)")
    graded, facts = [], []
    for name, policy in policies.items():
        t0 = time.perf_counter()
        per_user = _truth(config, pop, policy, seed_seq, settings.gamma)
        truth_j = float(per_user.mean())
        if policy is policies["Logging"] and not np.isclose(truth_j, logged_j, rtol=1e-9):
            raise RuntimeError(f"the logging policy's truth {truth_j} is not its log's "
                               f"{logged_j}: the log and the truth do not share their random "
                               "numbers")
        pi_exp = recorded(recorder.exposure[name])
        truth_step = float(np.mean((pi_exp * value).sum(axis=1)))
        results = [(r, "") for r in run_suite(exposure, pi_exp, exposure_suite)]
        results += [(r, AS_LOGGED) for r in run_suite(as_logged,
                                                      recorded(recorder.weight[name]),
                                                      logged_suite)
                    if r.estimator in AS_LOGGED_ESTIMATORS]
        for r, suffix in results:
            e = r.estimate
            truth = truth_step if r.question == "per-decision" else truth_j
            note = FQE_NOTE if r.estimator == "fqe" else r.note
            graded.append(Graded(WORLD, seed, name, r.estimator + suffix, r.question,
                                 e.value if e else float("nan"),
                                 e.ci_low if e else float("nan"),
                                 e.ci_high if e else float("nan"),
                                 e.effective_sample_size if e else float("nan"),
                                 truth, truth_j, note))
        facts.append({"world": WORLD, "seed": seed, "policy": name,
                      "truth_long_term": truth_j, "truth_per_decision": truth_step,
                      "truth_se": float(per_user.std(ddof=1) / np.sqrt(len(per_user))),
                      "exposure_weight_ess": _ess(pi_exp[rows, exposed] / mu_exp[rows, exposed])})
        say(f"  {name:>22}: true J {truth_j:9.3f}, per request {truth_step:7.4f}; "
            f"{len(results)} estimates ({time.perf_counter() - t0:.0f}s)")
    return graded, facts


def _ess(w: np.ndarray) -> float:
    return float(w.sum() ** 2 / (w @ w)) if (w @ w) > 0 else 0.0

