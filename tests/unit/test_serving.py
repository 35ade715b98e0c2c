"""RLIV-UA serving: exported scores, greedy and explored actions, Eq. 1 ranking, input checks."""

import dataclasses
import json
import re
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from rliv_ray import schema as S
from rliv_ray.actions import ActionGrid
from rliv_ray.algorithms.rliv_ua.network import NetworkSpec, RLIVUANetwork
from rliv_ray.cli import main
from rliv_ray.serving import (
    Scorer,
    ServingConfig,
    export_scorer,
    load_scorer,
    read_meta,
)
from rliv_ray.serving_torchscript import META_FILE, export_torchscript
from rliv_ray.tensor_files import DataFileError
from tests.sampleshards import STATE_NAMES, sample_table, write_shards

STATE_DIM, GAP_INDEX, GAMMA = 9, 7, 0.9
GRID = ActionGrid()
USER = 12345
SERVING = {"serving_tower": "effective_view", "epsilon": 0.1}  # RLIVUAConfig's defaults


def network(**kwargs) -> RLIVUANetwork:
    torch.manual_seed(0)
    spec = NetworkSpec(STATE_DIM, GAP_INDEX, n_actions=GRID.size, hidden=(16, 16),
                       embedding_dim=8, id_buckets=97, **kwargs)
    return RLIVUANetwork(spec)


def make_request(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N,) author ids, (N, D) states with first contacts and repeat pairs, (N,) rank scores."""
    rng = np.random.default_rng(seed)
    states = rng.normal(size=(n, STATE_DIM)).astype(np.float32)
    gap = rng.integers(0, 50, size=n)
    states[:, GAP_INDEX] = np.log1p(gap)
    states[:, GAP_INDEX + 1] = gap == 0
    return rng.integers(0, 10**12, size=n), states, rng.uniform(0.1, 1.0, size=n)


def expected_q(net: RLIVUANetwork, authors: np.ndarray, states: np.ndarray) -> np.ndarray:
    """min_k Q_l^k for every tower of the model, by hand from the network's heads, (T, N, A)."""
    with torch.no_grad():
        heads = net(torch.full((len(authors),), USER), torch.from_numpy(authors),
                    torch.from_numpy(states))
        return heads.q(GAMMA).min(dim=1).values.numpy()


@pytest.fixture(scope="module")
def net() -> RLIVUANetwork:
    return network()


@pytest.fixture(scope="module")
def exported(net, tmp_path_factory):
    return export_scorer(net, tmp_path_factory.mktemp("export") / "scorer.pt", gamma=GAMMA,
                         grid=GRID, **SERVING)


@pytest.fixture(params=["in_memory", "exported"])
def make_scorer(request, net, exported):
    def make(config: ServingConfig, rng=0) -> Scorer:
        if request.param == "in_memory":
            return Scorer.from_network(net, gamma=GAMMA, grid=GRID, config=config, rng=rng,
                                       **SERVING)
        return load_scorer(exported, config, rng=rng)
    return make


@pytest.mark.parametrize("n", [1, 7, 300])
def test_exported_scores_equal_the_network_q(net, exported, n):
    authors, states, _ = make_request(n, seed=n)
    module, meta = read_meta(exported)
    towers = torch.arange(len(meta["towers"]))
    with torch.inference_mode():
        got = module(torch.full((n,), USER), torch.from_numpy(authors), torch.from_numpy(states),
                     towers).numpy()
    assert got.shape == (4, n, GRID.size)
    np.testing.assert_allclose(got, expected_q(net, authors, states), atol=1e-5)


@pytest.mark.parametrize("kwargs", [{"supervised_split": False}, {"shared_reward": False},
                                    {"towers": ("follow", "gift"), "gift_assist": False}])
def test_export_of_each_ablation_and_a_tower_subset(tmp_path, kwargs):
    net = network(**kwargs)
    path = export_scorer(net, tmp_path / "s.pt", gamma=GAMMA, grid=GRID,
                         towers=net.spec.towers[::-1], serving_tower=net.spec.towers[0],
                         epsilon=0.1)
    module, meta = read_meta(path)
    authors, states, _ = make_request(11)
    with torch.inference_mode():
        got = module(torch.full((11,), USER), torch.from_numpy(authors),
                     torch.from_numpy(states), torch.tensor([0])).numpy()
    assert meta["towers"] == list(net.spec.towers[::-1])
    np.testing.assert_allclose(got[0], expected_q(net, authors, states)[-1], atol=1e-5)


def test_metadata_carries_gamma_grid_and_shapes(tmp_path, net):
    grid = ActionGrid((0.0, 0.5, 1.0, 1.5, 2.0), c=0.5, w=2.0, b=1.5)
    _, meta = read_meta(export_scorer(net, tmp_path / "s.pt", gamma=0.8, grid=grid,
                                      serving_tower="follow", epsilon=0.3))
    assert meta.pop("spec") == json.loads(json.dumps(dataclasses.asdict(net.spec)))
    assert meta == {"format_version": 3, "scoring": "tower_q",
                    "towers": list(net.spec.towers), "gamma": 0.8,
                    "state_dim": STATE_DIM, "n_actions": 5,
                    "action_grid": {"weights": [0.0, 0.5, 1.0, 1.5, 2.0], "c": 0.5, "w": 2.0,
                                    "b": 1.5},
                    "serving_tower": "follow", "epsilon": 0.3}


def test_the_export_holds_only_tensors_and_json(exported):
    blob = torch.load(exported, weights_only=True)  # refuses any pickled object
    assert set(blob) == {"meta", "state_dict"} and isinstance(blob["meta"], str)
    assert all(isinstance(v, torch.Tensor) for v in blob["state_dict"].values())


def test_torchscript_export_loads_and_scores_with_plain_torch_only(net, tmp_path):
    exported = export_torchscript(net, tmp_path / "scorer.ts", gamma=GAMMA, grid=GRID,
                                  **SERVING)
    authors, states, _ = make_request(4)
    code = f"""
import json, sys
sys.modules["rliv_ray"] = None  # any import of rliv_ray now fails
import torch
extra = {{"{META_FILE}": ""}}
module = torch.jit.load({str(exported)!r}, map_location="cpu", _extra_files=extra)
meta = json.loads(extra["{META_FILE}"])
with torch.inference_mode():
    q = module(torch.full((4,), {USER}), torch.tensor({authors.tolist()}),
               torch.tensor({states.tolist()}), torch.arange(len(meta["towers"])))
assert sys.modules["rliv_ray"] is None and "rliv_ray.serving" not in sys.modules
print(json.dumps({{"towers": meta["towers"], "q": q.tolist()}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    result = json.loads(out.stdout)
    assert result["towers"] == list(net.spec.towers)
    np.testing.assert_allclose(np.array(result["q"]), expected_q(net, authors, states),
                               atol=1e-5)


def test_serving_does_not_import_ray():
    code = "import sys, rliv_ray.serving; assert 'ray' not in sys.modules, 'ray was imported'"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_greedy_action_is_the_argmax_of_min_over_critics(make_scorer, net):
    authors, states, scores = make_request(50)
    ranking = make_scorer(ServingConfig(top_k=50, epsilon=0.0)).rank(USER, authors, states,
                                                                     scores)
    q = expected_q(net, authors, states)[net.spec.towers.index("effective_view")]  # (N, A)
    assert sorted(ranking.indices.tolist()) == list(range(50))
    assert np.array_equal(ranking.actions, q.argmax(axis=1)[ranking.indices])
    assert not ranking.explored.any()


def test_weighted_tower_mix(make_scorer, net):
    authors, states, scores = make_request(40)
    config = ServingConfig(top_k=40, epsilon=0.0, tower_weights={"follow": 0.25, "gift": 0.75})
    scorer = make_scorer(config)
    q = expected_q(net, authors, states)
    towers = net.spec.towers
    mix = 0.25 * q[towers.index("follow")] + 0.75 * q[towers.index("gift")]  # (N, A)
    np.testing.assert_allclose(scorer.q_values(USER, authors, states), mix, atol=1e-5)
    ranking = scorer.rank(USER, authors, states, scores)
    assert np.array_equal(ranking.actions, mix.argmax(axis=1)[ranking.indices])


def test_epsilon_one_explores_every_candidate_across_the_grid(make_scorer):
    authors, states, scores = make_request(300)
    ranking = make_scorer(ServingConfig(top_k=300, epsilon=1.0)).rank(USER, authors, states,
                                                                      scores)
    counts = np.bincount(ranking.actions, minlength=GRID.size)
    assert ranking.explored.all()
    assert counts.min() >= 30, counts  # 60 expected per action; 30 is over 4 sigma away


def test_exploration_rate_and_determinism(make_scorer):
    authors, states, scores = make_request(300)
    config = ServingConfig(top_k=300, epsilon=0.3)
    first = make_scorer(config, rng=np.random.default_rng(7)).rank(USER, authors, states, scores)
    again = make_scorer(config, rng=7).rank(USER, authors, states, scores)
    assert 0.22 < first.explored.mean() < 0.38
    assert np.array_equal(first.actions, again.actions)
    assert np.array_equal(first.explored, again.explored)


def test_top_k_is_sorted_by_eq1(tmp_path, net):
    grid = ActionGrid((0.0, 0.5, 1.0, 1.5, 2.0), c=0.5, w=2.0, b=1.5)
    path = export_scorer(net, tmp_path / "s.pt", gamma=GAMMA, grid=grid, **SERVING)
    scorer = load_scorer(path, ServingConfig(top_k=10, epsilon=0.5), rng=3)
    authors, states, scores = make_request(60)
    ranking = scorer.rank(USER, authors, states, scores)
    a = np.array(grid.weights)[ranking.actions]
    assert np.array_equal(ranking.weights, a.astype(np.float32))
    np.testing.assert_allclose(ranking.final_scores,
                               scores[ranking.indices] * (0.5 + 2.0 * a) ** 1.5)
    assert len(ranking.indices) == 10
    assert np.all(np.diff(ranking.final_scores) <= 0)
    # Every candidate left out scores at most the K-th: rebuild all scores from all actions.
    all_actions = load_scorer(path, ServingConfig(top_k=60, epsilon=0.5), rng=3).rank(
        USER, authors, states, scores)
    assert np.array_equal(all_actions.indices[:10], ranking.indices)
    assert all_actions.final_scores[10] <= ranking.final_scores[-1]


def test_fewer_candidates_than_top_k(make_scorer):
    authors, states, scores = make_request(3)
    ranking = make_scorer(ServingConfig(top_k=10, epsilon=0.0)).rank(USER, authors, states,
                                                                     scores)
    assert sorted(ranking.indices.tolist()) == [0, 1, 2]


def bad_requests():
    authors, states, scores = make_request(5)
    many = make_request(301)
    nan_state, nan_score = states.copy(), scores.copy()
    nan_state[2, 0], nan_score[1] = np.nan, np.inf
    return {
        "too many candidates": ((USER, *many), "author_ids"),
        "no candidates": ((USER, authors[:0], states[:0], scores[:0]), "author_ids"),
        "float author ids": ((USER, authors.astype(float), states, scores), "author_ids"),
        "several users": ((np.array([USER, USER]), authors, states, scores), "user_id"),
        "states rows": ((USER, authors, states[:4], scores), "states"),
        "state width": ((USER, authors, states[:, :-1], scores), "states"),
        "nan state": ((USER, authors, nan_state, scores), "states"),
        "rank scores length": ((USER, authors, states, scores[:4]), "rank_scores"),
        "inf rank score": ((USER, authors, states, nan_score), "rank_scores"),
    }


@pytest.mark.parametrize(("args", "name"), bad_requests().values(), ids=bad_requests().keys())
def test_bad_requests_name_the_argument(make_scorer, args, name):
    with pytest.raises(ValueError, match=name):
        make_scorer(ServingConfig(top_k=5)).rank(*args)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"tower_weights": {"watch_time": 1.0}}, "watch_time"),
    ({"tower_weights": {}}, "tower_weights"),
    ({"tower_weights": {"gift": -1.0}}, "tower_weights"),
    ({"tower_weights": (("gift", 0.5), ("gift", 0.5))}, "repeats"),
    ({"epsilon": 1.5}, "epsilon"),
    ({"top_k": 0}, "top_k"),
    ({"top_k": 301}, "top_k"),
    ({"max_candidates": 0}, "max_candidates"),
])
def test_bad_configs_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ServingConfig(**{"top_k": 10, **kwargs})


def test_config_accepts_dict_or_pairs():
    a = ServingConfig(top_k=5, tower_weights={"follow": 0.5, "gift": 0.5})
    b = ServingConfig(top_k=5, tower_weights=(("follow", 0.5), ("gift", 0.5)))
    assert a == b and hash(a) == hash(b)
    assert a.towers == ("follow", "gift") and a.weights == (0.5, 0.5)


def test_towers_missing_from_the_model_are_named(tmp_path, net):
    path = export_scorer(net, tmp_path / "s.pt", gamma=GAMMA, grid=GRID, towers=("click",),
                         serving_tower="click", epsilon=0.1)
    with pytest.raises(ValueError, match="effective_view"):
        load_scorer(path, ServingConfig(top_k=5, tower_weights={"effective_view": 1.0}))
    with pytest.raises(ValueError, match="gift"):
        Scorer.from_network(network(towers=("click",)), gamma=GAMMA, grid=GRID,
                            serving_tower="click", epsilon=0.1,
                            config=ServingConfig(top_k=5, tower_weights={"gift": 1.0}))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"gamma": 1.0}, "gamma"),
    ({"grid": ActionGrid((0.0, 1.0))}, "grid"),
    ({"towers": ("click", "watch_time"), "serving_tower": "click"}, "watch_time"),
    ({"towers": ("click", "gift")}, "serving_tower 'effective_view'"),
    ({"epsilon": 1.5}, "epsilon"),
])
def test_bad_exports_name_the_argument(tmp_path, net, kwargs, match):
    with pytest.raises(ValueError, match=match):
        export_scorer(net, tmp_path / "s.pt",
                      **{"gamma": GAMMA, "grid": GRID, **SERVING, **kwargs})


def test_export_keeps_the_training_mode_and_rejects_other_formats(tmp_path, net):
    net.train()
    export_scorer(net, tmp_path / "s.pt", gamma=GAMMA, grid=GRID, **SERVING)
    assert net.training
    other = torch.jit.script(torch.nn.Identity())
    torch.jit.save(other, str(tmp_path / "v2.pt"),  # a TorchScript file holds code
                   _extra_files={META_FILE: json.dumps({"format_version": 2})})
    with pytest.raises(DataFileError, match=r"v2.pt: not an RLIV-UA scorer") as err:
        read_meta(tmp_path / "v2.pt")
    assert "\n" not in str(err.value)
    torch.save({"meta": json.dumps({"format_version": 2}), "state_dict": {}}, tmp_path / "o.pt")
    with pytest.raises(DataFileError, match="format_version 2 is not 3"):
        read_meta(tmp_path / "o.pt")


@pytest.fixture(scope="module")
def follow_export(net, tmp_path_factory):
    """``net`` exported as a model trained to serve on follow with epsilon 0.3."""
    return export_scorer(net, tmp_path_factory.mktemp("follow") / "scorer.pt", gamma=GAMMA,
                         grid=GRID, serving_tower="follow", epsilon=0.3)


def test_the_model_serving_tower_and_epsilon_are_the_defaults(net, follow_export):
    authors, states, scores = make_request(300)
    q = expected_q(net, authors, states)
    follow, view = (q[net.spec.towers.index(t)].argmax(axis=1)
                    for t in ("follow", "effective_view"))
    assert (follow != view).any()  # else this test could not tell the towers apart
    config = ServingConfig(top_k=300)
    for scorer in (load_scorer(follow_export, config, rng=0),
                   Scorer.from_network(net, gamma=GAMMA, grid=GRID, serving_tower="follow",
                                       epsilon=0.3, config=config, rng=0)):
        assert scorer.config.tower_weights == (("follow", 1.0),)
        assert scorer.config.epsilon == 0.3
        ranking = scorer.rank(USER, authors, states, scores)
        assert 0.22 < ranking.explored.mean() < 0.38
        greedy = ~ranking.explored
        assert np.array_equal(ranking.actions[greedy], follow[ranking.indices][greedy])


def test_a_config_overrides_the_model_defaults(follow_export):
    config = ServingConfig(top_k=300, tower_weights={"gift": 1.0}, epsilon=0.0)
    scorer = load_scorer(follow_export, config)
    assert scorer.config == config
    authors, states, scores = make_request(300)
    assert not scorer.rank(USER, authors, states, scores).explored.any()


# --- `rliv rerank`: the request comes from sample shards, with their logged rank scores -------
RERANK_ROW = re.compile(r"^\s*\d+\s+\d+\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(yes|no)$")


def rerank(capsys, *args) -> tuple[int, str, np.ndarray, list[str]]:
    """Exit code, output, the printed (rank_score, weight, final) rows and explored flags."""
    code = main(["rerank", *map(str, args)])
    out = capsys.readouterr()
    rows = [m.groups() for m in map(RERANK_ROW.match, out.out.splitlines()) if m]
    table = np.array([[float(x) for x in row[:3]] for row in rows]).reshape(-1, 3)
    return code, out.out + out.err, table, [row[3] for row in rows]


@pytest.fixture(scope="module")
def shard_model(tmp_path_factory):
    """A model over tests.sampleshards' states, exported to serve on follow with epsilon 0.3,
    and shards to take a request from."""
    root = tmp_path_factory.mktemp("rerank")
    torch.manual_seed(0)
    spec = NetworkSpec(len(STATE_NAMES), STATE_NAMES.index("gap/log1p_gap_requests"),
                       n_actions=GRID.size, hidden=(16, 16), embedding_dim=8, id_buckets=97)
    path = export_scorer(RLIVUANetwork(spec), root / "scorer.pt", gamma=GAMMA, grid=GRID,
                         serving_tower="follow", epsilon=0.3)
    return path, write_shards(root / "samples", rows=2048, files=1)


def test_rerank_prints_the_logged_rank_score_and_eq1(shard_model, capsys):
    code, out, table, _ = rerank(capsys, *shard_model, "--top-k", "8")
    assert code == 0, out
    rank_score, weight, final = table.T
    assert len(table) == 8 and np.ptp(rank_score) > 0.05  # logged scores, not a constant
    np.testing.assert_allclose(final, rank_score * (GRID.c + weight * GRID.w) ** GRID.b,
                               atol=2e-4)
    assert np.all(np.diff(final) <= 0)


def test_rerank_serves_with_the_model_tower_and_epsilon_unless_told(shard_model, capsys):
    code, out, _, _ = rerank(capsys, *shard_model)
    assert code == 0 and "towers {'follow': 1.0}, epsilon 0.3, top 10" in out
    code, out, _, explored = rerank(capsys, *shard_model, "--epsilon", "0", "--tower", "gift")
    assert code == 0 and "towers {'gift': 1.0}, epsilon 0, top 10" in out
    assert explored == ["no"] * 10
    code, _, _, explored = rerank(capsys, *shard_model, "--epsilon", "1")
    assert code == 0 and explored == ["yes"] * 10


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t.drop_columns([S.RANK_SCORE]), "lacks column 'rank_score'"),
    (lambda t: t.set_column(t.schema.get_field_index(S.RANK_SCORE), S.RANK_SCORE,
                            pa.nulls(t.num_rows, pa.float32())), "no logged 'rank_score'"),
], ids=["old shard", "kuairand"])
def test_rerank_without_rank_scores_is_one_line(shard_model, tmp_path, capsys, change,
                                                message):
    pq.write_table(change(sample_table(256)), tmp_path / "part-0.parquet")
    code, out, _, _ = rerank(capsys, shard_model[0], tmp_path)
    assert code == 1 and message in out and out.count("\n") == 1  # invalid data (issue 17)
