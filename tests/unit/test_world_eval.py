"""Policies in the ground-truth world: metrics by hand, the learned-policy path, the CLI."""

import csv
import json
import re

import numpy as np
import pytest
import torch

from rliv_ray import schema as S
from rliv_ray.actions import ActionGrid
from rliv_ray.algorithms.rliv_ua.network import NetworkSpec, RLIVUANetwork
from rliv_ray.cli import EXIT_USAGE, main
from rliv_ray.data.ua_config import UAWorldConfig
from rliv_ray.data.ua_generate import log_schema_for_world
from rliv_ray.evaluation.policies import PolicyError, ScoringPolicy, make_policy
from rliv_ray.evaluation.world import (
    WorldEval,
    column_sums,
    evaluate_policies,
    finish,
    merge,
    state_dim,
)
from rliv_ray.mdp.state import StateLayout
from rliv_ray.serving import export_scorer, read_meta

TINY = UAWorldConfig(n_users=24, n_authors=200, days=2, seed=2)
MIN = 60_000


def test_metrics_by_hand():
    # user 1: two sessions (40 idle minutes apart), user 2: one session; 5 requests, 1 exposed each
    cols = {
        S.USER_ID: np.array([1, 1, 1, 2, 2]),
        S.AUTHOR_ID: np.array([7, 7, 8, 7, 9]),
        S.TS_MS: np.array([0, MIN, 41 * MIN, 0, 2 * MIN]),
        S.REQUEST_ID: np.arange(5),
        S.WATCH_TIME_S: np.array([60.0, 0, 30, 30, 0]),
        S.CLICK: np.array([1, 0, 1, 1, 0]),
        S.EFFECTIVE_VIEW: np.array([1, 0, 0, 1, 0]),
        S.FOLLOW: np.array([1, 0, 0, 0, 0]),
        S.GIFT: np.array([0, 0, 0, 1, 0]),
        S.TRUE_BOND_AFTER: np.array([0.3, 0.6, 0.1, 0.7, 0.2]),
    }
    sums = column_sums(cols, deep_bond=0.5)
    assert sums["sessions"] == 3 and sums["session_authors"] == 4  # {7}, {8}, {7, 9}
    assert sums["deep_pairs"] == 2 and sums["gifted_users"] == 1  # (1, 7) and (2, 7)
    m = finish(merge([sums]), n_users=4)  # two users never came: they count per user
    assert m["session_length"] == pytest.approx(5 / 3)
    assert m["watch_time_min"] == pytest.approx(2.0 / 3)
    assert m["ctr"] == pytest.approx(3 / 5)
    assert m["diversity"] == pytest.approx(4 / 3)
    assert m["ua_count"] == pytest.approx(2 / 4)
    assert m["ltv"] == pytest.approx((3 + 2 + 5 * 1 + 20 * 1) / 4)
    assert m["new_fans"] == m["revenue"] == m["gifted_users"] == pytest.approx(1 / 4)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="users must be in \\[1, 24\\]"):
        WorldEval(TINY, users=25)
    with pytest.raises(ValueError, match="buckets must be >= 1"):
        WorldEval(TINY, buckets=0)
    with pytest.raises(PolicyError, match="unknown policy 'DQN'.*RankingModel"):
        make_policy("DQN", TINY, state_dim(TINY))


def test_state_layout_is_the_one_the_readme_documents():
    names = StateLayout.from_schema(log_schema_for_world(TINY)).names
    assert state_dim(TINY) == len(names) == 18
    assert names[3] == "user/log1p_requests_so_far" and names[6] == "author/log_popularity"
    assert names[10] == "pair/log1p_ua_exposure_count"
    assert names[15:] == ("pair/log1p_ua_days_since_first", "gap/log1p_gap_requests",
                          "gap/first_contact")


def _exported(path, dim, serving_tower="effective_view"):
    layout = 16 if dim == 18 else dim - 2
    net = RLIVUANetwork(NetworkSpec(state_dim=dim, gap_index=layout, n_actions=5,
                                    id_buckets=512, hidden=(16, 16), embedding_dim=8))
    return export_scorer(net, path, gamma=0.9, grid=ActionGrid(), serving_tower=serving_tower,
                         epsilon=0.1)


def test_rliv_scorer_policy_picks_the_argmax_of_its_serving_tower(tmp_path):
    path = _exported(tmp_path / "scorer.pt", 18, serving_tower="follow")
    policy = make_policy(f"rliv:{tmp_path}", TINY, 18)
    assert isinstance(policy, ScoringPolicy)
    rng = np.random.default_rng(0)
    states = rng.standard_normal((6, 18)).astype(np.float32)
    users, authors = np.full(6, 3), np.arange(6) * 11
    module, _ = read_meta(path)
    with torch.no_grad():
        q_follow = module(torch.as_tensor(users), torch.as_tensor(authors),
                          torch.as_tensor(states), torch.tensor([2]))[0].numpy()
    np.testing.assert_allclose(policy.q(users, authors, states), q_follow, rtol=1e-6)


def test_a_scorer_of_another_width_or_algorithm_is_refused(tmp_path):
    _exported(tmp_path / "scorer.pt", 12)
    with pytest.raises(PolicyError, match="states of width 12, the world's are 18"):
        make_policy(f"rliv:{tmp_path / 'scorer.pt'}", TINY, 18)
    torch.save({"spec": {}, "state_dict": {}}, tmp_path / "policy.pt")  # SL-MGAC's export
    with pytest.raises(PolicyError, match="not an exported RLIV-UA scorer"):
        make_policy(f"rliv:{tmp_path / 'policy.pt'}", TINY, 18)
    with pytest.raises(PolicyError, match="no exported RLIV-UA scorer there"):
        make_policy(f"rliv:{tmp_path / 'missing'}", TINY, 18)


def test_learned_policy_runs_and_every_metric_has_an_interval(tmp_path):
    _exported(tmp_path / "scorer.pt", 18)
    setup = WorldEval(TINY, seeds=(0, 1), buckets=2)
    result = evaluate_policies(setup, ["RankingModel", f"rliv:{tmp_path}"], progress=False)
    again = evaluate_policies(setup, ["RankingModel"], progress=False)
    assert result["RankingModel"] == again["RankingModel"]  # deterministic by seed
    for values in result.values():
        for stat in values.values():
            assert len(stat["values"]) == 2 and stat["low"] <= stat["mean"] <= stat["high"]
    assert result[f"rliv:{tmp_path}"]["requests"]["mean"] > 0


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "world"
    assert main(["generate", str(out), "--users", "20", "--days", "2", "--quiet"]) == 0
    return out


def test_cli_writes_tables_csv_and_plot(world_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["evaluate", str(world_dir), "--seeds", "2", "--buckets", "2", "--policy",
                 "RankingModel", "--policy", "Best=Oracle", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "session_length" in text and "Best vs RankingModel" in text
    md = (out / "table.md").read_text()
    assert "## Table 1" in md and "| Best vs RankingModel |" in md
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert {r["policy"] for r in rows} == {"RankingModel", "Best"}
    assert all(len(r["values"].split()) == 2 for r in rows)
    assert (out / "metrics.png").stat().st_size > 1000
    assert json.loads((out / "result.json").read_text())["policies"]["Best"] == "Oracle"


@pytest.mark.parametrize(("args", "message"), [
    (["--policy", "RankingModel", "--policy", "DQN"], "unknown policy 'DQN'"),
    (["--set", "exposures_per_request=20"], "exposures_per_request \\(20\\) must be <= "
                                            "candidates_per_request"),
    (["--baseline", "Greedy", "--policy", "RankingModel"], "--baseline 'Greedy' is not among"),
    (["--users", "100"], "users must be in \\[1, 20\\]"),
])
def test_cli_bad_input_is_one_line_and_exit_2(world_dir, capsys, args, message):
    assert main(["evaluate", str(world_dir), "--seeds", "1", "--quiet", *args]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("rliv evaluate: error: ")
    assert re.search(message, err)


def _candidates(state: np.ndarray):
    from rliv_ray.data.ua_policies import Candidates

    a, n, _ = state.shape
    zeros = np.zeros((a, n))
    return Candidates(zeros, zeros, zeros, zeros, zeros, zeros, zeros, zeros, zeros, zeros,
                      user_id=np.arange(a), author_id=np.arange(a * n).reshape(a, n),
                      state=state)


def by_table(user_id, author_id, state):
    """Scores of a known table: action a scores state[:, 0] * (a == 1) + state[:, 1]."""
    out = np.repeat(state[:, 1:2], 5, axis=1)
    out[:, 1] += state[:, 0]
    return out


@pytest.mark.parametrize(("rule", "expected"), [
    ("argmax", [[1, 0, 1], [0, 1, 1]]),  # action 1 wherever state[:, 0] > 0
    ("best_value", [[0, 0, 4], [0, 0, 4]]),  # top weight on the candidate of highest max_a
])
def test_serving_rules_turn_scores_into_actions(rule, expected):
    state = np.zeros((2, 3, 18), np.float32)
    state[..., 0] = [[0.5, -1.0, 0.2], [-0.3, 0.1, 0.4]]
    state[..., 1] = [[0.0, 0.0, 1.0], [0.0, 0.2, 0.3]]
    policy = make_policy(f"python:{__name__}:by_table@{rule}", TINY, 18)
    actions, probs = policy.act(_candidates(state), np.random.default_rng(0))
    np.testing.assert_array_equal(actions, expected)
    assert (probs == 1).all()


def test_an_unknown_rule_is_named():
    with pytest.raises(PolicyError, match="unknown rule '@softmax'"):
        make_policy(f"python:{__name__}:by_table@softmax", TINY, 18)
