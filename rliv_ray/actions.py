"""The RLIV-UA action: a ranking weight from a discrete grid, applied by Eq. 1.

    final_score = rank_score * (c + a * w) ** b                      (RLIV-UA Eq. 1)

The paper reports neither the grid nor c, w, b (EQUATIONS.md 2.1(f), [I]); the defaults are
A = {0, .25, .5, .75, 1} and c = w = b = 1, all settings. Action index 0 (a = 0) leaves the
base ranker's order untouched: it is what a source without an RL weight logs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ActionGrid:
    """The discrete ranking weights and the shape of Eq. 1."""

    weights: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    """The grid A of ranking weights a, strictly increasing."""
    c: float = 1.0
    """Offset c of Eq. 1; c + a*w must stay positive."""
    w: float = 1.0
    """Scale w of the weight in Eq. 1."""
    b: float = 1.0
    """Exponent b of Eq. 1, > 0."""

    def __post_init__(self) -> None:
        weights = tuple(float(x) for x in self.weights)
        object.__setattr__(self, "weights", weights)
        if len(weights) < 2:
            raise ValueError(f"weights must hold at least 2 values, got {weights}")
        if any(b <= a for a, b in zip(weights, weights[1:], strict=False)):
            raise ValueError(f"weights must be strictly increasing, got {weights}")
        if self.b <= 0:
            raise ValueError(f"b must be > 0, got {self.b}")
        if min(self.c + x * self.w for x in weights) <= 0:
            raise ValueError(f"c + a*w must be > 0 for every a in weights (c={self.c}, w={self.w})")

    @property
    def size(self) -> int:
        return len(self.weights)

    def weight(self, action: np.ndarray) -> np.ndarray:
        """The ranking weight a of each action index."""
        return np.asarray(self.weights, dtype=np.float32)[action]

    def final_score(self, rank_score: np.ndarray, action: np.ndarray) -> np.ndarray:
        """Eq. 1 for arrays of base scores and action indices."""
        return rank_score * (self.c + self.weight(action) * self.w) ** self.b
