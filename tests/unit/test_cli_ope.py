"""``rliv ope`` in-process: the streamed estimates equal the in-memory estimators on the whole
log, every kind of policy loads, and each kind of bad input ends with one line and exit 1."""

import json
import warnings
from dataclasses import asdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from rliv_ray import cli_ope
from rliv_ray import schema as S
from rliv_ray.algorithms.sl_mgac.network import SLMGACNetwork, SLMGACSpec
from rliv_ray.cli import EXIT_INVALID, main
from rliv_ray.data import io
from rliv_ray.data.live_config import LiveWorldConfig
from rliv_ray.data.live_generate import generate_live_world
from rliv_ray.data.live_metrics import allocation_rewards
from rliv_ray.data.live_policies import observation_from_log
from rliv_ray.ope import streaming
from rliv_ray.ope.estimators import direct_method, doubly_robust, ips, snips
from rliv_ray.ope.ncis import evaluate_policy_ncis
from rliv_ray.ope.targets import TargetSpec, load_target

CONFIG = LiveWorldConfig(n_users=30, days=1, seed=5, history_length=16)
TINY = {"id_buckets": 64, "embedding_dim": 4, "attention_hidden": (4,), "shared_hidden": (16,),
        "actor_hidden": (8,), "rpn_hidden": (8,), "qrn_hidden": (8,)}
EDGES = [0.0, 30.0, 120.0, 600.0, 1800.0]
FAST = ["--bootstrap", "20", "--workers", "0", "--quiet", "--batch-rows", "64"]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    out = tmp_path_factory.mktemp("ope") / "live"
    generate_live_world(out, CONFIG, n_files=2, progress=False)
    return out


def write_policy(path, user_dim=9, live_dim=5, seed=0, **changes):
    """A policy.pt as `rliv train sl-mgac` writes it (tensors + JSON), untrained."""
    torch.manual_seed(seed)
    spec = SLMGACSpec(user_dim=user_dim, live_dim=live_dim, **{**TINY, **changes})
    meta = {"spec": asdict(spec), "edges": EDGES, "groups": spec.groups, "method": "SL-MGAC"}
    torch.save({"meta": json.dumps(meta), "state_dict": SLMGACNetwork(spec).state_dict()}, path)
    return str(path)


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    return write_policy(tmp_path_factory.mktemp("policy") / "policy.pt")


def inject_by_watch_time(obs):
    """python: policy: inject with probability rising in the user's past live watch time."""
    p = 1.0 / (1.0 + np.exp(-(np.log1p(obs[S.LIVE_WATCH_3W_S] / 60.0) - 2.0)))
    return np.stack([1.0 - p, p], axis=1)


PYTHON_POLICY = f"python:{__name__}:inject_by_watch_time"


def three_actions(obs):
    return np.full((len(obs[S.USER_ID]), 3), 1 / 3)


class FeaturesPolicy(nn.Module):
    """torchscript: the same contract: (user_features, live_features) -> (B, 2)."""

    def __init__(self, user_dim: int = 9, live_dim: int = 5):
        super().__init__()
        torch.manual_seed(0)
        self.user, self.live = nn.Linear(user_dim, 1), nn.Linear(live_dim, 1)

    def forward(self, user: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(self.user(user) + self.live(live))
        return torch.cat([1 - p, p], dim=1)


def run(capsys, *argv):
    code = main(["ope", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def whole_log(live):
    return pa.concat_tables(pq.read_table(f) for f in io.log_files(live))


def test_streamed_estimates_equal_the_in_memory_ones(live, policy, tmp_path, capsys):
    code, out, _ = run(capsys, live, "--policy", policy, "--estimators", "ips,snips,ncis,dm,dr",
                       "--out", tmp_path, *FAST)
    assert code == 0, out
    assert "ope: " in out and "per request" in out and "per user" in out
    report = json.loads((tmp_path / "ope.json").read_text())
    got = {r["estimator"]: r for r in report["estimates"]}
    assert "| ips |" in (tmp_path / "ope.md").read_text()

    table = whole_log(live)  # in memory, one call of the policy over every row
    target = load_target(TargetSpec(policy))
    obs = observation_from_log(table)
    probs = target.probabilities(obs)
    cols = {c: table[c].to_numpy() for c in (S.ACTION, S.BEHAVIOR_PROB, S.LIVE_WATCH_S,
                                             S.VIDEO_WATCH_S, S.N_VIDEOS)}
    reward = allocation_rewards(cols[S.ACTION], cols[S.LIVE_WATCH_S], cols[S.VIDEO_WATCH_S],
                                cols[S.N_VIDEOS], CONFIG.beta)
    q_hat = target.reward_model(obs, cols[S.N_VIDEOS], CONFIG.beta)
    bandit = (cols[S.ACTION], cols[S.BEHAVIOR_PROB], probs, reward)
    expected = {"ips": ips(*bandit, n_bootstrap=0), "snips": snips(*bandit, n_bootstrap=0),
                "dm": direct_method(probs, q_hat, n_bootstrap=0),
                "dr": doubly_robust(*bandit, q_hat, n_bootstrap=0)}
    for name, ref in expected.items():
        assert got[name]["value"] == pytest.approx(ref.value, rel=1e-6), name
        assert got[name]["ess"] == pytest.approx(ref.effective_sample_size, rel=1e-6)
        assert got[name]["n"] == table.num_rows and got[name]["unit"] == "per request"
        assert got[name]["ci_low"] < got[name]["value"] < got[name]["ci_high"]
    ncis = evaluate_policy_ncis(table, lambda _: probs[:, 1], beta=CONFIG.beta, cap=10.0,
                                n_bootstrap=0)
    assert got["ncis"]["value"] == pytest.approx(ncis.value, rel=1e-6)
    assert got["ncis"]["n"] == ncis.n_trajectories == report["users"]


def test_external_policies_torchscript_onnx_and_python_agree(live, tmp_path, capsys):
    model = FeaturesPolicy().eval()
    script = tmp_path / "policy.ts"
    torch.jit.save(torch.jit.script(model), str(script))
    specs = [f"torchscript:{script}"]
    try:  # onnx only where both packages are installed
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        pass
    else:
        path = tmp_path / "policy.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated
            torch.onnx.export(model, (torch.zeros(3, 9), torch.zeros(3, 5)), str(path),
                              dynamo=False, input_names=["user", "live"],
                              dynamic_axes={"user": {0: "n"}, "live": {0: "n"}})
        specs.append(f"onnx:{path}")
    values = []
    for spec in specs:
        code, out, _ = run(capsys, live, "--policy", spec, "--estimators", "snips,ncis,dm",
                           *FAST)
        assert code == 0, out
        assert "dm: not estimated: an external policy brings no reward model" in out
        values.append([line.split()[1] for line in out.splitlines()[3:5]])
    assert all(v == values[0] for v in values)
    code, out, _ = run(capsys, live, "--policy", PYTHON_POLICY, "--estimators", "ips,ncis",
                       *FAST)
    assert code == 0 and "python:" in out


def test_the_same_run_gives_the_same_numbers_whatever_the_batch_size(live, capsys):
    outs = [run(capsys, live, "--policy", PYTHON_POLICY, "--estimators", "ips,ncis_per_decision",
                *FAST[:-1], rows)[1].splitlines()[1:] for rows in ("7", "100000")]
    assert outs[0] == outs[1]


def test_a_build_live_samples_output_is_scored_on_its_held_out_users(live, tmp_path, capsys):
    from rliv_ray.data.live_build import build_live_samples

    manifest = build_live_samples(live, tmp_path / "samples", groups=3, progress=False)
    code, out, _ = run(capsys, tmp_path / "samples", "--policy", PYTHON_POLICY, "--estimators",
                       "ips", *FAST)
    assert code == 0 and "held-out users of a build-live-samples output" in out
    assert f"ope: {manifest['test']['rows']:,} requests" in out  # beta from the log's world


def rewrite(live, tmp_path, fn):
    """A copy of the log with fn(table) -> table applied to its first file."""
    out = tmp_path / "log"
    out.mkdir()
    for i, f in enumerate(io.log_files(live)):
        table = pq.read_table(f)
        pq.write_table(fn(table) if i == 0 else table, out / f.name)
    return out


def set_column(table, name, values):
    field = table.field(name).with_nullable(True)
    return table.set_column(table.column_names.index(name), field, pa.array(values, field.type))


@pytest.mark.parametrize("value, words", [(0.0, "behavior_prob is 0 on 1 of"),
                                          (None, "behavior_prob is missing (NaN or infinite)")])
def test_a_missing_or_zero_propensity_is_one_line(live, tmp_path, capsys, value, words):
    def broken(table):
        values = table[S.BEHAVIOR_PROB].to_pylist()
        values[5] = value
        return set_column(table, S.BEHAVIOR_PROB, values)

    code, _, err = run(capsys, rewrite(live, tmp_path, broken), "--policy", PYTHON_POLICY,
                       "--beta", "0.5", *FAST)
    assert code == EXIT_INVALID and words in err and "fix the log" in err
    assert len(err.strip().splitlines()) == 1


def test_a_policy_over_another_action_space_is_one_line(live, tmp_path, capsys):
    code, _, err = run(capsys, live, "--policy", f"python:{__name__}:three_actions", *FAST)
    assert code == EXIT_INVALID and "3 probabilities per request" in err
    assert "another action space" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, live, "--policy", "rliv:runs/ua/scorer.pt", *FAST)
    assert code == EXIT_INVALID and "an RLIV-UA scorer" in err and "another action space" in err
    grid = rewrite(live, tmp_path, lambda t: set_column(
        t, S.ACTION, pc.multiply(t[S.ACTION], pa.scalar(2, pa.int8())).to_numpy()))
    code, _, err = run(capsys, grid, "--policy", PYTHON_POLICY, "--beta", "0.5", *FAST)
    assert code == EXIT_INVALID and "the log holds action 2" in err
    assert len(err.strip().splitlines()) == 1


def test_logs_of_another_world_are_one_line(live, tmp_path, capsys):
    ua = tmp_path / "ua"
    ua.mkdir()
    pq.write_table(pa.table({S.USER_ID: [1], S.AUTHOR_ID: [2], S.ACTION: [0],
                             S.BEHAVIOR_PROB: [0.5]}), ua / "part-00000.parquet")
    narrow = write_policy(tmp_path / "narrow.pt", user_dim=7)
    code, _, err = run(capsys, ua, "--policy", narrow, *FAST)
    assert code == EXIT_INVALID and "a user-author log of RLIV-UA's world" in err
    code, _, err = run(capsys, live, "--policy", narrow, *FAST)
    assert code == EXIT_INVALID and "user_features of width 7, this log's are 9 wide" in err
    assert len(err.strip().splitlines()) == 1


def test_an_unsorted_file_is_one_line(live, tmp_path, capsys):
    shuffled = rewrite(live, tmp_path, lambda t: t.take(
        pa.array(np.random.default_rng(0).permutation(t.num_rows))))
    code, _, err = run(capsys, shuffled, "--policy", PYTHON_POLICY, "--beta", "0.5", *FAST)
    assert code == EXIT_INVALID and "not sorted by user" in err


def test_the_parser_spells_the_streaming_names_right():
    assert cli_ope.ESTIMATORS == streaming.ESTIMATORS
    assert cli_ope.DEFAULT_ESTIMATORS == streaming.DEFAULT_ESTIMATORS
    assert cli_ope.DEFAULT_TAU == streaming.DEFAULT_TAU


def test_a_checkpoint_loads_with_its_runs_edges_and_reward_scale(tmp_path):
    from rliv_ray.algorithms.common.checkpoint import build_module, write_module
    from rliv_ray.algorithms.sl_mgac.config import SETTINGS_DEFAULTS, SPEC_DEFAULTS

    config = {**SPEC_DEFAULTS, **SETTINGS_DEFAULTS, **TINY, "user_dim": 9, "live_dim": 5,
              "groups": 6, "method": "SL-MGAC", "discretise": False}
    description = json.loads(json.dumps({"class": "SLMGACModule", "obs_dim": 9, "n_actions": 2,
                                         "model_config": config}))
    checkpoint = tmp_path / "run" / "checkpoints" / "iter_1"
    write_module(build_module(description), checkpoint, description)
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / io.MANIFEST).write_text(json.dumps({"edges": EDGES, "groups": 6}))
    (tmp_path / "run" / "train.json").write_text(json.dumps(
        {"samples": str(tmp_path / "samples"), "config": {"reward_scale": 0.01}}))
    target = load_target(TargetSpec(str(checkpoint)))
    assert target.method == "SL-MGAC" and list(target.edges) == EDGES
    assert target.reward_scale == 0.01 and target.reward_note is None  # w/o DD: scale known
    obs = {S.USER_FEATURES: np.zeros((3, 9), np.float32), S.LIVE_FEATURES: np.zeros((3, 5),
           np.float32), S.LIVE_ID: np.array([1, -1, 2]), S.LIVE_HISTORY: np.full((3, 4), -1,
           np.int32), S.VIDEO_HISTORY: np.zeros((3, 4), np.int32), S.LIVE_WATCH_3W_S:
           np.array([0.0, 50.0, 900.0]), S.USER_ID: np.array([1, 2, 3]),
           S.TS_MS: np.array([0, 0, 0]), S.REQUEST_ID: np.arange(3), S.USER_REQUEST_IDX:
           np.zeros(3, np.int64)}
    probs = target.probabilities(obs)
    assert probs.shape == (3, 2) and probs[1, 1] == 0.0
    assert target.reward_model(obs, np.array([5, 5, 5]), 0.5).shape == (3, 2)
