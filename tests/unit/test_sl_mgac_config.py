"""SLMGACConfig: defaults, variants of Tables 1-2 as fields, strict validation (no Ray)."""

import numpy as np
import pyarrow as pa
import pytest

from rliv_ray import schema as S
from rliv_ray.algorithms.sl_mgac.config import SLMGACConfig, method_fields
from rliv_ray.algorithms.sl_mgac.variants import VARIANTS
from rliv_ray.offline.live_prelearner import live_batch_to_arrays, required_live_columns
from rliv_ray.offline.prelearner import ShardError


def config(**fields):
    return SLMGACConfig().training(user_dim=9, live_dim=5, **fields)


def test_defaults_follow_the_paper():
    c = config()
    assert (c.gamma, c.lr, c.embedding_lr, c.train_batch_size_per_learner) == (
        0.9, 1e-3, 1e-5, 2048)
    spec = c.network_spec()
    assert spec.groups == 6 and spec.shared_hidden == (256, 128)
    assert spec.live_bins.boundaries == (0, 6, 15, 30, 60, 100, 600, 1200)
    assert c.loss_settings().epsilon == 0.2 and c.field_errors() == []


@pytest.mark.parametrize("fields, message", [
    ({"live_bins": [0, 30, 15]}, "strictly increasing"),
    ({"groups": 0}, "groups must be >= 1"),
    ({"gamma": 1.0}, "gamma must be in"),
    ({"target_mode": "soft"}, "target_mode must be one of"),
])
def test_bad_fields_are_named(fields, message):
    errors = config(**fields).field_errors()
    assert any(message in e for e in errors), errors


def test_feature_widths_are_required():
    assert "user_dim and live_dim are required" in SLMGACConfig().field_errors()[0]


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_variant_is_a_valid_config(name):
    c = config(**method_fields(name))
    assert c.field_errors() == []
    spec, settings = c.network_spec(), c.loss_settings()
    assert spec.multi_group == ("w/o MG" not in name)
    assert settings.q_norm == (not name.startswith("w/o Q-norm"))
    # Q detached in the actor loss: -sep, and w/o Q-norm unless its "(Q attached)" row
    assert settings.detach_q_in_actor == (name in ("SL-MGAC-sep", "w/o Q-norm"))
    assert (settings.gamma == 0.0) == (name == "SL-MGAC-0")


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="unknown method"):
        method_fields("w/o everything")


def _sample_batch(rows=4):
    rng = np.random.default_rng(0)
    columns = {}
    for name in required_live_columns():
        base = name.removeprefix(S.NEXT_PREFIX)
        if base in (S.USER_FEATURES, S.LIVE_FEATURES):
            columns[name] = S.vectors_to_arrow(rng.normal(size=(rows, 3)))
        elif base in (S.LIVE_HISTORY, S.VIDEO_HISTORY):
            columns[name] = S.ids_to_arrow(rng.integers(-1, 9, (rows, 50)))
        elif base == S.DONE:
            columns[name] = pa.array([False] * rows)
        elif base in (S.LIVE_WATCH_S, S.VIDEO_WATCH_S, S.BEHAVIOR_PROB):
            columns[name] = pa.array(rng.random(rows), pa.float32())
        else:
            columns[name] = pa.array(rng.integers(0, 2, rows), pa.int16())
    return pa.table(columns)


def test_live_batches_become_learner_arrays():
    out = live_batch_to_arrays(_sample_batch())
    assert out["default_policy/user_features"].shape == (4, 3)
    assert out["default_policy/next_live_history"].dtype == np.int64
    assert out["default_policy/done"].dtype == bool


def test_bad_live_batches_name_the_column():
    table = _sample_batch()
    with pytest.raises(ShardError, match="lacks column 'next_live_id'"):
        live_batch_to_arrays(table.drop_columns([S.next_column(S.LIVE_ID)]))
    watch = table[S.LIVE_WATCH_S].to_numpy().copy()
    watch[2] = np.nan
    bad = table.set_column(table.column_names.index(S.LIVE_WATCH_S), S.LIVE_WATCH_S,
                           pa.array(watch, pa.float32()))
    with pytest.raises(ShardError, match="column 'live_watch_s', row 2: NaN"):
        live_batch_to_arrays(bad)
    actions = pa.array([0, 1, 2, 0], pa.int16())
    bad = table.set_column(table.column_names.index(S.ACTION), S.ACTION, actions)
    with pytest.raises(ShardError, match="column 'action', row 2: action 2 is not 0 or 1"):
        live_batch_to_arrays(bad)


def test_reader_output_is_what_the_objective_reads():
    import torch

    from rliv_ray.algorithms.sl_mgac.objective import check_batch

    arrays = live_batch_to_arrays(_sample_batch())
    batch = {k.split("/", 1)[1]: torch.from_numpy(v) for k, v in arrays.items()}
    check_batch(batch, SLMGACConfig().training(user_dim=3, live_dim=3).network_spec())
    assert S.next_column(S.ACTION) in batch


@pytest.mark.parametrize("name", ["L2R", "DQN", "Double DQN", "BC", "L2R (SL-MGAC heads)",
                                  "DQN (SL-MGAC heads)", "Double DQN (SL-MGAC heads)"])
def test_baselines_are_configs_with_their_own_loss(name):
    c = config(**method_fields(name))
    assert c.field_errors() == [] and c.method == name
    assert c.network_spec().supervised_split is False
    assert (c.loss_settings().gamma == 0.0) == name.startswith("L2R")
    assert c.learners(num_learners=2).field_errors() == [
        f"the {name} baseline trains with num_learners 0 or 1 (its loss runs the network "
        "outside RLlib's DDP wrapper)"]


def test_unknown_method_in_the_config_is_named():
    assert "method must be SL-MGAC" in config(method="PPO").field_errors()[0]
