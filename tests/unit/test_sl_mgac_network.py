"""SL-MGAC network: spec validation, output layout per ablation, group routing, attention."""

import pytest
import torch

from rliv_ray.algorithms.sl_mgac.network import (
    MultiGroupNetwork,
    SLMGACNetwork,
    SLMGACSpec,
    TargetAttention,
)
from rliv_ray.algorithms.sl_mgac.objective import forward_state
from rliv_ray.algorithms.sl_mgac.synthetic import random_batch
from rliv_ray.algorithms.sl_mgac.variants import VARIANTS, variant

B = 12


def tiny_spec(**kwargs) -> SLMGACSpec:
    sizes = {"id_buckets": 64, "embedding_dim": 4, "attention_hidden": (4,),
             "shared_hidden": (16,), "actor_hidden": (8,), "rpn_hidden": (8,),
             "qrn_hidden": (8,), "groups": 3}
    return SLMGACSpec(user_dim=5, live_dim=3, **{**sizes, **kwargs})


def run(spec: SLMGACSpec, **kwargs):
    torch.manual_seed(0)
    net = SLMGACNetwork(spec)
    return net, forward_state(net, random_batch(spec, B), **kwargs)


@pytest.mark.parametrize("name", sorted(VARIANTS))
@pytest.mark.parametrize("bin_source", ["logged", "predicted"])
def test_output_layout_per_variant(name, bin_source):
    spec, _ = variant(name, tiny_spec(bin_source=bin_source))
    _, out = run(spec)
    assert out.logits.shape == (B, 2)
    assert out.residual.shape == (2, B, 2)  # (C, B, A): T_xi(s, a), or Q w/o SL
    if not spec.supervised_split:
        assert out.live is None and out.video is None
    elif not spec.discretise:
        assert out.live.seconds.shape == out.video.seconds.shape == (2, B)
        assert out.live.rho is None
    else:
        assert out.live.rho.shape == out.video.rho.shape == (2, B, 8)
        assert 0 <= out.live.rho.min() and out.live.rho.max() <= 1
        assert (out.live.bin_logits is None) == (bin_source == "logged")
        if bin_source == "predicted":
            assert out.video.bin_logits.shape == (2, B, 8)


def test_actor_only_and_critics_only_forwards():
    _, actor = run(tiny_spec(), critics=False)
    _, critics = run(tiny_spec(), actor=False)
    assert actor.residual is None and actor.live is None and actor.logits is not None
    assert critics.logits is None and critics.residual is not None


@pytest.mark.parametrize("networks", [1, 3])
def test_group_routing_equals_running_the_selected_tower_alone(networks):
    torch.manual_seed(0)
    k, d = 4, 5
    mgn = MultiGroupNetwork(networks, d, (6, 3), 2, groups=k, mode="towers", group_dim=0)
    z = torch.randn(networks, 7, d)
    group = torch.tensor([0, 3, 1, 1, 2, 0, 3])
    out = mgn(z, group)  # (N, B, 2)
    assert out.shape == (networks, 7, 2)
    for n in range(networks):
        for row, g in enumerate(group.tolist()):
            x = z[n, row]
            for i, layer in enumerate(mgn.mlp.layers):  # tower n * K + g on its own
                x = x @ layer.weight[n * k + g] + layer.bias[n * k + g, 0]
                x = torch.relu(x) if i < len(mgn.mlp.layers) - 1 else x
            torch.testing.assert_close(out[n, row], x)


def test_group_changes_the_output_only_with_multi_group():
    spec = tiny_spec()
    batch = random_batch(spec, B)
    for multi_group, mode in ((True, "towers"), (True, "group_embedding"), (False, "towers")):
        torch.manual_seed(0)
        net = SLMGACNetwork(tiny_spec(multi_group=multi_group, mg_mode=mode))
        a = forward_state(net, batch).logits
        batch2 = {**batch, "user_group": (batch["user_group"] + 1) % spec.groups}
        b = forward_state(net, batch2).logits
        assert torch.allclose(a, b) != multi_group


def test_attention_masks_padding_and_all_padding_gives_zero():
    torch.manual_seed(0)
    attention = TargetAttention(query_dim=6, dim=4, hidden=(8,), softmax=True)
    query = torch.randn(3, 6, requires_grad=True)
    e = torch.randn(4)
    items = torch.randn(3, 5, 4)
    items[0, :2] = e  # row 0: two real items, both e
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[0, :2] = True
    mask[1, :3] = True  # row 2: all padding
    out = attention(query, items, mask)
    torch.testing.assert_close(out[0], e)  # weights over real items sum to 1
    assert torch.equal(out[2], torch.zeros(4))
    noisy = items.clone()
    noisy[~mask] = 1e3  # whatever sits behind the padding does not matter
    torch.testing.assert_close(attention(query, noisy, mask), out)
    out.sum().backward()
    assert torch.isfinite(query.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in attention.parameters())


def test_unnormalised_attention_is_the_masked_weighted_sum():
    torch.manual_seed(0)
    attention = TargetAttention(query_dim=2, dim=3, hidden=(), softmax=False)
    items = torch.randn(1, 4, 3)
    mask = torch.tensor([[True, False, True, False]])
    out = attention(torch.randn(1, 2), items, mask)
    assert torch.equal(attention(torch.zeros(1, 2), items, torch.zeros_like(mask)),
                       torch.zeros(1, 3))
    assert out.shape == (1, 3) and torch.isfinite(out).all()


def test_padding_ids_and_missing_live_get_zero_embeddings():
    spec = tiny_spec()
    torch.manual_seed(0)
    net = SLMGACNetwork(spec)
    batch = random_batch(spec, B, seed=3)
    batch["live_history"][:] = -1
    batch["video_history"][:] = -1
    out = forward_state(net, batch)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.residual).all()
    assert torch.equal(net._ids(net.live_ids, torch.tensor([-1, -7])), torch.zeros(2, 4))


def actor_loss_grads(stop_gradient: bool) -> SLMGACNetwork:
    spec = tiny_spec(stop_gradient=stop_gradient)
    net, out = run(spec, critics=False)
    torch.log_softmax(out.logits, dim=-1)[:, 1].mean().backward()  # any actor-only loss
    return net


def test_stop_gradient_keeps_the_actor_out_of_the_shared_extractor():
    on, off = actor_loss_grads(True), actor_loss_grads(False)
    shared_on = [p.grad for p in on.shared.parameters()] + [on.user_proj.weight.grad]
    assert all(g is None for g in shared_on)
    assert on.actor.mlp.layers[0].weight.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in off.shared.parameters())


def test_layer_norm_switch():
    with_ln, _ = run(tiny_spec())
    without, _ = run(tiny_spec(layer_norm=False))
    assert isinstance(with_ln.actor_norm, torch.nn.LayerNorm)
    assert len(with_ln.critic_norms) == 2
    assert isinstance(without.actor_norm, torch.nn.Identity)


def test_embedding_parameter_groups_cover_every_parameter_once():
    net = SLMGACNetwork(tiny_spec())
    groups = net.param_groups(lr=1e-3, embedding_lr=1e-5)
    assert [g["lr"] for g in groups] == [1e-5, 1e-3]
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in net.parameters())
    assert net.live_ids.table.weight.shape == (64, 4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"groups": 0}, "groups must be >= 1, got 0"),
     ({"mg_mode": "moe"}, "mg_mode must be one of"),
     ({"bin_source": "posterior"}, "bin_source must be one of"),
     ({"video_time": "session"}, "video_time must be one of"),
     ({"rho_activation": "tanh"}, "rho_activation must be one of"),
     ({"shared_hidden": ()}, "shared_hidden must hold positive layer sizes"),
     ({"actor_hidden": (8, 0)}, "actor_hidden must hold positive layer sizes")],
)
def test_bad_spec_is_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny_spec(**kwargs)


def test_spec_defaults_follow_the_paper():
    spec = SLMGACSpec(user_dim=3, live_dim=2)
    assert (spec.groups, spec.id_buckets, spec.shared_hidden) == (6, 5000, (256, 128))
    assert spec.actor_hidden == spec.rpn_hidden == spec.qrn_hidden == (64, 32)
    assert spec.live_bins.boundaries[-1] == spec.video_bins.boundaries[-1] == 1200.0
    assert spec.rpn_width(spec.live_bins) == 16  # 8 proportions + 8 bin logits (predicted)
    assert SLMGACSpec(3, 2, bin_source="logged").rpn_width(spec.live_bins) == 8  # Table 4
    assert (spec.multi_group, spec.discretise, spec.supervised_split, spec.layer_norm,
            spec.stop_gradient) == (True,) * 5
