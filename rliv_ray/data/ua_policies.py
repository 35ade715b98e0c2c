"""Policies that choose a ranking weight for every candidate of a request in the UA world.

A policy maps :class:`Candidates` (what is known about the N candidates of each active user's
request) to action indices of shape (A, N) and the probability with which it chose each one.
Besides the logging policy there are three reference policies used to check that the world has
a long-term lever (``../shared/DESIGN.md``, data sources 1):

* :class:`ConstantPolicy`, the RankingModel: one weight for all, so the base ranker decides;
* :class:`GreedyPolicy`: knows each candidate's true immediate expected reward and boosts the
  best one now, ignoring the future;
* :class:`OraclePolicy`: knows the latent pair state and boosts pairs with potential whose
  relationship is not yet deep.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from rliv_ray.actions import ActionGrid
from rliv_ray.data.ua_population import pair_potential


@dataclass(frozen=True)
class Candidates:
    """The N candidates of each of A requests; every array is (A, N)."""

    rank_score: np.ndarray  # base ranker's estimate of the click probability
    exposure_count: np.ndarray  # observable pair history
    click_count: np.ndarray
    follow_count: np.ndarray
    affinity: np.ndarray  # latent: pair potential alpha
    bond: np.ndarray  # latent: relationship depth B, decayed to now
    p_click: np.ndarray  # true immediate probabilities of this exposure
    p_effective_view: np.ndarray
    p_follow: np.ndarray
    p_gift: np.ndarray
    # What a learned policy sees, filled only for policies with ``observes_state = True``:
    user_id: np.ndarray | None = None  # (A,) the requesting users
    author_id: np.ndarray | None = None  # (A, N)
    state: np.ndarray | None = None  # (A, N, D) float32 SCRI-MDP states (mdp/state.py layout)


class Policy(Protocol):
    """Chooses each candidate's action. A policy with a true ``observes_state`` attribute is
    also given the candidates' ids and logged-layout states (``Candidates.state``)."""

    def act(self, cand: Candidates, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Return (actions, probabilities), both (A, N)."""
        ...


@dataclass(frozen=True)
class EpsilonLoggingPolicy:
    """The logging policy: ``default_action`` with prob 1-eps, else uniform over the grid.

    ``behavior_prob`` of the logged action is (1-eps)*1[a = default] + eps/|A|.
    """

    grid: ActionGrid
    epsilon: float
    default_action: int = 0

    def act(self, cand: Candidates, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        shape = cand.rank_score.shape
        explore = rng.random(shape) < self.epsilon
        actions = np.where(explore, rng.integers(0, self.grid.size, shape), self.default_action)
        is_default = actions == self.default_action
        probs = self.epsilon / self.grid.size + (1 - self.epsilon) * is_default
        return actions.astype(np.int16), probs.astype(np.float32)


@dataclass(frozen=True)
class ConstantPolicy:
    """RankingModel: the same weight for every candidate."""

    action: int = 0

    def act(self, cand: Candidates, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        shape = cand.rank_score.shape
        return np.full(shape, self.action, np.int16), np.ones(shape, np.float32)


@dataclass(frozen=True)
class GreedyPolicy:
    """Maximise the immediate expected reward: top weight on the best candidate right now.

    The immediate value is sum_l value_l * P(label_l) with the true probabilities.
    """

    grid: ActionGrid
    label_values: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)

    def act(self, cand: Candidates, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        value = immediate_value(cand, self.label_values)
        best = value == value.max(axis=1, keepdims=True)
        actions = np.where(best, self.grid.size - 1, 0).astype(np.int16)
        return actions, np.ones(actions.shape, np.float32)


@dataclass(frozen=True)
class OraclePolicy:
    """Knows the latent state: immediate value plus the value of deepening a relationship.

    Each candidate is scored by immediate_value + investment * potential * (1 - bond), where
    potential = sigmoid(k_potential * (affinity - potential_threshold)) is the world's own
    bond-gain factor; the best candidate gets the top weight. ``investment = 0`` is
    :class:`GreedyPolicy`.
    """

    grid: ActionGrid
    k_potential: float
    potential_threshold: float
    investment: float = 0.05
    label_values: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)

    def act(self, cand: Candidates, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        potential = pair_potential(cand.affinity, self.k_potential, self.potential_threshold)
        investment = self.investment * potential * (1 - cand.bond)
        value = immediate_value(cand, self.label_values) + investment
        best = value == value.max(axis=1, keepdims=True)
        actions = np.where(best, self.grid.size - 1, 0).astype(np.int16)
        return actions, np.ones(actions.shape, np.float32)


def immediate_value(cand: Candidates, label_values: tuple[float, ...]) -> np.ndarray:
    """Expected immediate reward of exposing each candidate, (A, N)."""
    probs = (cand.p_click, cand.p_effective_view, cand.p_follow, cand.p_gift)
    return sum(v * p for v, p in zip(label_values, probs, strict=True))
