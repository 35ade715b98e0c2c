"""RLIV-UA network: shapes per ablation, gap buckets as the MDP layer, gradient paths."""

import numpy as np
import pytest
import torch

from rliv_ray.algorithms.rliv_ua.losses import gift_assistance_loss
from rliv_ray.algorithms.rliv_ua.network import NetworkSpec, RLIVUANetwork
from rliv_ray.mdp.state import gap_bucket

STATE_DIM, GAP_INDEX = 10, 8


def batch(b=6):
    torch.manual_seed(0)
    state = torch.randn(b, STATE_DIM)
    gap = torch.tensor([0, 1, 2, 3, 100, 10**7][:b])
    state[:, GAP_INDEX] = torch.log1p(gap.float())
    state[:, GAP_INDEX + 1] = (gap == 0).float()
    return torch.arange(b) * 10**9, torch.arange(b) % 3, state, gap


@pytest.mark.parametrize(
    ("kwargs", "reward_heads"),
    [({}, 1), ({"shared_reward": False}, 2), ({"supervised_split": False}, 0),
     ({"towers": ("follow",)}, 1)],
)
def test_output_shapes_per_ablation(kwargs, reward_heads):
    spec = NetworkSpec(STATE_DIM, GAP_INDEX, n_actions=5, id_buckets=128, **kwargs)
    users, authors, state, _ = batch()
    out = RLIVUANetwork(spec)(users, authors, state)
    towers = len(spec.towers)
    assert out.residual.shape == (towers, 2, 6, 5)
    assert (out.reward_hat is None) == (reward_heads == 0)
    if reward_heads:
        assert out.reward_hat.shape == (towers, reward_heads, 6, 5)
    assert out.q(0.9).shape == (towers, 2, 6, 5)
    assert out.gift_logit.shape == (6,)


def test_gap_bucket_matches_the_mdp_layer():
    spec = NetworkSpec(STATE_DIM, GAP_INDEX, n_actions=5, id_buckets=16, max_gap_bucket=20)
    _, _, state, gap = batch()
    got = RLIVUANetwork(spec).gap_bucket(state).numpy()
    assert np.array_equal(got, gap_bucket(gap.numpy(), 20))


def test_gift_assistance_reaches_id_embeddings_only():
    spec = NetworkSpec(STATE_DIM, GAP_INDEX, n_actions=5, id_buckets=32)
    net = RLIVUANetwork(spec)
    users, authors, state, _ = batch()
    loss = gift_assistance_loss(net(users, authors, state).gift_logit, torch.ones(6))
    loss.backward()
    assert net.user.table.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.heads.parameters())
    assert net.dense.weight.grad is None


def test_memory_is_bounded_by_hash_buckets():
    small = NetworkSpec(STATE_DIM, GAP_INDEX, n_actions=5, id_buckets=1000)
    params = sum(p.numel() for p in RLIVUANetwork(small).parameters())
    users, authors, state, _ = batch()
    RLIVUANetwork(small)(users * 10**6, authors, state)  # any id fits the same table
    assert params < 2 * (2 * 1000 * 32) + 200_000


def test_bad_spec_is_named():
    with pytest.raises(ValueError, match="towers must be a non-empty subset"):
        NetworkSpec(STATE_DIM, GAP_INDEX, n_actions=5, towers=("likes",))
    with pytest.raises(ValueError, match="gap_index"):
        NetworkSpec(STATE_DIM, STATE_DIM - 1, n_actions=5)
