"""RLIV-UA's RLlib learner, built in-process (no Ray runtime): what one update computes, and
the hard-copy target counter across a checkpoint."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from ray.rllib.policy.sample_batch import DEFAULT_POLICY_ID, MultiAgentBatch, SampleBatch
from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

from rliv_ray import schema as S
from rliv_ray.algorithms.common.checkpoint import join_learner_state, split_learner_state
from rliv_ray.algorithms.common.offline import TARGET_UPDATES
from rliv_ray.algorithms.rliv_ua.config import PRESETS
from rliv_ray.algorithms.rliv_ua.train import TrainSettings, build_config
from rliv_ray.offline.shards import inspect_shards
from rliv_ray.tensor_files import load_tensors, save_tensors
from tests.sampleshards import sample_table

INTERVAL = 3
SMALL = {"target_update": "hard", "target_update_interval": INTERVAL, "hidden": (8,),
         "embedding_dim": 4, "train_batch_size_per_learner": 64}


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    """64 rows whose four towers have different random rewards: (directory, table, rewards
    per label as written)."""
    table = sample_table(64, seed=2)
    rng = np.random.default_rng(2)
    rewards = {label: ((t + 1) * rng.random(64)).astype(np.float32)
               for t, label in enumerate(S.LABELS)}
    for label, reward in rewards.items():
        index = table.schema.get_field_index(S.reward_column(label))
        table = table.set_column(index, table.schema.field(index), pa.array(reward))
    directory = tmp_path_factory.mktemp("shards")
    pq.write_table(table, directory / "part-00000.parquet")
    return directory, table, rewards


def learner_columns(config, table) -> dict[str, np.ndarray]:
    arrays = config.prelearner_class(config=config)(table)
    return {key.split("/", 1)[1]: value for key, value in arrays.items()}


@pytest.fixture(scope="module")
def shards(shard_dir):
    """(config, learner batch, rewards per label as written)."""
    directory, table, rewards = shard_dir
    config = build_config(inspect_shards(directory), TrainSettings(training=SMALL))
    return config, learner_columns(config, table), rewards


def update(learner, columns) -> dict:
    batch = MultiAgentBatch({DEFAULT_POLICY_ID: SampleBatch(columns)}, env_steps=64)
    result = learner.update(batch=batch, timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: 0})
    return {key: stat.peek() for key, stat in result[DEFAULT_POLICY_ID].items()}


def target_is_online(learner) -> bool:
    module = learner.module[DEFAULT_POLICY_ID]
    online, target = module.net.state_dict(), module.target.state_dict()
    return all(torch.equal(online[key], target[key]) for key in online)


def test_an_update_regresses_each_tower_on_its_clipped_double_dqn_target(shards):
    """y_l = r_l + gamma * min_k Q'_l^k(s', a*), a* = argmax_a min_k Q_l^k(s', a) (Eq. 11),
    recomputed in NumPy from the networks before the update: a tower fed another tower's
    label, a max over the target network or a mean over the critics would differ."""
    config, columns, rewards = shards
    learner = config.build_learner()
    module = learner.module[DEFAULT_POLICY_ID]
    with torch.no_grad():  # a target apart from the online network, so a* depends on which
        for p in module.target.parameters():
            p.add_(0.3 * torch.randn_like(p))

    def q(net, column):  # (T, K, B, A)
        with torch.no_grad():
            heads = net(torch.from_numpy(columns[S.USER_ID]),
                        torch.from_numpy(columns[S.AUTHOR_ID]), torch.from_numpy(columns[column]))
        return heads.q(config.gamma).numpy().astype(np.float64)

    q_now, q_next, q_next_target = q(module.net, "obs"), q(module.net, "new_obs"), \
        q(module.target, "new_obs")
    metrics = update(learner, columns)
    rows = np.arange(len(columns["actions"]))
    for t, label in enumerate(S.LABELS):
        best = q_next[t].min(axis=0).argmax(axis=-1)  # (B,)
        y = rewards[label] + config.gamma * q_next_target[t].min(axis=0)[
            rows, best]
        taken = q_now[t][:, rows, columns["actions"]]  # (K, B)
        assert metrics[f"loss/td/{label}"] == pytest.approx(((taken - y) ** 2).mean(axis=1).sum(),
                                                            rel=1e-4), label
        assert metrics[f"td/abs/{label}"] == pytest.approx(np.abs(taken - y).mean(), rel=1e-4)


def test_resumed_learner_copies_the_target_at_the_same_update(shards, tmp_path):
    """Hard copies every INTERVAL updates: restored (from our tensors-only checkpoint files)
    after INTERVAL - 1 updates, the learner copies at its next update, as one uninterrupted run
    does (not INTERVAL after the restore), and its weights and Adam state follow that run's."""
    config, columns, _ = shards
    first = config.build_learner()
    for _ in range(INTERVAL - 1):
        update(first, columns)
    assert not target_is_online(first)
    assert first.get_state()[TARGET_UPDATES] == INTERVAL - 1
    module, rest = split_learner_state(first.get_state(not_components=["metrics_logger"]))
    save_tensors(module, tmp_path / "module.pt")
    save_tensors(rest, tmp_path / "state.pt")

    resumed = config.build_learner()
    resumed.set_state(join_learner_state(load_tensors(tmp_path / "module.pt", "weights"),
                                         load_tensors(tmp_path / "state.pt", "state")))
    assert resumed.updates == INTERVAL - 1
    update(resumed, columns)  # the INTERVAL-th update overall: a hard copy
    assert target_is_online(resumed)
    update(resumed, columns)
    assert not target_is_online(resumed)
    for _ in range(2):
        update(first, columns)
    ours = resumed.module[DEFAULT_POLICY_ID].state_dict()
    for key, value in first.module[DEFAULT_POLICY_ID].state_dict().items():
        torch.testing.assert_close(ours[key], value, msg=key)


def test_cql_loss_is_the_dqn_loss_plus_the_penalty(shard_dir):
    """The cql preset reaches the learner: with the same weights and batch its loss is dqn's
    plus cql_alpha * mean_b(logsumexp_a Q(s_b, a) - Q(s_b, a_b)), recomputed in NumPy."""
    directory, table, _ = shard_dir
    info = inspect_shards(directory)
    learners, losses = {}, {}
    for name in ("dqn", "cql"):
        config = build_config(info, TrainSettings(training={**SMALL, **PRESETS[name]}))
        learners[name] = config.build_learner()
    assert config.cql_alpha == 1.0
    cql, dqn = (learners[name].module[DEFAULT_POLICY_ID] for name in ("cql", "dqn"))
    dqn.load_state_dict(cql.state_dict())
    columns = learner_columns(config, table)
    with torch.no_grad():
        q = cql.net(torch.from_numpy(columns[S.USER_ID]), torch.from_numpy(columns[S.AUTHOR_ID]),
                    torch.from_numpy(columns["obs"])).q(config.gamma)[0, 0].double().numpy()
    rows = np.arange(len(q))
    penalty = (np.log(np.exp(q).sum(axis=1)) - q[rows, columns["actions"]]).mean()
    for name, learner in learners.items():
        losses[name] = update(learner, columns)
    assert losses["cql"]["loss/cql/effective_view"] == pytest.approx(penalty, rel=1e-5)
    assert "loss/cql/effective_view" not in losses["dqn"]
    assert losses["cql"]["loss/total"] - losses["dqn"]["loss/total"] == \
        pytest.approx(config.cql_alpha * penalty, rel=1e-4)
    assert losses["cql"]["loss/td/effective_view"] == \
        pytest.approx(losses["dqn"]["loss/td/effective_view"], rel=1e-6)
