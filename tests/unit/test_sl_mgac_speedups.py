"""The fast SL-MGAC network equals the plain computation it replaces, outputs and gradients.

The reference below is the network as first written: every group tower on every row and the
row's tower gathered; the attention score FFN on the concatenated [q, e, q * e, q - e]; id
embeddings zeroed at padding. It reads the same parameters as the network under test.
"""

import pytest
import torch

from rliv_ray import schema as S
from rliv_ray.algorithms.common.blocks import HashedEmbedding, hash_ids
from rliv_ray.algorithms.sl_mgac import attention, network
from rliv_ray.algorithms.sl_mgac.network import (
    LOOKUP_IDS,
    GroupGrid,
    SLMGACNetwork,
    SLMGACSpec,
    bucket_of,
)
from rliv_ray.algorithms.sl_mgac.objective import STATE_COLUMNS, forward_state
from rliv_ray.algorithms.sl_mgac.synthetic import random_batch


def ref_mlp(mlp, x):
    """BatchedMLP on (H, B, in)."""
    for i, layer in enumerate(mlp.layers):
        x = torch.baddbmm(layer.bias, x, layer.weight)
        x = torch.relu(x) if i < len(mlp.layers) - 1 else x
    return x


def ref_mgn(mgn, z, group):
    """z (N, B, D) -> (N, B, out): all N*K towers on every row, then the row's tower."""
    n, b, d = z.shape
    if mgn.mode == "towers":
        k = mgn.groups
        out = ref_mlp(mgn.mlp, z.unsqueeze(1).expand(n, k, b, d).reshape(n * k, b, d))
        out = out.view(n, k, b, -1)
        return out.gather(1, group.view(1, 1, b, 1).expand(n, 1, b, out.shape[-1])).squeeze(1)
    if mgn.mode == "group_embedding":
        z = torch.cat([z, mgn.group_embedding[:, group]], dim=-1)
    return ref_mlp(mgn.mlp, z)


def ref_attention(att, query, items, mask):
    b, length, d = items.shape
    q = att.query(query).unsqueeze(1).expand(b, length, d)
    x = torch.cat([q, items, q * items, q - items], dim=-1).view(1, b * length, 4 * d)
    score = ref_mlp(att.score, x).view(b, length)
    if att.softmax:
        score = score.masked_fill(~mask, torch.finfo(score.dtype).min)
        weight = torch.softmax(score, dim=-1) * mask
    else:
        weight = score * mask
    return (weight.unsqueeze(-1) * items).sum(dim=1)


def ref_forward(net, user, live, live_id, live_history, video_history, group, session=None):
    """Every head of the network as a flat dict of tensors."""
    def ids(table, x):
        return table(x.clamp(min=0)) * (x >= 0).unsqueeze(-1)

    e_u = net.user_proj(user if session is None else torch.cat([user, session], dim=-1))
    e_s = net.live_proj(live) + ids(net.live_ids, live_id)
    q = torch.cat([e_u, e_s], dim=-1)
    h_l = ref_attention(net.live_attention, q, ids(net.live_ids, live_history),
                        live_history >= 0)
    h_v = ref_attention(net.video_attention, q, ids(net.video_ids, video_history),
                        video_history >= 0)
    h = net.shared(torch.cat([e_u, e_s, h_l, h_v], dim=-1))
    z = torch.stack([norm(h) for norm in net.critic_norms])
    actor_in = net.actor_norm(h.detach() if net.spec.stop_gradient else h).unsqueeze(0)
    out = {"logits": ref_mgn(net.actor, actor_in, group)[0],
           "residual": ref_mgn(net.qrn, z, group)}
    if net.rpn_live is not None:
        for name, bins in (("live", net.spec.live_bins), ("video", net.spec.video_bins)):
            mgn = net.rpn_live if name == "live" else net.rpn_video
            out.update(flat_head(name, net._time_head(ref_mgn(mgn, z, group), bins)))
    return out


def flat_head(name, head):
    return {f"{name}/{part}": getattr(head, part) for part in ("rho", "bin_logits", "seconds")
            if getattr(head, part) is not None}


def fast_forward(net, batch):
    out = forward_state(net, batch)
    heads = {"logits": out.logits, "residual": out.residual}
    for name in ("live", "video"):
        if getattr(out, name) is not None:
            heads.update(flat_head(name, getattr(out, name)))
    return heads


SPECS = {
    "paper": {},
    "logged_bins": {"bin_source": "logged"},
    "group_embedding": {"mg_mode": "group_embedding"},
    "w/o MG": {"multi_group": False},
    "w/o SL": {"supervised_split": False},
    "w/o DD, w/o SG": {"discretise": False, "stop_gradient": False},
    "raw_attention": {"attention_softmax": False, "attention_hidden": ()},
    "deep_attention": {"attention_hidden": (8, 4)},
}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_fast_network_equals_the_reference_outputs_and_gradients(name, monkeypatch):
    monkeypatch.setattr(attention, "CHUNK_ROWS", 16)  # several chunks of ChunkedAttention
    monkeypatch.setattr(network, "MIN_SLOT_ROWS", 8)  # the largest group fills several slots
    spec = SLMGACSpec(user_dim=9, live_dim=5, id_buckets=500, **SPECS[name])
    torch.manual_seed(0)
    net = SLMGACNetwork(spec)
    batch = random_batch(spec, 96, history=S.HISTORY_LENGTH, seed=1)
    batch[S.USER_GROUP][:40] = 2  # unequal group sizes: padding in the grid
    for column in (S.LIVE_HISTORY, S.VIDEO_HISTORY):  # padding first in some rows
        batch[column][::3] = batch[column][::3].flip(1)
    fast = fast_forward(net, batch)
    session = torch.stack([batch[c] for c in S.SESSION_STATE_COLUMNS], dim=-1)
    ref = ref_forward(net, *(batch[c] for c in STATE_COLUMNS), session)
    assert fast.keys() == ref.keys()
    weights = {k: torch.randn(v.shape, generator=torch.Generator().manual_seed(i))
               for i, (k, v) in enumerate(ref.items())}
    grads = []
    for outputs in (fast, ref):
        net.zero_grad()
        sum((outputs[k] * weights[k]).sum() for k in outputs).backward()
        grads.append({n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None})
    for k in ref:
        torch.testing.assert_close(fast[k], ref[k], atol=1e-5, rtol=1e-5, msg=k)
    assert grads[0].keys() == grads[1].keys()
    for n in grads[1]:
        torch.testing.assert_close(grads[0][n], grads[1][n], atol=1e-5, rtol=1e-4, msg=n)


@pytest.mark.parametrize(("hidden", "softmax"), [((8,), True), ((8,), False), ((), True)])
def test_attention_on_items_equals_the_concatenated_input(hidden, softmax, monkeypatch):
    monkeypatch.setattr(attention, "CHUNK_ROWS", 4)
    torch.manual_seed(0)
    att = attention.TargetAttention(query_dim=6, dim=4, hidden=hidden, softmax=softmax)
    query = torch.randn(10, 6, requires_grad=True)
    items = torch.randn(10, 7, 4, requires_grad=True)
    mask = torch.rand(10, 7) < 0.6
    mask[3] = False  # all padding
    outs, grads = [], []
    for f in (att, lambda *a: ref_attention(att, *a)):
        att.zero_grad()
        query.grad = items.grad = None
        out = f(query, items, mask)
        out.pow(2).sum().backward()
        outs.append(out)
        grads.append([query.grad, items.grad, *(p.grad for p in att.parameters())])
    torch.testing.assert_close(outs[0], outs[1], atol=1e-6, rtol=1e-5)
    for fast, ref in zip(*grads, strict=True):
        torch.testing.assert_close(fast, ref, atol=1e-6, rtol=1e-5)


def test_group_grid_round_trip_and_padding():
    group = torch.tensor([2, 0, 2, 2, 1, 0])
    grid = GroupGrid(group, groups=4)
    assert grid.rows == 3  # group 2 has three rows; groups 0 and 1 are padded
    assert grid.slot_group.tolist() == [0, 1, 2]  # group 3 has no rows: no slot
    rows = torch.arange(6.0).unsqueeze(-1)
    on_grid = grid.to_grid(rows, 0).view(3, 3)
    assert on_grid[2].tolist() == [0.0, 2.0, 3.0]  # group 2's rows in batch order
    assert on_grid[0, :2].tolist() == [1.0, 5.0]
    assert torch.equal(grid.to_rows(grid.to_grid(rows, 0), 0), rows)


def test_group_grid_splits_a_large_group_over_slots():
    group = torch.tensor([0, 0, 0, 0, 0, 1, 1])
    grid = GroupGrid(group, groups=2, min_rows=2)
    # 2 rows per slot pad one row (5 + 2 rows in 4 slots); 3 would pad two, 5 three
    assert grid.rows == 2
    assert grid.slot_group.tolist() == [0, 0, 0, 1]
    assert grid.towers(2).tolist() == [0, 0, 0, 1, 2, 2, 2, 3]  # network n's tower n * K + k
    rows = torch.arange(7.0).unsqueeze(-1)
    on_grid = grid.to_grid(rows, 0).view(4, 2)
    assert on_grid.tolist() == [[0.0, 1.0], [2.0, 3.0], [4.0, 0.0], [5.0, 6.0]]  # 0: padding
    assert torch.equal(grid.to_rows(on_grid.view(8, 1), 0), rows)


@pytest.mark.parametrize(("counts", "min_rows", "rows"), [
    ([341, 307, 238, 302, 341, 519], 128, 173),  # a batch of the demo's live samples
    ([300, 1], 128, 150), ([5, 2], 8, 5), ([9, 9, 10], 3, 10), ([0, 0, 9], 8, 9), ([0], 8, 1)])
def test_slot_rows_pad_least(counts, min_rows, rows):
    assert network.slot_rows(counts, min_rows) == rows
    largest = max(max(counts), 1)
    padded = [r * sum(-(-c // r) for c in counts) for r in range(min(min_rows, largest),
                                                                 largest + 1)]
    assert rows * sum(-(-c // rows) for c in counts) == min(padded)


@pytest.mark.parametrize("high", [1000, LOOKUP_IDS - 2, LOOKUP_IDS, 2**40])
def test_bucket_lookup_equals_hashing(high):
    table = HashedEmbedding(500, 4, salt=11)
    ids = torch.randint(0, high, (64, 50), generator=torch.Generator().manual_seed(0))
    ids[:, -1] = high - 1
    ids[::2, 10:] = -1  # padding
    assert torch.equal(bucket_of(table, ids), hash_ids(ids, 500, 11))
    assert torch.equal(bucket_of(table, ids - 10**6), hash_ids(ids - 10**6, 500, 11))
