"""DIN target attention (sl-mgac.txt Eq. 6) without its concatenated input, in cache-sized
chunks of rows that skip the history's padding.

    h = sum_j alpha_j e_j,   alpha = softmax_j s_j over the real items j of the history
    s_j = w . relu([q', e_j, q' * e_j, q' - e_j] W + b) + c,   q' = W_q' query + b_q'

The first layer, W = [W_q; W_e; W_p; W_d] (4d, H), never sees the (B, L, 4d) input:

    [q', e, q' * e, q' - e] W + b = (q' (W_q + W_d) + b) + e ((W_e - W_d) + diag(q') W_p)
                                  =      r  (per row)    + e  M  (one (d, H) matrix per row)

so per item only e M is left, a (d, H) matmul instead of (4d, H). With the default score FFN
(one hidden layer, softmax) :class:`ChunkedAttention` does the rest, forward and backward, by
hand: rows sorted by history length, CHUNK_ROWS at a time, each chunk cut to its longest
history (the padding of shorter histories is never computed) and small enough to stay in
cache. Other score FFNs run the same algebra on dense (B, L) tensors with autograd.
"""

from __future__ import annotations

import torch
from torch import nn

from rliv_ray.algorithms.common.blocks import BatchedMLP

CHUNK_ROWS = 256
"""Rows per chunk: a (256, 50, 32) hidden layer is 1.6 MB."""


class ChunkedAttention(torch.autograd.Function):
    """h (B, d) = sum_j alpha_j e_j with e = table[index], alpha = softmax over the mask of
    s = relu(r + e M) w + c, M = A + diag(q) P (d, H) per row, A = W_e - W_d, P = W_p.

    table (N, d), index (B, L) rows of the table, mask (B, L) bool, q (B, d), a, p (d, H),
    r (B, H), w (H,), c (1,); ``order`` (B,) the rows by ascending history length and
    ``spans`` [(start, stop, length)] chunks of ``order`` (:func:`length_spans`). Each
    chunk's items, hidden layer and weights are kept for the backward.
    """

    @staticmethod
    def forward(ctx, table, index, mask, q, a, p, r, w, c, order, spans):
        h = table.new_zeros(index.shape[0], table.shape[1])
        ctx.chunks = []
        for start, stop, length in spans:
            rows = order[start:stop]
            ids = index.narrow(1, 0, length).index_select(0, rows)  # (c, l)
            keep = mask.narrow(1, 0, length).index_select(0, rows)
            e = table.index_select(0, ids.reshape(-1)).view(*ids.shape, -1)  # (c, l, d)
            q_rows = q.index_select(0, rows).unsqueeze(-1)  # (c, d, 1)
            m = torch.addcmul(a, q_rows, p)  # (c, d, H)
            x = torch.baddbmm(r.index_select(0, rows).unsqueeze(1), e, m).relu_()  # (c, l, H)
            s = (x @ w + c).masked_fill_(~keep, torch.finfo(x.dtype).min)
            alpha = torch.softmax(s, dim=-1) * keep  # (c, l); all padding: 0
            h.index_copy_(0, rows, torch.bmm(alpha.unsqueeze(1), e).squeeze(1))
            ctx.chunks.append((rows, ids, q_rows, e, m, x, alpha))
        ctx.save_for_backward(table, q, a, p, r, w)
        return h

    @staticmethod
    def backward(ctx, grad_h):
        table, q, a, p, r, w = ctx.saved_tensors
        grad_table, grad_q, grad_a, grad_p, grad_r, grad_w = map(torch.zeros_like,
                                                                  (table, q, a, p, r, w))
        grad_c = grad_h.new_zeros(1)
        for rows, ids, q_rows, e, m, x, alpha in ctx.chunks:
            g_h = grad_h.index_select(0, rows).unsqueeze(1)  # (c, 1, d)
            g_alpha = (e * g_h).sum(-1)  # (c, l)
            g_s = alpha * (g_alpha - (alpha * g_alpha).sum(-1, keepdim=True))  # softmax'
            grad_c += g_s.sum()
            grad_w.addmv_(x.reshape(-1, x.shape[-1]).t(), g_s.reshape(-1))
            g_x = torch.ops.aten.threshold_backward(g_s.unsqueeze(-1) * w, x, 0.0)  # relu'
            grad_r.index_copy_(0, rows, g_x.sum(1))
            g_m = torch.bmm(e.transpose(1, 2), g_x)  # (c, d, H)
            grad_a += g_m.sum(0)
            grad_p += (g_m * q_rows).sum(0)
            grad_q.index_copy_(0, rows, (g_m * p).sum(-1))
            g_e = torch.baddbmm(alpha.unsqueeze(-1) * g_h, g_x, m.transpose(1, 2))
            grad_table.index_add_(0, ids.reshape(-1), g_e.reshape(-1, e.shape[-1]))
        return (grad_table, None, None, grad_q, grad_a, grad_p, grad_r, grad_w, grad_c, None,
                None)


def length_spans(mask: torch.Tensor, rows_per_chunk: int) -> tuple[torch.Tensor, list]:
    """Rows by ascending history length (last real item + 1) and chunks of them, each with its
    longest length; all-padding chunks are left out (their h is 0)."""
    position = torch.arange(1, mask.shape[1] + 1, device=mask.device)
    lengths, order = torch.sort(torch.where(mask, position, 0).amax(dim=1))  # (B,)
    starts = range(0, mask.shape[0], rows_per_chunk)
    stops = [min(start + rows_per_chunk, mask.shape[0]) for start in starts]
    longest = lengths[torch.tensor(stops, dtype=torch.long, device=mask.device) - 1].tolist()
    return order, [(start, stop, length) for start, stop, length
                   in zip(starts, stops, longest, strict=True) if length > 0]


class TargetAttention(nn.Module):
    """h (B, d) from a query (B, Q) and a history of items (module docstring)."""

    def __init__(self, query_dim: int, dim: int, hidden: tuple[int, ...], softmax: bool):
        super().__init__()
        self.softmax = softmax
        self.query = nn.Linear(query_dim, dim)
        self.score = BatchedMLP(1, 4 * dim, hidden, 1)

    def forward(self, query: torch.Tensor, items: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """query (B, Q), items (B, L, d), mask (B, L) bool (True = real item) -> (B, d).

        Padding gets weight 0, so an all-padding history gives h = 0 whatever its items hold.
        """
        b, length, d = items.shape
        index = torch.arange(b * length, device=items.device).view(b, length)
        return self.attend(query, items.reshape(b * length, d), index, mask)

    def attend(self, query: torch.Tensor, table: torch.Tensor, index: torch.Tensor,
               mask: torch.Tensor) -> torch.Tensor:
        """As :meth:`forward` with the items table[index] (table (N, d), index (B, L))."""
        d = table.shape[1]
        q = self.query(query)  # (B, d)
        first, *rest = self.score.layers
        w_q, w_e, w_p, w_d = first.weight[0].split(d)  # (d, H) each
        per_row = torch.addmm(first.bias[0], q, w_q + w_d)  # (B, H)
        if len(rest) == 1 and self.softmax:
            order, spans = length_spans(mask, CHUNK_ROWS)
            return ChunkedAttention.apply(table, index, mask, q, w_e - w_d, w_p, per_row,
                                          rest[0].weight[0, :, 0], rest[0].bias[0, 0], order,
                                          spans)
        per_item = (w_e - w_d) + q.unsqueeze(-1) * w_p  # (B, d, H)
        items = table[index]  # (B, L, d)
        x = torch.baddbmm(per_row.unsqueeze(1), items, per_item)  # (B, L, H)
        for layer in rest:
            x = layer(torch.relu(x).view(1, x.shape[0] * x.shape[1], -1))
        score = x.view(index.shape)
        if self.softmax:
            score = score.masked_fill(~mask, torch.finfo(score.dtype).min)
            weight = torch.softmax(score, dim=-1) * mask  # all padding: uniform * 0 = 0
        else:
            weight = score * mask
        return (weight.unsqueeze(-1) * items).sum(dim=1)
