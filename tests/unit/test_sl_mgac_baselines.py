"""L2R, DQN and BC on SL-MGAC's feature extractor: losses by hand, learning on toy batches."""

import copy

import pytest
import torch

from rliv_ray import schema as S
from rliv_ray.algorithms.sl_mgac import losses as L
from rliv_ray.algorithms.sl_mgac.baselines import (
    BASELINES,
    dqn_loss,
    l2r_loss,
    logged_reward,
    method,
    q_inject_probability,
)
from rliv_ray.algorithms.sl_mgac.network import SLMGACNetwork, SLMGACSpec
from rliv_ray.algorithms.sl_mgac.objective import (
    DONE,
    SLMGACSettings,
    forward_state,
    inject_probability,
    sl_mgac_loss,
)
from rliv_ray.algorithms.sl_mgac.synthetic import random_batch, threshold_batch

TINY = {"id_buckets": 64, "embedding_dim": 4, "attention_hidden": (4,), "shared_hidden": (16,),
        "actor_hidden": (8,), "rpn_hidden": (8,), "qrn_hidden": (8,), "groups": 3}
SETTINGS = SLMGACSettings(reward_scale=0.05)


def build(name: str, seed: int = 0, settings: SLMGACSettings = SETTINGS):
    spec, settings = method(name).configure(SLMGACSpec(user_dim=5, live_dim=3, **TINY),
                                            settings)
    torch.manual_seed(seed)
    net = SLMGACNetwork(spec)
    return net, copy.deepcopy(net), settings


def train(name: str, batch, steps: int, lr: float = 1e-2, seed: int = 0):
    net, target, settings = build(name, seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss, _ = method(name).loss(net, target, batch, settings)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return net, losses


def test_logged_reward_is_eq5_with_clipped_times():
    net, _, _ = build("L2R")
    batch = {S.ACTION: torch.tensor([1, 1, 0]), S.LIVE_WATCH_S: torch.tensor([30.0, 5000.0, 9.0]),
             S.VIDEO_WATCH_S: torch.tensor([40.0, 20.0, 10.0]), S.N_VIDEOS: torch.tensor([4, 2, 5])}
    r = logged_reward(batch, net.spec, SLMGACSettings(beta=0.5, reward_scale=0.1))
    torch.testing.assert_close(r, torch.tensor([0.1 * (30 - 5), 0.1 * (1200 - 5), 0.0]))


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_each_baseline_loss_decreases_on_a_fixed_batch(name):
    net, _, _ = build(name)
    batch = random_batch(net.spec, 64, seed=1)
    _, losses = train(name, batch, 40)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.7 * losses[0], losses[::10]


def test_l2r_regresses_the_reward_of_the_logged_action_by_hand():
    net, target, settings = build("L2R")
    batch = random_batch(net.spec, 32, seed=2)
    loss, metrics = l2r_loss(net, None, batch, settings)
    q = forward_state(net, batch, actor=False).residual[0]  # (B, 2), one critic
    q_taken = q.gather(1, batch[S.ACTION].long().view(-1, 1)).squeeze(1)
    expected = L.huber(q_taken - logged_reward(batch, net.spec, settings),
                       settings.td_huber_delta).mean()
    torch.testing.assert_close(loss, expected)
    assert metrics["loss/total"] == pytest.approx(expected.item())


@pytest.mark.parametrize("mode", ["max_min", "double_dqn"])
def test_dqn_target_by_hand(mode):
    net, target, settings = build("DQN" if mode == "max_min" else "Double DQN", seed=3)
    for p in target.parameters():  # a different target, so the two modes differ
        p.data.add_(0.3 * torch.randn_like(p))
    batch = random_batch(net.spec, 32, seed=4, no_live_share=0.3, done_share=0.3)
    loss, _ = dqn_loss(net, target, batch, settings)
    with torch.no_grad():
        q_next_t = forward_state(target, batch, True, actor=False).residual[0]
        q_next_o = forward_state(net, batch, True, actor=False).residual[0]
        live = batch[S.next_column(S.LIVE_ID)] >= 0
        blocked = torch.stack([torch.zeros_like(live), ~live], dim=1)
        if mode == "max_min":
            v = q_next_t.masked_fill(blocked, -torch.inf).max(dim=1).values
        else:
            pick = q_next_o.masked_fill(blocked, -torch.inf).argmax(dim=1)
            v = q_next_t.gather(1, pick.view(-1, 1)).squeeze(1)
        y = logged_reward(batch, net.spec, settings) + settings.gamma * v * ~batch[DONE]
    q = forward_state(net, batch, actor=False).residual[0]
    q_taken = q.gather(1, batch[S.ACTION].long().view(-1, 1)).squeeze(1)
    torch.testing.assert_close(loss, L.huber(q_taken - y, settings.td_huber_delta).mean())


def test_l2r_learns_the_threshold_world():
    net, _, _ = build("L2R")
    batch = threshold_batch(net.spec, 256, n_states=32, seed=5)
    net, _ = train("L2R", batch, 150)
    good = batch[S.USER_FEATURES][:, 0] > 0
    assert torch.equal(q_inject_probability(net, batch) > 0.5, good)


def test_bc_matches_deterministic_logged_actions():
    net, _, _ = build("BC")
    batch = threshold_batch(net.spec, 256, n_states=32, seed=6)
    batch[S.ACTION] = (batch[S.USER_FEATURES][:, 0] > 0).long()  # the logger's rule
    net, losses = train("BC", batch, 120)
    assert torch.equal(inject_probability(net, batch) > 0.5, batch[S.ACTION].bool())
    assert losses[-1] < 0.1


def test_q_probability_is_zero_without_a_live_and_greedy_on_q():
    net, _, _ = build("DQN", seed=7)
    batch = random_batch(net.spec, 64, seed=8, no_live_share=0.4)
    p = q_inject_probability(net, batch)
    q = forward_state(net, batch, actor=False).residual[0]
    live = batch[S.LIVE_ID] >= 0
    assert (p[~live] == 0).all()
    assert torch.equal(p[live] > 0.5, (q[:, 1] > q[:, 0])[live])


def test_method_maps_baselines_and_variants_and_checks_the_network():
    assert method("SL-MGAC-0").loss is sl_mgac_loss
    spec, settings = method("SL-MGAC-0").configure(SLMGACSpec(user_dim=5, live_dim=3))
    assert settings.gamma == 0.0 and spec.supervised_split
    spec, settings = method("BC").configure(SLMGACSpec(user_dim=5, live_dim=3))
    assert not spec.stop_gradient and method("BC").uses_target is False
    with pytest.raises(ValueError, match="unknown method"):
        method("PPO")
    torch.manual_seed(0)
    net = SLMGACNetwork(SLMGACSpec(user_dim=5, live_dim=3, **TINY))  # with the RPN split
    with pytest.raises(ValueError, match="supervised_split=False"):
        l2r_loss(net, None, random_batch(net.spec, 8), SETTINGS)
    dqn, target, _ = build("DQN")
    with pytest.raises(ValueError, match="target_mode"):
        dqn_loss(dqn, target, random_batch(dqn.spec, 8), SLMGACSettings(target_mode="vanilla"))
