"""TD3's networks in plain torch: a state encoder, K critics Q_k(s, w) and an actor mu(s).

    H = [h_u; h_a; h_s; h_gap]               the RLIV-UA state embedding (network.py there)
    critic k:  Q_k(s, w) = MLP_k([H; w])      K critics as one BatchedMLP (clipped double Q)
    actor:     mu(s) = w_min + (w_max - w_min) * (tanh(MLP(sg(H))) + 1) / 2

The encoder learns from the critic loss only; the actor reads it with the gradient stopped
(one encoder for both, our choice [I]: TD3 gives each network its own, which doubles the id
tables). The weight w is continuous; the world's Eq. 1 uses the grid, so serving rounds mu(s)
to the nearest grid weight (:class:`NearestWeightScore`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rliv_ray import schema as S
from rliv_ray.algorithms.common.blocks import BatchedMLP, HashedEmbedding
from rliv_ray.algorithms.rliv_ua.network import AUTHOR_SALT, USER_SALT, gap_buckets


@dataclass(frozen=True)
class TD3Spec:
    """Shapes of the TD3 networks; ``weights`` is the action grid, whose ends bound mu(s)."""

    state_dim: int
    gap_index: int
    weights: tuple[float, ...]
    towers: tuple[str, ...] = (S.EFFECTIVE_VIEW,)
    """One reward, one critic set: named like the tower serving reads (as the DQN preset)."""
    n_critics: int = 2
    hidden: tuple[int, ...] = (64, 64)
    actor_hidden: tuple[int, ...] = (64, 64)
    embedding_dim: int = 32
    id_buckets: int = 1 << 16
    max_gap_bucket: int = 20

    def __post_init__(self) -> None:
        if len(self.towers) != 1:
            raise ValueError(f"TD3 trains one tower, got {self.towers}")
        if len(self.weights) < 2 or list(self.weights) != sorted(set(self.weights)):
            raise ValueError(f"weights must be >= 2 increasing grid weights, got {self.weights}")
        if not 0 <= self.gap_index < self.state_dim - 1:
            raise ValueError(f"gap_index must leave room for the first-contact flag in a state "
                             f"of {self.state_dim}, got {self.gap_index}")
        for name in ("n_critics", "embedding_dim", "id_buckets", "max_gap_bucket"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def n_actions(self) -> int:
        return len(self.weights)

    @property
    def low(self) -> float:
        return float(self.weights[0])

    @property
    def high(self) -> float:
        return float(self.weights[-1])


class TD3Network(nn.Module):
    def __init__(self, spec: TD3Spec):
        super().__init__()
        self.spec = spec
        e = spec.embedding_dim
        self.user = HashedEmbedding(spec.id_buckets, e, salt=USER_SALT)
        self.author = HashedEmbedding(spec.id_buckets, e, salt=AUTHOR_SALT)
        self.gap = nn.Embedding(spec.max_gap_bucket + 1, e)
        self.dense = nn.Linear(spec.state_dim, e)
        self.critics = BatchedMLP(spec.n_critics, 4 * e + 1, spec.hidden, 1)
        self.actor_mlp = BatchedMLP(1, 4 * e, spec.actor_hidden, 1)

    def encode(self, user_id: torch.Tensor, author_id: torch.Tensor,
               state: torch.Tensor) -> torch.Tensor:
        """H (B, 4E)."""
        bucket = gap_buckets(state, self.spec.gap_index, self.spec.max_gap_bucket)
        return torch.cat([self.user(user_id), self.author(author_id), self.dense(state),
                          self.gap(bucket)], dim=1)

    def q(self, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Q_k(s, w) of every critic, (K, B), from H (B, 4E) and weights w (B,)."""
        return self.critics(torch.cat([h, w.unsqueeze(1)], dim=1)).squeeze(-1)

    def actor(self, h: torch.Tensor) -> torch.Tensor:
        """mu(s) (B,) in [w_min, w_max]; reads H with its gradient stopped."""
        x = torch.tanh(self.actor_mlp(h.detach())[0, :, 0])
        return self.spec.low + (self.spec.high - self.spec.low) * (x + 1.0) / 2.0

    def actor_parameters(self) -> list[nn.Parameter]:
        return list(self.actor_mlp.parameters())

    def critic_parameters(self) -> list[nn.Parameter]:
        """Encoder and critics: what the critic loss moves."""
        actor = {id(p) for p in self.actor_parameters()}
        return [p for p in self.parameters() if id(p) not in actor]


class NearestWeightScore(nn.Module):
    """Serving scores over the grid, (T', N, A): -|w_a - mu(s)|, so argmax_a is the grid weight
    nearest the actor's (ties: the lower weight). The same signature as
    :class:`rliv_ray.serving.TowerQ`, so the exported file serves and evaluates like RLIV-UA's;
    these are not Q values (``@best_value`` serving has no meaning for it)."""

    def __init__(self, net: TD3Network):
        super().__init__()
        self.net = net
        self.register_buffer("grid", torch.tensor(net.spec.weights, dtype=torch.float32),
                             persistent=False)

    def forward(self, user_id: torch.Tensor, author_id: torch.Tensor, state: torch.Tensor,
                tower_index: torch.Tensor) -> torch.Tensor:
        mu = self.net.actor(self.net.encode(user_id, author_id, state))  # (N,)
        score = -(self.grid.unsqueeze(0) - mu.unsqueeze(1)).abs()  # (N, A)
        return score.unsqueeze(0).expand(tower_index.shape[0], -1, -1)
