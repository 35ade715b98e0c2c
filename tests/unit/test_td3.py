"""TD3 / TD3+BC baselines: losses by hand, the delayed actor in the learner, the export that
rounds mu(s) to the nearest grid weight (no Ray runtime)."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from ray.rllib.policy.sample_batch import DEFAULT_POLICY_ID, MultiAgentBatch, SampleBatch
from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

from rliv_ray import schema as S
from rliv_ray.algorithms.common.checkpoint import module_description, write_module
from rliv_ray.algorithms.rliv_ua.train import TrainSettings, build_config, export_checkpoint
from rliv_ray.algorithms.td3.config import TD3_PRESETS, TD3Config
from rliv_ray.algorithms.td3.losses import (
    actor_loss,
    critic_loss,
    smoothed_target_action,
    td3_target,
)
from rliv_ray.algorithms.td3.objective import frozen_q1
from rliv_ray.offline.shards import inspect_shards
from rliv_ray.serving import ServingConfig, load_scorer
from tests.sampleshards import make_states, sample_table

SMALL = {"hidden": (8,), "actor_hidden": (8,), "embedding_dim": 4,
         "train_batch_size_per_learner": 64, "actor_lr": 1e-2, "lr": 1e-2}


def test_smoothed_target_action_clips_noise_then_weight():
    mu = torch.tensor([0.5, 0.9, 0.1])
    noise = torch.tensor([0.4, 0.05, -0.3])
    w = smoothed_target_action(mu, noise, noise_clip=0.25, low=0.0, high=1.0)
    np.testing.assert_allclose(w.numpy(), [0.75, 0.95, 0.0], rtol=1e-6)


def test_td3_target_is_the_clipped_double_q():
    next_q = torch.tensor([[1.0, 3.0], [2.0, 0.5]])  # (K=2, B=2)
    y = td3_target(torch.tensor([1.0, 0.0]), next_q, gamma=0.9)
    np.testing.assert_allclose(y.numpy(), [1.9, 0.45], rtol=1e-6)


def test_critic_loss_sums_the_critics():
    q = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    assert critic_loss(q, torch.tensor([1.0, 1.0])).item() == pytest.approx(0.5 + 0.5)


def test_actor_loss_td3_and_td3_bc_by_hand():
    q_pi = torch.tensor([2.0, -4.0])
    mu, logged = torch.tensor([0.5, 0.25]), torch.tensor([1.0, 0.25])
    assert actor_loss(q_pi, mu, logged, None).item() == pytest.approx(1.0)
    lam = 2.5 / 3.0  # alpha / mean |Q|
    expected = -lam * (-1.0) + (0.25 + 0.0) / 2
    assert actor_loss(q_pi, mu, logged, 2.5).item() == pytest.approx(expected)


def test_bc_term_pulls_the_actor_to_the_logged_weight():
    mu = torch.tensor([0.2, 0.9], requires_grad=True)
    q_flat = mu * 0.0 + 1.0  # a critic indifferent to w
    actor_loss(q_flat, mu, torch.tensor([0.5, 0.5]), 2.5).backward()
    assert mu.grad[0] < 0 < mu.grad[1]  # descent raises 0.2 and lowers 0.9 towards 0.5


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    table = sample_table(64, seed=3)
    directory = tmp_path_factory.mktemp("shards")
    pq.write_table(table, directory / "part-00000.parquet")
    return directory, table


def td3_config(directory, name="td3_bc", **extra):
    training = {**TD3_PRESETS[name], **SMALL, **extra}
    return build_config(inspect_shards(directory), TrainSettings(training=training), TD3Config)


def columns(config, table):
    arrays = config.prelearner_class(config=config)(table)
    return {key.split("/", 1)[1]: value for key, value in arrays.items()}


def update(learner, cols):
    batch = MultiAgentBatch({DEFAULT_POLICY_ID: SampleBatch(cols)}, env_steps=64)
    result = learner.update(batch=batch, timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: 0})
    return {key: stat.peek() for key, stat in result[DEFAULT_POLICY_ID].items()}


def snapshot(params):
    return [p.detach().clone() for p in params]


def moved(before, params):
    return any(not torch.equal(b, p) for b, p in zip(before, params, strict=True))


def test_presets_and_bad_fields(shards):
    config = td3_config(shards[0])
    assert (config.bc_alpha, config.n_critics, config.towers) == (2.5, 2, (S.EFFECTIVE_VIEW,))
    assert td3_config(shards[0], "td3_ua").bc_alpha is None
    bad = TD3Config().training(gap_index=3, policy_delay=0, bc_alpha=-1.0,
                               towers=(S.CLICK, S.EFFECTIVE_VIEW), supervised_split=True)
    errors = "; ".join(bad.field_errors())
    for message in ("policy_delay must be >= 1, got 0", "bc_alpha must be > 0 or null",
                    "TD3 trains one tower", "supervised_split must be false for TD3"):
        assert message in errors


def test_the_actor_gradient_does_not_reach_the_critics(shards):
    config = td3_config(shards[0])
    module = config.get_default_rl_module_spec()
    module.observation_space, module.action_space = config.observation_space, config.action_space
    module.model_config = config.model_config
    net = module.build().net
    h = torch.randn(5, 4 * 4)
    w = torch.rand(5, requires_grad=True)
    frozen_q1(net, h, w).sum().backward()
    assert w.grad is not None and all(p.grad is None for p in net.critics.parameters())
    np.testing.assert_allclose(frozen_q1(net, h, w).detach().numpy(),
                               net.q(h, w)[0].detach().numpy(), rtol=1e-6)


def test_learner_delays_the_actor_and_the_targets(shards):
    """policy_delay 2: update 1 moves the critics only; update 2 the actor and the targets."""
    directory, table = shards
    config = td3_config(directory)
    learner = config.build_learner()
    module = learner.module[DEFAULT_POLICY_ID]
    cols = columns(config, table)
    actor, critic = module.net.actor_parameters(), module.net.critic_parameters()
    target = list(module.target.parameters())
    before = [snapshot(ps) for ps in (actor, critic, target)]
    first = update(learner, cols)
    assert not moved(before[0], actor) and moved(before[1], critic)
    assert not moved(before[2], target) and "loss/actor" not in first
    second = update(learner, cols)
    assert moved(before[0], actor) and moved(before[2], target)
    assert np.isfinite(second["loss/actor"]) and np.isfinite(second["loss/critic"])


def test_export_serves_the_grid_weight_nearest_mu(shards, tmp_path):
    directory, table = shards
    config = td3_config(directory)
    learner = config.build_learner()
    update(learner, columns(config, table))
    write_module(learner.module[DEFAULT_POLICY_ID], tmp_path / "ckpt",
                 module_description(config))  # what load_module reads
    path = export_checkpoint(tmp_path / "ckpt", tmp_path / "scorer.pt", config)
    scorer = load_scorer(path, ServingConfig(top_k=3, epsilon=0.0))
    rng = np.random.default_rng(0)
    states = make_states(np.where(rng.random(40) < 0.5, 1.0, -1.0), rng)
    authors = rng.integers(0, 20, 40)
    net = learner.module[DEFAULT_POLICY_ID].net
    with torch.no_grad():
        mu = net.actor(net.encode(torch.full((40,), 7), torch.from_numpy(authors),
                                  torch.from_numpy(states))).numpy()
    grid = np.asarray(config.action_weights)
    nearest = np.abs(grid[None, :] - mu[:, None]).argmin(axis=1)
    np.testing.assert_array_equal(scorer.q_values(7, authors, states).argmax(axis=1), nearest)
