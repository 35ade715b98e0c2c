"""Shared network blocks: batched heads equal a loop of linears; hashed ids stay bounded."""

import pytest
import torch
from torch import nn

from rliv_ray.algorithms.common.blocks import (
    BatchedLinear,
    BatchedMLP,
    HashedEmbedding,
    hash_ids,
)


def test_batched_linear_equals_a_loop_of_linears():
    torch.manual_seed(0)
    layer = BatchedLinear(heads=3, in_features=4, out_features=2)
    x = torch.randn(3, 5, 4)
    loop = []
    for h in range(3):
        linear = nn.Linear(4, 2)
        with torch.no_grad():
            linear.weight.copy_(layer.weight[h].T)
            linear.bias.copy_(layer.bias[h, 0])
        loop.append(linear(x[h]))
    torch.testing.assert_close(layer(x), torch.stack(loop))


def test_batched_mlp_shares_input_and_keeps_heads_independent():
    mlp = BatchedMLP(heads=4, in_features=6, hidden=(8, 8), out_features=3)
    x = torch.randn(10, 6, requires_grad=True)
    out = mlp(x)
    assert out.shape == (4, 10, 3)
    out[1].sum().backward()  # only head 1's weights get a gradient
    grads = mlp.layers[0].weight.grad
    assert grads[1].abs().sum() > 0 and grads[0].abs().sum() == 0 and grads[3].abs().sum() == 0


def test_hashed_ids_are_bounded_deterministic_and_spread():
    ids = torch.arange(0, 200_000, dtype=torch.long) * 7919 + 2**40  # large, sparse ids
    buckets = hash_ids(ids, 1024)
    assert buckets.min() >= 0 and buckets.max() < 1024
    assert torch.equal(buckets, hash_ids(ids.clone(), 1024))
    counts = torch.bincount(buckets, minlength=1024).float()
    assert counts.min() > 0.7 * counts.mean()
    assert not torch.equal(buckets, hash_ids(ids, 1024, salt=1))


def test_hashed_embedding_memory_does_not_grow_with_ids():
    emb = HashedEmbedding(buckets=64, dim=4)
    out = emb(torch.tensor([0, 10**12, -5, 2**62]))
    assert out.shape == (4, 4)
    assert sum(p.numel() for p in emb.parameters()) == 64 * 4


def test_polyak_update_matches_the_formula_and_copies_at_tau_one():
    import copy

    from rliv_ray.algorithms.common.targets import polyak_update

    main = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    target = copy.deepcopy(main)
    for p in main.parameters():
        p.data.add_(1.0)
    main[1].running_mean.add_(2.0)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    polyak_update(main, target, 0.25)
    for key, value in target.state_dict().items():
        if value.is_floating_point():
            expected = 0.25 * main.state_dict()[key] + 0.75 * before[key]
            torch.testing.assert_close(value, expected)
    assert target[1].num_batches_tracked == before["1.num_batches_tracked"]
    polyak_update(main, target, 1.0)
    torch.testing.assert_close(target[0].weight, main[0].weight)
    with pytest.raises(ValueError, match="tau must be in"):
        polyak_update(main, target, 0.0)
