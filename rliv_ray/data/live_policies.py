"""Live-stream allocation policies for the synthetic world (:class:`LivePolicy` objects).

A policy maps the batch of current requests' observations (log column names, plus latent
``S.TRUE_*`` keys only oracles may read) to P(a = 1) per request; the world samples the action
and logs the probability of the logged action as ``behavior_prob``:

* :class:`EpsilonLoggingPolicy`: the logging policy, a noisy heuristic mixed with a fair coin,
  so every request with a live stream on air has a propensity strictly inside (0, 1);
* :class:`AlwaysPolicy`: a constant probability (1 = "Dummy" always-inject, 0 = never);
* :class:`OraclePolicy`: the immediate-greedy oracle on the latent state (with a margin: the
  myopic threshold rule);
* :class:`LookaheadOracle`: the long-horizon oracle, which also prices what an unwanted insert
  costs the user's future.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

from rliv_ray import schema as S
from rliv_ray.data.io import mix64
from rliv_ray.data.live_config import LiveWorldConfig
from rliv_ray.data.live_world import (
    LIVE_FEATURE_NAMES,
    TRUE_CLICK_PROB,
    TRUE_LEAVE_PROB,
    TRUE_POTENTIAL,
    USER_FEATURE_NAMES,
    LivePolicy,
)

__all__ = ["AlwaysPolicy", "EpsilonLoggingPolicy", "LivePolicy", "LookaheadOracle",
           "OraclePolicy", "logging_policy", "observation_from_log"]


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class EpsilonLoggingPolicy:
    """The logging policy: a noisy heuristic mixed with a fair coin.

        p_h = sigmoid(bias + k_watch * log1p(live_watch_3w_s / 60) + k_ranker * ranker_score
                      + k_evening * cos(2 pi (hour - 21) / 24) + noise * z)
        P(a = 1) = (1 - epsilon) * p_h + epsilon / 2          in [eps/2, 1 - eps/2]

    z ~ N(0, 1) is a hash of (request_id, seed): the policy is a deterministic function of the
    logged columns, so its propensities can be recomputed from the log.
    """

    epsilon: float = 0.2
    noise: float = 0.5
    seed: int = 0
    bias: float = -3.5
    k_watch: float = 0.8
    k_ranker: float = 0.4
    k_evening: float = 0.5

    def inject_probability(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        user, live = obs[S.USER_FEATURES], obs[S.LIVE_FEATURES]
        sin = user[:, USER_FEATURE_NAMES.index("hour_sin")]
        cos = user[:, USER_FEATURE_NAMES.index("hour_cos")]
        peak = 2 * np.pi * 21 / 24
        evening = cos * np.cos(peak) + sin * np.sin(peak)
        bits = mix64(obs[S.REQUEST_ID], self.seed) >> np.uint64(11)
        uniform = np.clip(bits.astype(np.float64) * 2.0**-53, 1e-12, 1 - 1e-12)
        logit = (self.bias + self.k_watch * np.log1p(obs[S.LIVE_WATCH_3W_S] / 60.0)
                 + self.k_ranker * live[:, LIVE_FEATURE_NAMES.index("ranker_score")]
                 + self.k_evening * evening + self.noise * ndtri(uniform))
        return (1 - self.epsilon) * _sigmoid(logit) + self.epsilon / 2


@dataclass(frozen=True)
class AlwaysPolicy:
    """The same injection probability ``p`` for every request (1: "Dummy", 0: never)."""

    p: float = 1.0

    def inject_probability(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return np.full(len(obs[S.USER_ID]), self.p)


@dataclass(frozen=True)
class OraclePolicy:
    """Immediate-greedy oracle: inject iff E[T^l] - beta * E[T^v / n] > margin_s, with the true
    expectations of the world (EQUATIONS.md 1.6, the best rule for gamma = 0). It ignores the
    long-term effects (quit hazard, affinity drift), so it is *not* the optimal policy for
    gamma > 0: a positive ``margin_s`` makes it more cautious."""

    beta: float
    margin_s: float = 0.0

    def inject_probability(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return (expected_gain(obs, self.beta) > self.margin_s).astype(np.float64)


def expected_gain(obs: dict[str, np.ndarray], beta: float) -> np.ndarray:
    """E[r | s, a = 1] = E[T^l] - beta * E[T^v / n] from the latent expectations, (B,)."""
    return (obs[S.TRUE_EXPECTED_LIVE_WATCH_S]
            - beta * obs[S.TRUE_EXPECTED_VIDEO_WATCH_PER_VIDEO_S])


@dataclass(frozen=True)
class LookaheadOracle:
    """Long-horizon oracle: the immediate gain plus what the insert does to the future,

        Q(s, 1) - Q(s, 0) ~= g(s) - gamma * (1 - P(click | s)) * P(leave | unwanted, s) * V
                                  + gamma * P(click | s) * potential(s) * W

    and inject iff that exceeds ``margin_s``. g = E[T^l] - beta * E[T^v / n]; P(click),
    P(leave) and the user's potential not yet unlocked (a first live click unlocks it) are the
    world's true values for this request: the state the immediate reward does not show
    (P(leave) rises with the session's earlier unwanted inserts and is larger for casual users
    than for fans; the potential is hidden affinity). V (``future_value_s``) is what a user
    who leaves would have earned under the trained discount, W (``potential_value_s``) what one
    unit of unlocked affinity earns; both are constants the check tunes on its own seeds.
    """

    beta: float
    gamma: float = 0.9
    future_value_s: float = 100.0
    potential_value_s: float = 0.0
    margin_s: float = 0.0

    def inject_probability(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        risk = (1 - obs[TRUE_CLICK_PROB]) * obs[TRUE_LEAVE_PROB] * self.future_value_s
        unlock = obs[TRUE_CLICK_PROB] * obs[TRUE_POTENTIAL] * self.potential_value_s
        value = expected_gain(obs, self.beta) + self.gamma * (unlock - risk)
        return (value > self.margin_s).astype(np.float64)


def logging_policy(c: LiveWorldConfig) -> EpsilonLoggingPolicy:
    return EpsilonLoggingPolicy(epsilon=c.logging_epsilon, noise=c.logging_noise, seed=c.seed)


def observation_from_log(columns) -> dict[str, np.ndarray]:
    """The observable part of a policy's ``obs`` rebuilt from a log table (or column dict)."""
    names = (S.REQUEST_ID, S.USER_REQUEST_IDX, S.TS_MS, S.USER_ID, S.LIVE_ID, S.LIVE_WATCH_3W_S)
    obs = {name: np.asarray(columns[name]) for name in names}
    for name in (S.USER_FEATURES, S.LIVE_FEATURES):
        obs[name] = S.arrow_to_matrix(columns[name])
    for name in (S.LIVE_HISTORY, S.VIDEO_HISTORY):
        obs[name] = S.arrow_to_ids(columns[name])
    return obs


