"""The RLIV-UA objective on a small batch: metrics, gradients, and a few steps that learn."""

import copy
import math

import pytest
import torch

from rliv_ray import schema as S
from rliv_ray.algorithms.rliv_ua.network import NetworkSpec, RLIVUANetwork
from rliv_ray.algorithms.rliv_ua.objective import ACTIONS, NEXT_OBS, OBS, rliv_ua_loss


def make_batch(b=256, state_dim=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    state = torch.randn(b, state_dim, generator=g)
    state[:, 8] = torch.log1p(torch.randint(0, 50, (b,), generator=g).float())
    state[:, 9] = (state[:, 8] == 0).float()
    actions = torch.randint(0, 5, (b,), generator=g)
    batch = {OBS: state, NEXT_OBS: state + 0.1, ACTIONS: actions,
             S.USER_ID: torch.randint(0, 10**9, (b,), generator=g),
             S.AUTHOR_ID: torch.randint(0, 100, (b,), generator=g)}
    for label in S.LABELS:  # the reward depends on the action, so Q has something to learn
        batch[S.reward_column(label)] = (actions >= 3).float() * (torch.rand(b, generator=g) < 0.5)
    return batch


@pytest.mark.parametrize("kwargs", [{}, {"shared_reward": False},
                                    {"supervised_split": False, "gift_assist": False}])
def test_objective_learns_on_a_fixed_batch(kwargs):
    torch.manual_seed(0)
    net = RLIVUANetwork(NetworkSpec(10, 8, n_actions=5, id_buckets=256, **kwargs))
    target = copy.deepcopy(net)
    batch = make_batch()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    first, metrics = None, {}
    for _ in range(60):
        loss, metrics = rliv_ua_loss(net, target, batch, gamma=0.9)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    assert set(metrics) >= {"loss/total", "loss/td/click", "q/mean/gift", "q/std/follow",
                            "td/abs/effective_view"}
    assert all(math.isfinite(v) for v in metrics.values())
    assert ("loss/assist" in metrics) == net.spec.gift_assist


def test_target_network_gets_no_gradient():
    net = RLIVUANetwork(NetworkSpec(10, 8, n_actions=5, id_buckets=64))
    target = copy.deepcopy(net)
    loss, _ = rliv_ua_loss(net, target, make_batch(32), gamma=0.9)
    loss.backward()
    assert all(p.grad is None for p in target.parameters())
    assert any(p.grad is not None for p in net.heads.parameters())
