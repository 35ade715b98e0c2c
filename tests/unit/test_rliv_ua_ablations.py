"""Every RLIV-UA ablation preset reaches the pre-learner and the loss (no Ray runtime).

Each preset goes through ``build_config`` on tiny shards with and without a gift label; its
pre-learner (built from the config, as RLlib's ``OfflineData`` builds it) maps a shard batch and
its module computes the loss on that batch. What each preset must change is written out here
(EQUATIONS 2.1(n)), independently of ``ABLATIONS``.
"""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from rliv_ray import schema as S
from rliv_ray.algorithms.rliv_ua.config import (
    ABLATIONS,
    PRESETS,
    RLIVUAConfig,
    resolve_gift_assist,
)
from rliv_ray.algorithms.rliv_ua.objective import rliv_ua_loss
from rliv_ray.algorithms.rliv_ua.train import TrainSettings, build_config
from rliv_ray.offline.prelearner import ColumnarPreLearner
from rliv_ray.offline.shards import inspect_shards
from tests.sampleshards import sample_table

ALL = S.LABELS
NO_GIFT = tuple(label for label in S.LABELS if label != S.GIFT)
EV = (S.EFFECTIVE_VIEW,)
EXPECTED = {  # preset: (towers or None for the source's labels, R/T split, assistance allowed,
    #                    stitched-only buffer)
    "full": (None, True, True, False),
    "wo_mt": (EV, True, False, False),
    "wo_sl": (None, False, True, False),
    "wo_mt_sl": (EV, False, False, False),
    "wo_al": (None, True, False, False),
    "wo_al_sl": (None, False, False, False),
    "wo_asa": (None, True, True, True),
}
SOURCES = {"gift-less": (S.GIFT,), "gifts": ()}


def shard_table(absent_rewards: tuple[str, ...]) -> pa.Table:
    """A shard whose ASA next state (state + 2) differs from the true one (state + 1, NaN
    where not stitched), so the buffer a preset trains on can be told apart."""
    table = sample_table(96, seed=1, absent_rewards=absent_rewards)
    state = S.arrow_to_matrix(table[S.STATE])
    stitched = table[S.STITCHED].to_numpy(zero_copy_only=False)
    true_next = np.where(stitched[:, None], state + 1.0, np.nan).astype(np.float32)
    for column, values in ((S.NEXT_STATE, state + 2.0), (S.TRUE_NEXT_STATE, true_next)):
        index = table.schema.get_field_index(column)
        table = table.set_column(index, table.schema.field(index), S.vectors_to_arrow(values))
    return table


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Per source: the shard directory and its table."""
    out = {}
    for name, absent in SOURCES.items():
        directory = tmp_path_factory.mktemp(name)
        table = shard_table(absent)
        pq.write_table(table, directory / "part-00000.parquet")
        out[name] = (directory, table)
    return out


def test_every_preset_has_expectations():
    assert set(EXPECTED) == set(ABLATIONS)


def preset_config(directory, name):
    training = {**PRESETS[name], "hidden": (16,), "embedding_dim": 8}
    info = inspect_shards(directory, next_state=training.get("next_state", "asa"))
    return build_config(info, TrainSettings(training=training))


@pytest.mark.parametrize("source", sorted(SOURCES))
@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_preset_reaches_the_prelearner_and_the_loss(sources, name, source):
    directory, table = sources[source]
    towers, split, assist, stitched_only = EXPECTED[name]
    labels = NO_GIFT if source == "gift-less" else ALL
    config = preset_config(directory, name)
    assert config.towers == (towers or labels)
    assert config.gift_assist == (assist and S.GIFT in config.towers)

    # (a) the pre-learner RLlib builds from this config: the w/o-ASA buffer is the stitched rows
    # with their true next states; every other preset trains on every row with ASA's.
    arrays = config.prelearner_class(config=config)(table)
    batch = {key.split("/", 1)[1]: torch.from_numpy(value) for key, value in arrays.items()}
    state = S.arrow_to_matrix(table[S.STATE])
    stitched = table[S.STITCHED].to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(stitched) if stitched_only else np.arange(table.num_rows)
    np.testing.assert_array_equal(batch["obs"].numpy(), state[rows])
    np.testing.assert_array_equal(batch["new_obs"].numpy(),
                                  state[rows] + (1.0 if stitched_only else 2.0))

    # (b) the module built from this config, and its loss on that batch
    spec = config.get_default_rl_module_spec()
    spec.observation_space, spec.action_space = config.observation_space, config.action_space
    spec.model_config = config.model_config
    module = spec.build()
    assert module.spec.towers == config.towers
    assert (module.net.assist is not None) == config.gift_assist
    _, metrics = rliv_ua_loss(module.net, module.target, batch, config.gamma)
    assert {k.split("/")[-1] for k in metrics if k.startswith("loss/td/")} == set(config.towers)
    reward_losses = [metrics[f"loss/reward/{label}"] for label in config.towers]
    assert all(v > 0 for v in reward_losses) if split else all(v == 0 for v in reward_losses)
    assert ("loss/assist" in metrics) == config.gift_assist


@pytest.mark.parametrize(("training", "labels", "expected"), [
    ({}, ALL, True),
    ({}, NO_GIFT, False),
    ({"towers": EV}, ALL, False),
    ({"towers": (S.CLICK, S.GIFT)}, ALL, True),
    ({"gift_assist": False}, ALL, False),
    ({"gift_assist": True}, ALL, True),
    ({"gift_assist": False}, NO_GIFT, False),
])
def test_gift_assistance_needs_a_gift_label_and_tower(training, labels, expected):
    assert resolve_gift_assist(training, labels) is expected


def test_asking_for_assistance_that_cannot_apply_is_an_error(sources):
    with pytest.raises(ValueError, match="gift_assist=True needs a gift label, but these "
                                         "samples have only"):
        resolve_gift_assist({"gift_assist": True}, NO_GIFT)
    with pytest.raises(ValueError, match="gift_assist=True needs the gift tower"):
        resolve_gift_assist({"gift_assist": True, "towers": EV}, ALL)
    directory = sources["gift-less"][0]
    info = inspect_shards(directory)
    with pytest.raises(ValueError, match="gift_assist=True needs a gift label"):
        build_config(info, TrainSettings(training={"gift_assist": True}))
    with pytest.raises(ValueError, match=r"towers \['gift'\] have no reward in these samples"):
        build_config(info, TrainSettings(training={"towers": (S.CLICK, S.GIFT)}))


def test_prelearner_without_the_config_fields_is_an_error(sources):
    table = sources["gifts"][1]
    with pytest.raises(TypeError, match="needs a config with next_state, n_actions and reward"):
        ColumnarPreLearner(config=None)
    stitched = RLIVUAConfig().training(next_state="stitched")
    assert len(ColumnarPreLearner(config=stitched)(table)["default_policy/actions"]) == \
        table[S.STITCHED].to_numpy(zero_copy_only=False).sum()


@pytest.mark.parametrize("source", sorted(SOURCES))
@pytest.mark.parametrize(("name", "cql_alpha"), [("dqn", 0.0), ("cql", 1.0)])
def test_dqn_and_cql_baselines_are_one_critic_on_the_summed_reward(sources, source, name,
                                                                   cql_alpha):
    directory, table = sources[source]
    config = preset_config(directory, name)
    assert config.cql_alpha == cql_alpha
    arrays = config.prelearner_class(config=config)(table)
    summed = sum(table[S.reward_column(label)].to_numpy() for label in S.LABELS)
    np.testing.assert_allclose(arrays[f"default_policy/{S.reward_column(S.EFFECTIVE_VIEW)}"],
                               summed)
    assert config.towers == EV and config.n_critics == 1
    assert not config.supervised_split and not config.gift_assist
