"""SL-MGAC through RLlib end to end: generate-live -> build-live-samples -> train -> policy."""

import json

import pyarrow.parquet as pq
import pytest
import torch

from rliv_ray import schema as S
from rliv_ray.algorithms.sl_mgac.objective import inject_probability
from rliv_ray.algorithms.sl_mgac.train import load_policy
from rliv_ray.cli import main
from rliv_ray.offline.live_prelearner import live_batch_to_arrays
from tests.integration.processes import assert_same_parameters, parameters

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    root = tmp_path_factory.mktemp("live")
    assert main(["generate-live", str(root / "world"), "--users", "120", "--days", "1",
                 "--quiet"]) == 0
    assert main(["build-live-samples", str(root / "world"), str(root / "samples"),
                 "--groups", "3", "--quiet"]) == 0
    return root / "samples"


def train(samples, out, *extra):
    return main(["train", "sl-mgac", str(samples), "--out", str(out), "--iterations", "2",
                 "--updates-per-iteration", "3", "--checkpoint-every", "1", "--quiet",
                 "--set", "train_batch_size_per_learner=128", *extra])


def test_train_resume_and_the_saved_policy(ray4, samples, tmp_path, capsys):
    """Also issue 17 s4, to the bit with ``num_learners=0``: the same seed and data give the
    same parameters after 6 updates, and the resumed run ends with those of one run."""
    out, whole = tmp_path / "run", tmp_path / "whole"
    assert train(samples, whole, "--variant", "w/o MG", "--iterations", "3") == 0
    assert train(samples, out, "--variant", "w/o MG") == 0
    assert_same_parameters(parameters(whole / "checkpoints" / "iter_000002"), parameters(out))
    assert train(samples, out, "--iterations", "3", "--resume") == 0
    assert_same_parameters(parameters(whole), parameters(out))
    report = json.loads((out / "train.json").read_text())
    assert report["iteration"] == 3 and report["resumed_from"].endswith("iter_000002")
    assert report["config"]["multi_group"] is False and report["groups"] == 3
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in lines] == [1, 2, 3]
    assert {"loss/critic", "loss/rpn", "loss/actor", "pi/inject_mean"} <= set(
        json.loads(lines[-1]))
    # off-policy estimates on the held-out users, with the last iteration of each run
    assert "eval/ncis" not in json.loads(lines[0])
    last = json.loads(lines[-1])
    assert {f"eval/{n}{s}" for n in ("ncis", "snips", "dr")
            for s in ("", "_lo", "_hi", "_ess")} <= set(last)
    assert last["eval/ncis_lo"] <= last["eval/ncis"] <= last["eval/ncis_hi"]
    assert report["ope"]["eval/snips"] == last["eval/snips"]

    net, edges, method = load_policy(report["policy"])
    assert len(edges) == 2 and net.spec.multi_group is False and method == "w/o MG"  # K - 1 edges
    import pyarrow.parquet as pq

    table = pq.read_table(sorted((samples / "train").glob("*.parquet"))[0]).slice(0, 64)
    batch = {k.split("/", 1)[1]: torch.from_numpy(v)
             for k, v in live_batch_to_arrays(table).items()}
    p = inject_probability(net, batch).numpy()
    assert ((p >= 0) & (p <= 1)).all()
    assert (p[table[S.LIVE_ID].to_numpy() < 0] == 0).all()


def test_a_baseline_trains_with_its_own_loss(ray4, samples, tmp_path):
    assert train(samples, tmp_path / "l2r", "--method", "L2R") == 0
    policy = load_policy(tmp_path / "l2r" / "policy.pt")
    assert policy.method == "L2R" and policy.net.spec.supervised_split is False
    last = json.loads((tmp_path / "l2r" / "metrics.jsonl").read_text().splitlines()[-1])
    assert "loss/critic" in last and "loss/actor" not in last
    assert last["eval/dr"] is None and last["eval/snips"] is not None  # no reward model

    assert main(["evaluate-ope", str(samples), str(tmp_path / "l2r"), "--seeds", "2",
                 "--out", str(tmp_path / "table"), "--quiet"]) == 0
    rows = {r["method"]: r for r in json.loads((tmp_path / "table" / "table.json").read_text())}
    assert list(rows) == ["logging policy", "oracle (immediate, truth only)", "L2R"]
    logging_row = rows["logging policy"]
    held_out = sum(pq.read_metadata(f).num_rows for f in (samples / "test").glob("*.parquet"))
    assert logging_row["ess"] == pytest.approx(held_out)  # step weights all 1: ESS = requests
    assert rows["oracle (immediate, truth only)"]["ncis"] is None
    assert rows["L2R"]["true"] is not None and 0 <= rows["L2R"]["injection_ratio"] <= 1


@pytest.mark.parametrize("name", ["TD3", "IQL"])
def test_an_offline_rl_baseline_trains_and_saves_its_heads(ray4, samples, tmp_path, name):
    """TD3 reads the learner's update count (its delayed actor); IQL's value head goes into
    policy.pt and comes back."""
    from rliv_ray.algorithms.sl_mgac.baselines import method

    assert train(samples, tmp_path / name, "--method", name) == 0
    policy = load_policy(tmp_path / name / "policy.pt")
    assert policy.method == name and policy.net.spec.value_head == (name == "IQL")
    last = json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"loss/critic", "loss/actor"} <= set(last)
    table = pq.read_table(sorted((samples / "train").glob("*.parquet"))[0]).slice(0, 64)
    batch = {k.split("/", 1)[1]: torch.from_numpy(v)
             for k, v in live_batch_to_arrays(table).items()}
    p = method(name).probability(policy.net, batch).numpy()
    assert ((p >= 0) & (p <= 1)).all() and (p[table[S.LIVE_ID].to_numpy() < 0] == 0).all()


def test_group_count_must_match_the_samples(ray4, samples, tmp_path, capsys):
    assert train(samples, tmp_path / "x", "--set", "groups=6") == 2
    assert "built with K=3 user groups, not 6" in capsys.readouterr().err


def test_not_live_samples_is_refused(samples, tmp_path, capsys):
    assert train(samples.parent / "world", tmp_path / "x") == 1
    assert "not a `rliv build-live-samples` output" in capsys.readouterr().err
