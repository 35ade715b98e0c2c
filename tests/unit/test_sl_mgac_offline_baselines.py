"""BCQ, SAC, TD3, TD3-BC and IQL on SL-MGAC's feature extractor (Table 1): each loss against a
NumPy reference on a tiny batch, the no-live rule, the policy file, and learning on a toy world."""

import copy
import json
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from rliv_ray import schema as S
from rliv_ray.algorithms.sl_mgac import losses as L
from rliv_ray.algorithms.sl_mgac import offline_baselines as O
from rliv_ray.algorithms.sl_mgac.baselines import BASELINES, logged_reward, method
from rliv_ray.algorithms.sl_mgac.config import SLMGACConfig, method_fields
from rliv_ray.algorithms.sl_mgac.network import SLMGACNetwork, SLMGACSpec
from rliv_ray.algorithms.sl_mgac.objective import (
    DONE,
    SLMGACSettings,
    forward_state,
    update_target,
)
from rliv_ray.algorithms.sl_mgac.synthetic import random_batch, threshold_batch
from rliv_ray.algorithms.sl_mgac.train import load_policy

NAMES = ("BCQ", "SAC", "TD3", "TD3-BC", "IQL")
TINY = {"id_buckets": 64, "embedding_dim": 4, "attention_hidden": (4,), "shared_hidden": (16,),
        "actor_hidden": (8,), "rpn_hidden": (8,), "qrn_hidden": (8,), "groups": 3}
SETTINGS = SLMGACSettings(reward_scale=0.05)


def build(name, seed=0, settings=SETTINGS, **spec_changes):
    spec, settings = method(name).configure(SLMGACSpec(user_dim=5, live_dim=3, **TINY),
                                            settings)
    torch.manual_seed(seed)
    net = SLMGACNetwork(replace(spec, **spec_changes))
    target = copy.deepcopy(net)
    with torch.no_grad():  # a target unlike the online network, so mix-ups show
        for p in target.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return net, target, settings


def n(x):
    return x.detach().double().numpy()


def huber(x, delta):
    return np.where(np.abs(x) <= delta, 0.5 * x * x, delta * (np.abs(x) - 0.5 * delta))


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def pieces(net, target, batch, settings):
    """NumPy copies of what every reference needs."""
    with torch.no_grad():
        out, nxt = forward_state(net, batch), forward_state(net, batch, True)
        tgt, tgt_next = forward_state(target, batch), forward_state(target, batch, True)
    a = batch[S.ACTION].numpy()
    rows = np.arange(len(a))
    return dict(a=a, rows=rows, out=out, nxt=nxt, tgt=tgt, tgt_next=tgt_next,
                r=n(logged_reward(batch, net.spec, settings)),
                live=batch[S.LIVE_ID].numpy() >= 0,
                live_next=batch[S.next_column(S.LIVE_ID)].numpy() >= 0,
                keep=settings.gamma * ~batch[DONE].numpy(), delta=settings.td_huber_delta)


def critic_reference(p, q, y):
    """sum_i mean Huber(Q_i(s, a) - y) for q (C, B, 2)."""
    return sum(huber(q[i, p["rows"], p["a"]] - y, p["delta"]).mean() for i in range(len(q)))


def feasible_mean(x, live):
    return x[live].mean()


# --- registration and configuration ----------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_registered_with_own_heads_and_accepted_by_the_config(name):
    m = method(name)
    assert BASELINES[name] is m and m.uses_target
    spec, _ = m.configure(SLMGACSpec(user_dim=5, live_dim=3))
    assert (spec.supervised_split, spec.multi_group, spec.layer_norm) == (False, False, False)
    assert spec.n_critics == (1 if name == "BCQ" else 2)
    assert spec.value_head == (name == "IQL") and spec.stop_gradient == (name != "BCQ")
    c = SLMGACConfig().training(user_dim=5, live_dim=3, **method_fields(name))
    assert c.field_errors() == [] and c.method == name
    assert c.network_spec().value_head == (name == "IQL")
    assert "num_learners 0 or 1" in c.learners(num_learners=2).field_errors()[0]


def test_new_settings_are_validated_by_name():
    for bad, match in ((dict(iql_expectile=1.0), "iql_expectile"),
                       (dict(td3_policy_delay=0), "td3_policy_delay"),
                       (dict(sac_alpha=-0.1), "sac_alpha"),
                       (dict(gumbel_temperature=0.0), "gumbel_temperature"),
                       (dict(iql_max_weight=0.0), "iql_max_weight")):
        with pytest.raises(ValueError, match=match):
            SLMGACSettings(**bad)
    with pytest.raises(ValueError, match="bcq_threshold"):
        SLMGACSpec(user_dim=1, live_dim=1, bcq_threshold=1.0)


def test_policy_file_keeps_the_value_head_and_the_bcq_threshold(tmp_path):
    for name, changes in (("IQL", {}), ("BCQ", {"bcq_threshold": 0.6})):
        net, _, _ = build(name, **changes)
        path = tmp_path / f"{name}.pt"  # the layout train.save_policy writes
        meta = {"spec": asdict(net.spec), "edges": [1.0, 2.0], "groups": 3, "method": name}
        torch.save({"meta": json.dumps(meta), "state_dict": net.state_dict()}, path)
        policy = load_policy(path)
        assert policy.net.spec == net.spec and policy.method == name
        batch = random_batch(net.spec, 16, seed=1)
        torch.testing.assert_close(method(name).probability(policy.net, batch),
                                   method(name).probability(net, batch))


# --- the losses against NumPy ----------------------------------------------------------------

def test_bcq_loss_by_hand():
    net, target, settings = build("BCQ", seed=1, bcq_threshold=0.6)
    with torch.no_grad():  # spread G so that the threshold removes actions
        net.actor.mlp.layers[-1].weight.mul_(30.0)
    batch = random_batch(net.spec, 48, seed=2, no_live_share=0.3, done_share=0.3)
    loss, metrics = O.bcq_loss(net, target, batch, settings)
    p = pieces(net, target, batch, settings)
    g_next = np.exp(log_softmax(n(p["nxt"].logits)))
    allowed = g_next / g_next.max(-1, keepdims=True) > 0.6
    allowed[:, 1] &= p["live_next"]
    allowed[:, 0] |= ~p["live_next"]
    q_online_next = n(p["nxt"].residual[0])
    a_next = np.where(allowed, q_online_next, -np.inf).argmax(-1)
    assert (a_next != q_online_next.argmax(-1)).any()  # the threshold mattered
    y = p["r"] + p["keep"] * n(p["tgt_next"].residual[0])[p["rows"], a_next]
    logits = n(p["out"].logits)
    ce = -log_softmax(logits)[p["rows"], p["a"]]
    imitation = (feasible_mean(ce, p["live"])
                 + settings.bcq_logit_reg * feasible_mean((logits**2).mean(-1), p["live"]))
    expected = critic_reference(p, n(p["out"].residual), y) + imitation
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert metrics["loss/actor"] == pytest.approx(imitation, rel=1e-5)


def test_sac_loss_by_hand():
    net, target, settings = build("SAC", seed=3, settings=replace(SETTINGS, sac_alpha=0.3))
    batch = random_batch(net.spec, 48, seed=4, no_live_share=0.3, done_share=0.3)
    loss, metrics = O.sac_loss(net, target, batch, settings)
    p = pieces(net, target, batch, settings)
    logits_next = n(p["nxt"].logits)
    logits_next[~p["live_next"], 1] = -np.inf
    log_pi_next = log_softmax(logits_next)
    pi_next = np.exp(log_pi_next)
    with np.errstate(invalid="ignore"):  # 0 log 0 = 0 where a = 1 is infeasible
        entropy_term = np.where(pi_next > 0, pi_next * log_pi_next, 0.0).sum(-1)
    q_next = n(p["tgt_next"].residual).min(0)
    y = p["r"] + p["keep"] * ((pi_next * q_next).sum(-1) - 0.3 * entropy_term)
    log_pi = log_softmax(n(p["out"].logits))
    actor = feasible_mean((np.exp(log_pi) * (0.3 * log_pi - n(p["out"].residual).min(0))).sum(-1),
                          p["live"])
    expected = critic_reference(p, n(p["out"].residual), y) + actor
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert metrics["loss/actor"] == pytest.approx(actor, rel=1e-5)


@pytest.mark.parametrize("name", ["TD3", "TD3-BC"])
def test_td3_loss_by_hand_with_the_same_gumbel_draws(name):
    net, target, settings = build(name, seed=5)
    batch = random_batch(net.spec, 48, seed=6, no_live_share=0.3, done_share=0.3)
    torch.manual_seed(7)
    loss, metrics = (O.td3_bc_loss if name == "TD3-BC" else O.td3_loss)(net, target, batch,
                                                                         settings, step=4)
    torch.manual_seed(7)  # the loss draws at s' (target smoothing), then at s (the actor)
    g_next = n(-torch.empty(48, 2).exponential_().log())
    g = n(-torch.empty(48, 2).exponential_().log())
    p = pieces(net, target, batch, settings)
    a_next = (n(p["tgt_next"].logits) + g_next).argmax(-1) * p["live_next"]
    y = p["r"] + p["keep"] * n(p["tgt_next"].residual).min(0)[p["rows"], a_next]
    logits = n(p["out"].logits)
    a_pi = (logits + g).argmax(-1) * p["live"]
    q_pi = n(p["out"].residual[0])[p["rows"], a_pi]
    actor = -feasible_mean(q_pi, p["live"])
    if name == "TD3-BC":
        ce = -log_softmax(logits)[p["rows"], p["a"]]
        actor = 2.5 / feasible_mean(np.abs(q_pi), p["live"]) * actor + feasible_mean(ce, p["live"])
    expected = critic_reference(p, n(p["out"].residual), y) + actor
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert metrics["loss/actor"] == pytest.approx(actor, rel=1e-5)


@pytest.mark.parametrize("name", ["TD3", "TD3-BC"])
def test_td3_actor_is_delayed_and_gives_the_critics_no_gradient(name):
    net, target, settings = build(name, seed=8)
    batch = random_batch(net.spec, 32, seed=9)
    grads = []
    for step in (2, 3):  # delay 2: the actor learns at step 2, not at step 3
        net.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        loss, metrics = method(name).loss(net, target, batch, settings, step=step)
        loss.backward()
        grads.append({k: None if p.grad is None else p.grad.clone()
                      for k, p in net.named_parameters()})
        assert ("loss/actor" in metrics) == (step == 2)
    actor_keys = [k for k in grads[0] if k.startswith("actor.")]
    assert all(grads[0][k] is not None and grads[0][k].abs().sum() > 0 for k in actor_keys)
    assert all(grads[1][k] is None for k in actor_keys)
    for k in grads[0]:  # the actor term leaves every other gradient as it was
        if k not in actor_keys and grads[1][k] is not None:
            torch.testing.assert_close(grads[0][k], grads[1][k])


def test_iql_loss_by_hand_with_clipped_weights():
    settings = replace(SETTINGS, iql_expectile=0.8, iql_beta=5.0, iql_max_weight=1.5)
    net, target, settings = build("IQL", seed=10, settings=settings)
    batch = random_batch(net.spec, 48, seed=11, no_live_share=0.3, done_share=0.3)
    loss, metrics = O.iql_loss(net, target, batch, settings)
    p = pieces(net, target, batch, settings)
    q_t = n(p["tgt"].residual).min(0)[p["rows"], p["a"]]
    v = n(p["out"].value)
    u = q_t - v
    value = (np.where(u < 0, 0.2, 0.8) * u**2).mean()
    y = p["r"] + p["keep"] * n(p["nxt"].value)
    weight = np.exp(5.0 * u)
    assert (weight > 1.5).any() and (weight < 1.5).any()
    log_pi = log_softmax(n(p["out"].logits))[p["rows"], p["a"]]
    actor = -feasible_mean(np.minimum(weight, 1.5) * log_pi, p["live"])
    expected = critic_reference(p, n(p["out"].residual), y) + value + actor
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert (metrics["loss/value"], metrics["loss/actor"]) == (pytest.approx(value, rel=1e-5),
                                                              pytest.approx(actor, rel=1e-5))
    plain, plain_target, _ = build("IQL", value_head=False)
    with pytest.raises(ValueError, match="value_head=True"):
        O.iql_loss(plain, plain_target, batch, settings)


def test_loss_terms_by_hand():
    u = torch.tensor([2.0, -1.0, 0.0])
    assert L.expectile_loss(u, 0.7).item() == pytest.approx((0.7 * 4 + 0.3 * 1) / 3)
    q, logits = torch.tensor([[1.0, 3.0]]), torch.log(torch.tensor([[0.25, 0.75]]))
    v = 0.25 * 1 + 0.75 * 3 - 0.5 * (0.25 * np.log(0.25) + 0.75 * np.log(0.75))
    assert L.soft_state_value(q, logits, 0.5).item() == pytest.approx(v, rel=1e-6)
    assert L.soft_state_value(q, logits, 0.5, torch.tensor([False])).item() == 1.0
    allowed = L.bcq_allowed(torch.log(torch.tensor([[0.2, 0.8], [0.7, 0.3], [0.1, 0.9]])), 0.3,
                            torch.tensor([True, True, False]))
    assert allowed.tolist() == [[False, True], [True, True], [True, False]]


def test_straight_through_gumbel_is_one_hot_forward_and_softmax_backward():
    logits = torch.tensor([[0.0, 1.0], [2.0, 0.0], [0.0, 9.0]], requires_grad=True)
    noise = torch.tensor([[0.5, 0.0], [0.0, 0.0], [0.0, 0.0]])
    a = L.straight_through_gumbel(logits, noise, 0.5, torch.tensor([True, True, False]))
    torch.testing.assert_close(a.detach(), torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]))
    (a * torch.tensor([0.0, 1.0])).sum().backward()  # d a_1 / d l = softmax's Jacobian row
    y = torch.softmax((logits.detach()[0] + noise[0]) / 0.5, -1)
    expected = y[1] * (torch.tensor([0.0, 1.0]) - y) / 0.5
    torch.testing.assert_close(logits.grad[0], expected)
    assert (logits.grad[2] == 0).all()  # no gradient towards a = 1 without a live stream


# --- no live stream on air: never a = 1 ------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_no_live_never_injects_and_never_enters_the_target(name):
    net, target, settings = build(name, seed=12)
    batch = random_batch(net.spec, 64, seed=13, no_live_share=0.5, done_share=0.0)
    with torch.no_grad():  # every policy and G would pick a = 1 if it could
        for m in (net, target):
            m.actor.mlp.layers[-1].bias[..., 1] += 50.0
    p = method(name).probability(net, batch)
    live = batch[S.LIVE_ID] >= 0
    assert (p[~live] == 0).all() and (p[live] > 0.5).all()
    batch[S.next_column(S.LIVE_ID)][:] = -1  # no live at any s'
    ys = []
    for bump in (0.0, 1000.0):  # Q'(s', 1) and Q(s', 1) far above Q(s', 0)
        a, b = copy.deepcopy(net), copy.deepcopy(target)
        with torch.no_grad():
            for m in (a, b):
                m.qrn.mlp.layers[-1].bias[..., 1] += bump
        torch.manual_seed(0)
        ys.append(method(name).loss(a, b, batch, settings)[1]["q/target_mean"])
    assert ys[1] == pytest.approx(ys[0], rel=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_rows_without_a_live_stream_do_not_enter_the_actor_term(name):
    net, target, settings = build(name, seed=14)
    batch = random_batch(net.spec, 64, seed=15, no_live_share=0.4)
    live = batch[S.LIVE_ID] >= 0
    torch.manual_seed(0)
    full = method(name).loss(net, target, batch, settings)[1]["loss/actor"]
    edited = {k: v.clone() for k, v in batch.items()}
    edited[S.USER_FEATURES][~live] += 5.0  # other states on the rows with no decision
    torch.manual_seed(0)
    other = method(name).loss(net, target, edited, settings)[1]["loss/actor"]
    assert other == pytest.approx(full, rel=1e-5)  # TD3-BC: lambda's mean|Q| too


# --- learning on the one-step threshold world ------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_learns_to_inject_where_it_pays(name, one_thread):
    """Injecting pays 40-80 s of live against 20 s of video cost where user_features[0] > 0,
    and costs about 18 s elsewhere; every state is logged with both actions."""
    net, target, settings = build(name)
    target.load_state_dict(net.state_dict())
    batch = threshold_batch(net.spec, 128, n_states=32, seed=5, video_per_slot_s=40.0)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for step in range(400):
        loss, _ = method(name).loss(net, target, batch, settings, step=step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        update_target(net, target, settings, step + 1)
    good = batch[S.USER_FEATURES][:, 0] > 0
    assert torch.equal(method(name).probability(net, batch) > 0.5, good)
