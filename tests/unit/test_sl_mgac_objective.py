"""The SL-MGAC objective on small batches: gradient paths, glue by hand, serving, learning."""

import copy

import pytest
import torch

from rliv_ray import schema as S
from rliv_ray.algorithms.sl_mgac.losses import taken
from rliv_ray.algorithms.sl_mgac.network import Outputs, SLMGACNetwork, SLMGACSpec, TimeHead
from rliv_ray.algorithms.sl_mgac.objective import (
    DONE,
    SLMGACSettings,
    act,
    check_batch,
    forward_state,
    greedy_inject_probability,
    inject_probability,
    reward_hat,
    rpn_loss,
    sl_mgac_loss,
    sl_mgac_losses,
    update_target,
)
from rliv_ray.algorithms.sl_mgac.synthetic import random_batch, threshold_batch
from rliv_ray.algorithms.sl_mgac.variants import VARIANTS, variant

METRICS = {"loss/total", "loss/critic", "loss/rpn", "loss/actor", "q/mean", "q/std",
           "q/target_mean", "reward/mean", "pi/inject_mean", "pi/greedy_inject_rate"}


def tiny_spec(**kwargs) -> SLMGACSpec:
    sizes = {"id_buckets": 64, "embedding_dim": 4, "attention_hidden": (4,),
             "shared_hidden": (16,), "actor_hidden": (8,), "rpn_hidden": (8,),
             "qrn_hidden": (8,), "groups": 3}
    return SLMGACSpec(user_dim=5, live_dim=3, **{**sizes, **kwargs})


def nets(spec: SLMGACSpec, seed: int = 0) -> tuple[SLMGACNetwork, SLMGACNetwork]:
    torch.manual_seed(seed)
    net = SLMGACNetwork(spec)
    return net, copy.deepcopy(net)


def loss_parts(net, target, batch, settings):
    out = forward_state(net, batch)
    with torch.no_grad():
        next_target = forward_state(target, batch, True, actor=False)
        next_online = forward_state(net, batch, True)
    return sl_mgac_losses(out, next_online, next_target, batch, net.spec, settings)[0]


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_variant_gives_a_finite_loss_and_the_metrics(name):
    spec, settings = variant(name, tiny_spec())
    net, target = nets(spec)
    loss, metrics = sl_mgac_loss(net, target, random_batch(spec, 16), settings)
    loss.backward()
    assert torch.isfinite(loss)
    assert set(metrics) >= METRICS
    assert ("reward_hat/mean" in metrics) == spec.supervised_split
    assert (metrics["loss/rpn"] == 0) == (not spec.supervised_split)
    assert all(p.grad is not None for p in net.actor.parameters())


def test_target_network_gets_no_gradient():
    net, target = nets(tiny_spec())
    for mode in ("max_min", "double_dqn", "vanilla"):
        net.zero_grad()
        loss, _ = sl_mgac_loss(net, target, random_batch(net.spec, 16),
                               SLMGACSettings(target_mode=mode))
        loss.backward()
        assert all(p.grad is None for p in target.parameters())
        assert net.qrn.mlp.layers[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("sep", [False, True])
def test_sep_detaches_the_critics_from_the_actor_loss(sep):
    net, target = nets(tiny_spec())
    parts = loss_parts(net, target, random_batch(net.spec, 16),
                       SLMGACSettings(detach_q_in_actor=sep))
    parts.actor.backward()
    critic_heads = [*net.qrn.parameters(), *net.rpn_live.parameters(),
                    *net.rpn_video.parameters()]
    reached = any(p.grad is not None and p.grad.abs().sum() > 0 for p in critic_heads)
    assert reached != sep
    assert net.actor.mlp.layers[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_stop_gradient_through_the_objective(stop_gradient):
    net, target = nets(tiny_spec(stop_gradient=stop_gradient))
    parts = loss_parts(net, target, random_batch(net.spec, 16),
                       SLMGACSettings(detach_q_in_actor=True))  # isolate the actor's own path
    parts.actor.backward()
    reached = [p.grad is not None and p.grad.abs().sum() > 0 for p in net.shared.parameters()]
    assert all(reached) != stop_gradient and any(reached) != stop_gradient


def test_rpn_is_trained_by_eq_11_only_when_detached_in_td():
    net, target = nets(tiny_spec())
    parts = loss_parts(net, target, random_batch(net.spec, 16), SLMGACSettings())
    parts.critic.backward()
    assert all(p.grad is None for p in net.rpn_live.parameters())
    net.zero_grad()
    parts = loss_parts(net, target, random_batch(net.spec, 16),
                       SLMGACSettings(detach_rpn_in_td=False))
    parts.critic.backward()
    assert net.rpn_live.mlp.layers[0].weight.grad.abs().sum() > 0


def hand_outputs(bin_logits=None) -> Outputs:
    rho = torch.full((1, 2, 8), 0.5)
    return Outputs(None, torch.zeros(1, 2, 2), TimeHead(rho, bin_logits, None),
                   TimeHead(rho, bin_logits, None))


def test_reward_hat_with_logged_bins_by_hand():
    spec, settings = tiny_spec(), SLMGACSettings(beta=0.5, reward_scale=2.0)
    live = torch.tensor([30.0, 0.0])  # row 2 logged a = 0: the live bin is the zero bin
    video = torch.tensor([12.0, 12.0])  # bin [10, 25) at rho = 0.5 -> 17.5 s
    n = torch.tensor([7.0, 7.0])
    r = reward_hat(hand_outputs(), spec, settings, live, video, n)  # (C=1, B=2, A=2)
    # row 1: live bin [30, 60) at rho 0.5 -> 45 s; row 2: T_hat^l = 0 (EQUATIONS 1.12 bias)
    expected = [[0.0, 2 * (45 - 0.5 * 17.5 / 7)], [0.0, 2 * (0 - 0.5 * 17.5 / 7)]]
    torch.testing.assert_close(r[0], torch.tensor(expected))


def test_reward_hat_with_predicted_bins_ignores_the_logged_bin():
    spec = tiny_spec(bin_source="predicted")
    logits = torch.full((1, 2, 8), -1e9)
    logits[..., 4] = 0.0  # certain of bin 4: live [30, 60), video [25, 50) -> 45 s, 37.5 s
    r = reward_hat(hand_outputs(logits), spec, SLMGACSettings(beta=1.0, reward_scale=1.0),
                   torch.tensor([30.0, 0.0]), torch.tensor([0.0, 999.0]), torch.tensor([5, 5]))
    torch.testing.assert_close(r[0, :, 1], torch.tensor([45 - 37.5 / 5] * 2))


def test_rpn_learns_the_live_time_only_where_a_stream_was_injected():
    spec = tiny_spec(bin_source="predicted")
    net, _ = nets(spec)
    batch = random_batch(spec, 16)
    batch[S.ACTION] = torch.zeros(16, dtype=torch.long)
    rpn_loss(forward_state(net, batch), spec, SLMGACSettings(), batch).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in net.rpn_live.parameters())
    assert net.rpn_video.mlp.layers[0].weight.grad.abs().sum() > 0


def test_predicted_bins_learn_from_their_cross_entropy_only():
    net, target = nets(tiny_spec(bin_source="predicted"))
    parts = loss_parts(net, target, random_batch(net.spec, 16), SLMGACSettings())
    parts.actor.backward()  # Q attached: the actor loss reaches the RPN's rho, not its bins
    last = net.rpn_live.mlp.layers[-1]
    assert last.weight.grad[..., :8].abs().sum() > 0
    assert last.weight.grad[..., 8:].abs().sum() == 0


@pytest.mark.parametrize(("clip", "expected"), [(True, 1200.0), (False, 5000.0)])
def test_reward_label_clips_watch_time_to_the_last_boundary(clip, expected):
    spec = tiny_spec()
    net, target = nets(spec)
    batch = random_batch(spec, 8, no_live_share=0.0)
    batch[S.ACTION] = torch.ones(8, dtype=torch.long)
    batch[S.LIVE_WATCH_S] = torch.full((8,), 5000.0)
    batch[S.VIDEO_WATCH_S] = torch.zeros(8)
    settings = SLMGACSettings(clip_watch_time=clip, reward_scale=1.0)
    _, metrics = sl_mgac_loss(net, target, batch, settings)
    assert metrics["reward/mean"] == pytest.approx(expected)


def test_no_live_on_air_means_no_actor_loss_and_no_injection():
    spec = tiny_spec()
    net, target = nets(spec)
    batch = random_batch(spec, 16, no_live_share=1.0)
    batch[S.ACTION] = torch.zeros(16, dtype=torch.long)
    _, metrics = sl_mgac_loss(net, target, batch, SLMGACSettings())
    assert metrics["loss/actor"] == 0.0
    assert torch.equal(greedy_inject_probability(net, batch, 0.2), torch.zeros(16))
    action, prob = act(net, batch, epsilon=1.0)
    assert torch.equal(action, torch.zeros(16, dtype=torch.long))
    assert torch.equal(prob, torch.ones(16))


def test_epsilon_greedy_actions_and_propensities():
    spec = tiny_spec()
    net, _ = nets(spec)
    batch = random_batch(spec, 2000, no_live_share=0.0)
    greedy = (inject_probability(net, batch) > 0.5).long()
    action, prob = act(net, batch, epsilon=0.0)
    assert torch.equal(action, greedy) and torch.equal(prob, torch.ones(2000))
    action, prob = act(net, batch, 0.2, torch.Generator().manual_seed(0))
    expected = torch.where(action == greedy, 0.9, 0.1)
    torch.testing.assert_close(prob, expected)
    assert 0.05 < (action != greedy).float().mean().item() < 0.15  # eps / 2 = 0.1 expected


def test_update_target_polyak_and_hard():
    net, target = nets(tiny_spec())
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    before = [p.clone() for p in target.parameters()]
    update_target(net, target, SLMGACSettings(tau=0.25), step=1)
    for p, p_t, old in zip(net.parameters(), target.parameters(), before, strict=True):
        torch.testing.assert_close(p_t, 0.75 * old + 0.25 * p)
    hard = SLMGACSettings(target_update="hard", hard_update_every=2)
    update_target(net, target, hard, step=1)
    assert not torch.equal(next(target.parameters()), next(net.parameters()))
    update_target(net, target, hard, step=2)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), target.parameters(),
                                                  strict=True))


def test_check_batch_names_the_bad_column():
    spec = tiny_spec()
    batch = random_batch(spec, 8)
    check_batch(batch, spec)
    with pytest.raises(KeyError, match="next_live_watch_s"):
        check_batch({k: v for k, v in batch.items() if k != "next_live_watch_s"}, spec)
    with pytest.raises(KeyError, match=DONE):
        check_batch({k: v for k, v in batch.items() if k != DONE}, spec)
    with pytest.raises(ValueError, match="user_features must have width 5, got 4"):
        check_batch({**batch, S.USER_FEATURES: torch.zeros(8, 4)}, spec)
    with pytest.raises(ValueError, match="next_user_group must have shape"):
        check_batch({**batch, S.next_column(S.USER_GROUP): torch.zeros(8, 1)}, spec)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"gamma": 1.0}, "gamma must be in \\[0, 1\\), got 1.0"),
     ({"target_mode": "sarsa"}, "target_mode must be one of"),
     ({"actor_loss": "ppo"}, "actor_loss must be one of"),
     ({"q_temperature": 0.0}, "q_temperature must be > 0"),
     ({"beta": -0.1}, "beta must be >= 0"),
     ({"epsilon": 1.5}, "epsilon must be in \\[0, 1\\]"),
     ({"tau": 0.0}, "tau must be in \\(0, 1\\]")],
)
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SLMGACSettings(**kwargs)


def test_variants_change_what_they_name():
    base = tiny_spec()
    assert variant("w/o MG&DD&SL", base)[0].supervised_split is False
    assert variant("SL-MGAC-0", base)[1].gamma == 0.0
    assert variant("SL-MGAC-sep", base)[1].detach_q_in_actor is True
    assert variant("SL-MGAC", base) == (base, SLMGACSettings())
    with pytest.raises(ValueError, match="unknown SL-MGAC variant"):
        variant("w/o everything", base)



def train(spec, settings, batch, steps, lr=1e-2):
    net, target = nets(spec)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss, _ = sl_mgac_loss(net, target, batch, settings)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return net, losses


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", ["SL-MGAC", "w/o MG&DD", "w/o MG&DD&SL", "SL-MGAC-vanilla"])
def test_total_loss_decreases_on_a_fixed_batch(name):
    spec, settings = variant(name, tiny_spec())
    batch = random_batch(spec, 64, history=4)
    _, losses = train(spec, settings, batch, steps=200)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.5 * first


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(("spec_kwargs", "settings_kwargs"),
                         [({}, {}), ({}, {"actor_loss": "soft_ce"}),
                          ({"bin_source": "predicted"}, {})])
def test_actor_learns_the_known_optimum_with_gamma_zero(spec_kwargs, settings_kwargs):
    """Injecting pays iff user_features[0] > 0 (live 40-80 s vs 0.5-3 s, video 10 s a slot)."""
    spec = tiny_spec(**spec_kwargs)
    settings = SLMGACSettings(gamma=0.0, beta=0.5, reward_scale=0.1, **settings_kwargs)
    batch = threshold_batch(spec, 256, n_states=16)
    net, _ = train(spec, settings, batch, steps=250)
    rule = batch[S.USER_FEATURES][:, 0] > 0
    greedy = inject_probability(net, batch) > 0.5
    assert (greedy == rule).float().mean().item() > 0.9
    r_hat = taken(reward_hat(forward_state(net, batch), spec, settings,
                             batch[S.LIVE_WATCH_S], batch[S.VIDEO_WATCH_S],
                             batch[S.N_VIDEOS].float()), batch[S.ACTION]).min(dim=0).values
    good_injected = rule & (batch[S.ACTION] == 1)
    assert 4.5 < r_hat[good_injected].mean() < 6.5  # r = 0.1 * (40..80 - 0.5 * 10) ~ 5.5
