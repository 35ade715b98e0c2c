"""RLIV-UA through RLlib end to end: CLI, checkpoint -> resume equality, export, bad input."""

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from rliv_ray import schema as S
from rliv_ray.actions import ActionGrid
from rliv_ray.algorithms.rliv_ua.network import sized_id_buckets
from rliv_ray.algorithms.rliv_ua.train import TrainSettings, load_module, train_rliv_ua
from rliv_ray.cli import main
from rliv_ray.offline.shards import distinct_ids, inspect_shards
from rliv_ray.serving import ServingConfig, load_scorer, read_meta
from rliv_ray.train_loop import LoopSettings, latest_checkpoint
from tests.integration.processes import assert_same_parameters
from tests.sampleshards import make_states, sample_table, write_shards

pytestmark = pytest.mark.ray
SMALL = {"train_batch_size_per_learner": 512, "id_buckets": 4096}  # a cap: sized to 1024


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    # One file, one batch: every update sees all 512 rows, so runs are comparable.
    return write_shards(tmp_path_factory.mktemp("shards"), rows=512, files=1)


def settings(iterations, **kwargs):
    return TrainSettings(loop=LoopSettings(iterations=iterations, checkpoint_every=2,
                                           progress=False),
                         updates_per_iteration=3, training={**SMALL, **kwargs.pop("training", {})},
                         **kwargs)


def parameters(checkpoint):
    return {k: v.clone() for k, v in load_module(checkpoint).state_dict().items()}


def cli(*args):
    small = [x for k, v in SMALL.items() for x in ("--set", f"{k}={v}")]
    return main(["train", "rliv-ua", *map(str, args), "--updates-per-iteration", "3",
                 "--checkpoint-every", "2", "--quiet", *small])


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    """Four batches an epoch, in two files (Ray Data keeps their order: ``preserve_order``)."""
    return write_shards(tmp_path_factory.mktemp("batches"), rows=2048, files=2)


def test_same_seed_same_parameters_and_resume_equals_one_run(ray4, batches, tmp_path, capsys):
    """Issue 17 s4, to the bit (``torch.equal``), with ``num_learners=0``: two runs with the
    same seed and data have the same parameters after 6 updates (``whole`` and ``split`` at
    iteration 2), and the split run resumed ends with the parameters of the uninterrupted one
    after 12 updates: its reader goes on at batch 6 mod 4 of the epoch, the lazy target rows
    and SparseAdam's step count come back as they were. ``whole`` replays its later epochs
    from memory (``batch_cache_mb``), ``split`` reads its first 6 batches through Ray Data
    (``--batch-cache-mb 0``): replayed batches are the ones Ray Data reads."""
    whole = train_rliv_ua(batches, tmp_path / "whole", settings(4))
    assert (whole["iteration"], whole["updates"]) == (4, 12)
    ids = max(distinct_ids(inspect_shards(batches)).values())  # tables sized from the data
    assert whole["config"]["id_buckets"] == sized_id_buckets(ids, 16, SMALL["id_buckets"])
    assert whole["config"]["id_optimizer"] == "lazy_adam"

    assert cli(batches, "--out", tmp_path / "split", "--iterations", "2",
               "--batch-cache-mb", "0") == 0
    same_seed = parameters(tmp_path / "split" / "checkpoints" / "iter_000002")
    assert_same_parameters(parameters(tmp_path / "whole" / "checkpoints" / "iter_000002"),
                           same_seed)
    assert cli(batches, "--out", tmp_path / "split", "--iterations", "4") == 2
    assert "pass --resume" in capsys.readouterr().err
    assert cli(batches, "--out", tmp_path / "split", "--iterations", "4", "--resume") == 0
    report = json.loads((tmp_path / "split" / "train.json").read_text())
    assert report["resumed_from"].endswith("iter_000002") and report["updates"] == 12

    first, second = parameters(whole["checkpoint"]), parameters(report["checkpoint"])
    assert any(k.startswith("target.") for k in first)
    assert_same_parameters(first, second)
    assert not torch.equal(same_seed["net.dense.weight"], first["net.dense.weight"])


def test_exported_scorer_matches_the_rllib_module(ray4, shards, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    serving = {"serving_tower": "follow", "epsilon": 0.3}  # the export's serving defaults
    report = train_rliv_ua(shards, tmp_path / "out", settings(2, training=serving),
                           tracking_uri=uri)
    mlflow = pytest.importorskip("mlflow")
    run = mlflow.MlflowClient(uri).search_runs(
        [mlflow.get_experiment_by_name("rliv-ray").experiment_id])[0]
    history = mlflow.MlflowClient(uri).get_metric_history(run.info.run_id, "td/abs/click")
    assert [m.step for m in history] == [1, 2] and "config/gamma" in run.data.params

    module = load_module(report["checkpoint"])
    scorer = load_scorer(report["scorer"], ServingConfig(top_k=5, epsilon=0.0))
    assert scorer.config.tower_weights == (("follow", 1.0),)  # the module's serving tower
    rng = np.random.default_rng(0)
    states = make_states(np.where(rng.random(300) < 0.5, 1.0, -1.0), rng)
    authors = rng.integers(0, 20, 300)
    batch = {"obs": torch.from_numpy(states), S.USER_ID: torch.full((300,), 7),
             S.AUTHOR_ID: torch.from_numpy(authors)}
    with torch.no_grad():
        expected = module._forward_inference(batch)
    q = scorer.q_values(7, authors, states)
    np.testing.assert_allclose(q, expected["q"].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(q.argmax(axis=1), expected["actions"].numpy())

    assert main(["rerank", report["scorer"], str(shards), "--user", "4", "--top-k", "3"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"user 4: \d+ candidates, towers \{'follow': 1.0\}, epsilon 0.3,",
                     out) and "latency per request" in out
    rows = re.findall(r"^\s*[123]\s+\d+\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(?:yes|no)$", out,
                      re.MULTILINE)
    rank_score, weight, final = np.array(rows, dtype=float).T  # (3,) each
    assert len(rows) == 3 and np.ptp(rank_score) > 0  # the logged rank scores, not a constant
    grid = ActionGrid(**read_meta(report["scorer"])[1]["action_grid"])
    np.testing.assert_allclose(final, rank_score * (grid.c + weight * grid.w) ** grid.b,
                               atol=2e-4)
    assert np.all(np.diff(final) <= 0)


def test_cql_baseline_trains_through_the_cli(ray4, shards, tmp_path):
    """`rliv train rliv-ua SAMPLES --ablation cql`: a few updates, the penalty logged, a scorer
    that serving loads."""
    assert cli(shards, "--out", tmp_path / "cql", "--iterations", "1", "--ablation", "cql") == 0
    report = json.loads((tmp_path / "cql" / "train.json").read_text())
    assert report["config"]["cql_alpha"] == 1.0 and report["config"]["n_critics"] == 1
    assert report["updates"] == 3 and np.isfinite(report["metrics"]["loss/cql/effective_view"])
    scorer = load_scorer(report["scorer"], ServingConfig(top_k=5, epsilon=0.0))
    assert scorer.q_values(7, np.arange(4), make_states(np.ones(4), np.random.default_rng(0))
                           ).shape == (4, 5)


def test_td3_bc_baseline_trains_through_the_cli(ray4, shards, tmp_path):
    """`--ablation td3_bc`: TD3+BC with a continuous weight; its scorer serves grid weights."""
    assert cli(shards, "--out", tmp_path / "td3", "--iterations", "1", "--ablation",
               "td3_bc") == 0
    report = json.loads((tmp_path / "td3" / "train.json").read_text())
    assert report["config"]["bc_alpha"] == 2.5 and report["config"]["policy_delay"] == 2
    assert report["updates"] == 3 and np.isfinite(report["metrics"]["loss/actor"])
    assert load_module(report["checkpoint"]).spec.weights == ActionGrid().weights
    scorer = load_scorer(report["scorer"], ServingConfig(top_k=5, epsilon=0.0))
    ranking = scorer.rank(7, np.arange(4), make_states(np.ones(4), np.random.default_rng(0)),
                          np.ones(4))
    assert set(ranking.weights.tolist()) <= set(ActionGrid().weights)


def test_nan_in_a_shard_names_the_column_and_row(ray4, tmp_path, capsys):
    table = sample_table(256)
    state = S.arrow_to_matrix(table[S.STATE])
    state[17, 2] = np.nan
    index = table.schema.get_field_index(S.STATE)
    table = table.set_column(index, table.schema.field(index), S.vectors_to_arrow(state))
    (tmp_path / "bad").mkdir()
    pq.write_table(table, tmp_path / "bad" / "part-0.parquet")
    assert cli(tmp_path / "bad", "--out", tmp_path / "out", "--iterations", "1") == 1
    assert "column 'state', row 17: NaN" in capsys.readouterr().err


def test_action_outside_the_grid_names_the_column(ray4, tmp_path, capsys):
    table = sample_table(256)
    actions = table[S.ACTION].to_numpy().copy()
    actions[5] = 9
    index = table.schema.get_field_index(S.ACTION)
    table = table.set_column(index, table.schema.field(index), pa.array(actions, pa.int16()))
    (tmp_path / "bad").mkdir()
    pq.write_table(table, tmp_path / "bad" / "part-0.parquet")
    assert cli(tmp_path / "bad", "--out", tmp_path / "out", "--iterations", "1") == 1
    assert "column 'action', row 5: action 9 is outside the grid of 5" in capsys.readouterr().err


def test_a_diverging_loss_stops_training(ray4, shards, tmp_path, capsys):
    """One line naming the iteration, the update, the loss term and its tower; exit status 1;
    nothing saved after the last good iteration (none: a new OUT is removed)."""
    out = tmp_path / "out"
    assert cli(shards, "--out", out, "--iterations", "4", "--checkpoint-every", "1",
               "--set", "lr=1e30") == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    said = re.fullmatch(r"rliv train: error: training diverged at iteration (\d), update \d+: "
                        r"the \w+ loss of tower \w+ is (nan|inf)\b.*; stopped\. Last good "
                        r"checkpoint: (.+)\. Try a lower learning rate.*", err.strip())
    assert said, err
    diverged = int(said.group(1))
    good = latest_checkpoint(out) if out.exists() else None
    assert (good.iteration if good else 0) == diverged - 1  # nothing saved after the NaN
    assert said.group(3) == (str(good.checkpoint) if good else
                             "none (no checkpoint was written yet)")
    assert good is not None or not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("learners", [2])  # remote learners with DDP (suite time: not also 1)
def test_remote_learners_train_checkpoint_and_resume(ray4, shards, tmp_path, learners):
    report = train_rliv_ua(shards, tmp_path / "out", settings(1, num_learners=learners))
    assert report["updates"] == 3 and np.isfinite(report["metrics"]["loss/total"])
    assert load_module(report["checkpoint"]).spec.state_dim == 6
    state = torch.load(tmp_path / "out" / "checkpoints" / "iter_000001" / "state.pt",
                       weights_only=True)
    assert sorted(state["learner_rng"]) == list(range(learners))  # each learner's RNG
    resumed = train_rliv_ua(shards, tmp_path / "out", settings(2, num_learners=learners),
                            resume=True)
    assert resumed["updates"] == 6 and resumed["resumed_from"].endswith("iter_000001")
