"""The learned user simulator: what it takes from a log, its file, its rollouts, its fidelity."""

import itertools
import re

import numpy as np
import pyarrow as pa
import pytest
import torch

from rliv_ray import schema as S
from rliv_ray.cli import EXIT_USAGE, main
from rliv_ray.data.ua_lever import SESSION_GAP_MS
from rliv_ray.evaluation.fidelity import kendall_tau, rank_agreement
from rliv_ray.evaluation.learned_world import world_config
from rliv_ray.evaluation.policies import PolicyError
from rliv_ray.evaluation.sim_data import extract
from rliv_ray.evaluation.sim_model import LearnedSimulator, auc
from rliv_ray.evaluation.world import WorldEval, evaluate_policies
from tests.logtables import make_log_table


def _log_with_a_session_break() -> pa.Table:
    """3 users x 6 requests x 2 items; user 1 pauses 31 minutes after its 4th request."""
    table = make_log_table(n_users=3, requests_per_user=6, items_per_request=2)
    user = table[S.USER_ID].to_numpy()
    req = table[S.USER_REQUEST_IDX].to_numpy()
    ts = table[S.TS_MS].to_numpy().copy()
    ts[(user == 1) & (req >= 4)] += SESSION_GAP_MS + 60_000
    table = table.set_column(table.schema.get_field_index(S.TS_MS), S.TS_MS, pa.array(ts))
    return table.take(pa.array(np.random.default_rng(0).permutation(table.num_rows)))


def test_extract_finds_sessions_pools_and_features_per_request():
    table = _log_with_a_session_break()
    rows, replay, facts = extract(table)
    order = np.lexsort((rows.session_pos, rows.user_id))
    ends = {(u, p) for u, p, e in zip(rows.user_id, rows.session_pos, rows.session_end,
                                      strict=True) if e}
    # users 0 and 2: one session of 6 requests; user 1: 4 then 2
    assert ends == {(0, 5), (1, 3), (1, 1), (2, 5)}
    assert rows.session_pos[order].max() == 5 and len(rows.state) == 36
    assert facts.exposures_per_request == 2 and facts.max_session_requests == 6
    assert list(np.diff(replay.request_offsets)) == [6, 6, 6]
    assert list(np.diff(replay.session_offsets)) == [1, 2, 1]
    users, authors = table[S.USER_ID].to_numpy(), table[S.AUTHOR_ID].to_numpy()
    for i, uid in enumerate(replay.user_ids):
        pool = replay.pool_author[replay.pool_offsets[i]:replay.pool_offsets[i + 1]]
        assert list(pool) == list(np.unique(authors[users == uid]))
    assert facts.has_rank_score and all(facts.present_labels)


def test_auc_is_the_share_of_correctly_ordered_pairs():
    rng = np.random.default_rng(0)
    y = rng.random(60) < 0.3
    p = np.round(rng.random(60), 1)  # ties count half
    pairs = [(1.0 if a > b else 0.5 if a == b else 0.0)
             for a, b in itertools.product(p[y], p[~y])]
    assert auc(y.astype(float), p) == pytest.approx(np.mean(pairs))


@pytest.mark.parametrize(("x", "y", "tau"), [
    ([1, 2, 3, 4], [10, 20, 30, 40], 1.0),
    ([1, 2, 3, 4], [4, 3, 2, 1], -1.0),
    ([1, 2, 3, 4], [1, 3, 2, 4], 4 / 6),  # one of six pairs swapped
    ([1, 1, 2], [1, 2, 3], 2 / np.sqrt(2 * 3)),  # tau-b with a tie in x
])
def test_kendall_tau(x, y, tau):
    assert kendall_tau(x, y) == pytest.approx(tau)


def test_rank_agreement_orders_both_sides():
    out = rank_agreement({"a": 1.0, "b": 3.0, "c": 2.0}, {"a": 1.0, "b": 2.0, "c": 3.0})
    assert out["world_order"] == ["b", "c", "a"] and out["simulator_order"] == ["c", "b", "a"]
    assert out["tau"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="different policies"):
        rank_agreement({"a": 1.0}, {"b": 1.0})


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    assert main(["generate", str(root / "world"), "--users", "30", "--days", "2",
                 "--quiet"]) == 0
    assert main(["fit-simulator", str(root / "world"), "--out", str(root / "sim"),
                 "--epochs", "2", "--quiet"]) == 0
    return root


def test_simulator_file_round_trips_without_pickles(sim_dir):
    sim = LearnedSimulator.load(sim_dir / "sim")
    blob = torch.load(sim_dir / "sim" / "models.pt", weights_only=True)  # tensors only
    assert set(blob) == {"state_dict", "residuals"}
    with np.load(sim_dir / "sim" / "replay.npz", allow_pickle=False) as arrays:
        assert arrays["user_ids"].tolist() == list(range(30))
    assert sim.meta["report"]["click"]["rate"] > 0 and "world" in sim.meta
    assert world_config(sim).n_users == 30


def test_rollouts_are_reproducible_and_policies_differ(sim_dir):
    sim = LearnedSimulator.load(sim_dir / "sim")
    setup = WorldEval(world_config(sim), seeds=(0, 1), buckets=2,
                      simulator=str(sim_dir / "sim"))
    first = evaluate_policies(setup, ["RankingModel", "Greedy"], progress=False)
    again = evaluate_policies(setup, ["RankingModel"], progress=False)
    ranking = first["RankingModel"]
    assert np.isnan(ranking.pop("ua_count")["mean"])  # no relationship depth in a simulator
    assert np.isnan(again["RankingModel"].pop("ua_count")["mean"])
    assert ranking == again["RankingModel"]
    assert first["Greedy"]["ltv"] != ranking["ltv"]
    assert ranking["requests"]["mean"] > 0 and 0 < ranking["ctr"]["mean"] < 1
    with pytest.raises(PolicyError, match="Oracle reads the world's latent state"):
        evaluate_policies(setup, ["Oracle"], progress=False)


def test_cli_evaluates_in_a_simulator_and_refuses_the_oracle_in_one_line(sim_dir, tmp_path,
                                                                         capsys):
    sim = str(sim_dir / "sim")
    assert main(["evaluate", sim, "--seeds", "1", "--buckets", "1", "--policy",
                 "RankingModel", "--policy", "Greedy", "--out", str(tmp_path), "--quiet"]) == 0
    assert f"learned simulator {sim}" in capsys.readouterr().out
    assert (tmp_path / "metrics.png").stat().st_size > 1000  # plotted without the NaN metric
    assert main(["evaluate", sim, "--seeds", "1", "--policy", "Oracle", "--policy",
                 "RankingModel", "--quiet"]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Oracle reads the world's latent state" in err


@pytest.mark.parametrize(("target", "message"), [
    ("samples", "not an interaction log"),
    ("missing", "no such file or directory"),
])
def test_fit_simulator_bad_input_is_one_line(sim_dir, tmp_path, capsys, target, message):
    path = tmp_path / target
    if target == "samples":  # Parquet that is not a log
        path.mkdir()
        import pyarrow.parquet as pq
        pq.write_table(pa.table({"x": [1, 2]}), path / "part.parquet")
    assert main(["fit-simulator", str(path), "--out", str(tmp_path / "sim"), "--quiet"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err)
    assert not (tmp_path / "sim").exists()
