"""Issue 13: per-session discounting, the session state input, and the faithful ablations
(w/o MG&DD regresses a mean, w/o Q-norm detaches Q, Huber delta consistent with reward_scale)."""

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from rliv_ray import schema as S
from rliv_ray.algorithms.sl_mgac import losses as L
from rliv_ray.algorithms.sl_mgac.baselines import BASELINES, dqn_loss, method
from rliv_ray.algorithms.sl_mgac.network import Outputs, SLMGACNetwork, SLMGACSpec, TimeHead
from rliv_ray.algorithms.sl_mgac.objective import (
    SLMGACSettings,
    forward_state,
    reward_hat,
    rpn_loss,
    sl_mgac_losses,
    transition_discount,
)
from rliv_ray.algorithms.sl_mgac.synthetic import random_batch
from rliv_ray.algorithms.sl_mgac.variants import VARIANTS

TINY = {"id_buckets": 64, "embedding_dim": 4, "attention_hidden": (4,), "shared_hidden": (16,),
        "actor_hidden": (8,), "rpn_hidden": (8,), "qrn_hidden": (8,), "groups": 3}


def tiny_net(seed: int = 0, **kwargs) -> SLMGACNetwork:
    torch.manual_seed(seed)
    return SLMGACNetwork(SLMGACSpec(user_dim=5, live_dim=3, **{**TINY, **kwargs}))


# --- per-session discounting -----------------------------------------------------------------

def test_per_request_discount_is_gamma_everywhere():
    batch = {S.NEXT_NEW_SESSION: torch.tensor([True, False])}
    assert transition_discount(batch, SLMGACSettings(gamma=0.8)) == 0.8


def test_per_session_discount_is_gamma_only_into_a_new_session():
    batch = {S.NEXT_NEW_SESSION: torch.tensor([True, False, False, True])}
    d = transition_discount(batch, SLMGACSettings(gamma=0.8, discount="session"))
    torch.testing.assert_close(d, torch.tensor([0.8, 1.0, 1.0, 0.8]))
    y = L.td_target(torch.ones(4), torch.full((4,), 10.0), d,
                    done=torch.tensor([False, False, True, False]))
    torch.testing.assert_close(y, torch.tensor([9.0, 11.0, 1.0, 9.0]))


def test_per_session_discount_needs_the_column():
    with pytest.raises(KeyError, match=S.NEXT_NEW_SESSION):
        transition_discount({}, SLMGACSettings(discount="session"))


def test_the_td_target_uses_the_per_session_discount():
    net, settings = tiny_net(), SLMGACSettings(discount="session", gamma=0.5)
    target = copy.deepcopy(net)
    batch = random_batch(net.spec, 32, seed=3, done_share=0.0)
    out = forward_state(net, batch)
    with torch.no_grad():
        nxt = forward_state(target, batch, True, actor=False)
    metrics = [sl_mgac_losses(out, None, nxt, {**batch, S.NEXT_NEW_SESSION: torch.full(
        (32,), new)}, net.spec, settings)[1]["q/target_mean"] for new in (True, False)]
    assert metrics[0] != pytest.approx(metrics[1])  # within a session the factor is 1


def test_dqn_uses_the_per_session_discount():
    spec, settings = method("DQN").configure(SLMGACSpec(user_dim=5, live_dim=3, **TINY),
                                             SLMGACSettings(discount="session"))
    torch.manual_seed(0)
    net = SLMGACNetwork(spec)
    target = copy.deepcopy(net)
    batch = random_batch(spec, 32, seed=3, done_share=0.0)
    losses = [dqn_loss(net, target, {**batch, S.NEXT_NEW_SESSION: torch.full((32,), new)},
                       settings)[0].item() for new in (True, False)]
    assert losses[0] != pytest.approx(losses[1])


def test_sl_mgac_0_stays_myopic():
    assert VARIANTS["SL-MGAC-0"][1] == {"gamma": 0.0, "discount": "request"}


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"discount": "episode"}, "discount must be one of \\('request', 'session'\\), got 'episode'"),
    ({"huber_delta_s": 0.0}, "huber_delta_s must be > 0, got 0.0"),
    ({"rho_huber_delta": -1.0}, "rho_huber_delta must be > 0"),
])
def test_bad_settings_are_named_in_one_line(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SLMGACSettings(**kwargs)


# --- the session state is an input of the network --------------------------------------------

def test_the_network_reads_the_session_state():
    net = tiny_net()
    batch = random_batch(net.spec, 16, seed=1)
    before = forward_state(net, batch).logits
    moved = {**batch, S.SESSION_INDEX: batch[S.SESSION_INDEX] + 1.0}
    assert not torch.allclose(forward_state(net, moved).logits, before)
    with pytest.raises(ValueError, match="session_state=True"):
        net(*(batch[c] for c in (S.USER_FEATURES, S.LIVE_FEATURES, S.LIVE_ID, S.LIVE_HISTORY,
                                 S.VIDEO_HISTORY, S.USER_GROUP)))


def test_without_session_state_the_network_ignores_it():
    net = tiny_net(session_state=False)
    batch = random_batch(net.spec, 16, seed=1)
    for name in S.SESSION_STATE_COLUMNS:
        batch[name] = batch[name] + 1.0
    torch.testing.assert_close(forward_state(net, batch).logits,
                               forward_state(net, random_batch(net.spec, 16, seed=1)).logits)


# --- (a) w/o MG&DD regresses a mean, not the median ----------------------------------------

def fitted_constant(seconds: torch.Tensor, settings: SLMGACSettings) -> float:
    """The constant u minimising the w/o DD time loss, in seconds (a fine grid)."""
    grid = torch.linspace(0.0, 600.0, 6001) * settings.reward_scale  # (G,) scaled predictions
    loss = L.huber(grid[:, None] - settings.reward_scale * seconds[None],
                   settings.td_huber_delta).mean(-1)  # (G,) direct_time_loss per constant
    return float(grid[loss.argmin()] / settings.reward_scale)


def test_wo_dd_time_loss_fits_the_mean_of_a_skewed_target():
    seconds = torch.tensor([0.0] * 8 + [500.0] * 2)  # median 0 s, mean 100 s
    settings = SLMGACSettings()
    assert fitted_constant(seconds, settings) == pytest.approx(100.0, abs=0.2)
    # the old pairing (delta 1 on raw seconds) said "0 s": never inject
    old = SLMGACSettings(reward_scale=1.0, huber_delta_s=1.0)
    assert fitted_constant(seconds, old) < 1.0
    u = torch.full((1, 10), 100.0 * settings.reward_scale)
    expected = L.huber(u - settings.reward_scale * seconds, settings.td_huber_delta).mean()
    torch.testing.assert_close(L.direct_time_loss(u, seconds, None, settings.td_huber_delta,
                                                  settings.reward_scale), expected)


def test_wo_dd_objective_regresses_and_reads_the_scaled_time():
    spec = SLMGACSpec(user_dim=5, live_dim=3, discretise=False, **TINY)
    settings = SLMGACSettings()
    b = 4
    batch = {S.ACTION: torch.tensor([1, 1, 0, 1]), S.LIVE_WATCH_S: torch.tensor([0., 500, 0, 40]),
             S.VIDEO_WATCH_S: torch.full((b,), 30.0), S.N_VIDEOS: torch.full((b,), 3)}
    u = torch.full((2, b), 1.0)  # two critics, both say scale * T = 1, i.e. 100 s
    out = Outputs(None, None, TimeHead(None, None, u), TimeHead(None, None, u * 0.3))
    s = settings.reward_scale
    injected = batch[S.ACTION] == 1
    live = L.huber(u - s * batch[S.LIVE_WATCH_S], settings.td_huber_delta)[:, injected]
    video = L.huber(u * 0.3 - s * batch[S.VIDEO_WATCH_S], settings.td_huber_delta)
    expected = live.mean(-1).sum() + video.mean(-1).sum()
    torch.testing.assert_close(rpn_loss(out, spec, settings, batch), expected)
    r = reward_hat(out, spec, settings, batch[S.LIVE_WATCH_S], batch[S.VIDEO_WATCH_S],
                   batch[S.N_VIDEOS].float())
    torch.testing.assert_close(r[..., 1], torch.full((2, b), s * (100.0 - 0.5 * 30.0 / 3)))


# --- (b) w/o Q-norm detaches Q ---------------------------------------------------------------

@pytest.mark.parametrize(("name", "detached"), [("w/o Q-norm", True),
                                                 ("w/o Q-norm (Q attached)", False)])
def test_wo_q_norm_actor_loss_reaches_the_critics_only_when_attached(name, detached):
    net = tiny_net()
    settings = replace(SLMGACSettings(), **VARIANTS[name][1])
    assert settings.q_norm is False
    target = copy.deepcopy(net)
    batch = random_batch(net.spec, 16, seed=2)
    out = forward_state(net, batch)
    with torch.no_grad():
        nxt = forward_state(target, batch, True, actor=False)
    parts, _ = sl_mgac_losses(out, None, nxt, batch, net.spec, settings)
    parts.actor.backward()
    critic = [*net.qrn.parameters(), *net.rpn_live.parameters(), *net.rpn_video.parameters()]
    reached = any(p.grad is not None and p.grad.abs().sum() > 0 for p in critic)
    assert reached is not detached
    assert net.actor.mlp.layers[0].weight.grad.abs().sum() > 0  # the actor still learns


def test_detached_large_q_saturates_the_expected_q_policy():
    """The paper's claim for w/o Q-norm, with Q detached: -sum_a pi Q pushes pi(a|s) to the
    argmax at a rate that grows with |Q|."""
    q = torch.tensor([[0.0, 1.0]])
    grads = []
    for scale in (1.0, 1e3):
        logits = torch.zeros(1, 2, requires_grad=True)
        L.expected_q_actor_loss(torch.softmax(logits, -1), (scale * q).detach()).backward()
        grads.append(logits.grad[0, 1].item())
    assert grads[0] < 0 and grads[1] == pytest.approx(1e3 * grads[0])


# --- (c) Huber delta consistent with reward_scale, for every method --------------------------

@pytest.mark.parametrize("name", sorted({*BASELINES, *VARIANTS}))
def test_huber_delta_is_set_in_seconds_for_every_method(name):
    _, settings = method(name).configure(SLMGACSpec(user_dim=5, live_dim=3))
    for scale in (1.0, 0.01):
        s = replace(settings, reward_scale=scale)
        assert s.td_huber_delta == pytest.approx(s.huber_delta_s * scale)
    # the default zone covers every clipped watch time (1200 s, the last bin boundary)
    assert settings.huber_delta_s >= 1200.0


def test_critic_loss_is_scale_invariant_with_the_consistent_delta():
    q = torch.tensor([[0.0, 50.0, 900.0]])  # seconds
    y = torch.tensor([300.0, 0.0, 0.0])
    losses = []
    for scale in (1.0, 0.01):
        s = SLMGACSettings(reward_scale=scale)
        losses.append(L.critic_loss(scale * q, scale * y, s.td_huber_delta).item() / scale**2)
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    # all three errors are in the quadratic zone: half the mean squared error
    assert losses[0] == pytest.approx(0.5 * np.mean([300**2, 50**2, 900**2]), rel=1e-5)


# --- (d) L2R and DQN: the shared extractor plus their own heads -----------------------------

@pytest.mark.parametrize("name", ["L2R", "DQN", "Double DQN"])
def test_q_baselines_have_their_own_heads_and_keep_the_old_form_as_a_row(name):
    base = SLMGACSpec(user_dim=5, live_dim=3)
    own, _ = method(name).configure(base)
    assert (own.multi_group, own.layer_norm) == (False, False)
    old, _ = method(f"{name} (SL-MGAC heads)").configure(base)
    assert (old.multi_group, old.layer_norm) == (True, True)
    for spec in (own, old):  # the shared extractor is SL-MGAC's
        assert (spec.shared_hidden, spec.embedding_dim) == (base.shared_hidden,
                                                             base.embedding_dim)
    net = SLMGACNetwork(replace(own, **{k: v for k, v in TINY.items()}))
    assert isinstance(net.critic_norms[0], torch.nn.Identity) and net.spec.tower_groups == 1
