"""RLIV-UA with the world in the loop: rounds append exploring rollouts, retrain, and resume."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from rliv_ray import schema as S
from rliv_ray.cli import main
from rliv_ray.data import io

pytestmark = pytest.mark.ray
TINY = ["--iterations", "1", "--updates-per-iteration", "3", "--users-per-round", "8",
        "--set", "train_batch_size_per_learner=256", "--quiet"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("online") / "world"
    # Fewer authors than users, so the users' id table sets the size and new ids would grow it
    assert main(["generate", str(out), "--users", "30", "--days", "2", "--set", "n_authors=20",
                 "--set", "pool_size=20", "--quiet"]) == 0
    return out


def test_rounds_append_exploring_rollouts_under_fresh_ids_and_resume(world, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "rliv-ua-online", str(world), "--out", str(out), "--rounds", "1",
                 *TINY]) == 0
    record = json.loads((out / "online.json").read_text())
    assert [r["round"] for r in record["rounds"]] == [0, 1]
    assert [r["updates"] for r in record["rounds"]] == [3, 6]  # each round trains again
    initial = sum(pq.read_metadata(f).num_rows for f in io.log_files(world))
    assert record["rounds"][0]["samples"] == initial
    rollout = pq.read_table(out / "log" / "round-001.parquet")
    assert record["rounds"][1]["samples"] == initial + rollout.num_rows
    users = np.unique(rollout[S.USER_ID].to_numpy())
    assert len(users) == 8 and users.min() >= 30  # user + round * n_users: no clash
    # epsilon 0.2 per candidate over 5 weights: 0.2/5 + 0.8 for the greedy weight, else 0.04
    probs = {round(float(p), 4) for p in rollout[S.BEHAVIOR_PROB].to_numpy()}
    assert probs == {0.84, 0.04}
    config = json.loads((out / "model" / "train.json").read_text())["config"]
    assert config["id_buckets"] == 512  # 30 users x 16 rows, kept as round 1 adds 8 users
    assert (out / "rounds" / "000" / "scorer.pt").exists()
    assert (out / "rounds" / "001" / "scorer.pt").exists()
    assert main(["validate", str(out / "log"), "--quiet"]) == 0

    assert main(["train", "rliv-ua-online", str(world), "--out", str(out), "--rounds", "2",
                 "--resume", *TINY]) == 0
    record = json.loads((out / "online.json").read_text())
    assert [r["updates"] for r in record["rounds"]] == [3, 6, 9]
    capsys.readouterr()


def test_bad_input_is_one_line(world, tmp_path, capsys):
    assert main(["train", "rliv-ua-online", str(world), "--out", str(tmp_path / "a"),
                 "--users-per-round", "31", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "exceeds the world's 30 users" in err
    assert main(["train", "rliv-ua-online", str(tmp_path), "--out", str(tmp_path / "b"),
                 "--quiet"]) == 2
    assert "not a synthetic user-author world" in capsys.readouterr().err
