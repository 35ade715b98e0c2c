"""RLIV-UA's network in plain torch (rliv-ua.txt Fig. 4, Eq. 9-13; EQUATIONS.md 2.1-2.2).

    H = [h_u; h_a; h_s; h_gap]        hashed user and author id embeddings, a projection of the
                                      dense state s, and an embedding of the gap bucket of Delta
    tower l, critic k:  Q_l^k(H, .) = R_hat_l(H, .) + gamma * T_hat_l^k(H, .)      (Eq. 13)
    gift assistance:    f(h_u, h_a) -> logit                                        (Eq. 12)

All tower heads (the reward network R_hat and the K residual networks T_hat of every tower) run
as one :class:`~rliv_ray.algorithms.common.blocks.BatchedMLP`. Ablations: one tower (w/o MT),
no reward/residual split (w/o SL: the heads output Q directly), no gift assistance (w/o AL).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rliv_ray import schema as S
from rliv_ray.algorithms.common.blocks import BatchedMLP, HashedEmbedding

USER_SALT, AUTHOR_SALT = 1, 2


@dataclass(frozen=True)
class NetworkSpec:
    """Shapes and ablation switches of the RLIV-UA network (defaults: paper Table 3)."""

    state_dim: int
    gap_index: int
    """Position of log1p(Delta) in the state; the first-contact flag follows it."""
    n_actions: int
    towers: tuple[str, ...] = S.LABELS
    n_critics: int = 2
    hidden: tuple[int, ...] = (64, 64)
    embedding_dim: int = 32
    id_buckets: int = 1 << 16
    """Rows of each hashed id table: memory is bounded whatever the number of ids. ``rliv
    train`` sizes the tables from the data with this as the cap (see ``id_rows_per_id``)."""
    max_gap_bucket: int = 20
    supervised_split: bool = True
    """Q = R_hat + gamma * T_hat (Eq. 13); False is the w/o-SL ablation."""
    shared_reward: bool = True
    """One R_hat per tower shared by its critics (EQUATIONS 2.1(b)); False: one per critic."""
    gift_assist: bool = True

    def __post_init__(self) -> None:
        for name in ("state_dim", "n_actions", "n_critics", "embedding_dim", "id_buckets",
                     "max_gap_bucket"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.gap_index < self.state_dim - 1:
            raise ValueError(f"gap_index must leave room for the first-contact flag in a state "
                             f"of {self.state_dim}, got {self.gap_index}")
        if not self.towers or set(self.towers) - set(S.LABELS):
            raise ValueError(f"towers must be a non-empty subset of {S.LABELS}, got {self.towers}")

    @property
    def reward_heads(self) -> int:
        """R_hat heads per tower."""
        if not self.supervised_split:
            return 0
        return 1 if self.shared_reward else self.n_critics


def sized_id_buckets(distinct_ids: int, rows_per_id: int, cap: int) -> int:
    """Rows of a hashed id table for ``distinct_ids`` ids: the power of two at or above
    ``rows_per_id * distinct_ids``, at most ``cap`` (``rows_per_id`` 0: ``cap``).

    A hashed id shares its row with another with probability about n / rows, so 16 rows per id
    keeps that near 6%; the cap bounds memory when ids are many (the paper's 100M users).
    """
    if rows_per_id < 0 or cap < 1:
        raise ValueError(f"rows_per_id must be >= 0 and cap >= 1, got {rows_per_id}, {cap}")
    if rows_per_id == 0:
        return cap
    return min(cap, 1 << max(0, rows_per_id * max(1, distinct_ids) - 1).bit_length())


def gap_buckets(state: torch.Tensor, gap_index: int, max_bucket: int) -> torch.Tensor:
    """(B, d) states -> (B,) buckets: 0 for a first contact, else 1 + floor(log2 Delta) capped
    at ``max_bucket`` (as ``mdp.state``); log1p(Delta) sits at ``gap_index``, the first-contact
    flag after it."""
    gap = torch.expm1(state[:, gap_index]).round().clamp(min=1.0)
    bucket = (1 + torch.floor(torch.log2(gap))).clamp(max=max_bucket).long()
    first = state[:, gap_index + 1] > 0.5
    return torch.where(first, torch.zeros_like(bucket), bucket)


@dataclass(frozen=True)
class Heads:
    """Network outputs for a batch of B interactions over A actions."""

    reward_hat: torch.Tensor | None  # (T, R, B, A) with R = reward heads, None w/o SL
    residual: torch.Tensor  # (T, K, B, A): T_hat^k, or Q^k itself w/o SL
    gift_logit: torch.Tensor | None  # (B,), None w/o AL

    def q(self, gamma: float) -> torch.Tensor:
        """Q_l^k(H, a) for every tower, critic and action, (T, K, B, A) (Eq. 13)."""
        if self.reward_hat is None:
            return self.residual
        return self.reward_hat + gamma * self.residual


class RLIVUANetwork(nn.Module):
    """Embeddings, batched tower heads and the gift assistance head."""

    def __init__(self, spec: NetworkSpec):
        super().__init__()
        self.spec = spec
        e = spec.embedding_dim
        self.user = HashedEmbedding(spec.id_buckets, e, salt=USER_SALT)
        self.author = HashedEmbedding(spec.id_buckets, e, salt=AUTHOR_SALT)
        self.gap = nn.Embedding(spec.max_gap_bucket + 1, e)
        self.dense = nn.Linear(spec.state_dim, e)
        per_tower = spec.reward_heads + spec.n_critics
        self.heads = BatchedMLP(len(spec.towers) * per_tower, 4 * e, spec.hidden, spec.n_actions)
        self.assist = (nn.Sequential(nn.Linear(2 * e, spec.hidden[0]), nn.ReLU(),
                                     nn.Linear(spec.hidden[0], 1))
                       if spec.gift_assist else None)

    def id_embeddings(self) -> dict[str, HashedEmbedding]:
        """The hashed id tables by the batch column whose ids they embed."""
        return {S.USER_ID: self.user, S.AUTHOR_ID: self.author}

    def gap_bucket(self, state: torch.Tensor) -> torch.Tensor:
        return gap_buckets(state, self.spec.gap_index, self.spec.max_gap_bucket)

    def embed(self, user_id: torch.Tensor, author_id: torch.Tensor,
              state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """H = [h_u; h_a; h_s; h_gap] (B, 4E) and the static [h_u; h_a] (B, 2E) (Fig. 4)."""
        static = torch.cat([self.user(user_id), self.author(author_id)], dim=1)
        return torch.cat([static, self.dense(state), self.gap(self.gap_bucket(state))],
                         dim=1), static

    def tower_heads(self, h: torch.Tensor, towers: torch.Tensor | None = None) -> torch.Tensor:
        """Head outputs (T', R + K, B, A) of all towers, or of the tower positions ``towers``."""
        per_tower = self.spec.reward_heads + self.spec.n_critics
        heads = None
        if towers is not None:
            offsets = torch.arange(per_tower, device=h.device)
            heads = (towers.unsqueeze(1) * per_tower + offsets).reshape(-1)
        out = self.heads(h, heads)  # (T' * (R + K), B, A)
        return out.unflatten(0, (-1, per_tower))

    def forward(self, user_id: torch.Tensor, author_id: torch.Tensor,
                state: torch.Tensor) -> Heads:
        h, static = self.embed(user_id, author_id, state)
        out = self.tower_heads(h)
        r = self.spec.reward_heads
        gift = self.assist(static).squeeze(-1) if self.assist else None
        return Heads(out[:, :r] if r else None, out[:, r:], gift)
