"""Network blocks shared by RLIV-UA and SL-MGAC (plain torch, no RLlib).

* :class:`BatchedLinear` / :class:`BatchedMLP`: many small heads of the same shape run as one
  batched layer, a weight of shape (heads, in, out) applied with one ``torch.baddbmm`` (the
  "vectorised linear" of ensemble critics; ``../shared/DESIGN.md``, Speed), not a Python loop
  over modules.
* :func:`hash_ids` / :class:`HashedEmbedding`: IDs hashed into a bounded table, so memory does
  not grow with the number of users or authors (the paper serves 100M users).
"""

from __future__ import annotations

import math

import torch
from torch import nn

HASH_PRIME = 2_147_483_647  # 2**31 - 1: (id mod P) * A stays below 2**62, no int64 overflow
HASH_MULTIPLIER = 1_103_515_245


def hash_ids(ids: torch.Tensor, buckets: int, salt: int = 0) -> torch.Tensor:
    """Bucket of each int64 id: ((id mod P) * A + salt) mod P mod buckets (deterministic)."""
    if buckets < 1:
        raise ValueError(f"buckets must be >= 1, got {buckets}")
    ids = ids.long().remainder(HASH_PRIME)
    return (ids * HASH_MULTIPLIER + salt).remainder(HASH_PRIME).remainder(buckets)


class HashedEmbedding(nn.Module):
    """An embedding of arbitrary int64 ids through a bounded hash table of ``buckets`` rows."""

    def __init__(self, buckets: int, dim: int, salt: int = 0):
        super().__init__()
        self.buckets, self.salt = buckets, salt
        self.table = nn.Embedding(buckets, dim)

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """The table rows of ``ids`` (B,) -> (B,) int64."""
        return hash_ids(ids, self.buckets, self.salt)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B,) -> (B, dim)
        return self.table(self.rows(ids))


class BatchedLinear(nn.Module):
    """``heads`` independent linear layers applied at once: (H, B, in) -> (H, B, out)."""

    def __init__(self, heads: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(heads, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(heads, 1, out_features))
        bound = 1.0 / math.sqrt(in_features)  # nn.Linear's default initialisation
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, heads: torch.Tensor | None = None) -> torch.Tensor:
        """All heads, or only ``heads`` (H',) indices with x of shape (H', B, in)."""
        if heads is None:
            return torch.baddbmm(self.bias, x, self.weight)
        return torch.baddbmm(self.bias.index_select(0, heads), x,
                             self.weight.index_select(0, heads))


class BatchedMLP(nn.Module):
    """``heads`` MLPs of the same shape (ReLU between layers, none after the last)."""

    def __init__(self, heads: int, in_features: int, hidden: tuple[int, ...], out_features: int):
        super().__init__()
        sizes = (in_features, *hidden, out_features)
        self.heads = heads
        self.layers = nn.ModuleList(BatchedLinear(heads, a, b)
                                    for a, b in zip(sizes, sizes[1:], strict=False))

    def forward(self, x: torch.Tensor, heads: torch.Tensor | None = None) -> torch.Tensor:
        """(B, in) shared by every head, or (H, B, in) per head -> (H, B, out).

        ``heads`` (H',) runs only those heads (x then shared or (H', B, in)) -> (H', B, out).
        """
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.heads if heads is None else heads.shape[0], -1, -1)
        for i, layer in enumerate(self.layers):
            x = layer(x, heads)
            if i < len(self.layers) - 1:
                x = torch.relu_(x)  # x is the layer's own fresh output
        return x
