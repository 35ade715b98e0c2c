"""RLIVUAConfig: Table 3 defaults, strict validation, ablation presets (no Ray runtime)."""

import re

import pytest

from rliv_ray.algorithms.rliv_ua.config import ABLATIONS, RLIVUAConfig
from rliv_ray.algorithms.rliv_ua.module import network_spec
from rliv_ray.schema import LABELS


def test_defaults_follow_table_3():
    config = RLIVUAConfig()
    assert (config.gamma, config.tau, config.lr) == (0.9, 0.005, 1e-3)
    assert config.train_batch_size_per_learner == 1024
    assert (config.hidden, config.embedding_dim, config.n_critics) == ((64, 64), 32, 2)
    assert config.towers == LABELS and config.n_actions == 5
    assert config.action_grid.final_score(2.0, 4) == pytest.approx(4.0)  # 2 * (1 + 1*1)^1


@pytest.mark.parametrize("fields, message", [
    ({}, "gap_index is required"),
    ({"gap_index": 3, "towers": ("likes",)}, "towers must be a non-empty subset"),
    ({"gap_index": 3, "towers": ("follow",)}, "serving_tower 'effective_view' is not among"),
    ({"gap_index": 3, "tau": 0.0}, "tau must be in"),
    ({"gap_index": 3, "target_update": "soft"}, "target_update must be"),
    ({"gap_index": 3, "next_state": "true"}, "next_state must be"),
    ({"gap_index": 3, "id_optimizer": "sgd"}, "id_optimizer must be one of"),
    ({"gap_index": 3, "id_rows_per_id": -1}, "id_rows_per_id must be >= 0"),
    ({"gap_index": 3, "gamma": 1.0}, "gamma must be in"),
    ({"gap_index": 3, "action_weights": (0.0, 0.0, 1.0)}, "strictly increasing"),
    ({"gap_index": 3, "action_c": -2.0}, "c \\+ a\\*w must be > 0"),
    ({"gap_index": 3, "cql_alpha": -0.5}, "cql_alpha must be >= 0, got -0.5"),
])
def test_bad_fields_are_named(fields, message):
    errors = RLIVUAConfig().training(**fields).field_errors()
    assert any(re.search(message, e) for e in errors), errors


def test_valid_config_has_no_errors_and_lists_become_tuples():
    config = RLIVUAConfig().training(gap_index=3, towers=["effective_view", "follow"])
    assert config.field_errors() == []
    assert config.towers == ("effective_view", "follow")


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_every_ablation_builds_its_network(name):
    config = RLIVUAConfig().training(gap_index=3, **ABLATIONS[name])
    assert config.field_errors() == []
    spec = network_spec(5, config.n_actions, config._model_config_auto_includes)
    assert spec.towers == config.towers
    assert spec.supervised_split == (name not in ("wo_sl", "wo_mt_sl", "wo_al_sl"))
    # the raw preset; build_config then turns assistance off without a gift tower or label
    # (tests/unit/test_rliv_ua_ablations.py)
    assert spec.gift_assist == (name not in ("wo_al", "wo_al_sl"))
    assert len(spec.towers) == (1 if name in ("wo_mt", "wo_mt_sl") else 4)
