"""Tiny synthetic worlds with exactly known policy values, for the OPE estimator tests (NumPy).

* :class:`Bandit`: contexts x ~ p, actions a ~ policy(. | x), reward ~ N(R[x, a], noise^2);
  V(pi) = sum_x p(x) sum_a pi(a|x) R[x, a].
* :class:`MDP`: a stationary episodic MDP: from (s, a) the episode ends with probability
  end[s, a], else moves to s' ~ P[s, a]; reward ~ N(R[s, a], noise^2). Q^pi solves
  Q = R + gamma (1 - end) P V, V = sum_a pi Q (a linear system), and V(pi) = d0 . V.
* :func:`exposure_log`: RLIV-UA's exposure selection in miniature (two candidates, the boosted
  one wins) with the world's true value of any boost policy computed exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _draw(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row of probs (n, A)."""
    return (rng.random((len(probs), 1)) > np.cumsum(probs, axis=1)[:, :-1]).sum(axis=1)


@dataclass(frozen=True)
class Bandit:
    p: np.ndarray  # (X,)
    R: np.ndarray  # (X, A)
    noise: float = 0.5

    @classmethod
    def build(cls, seed: int = 0, n_contexts: int = 5, n_actions: int = 3) -> Bandit:
        rng = np.random.default_rng(seed)
        return cls(rng.dirichlet(np.ones(n_contexts) * 3), rng.uniform(0, 2, (n_contexts,
                                                                              n_actions)))

    def value(self, policy: np.ndarray) -> float:
        return float(self.p @ (policy * self.R).sum(axis=1))

    def log(self, policy: np.ndarray, n: int, seed: int) -> dict:
        """x, action, behavior_prob, reward of n rows logged by ``policy`` (X, A)."""
        rng = np.random.default_rng(seed)
        x = rng.choice(len(self.p), size=n, p=self.p)
        action = _draw(rng, policy[x])
        reward = self.R[x, action] + self.noise * rng.standard_normal(n)
        return {"x": x, "action": action, "behavior_prob": policy[x, action], "reward": reward}


@dataclass(frozen=True)
class MDP:
    d0: np.ndarray  # (S,)
    P: np.ndarray  # (S, A, S)
    R: np.ndarray  # (S, A)
    end: np.ndarray  # (S, A) probability the episode ends after (s, a)
    gamma: float = 0.9
    noise: float = 0.3
    max_steps: int = 200

    @classmethod
    def build(cls, seed: int = 0, n_states: int = 3, n_actions: int = 2) -> MDP:
        rng = np.random.default_rng(seed)
        return cls(rng.dirichlet(np.ones(n_states) * 2),
                   rng.dirichlet(np.ones(n_states), size=(n_states, n_actions)),
                   rng.uniform(0, 1, (n_states, n_actions)),
                   rng.uniform(0.2, 0.45, (n_states, n_actions)))

    def q(self, policy: np.ndarray) -> np.ndarray:
        """Q^pi (S, A), exactly."""
        n_states = len(self.d0)
        cont = self.gamma * (1 - self.end)[:, :, None] * self.P  # (S, A, S)
        r_pi = (policy * self.R).sum(axis=1)  # (S,)
        m_pi = np.einsum("sa,sat->st", policy, cont)  # (S, S)
        v = np.linalg.solve(np.eye(n_states) - m_pi, r_pi)
        return self.R + cont @ v

    def value(self, policy: np.ndarray) -> float:
        return float(self.d0 @ (policy * self.q(policy)).sum(axis=1))

    def log(self, policy: np.ndarray, n_episodes: int, seed: int) -> dict:
        """Steps of ``n_episodes`` under ``policy`` (S, A), sorted by episode then time:
        episode, s, action, behavior_prob, reward, next_s, done."""
        rng = np.random.default_rng(seed)
        s = rng.choice(len(self.d0), size=n_episodes, p=self.d0)
        alive = np.arange(n_episodes)
        chunks = []
        for _ in range(self.max_steps):
            if not len(alive):
                break
            a = _draw(rng, policy[s])
            r = self.R[s, a] + self.noise * rng.standard_normal(len(s))
            done = rng.random(len(s)) < self.end[s, a]
            nxt = _draw(rng, self.P[s, a])
            chunks.append((alive, s, a, policy[s, a], r, nxt, done))
            alive, s = alive[~done], nxt[~done]
        cols = [np.concatenate(c) for c in zip(*chunks, strict=True)]
        order = np.argsort(cols[0], kind="stable")  # by episode; steps already in time order
        names = ("episode", "s", "action", "behavior_prob", "reward", "next_s", "done")
        return {name: col[order] for name, col in zip(names, cols, strict=True)}


def one_hot(index: np.ndarray, size: int) -> np.ndarray:
    return np.eye(size, dtype=np.float32)[index]


# --- exposure selection (RLIV-UA) -----------------------------------------------------------
BOOST_PROB = 0.3  # mu(boost) of each candidate's independent weight draw
EXPOSED_REWARD = np.array([[0.2, 0.5], [1.0, 1.6]])  # [quality, boosted]: mean reward


def exposure_truth(p_boost: float) -> float:
    """E[reward of the exposed candidate] when each of two candidates, of quality q ~ Bern(0.5),
    is boosted with probability p_boost; the boosted one is exposed, else the better one,
    ties at random (enumerated exactly)."""
    total = 0.0
    for q1 in (0, 1):
        for q2 in (0, 1):
            for b1, pb1 in ((0, 1 - p_boost), (1, p_boost)):
                for b2, pb2 in ((0, 1 - p_boost), (1, p_boost)):
                    first = (b1, q1) > (b2, q2)
                    tie = (b1, q1) == (b2, q2)
                    exposed = 0.5 * (EXPOSED_REWARD[q1, b1] + EXPOSED_REWARD[q2, b2]) if tie \
                        else (EXPOSED_REWARD[q1, b1] if first else EXPOSED_REWARD[q2, b2])
                    total += 0.25 * pb1 * pb2 * exposed
    return total


def exposure_log(n: int, seed: int) -> dict:
    """n requests of two candidates under the boost-logging policy; one row per request for the
    exposed candidate: its quality, boost action, ``behavior_prob`` of its own weight draw (as
    RLIV-UA logs it), reward; and both candidates' actions for a request-level propensity."""
    rng = np.random.default_rng(seed)
    quality = rng.integers(0, 2, (n, 2))
    boost = (rng.random((n, 2)) < BOOST_PROB).astype(np.int64)
    key = 4 * boost + 2 * quality + rng.random((n, 2))  # boost first, then quality, then chance
    exposed = key.argmax(axis=1)
    rows = np.arange(n)
    q, b = quality[rows, exposed], boost[rows, exposed]
    reward = EXPOSED_REWARD[q, b] + 0.3 * rng.standard_normal(n)
    return {"quality": q, "action": b, "behavior_prob": np.where(b == 1, BOOST_PROB,
                                                                 1 - BOOST_PROB),
            "reward": reward, "boosts": boost}
