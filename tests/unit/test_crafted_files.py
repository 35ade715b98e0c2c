"""No code from data: a crafted pickle fed to every path that reads a file back is refused with
one line (``rliv`` exit status 1), and its payload never runs.

The payload is a pickle whose ``__reduce__`` runs a shell command that creates a marker file;
the fixture first shows that unpickling it really does. It is fed in two forms, a
``torch.save`` zip archive and a plain pickle, to: resuming training (and an RLlib checkpoint
of an earlier version), export (``load_module``), SL-MGAC's policy (``evaluate-ope``), the
RLIV-UA scorer (``rerank``, ``evaluate --policy rliv:``), the ASA model and the learned
simulator (``evaluate SIM``); and ``rliv sweep --resume`` must ignore crafted pickles where Ray
Tune keeps its experiment state (it reads only its own JSON records). No Ray runtime is started.
"""

import json
import os
import pickle
import shlex

import pytest
import torch

from rliv_ray.algorithms.common.checkpoint import (
    MODULE_FILE,
    STATE_FILE,
    build_module,
    load_module,
    module_description,
    read_state,
    write_module,
)
from rliv_ray.algorithms.rliv_ua.train import TrainSettings, build_config
from rliv_ray.algorithms.sl_mgac.train import load_policy
from rliv_ray.cli import EXIT_INVALID, main
from rliv_ray.evaluation.sim_model import FORMAT, SIMULATOR_FILE, LearnedSimulator
from rliv_ray.mdp.asa import ASAPredictor
from rliv_ray.offline.shards import inspect_shards
from rliv_ray.serving import ServingConfig, load_scorer
from rliv_ray.tensor_files import DataFileError
from rliv_ray.train_loop import CHECKPOINTS, LATEST
from tests.sampleshards import write_shards

SMALL = {"hidden": (8,), "embedding_dim": 4, "id_buckets": 64, "id_rows_per_id": 0}


class Payload:
    """Unpickling this runs ``touch MARKER`` in a shell."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


@pytest.fixture
def marker(tmp_path):
    live = tmp_path / "the_payload_is_live"
    pickle.loads(pickle.dumps(Payload(live)))  # noqa: S301 - shows the payload works
    assert live.exists()
    return tmp_path / "written_by_the_payload"


def craft(path, marker, form):
    """A crafted file at ``path``: a torch.save archive with the payload beside plausible
    fields, or a plain pickle of the payload."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if form == "torch":
        torch.save({"meta": "{}", "state_dict": {}, "x": Payload(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(Payload(marker)))
    return path


FORMS = ["torch", "pickle"]


def refused(capsys, argv) -> str:
    """Run the CLI; it must exit 1 with one line on stderr, which is returned."""
    assert main([str(a) for a in argv]) == EXIT_INVALID
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"rliv {argv[0]}: error: "), err
    return err


@pytest.fixture(scope="module")
def rliv_ua(tmp_path_factory):
    """Sample shards and the module description `rliv train rliv-ua SHARDS` would record."""
    shards = write_shards(tmp_path_factory.mktemp("shards"), rows=256, files=1)
    config = build_config(inspect_shards(shards), TrainSettings(training=SMALL))
    return shards, config


def checkpoint_dir(out, config, iteration=2):
    """A checkpoint as training writes it (state.json and module.pt), pointed to by latest."""
    path = out / CHECKPOINTS / f"iter_{iteration:06d}"
    description = module_description(config)
    write_module(build_module(description), path, description)
    meta = json.loads((path / "state.json").read_text())
    (path / "state.json").write_text(json.dumps({**meta, "iteration": iteration,
                                                 "updates": 3 * iteration, "metrics": {}}))
    (out / CHECKPOINTS / LATEST).write_text(path.name + "\n")
    return path


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", [MODULE_FILE, STATE_FILE])
def test_resume_refuses_crafted_state_files(rliv_ua, tmp_path, marker, form, name):
    _, config = rliv_ua
    path = checkpoint_dir(tmp_path / "run", config)
    torch.save({"w": torch.zeros(1)}, path / STATE_FILE)
    craft(path / name, marker, form)
    with pytest.raises(DataFileError, match=f"{name}: not a checkpoint's") as err:
        read_state(path, config)
    assert "\n" not in str(err.value) and not marker.exists()


def test_train_resume_refuses_a_crafted_checkpoint_before_ray(rliv_ua, tmp_path, marker,
                                                              capsys):
    shards, config = rliv_ua
    path = checkpoint_dir(tmp_path / "run", config)
    craft(path / MODULE_FILE, marker, "torch")
    small = [x for k, v in SMALL.items() for x in ("--set", f"{k}={json.dumps(v)}")]
    err = refused(capsys, ["train", "rliv-ua", shards, "--out", tmp_path / "run", "--resume",
                           "--quiet", *small])
    assert "module.pt: not a checkpoint's module weights" in err and not marker.exists()


def test_train_resume_refuses_an_rllib_checkpoint_of_an_earlier_version(rliv_ua, tmp_path,
                                                                       marker, capsys):
    shards, _ = rliv_ua
    old = tmp_path / "run" / CHECKPOINTS / "iter_000002"
    craft(old / "algorithm_state.pkl", marker, "pickle")
    (old / "rliv_train.json").write_text('{"iteration": 2, "updates": 6, "metrics": {}}')
    (old.parent / LATEST).write_text("iter_000002\n")
    err = refused(capsys, ["train", "rliv-ua", shards, "--out", tmp_path / "run", "--resume"])
    assert "earlier rliv-ray, which is not read" in err and not marker.exists()


@pytest.mark.parametrize("form", FORMS)
def test_export_refuses_crafted_module_weights(rliv_ua, tmp_path, marker, form):
    _, config = rliv_ua
    path = checkpoint_dir(tmp_path / "run", config)
    craft(path / MODULE_FILE, marker, form)
    with pytest.raises(DataFileError, match="not a checkpoint's module weights"):
        load_module(path)
    assert not marker.exists()


def test_export_builds_only_known_module_classes(rliv_ua, tmp_path):
    _, config = rliv_ua
    path = checkpoint_dir(tmp_path / "run", config)
    meta = json.loads((path / "state.json").read_text())
    meta["module"]["class"] = "subprocess.Popen"
    (path / "state.json").write_text(json.dumps(meta))
    with pytest.raises(DataFileError, match="'subprocess.Popen' is not one of"):
        load_module(path)


@pytest.mark.parametrize("form", FORMS)
def test_sl_mgac_policy_and_evaluate_ope_refuse_a_crafted_policy(tmp_path, marker, capsys,
                                                                 form):
    policy = craft(tmp_path / "run" / "policy.pt", marker, form)
    with pytest.raises(DataFileError, match="not a policy file written by"):
        load_policy(policy)
    err = refused(capsys, ["evaluate-ope", tmp_path / "no-samples-needed", tmp_path / "run",
                           "--quiet"])
    assert "policy.pt: not a policy file" in err and not marker.exists()


@pytest.mark.parametrize("form", FORMS)
def test_scorer_and_rerank_refuse_a_crafted_scorer(rliv_ua, tmp_path, marker, capsys, form):
    shards, _ = rliv_ua
    scorer = craft(tmp_path / "scorer.pt", marker, form)
    with pytest.raises(DataFileError, match="not an RLIV-UA scorer"):
        load_scorer(scorer, ServingConfig(top_k=3))
    err = refused(capsys, ["rerank", scorer, shards])
    assert "scorer.pt: not an RLIV-UA scorer" in err and not marker.exists()


def test_evaluate_refuses_a_crafted_scorer_and_a_crafted_simulator(tmp_path, marker, capsys):
    assert main(["generate", str(tmp_path / "world"), "--users", "20", "--days", "2",
                 "--quiet"]) == 0
    capsys.readouterr()
    craft(tmp_path / "run" / "scorer.pt", marker, "torch")
    err = refused(capsys, ["evaluate", tmp_path / "world", "--policy", "RankingModel",
                           "--policy", f"rliv:{tmp_path / 'run'}", "--seeds", "1", "--quiet"])
    assert "not an exported RLIV-UA scorer" in err
    sim = tmp_path / "sim"
    craft(sim / "models.pt", marker, "pickle")
    (sim / SIMULATOR_FILE).write_text(json.dumps({"format": FORMAT}))
    with pytest.raises(DataFileError, match="not a learned simulator's models"):
        LearnedSimulator.load(sim)
    err = refused(capsys, ["evaluate", sim, "--policy", "RankingModel", "--seeds", "1",
                           "--quiet"])
    assert "models.pt: not a learned simulator's models" in err and not marker.exists()


@pytest.mark.parametrize("form", FORMS)
def test_the_asa_model_refuses_a_crafted_file(tmp_path, marker, form):
    path = craft(tmp_path / "asa.pt", marker, form)
    with pytest.raises(DataFileError, match="asa.pt: not an ASA model") as err:
        ASAPredictor.load(path)
    assert "\n" not in str(err.value) and not marker.exists()


SWEEP_YAML = """
name: crafted
algorithm: sl-mgac
data: {path: unused-world}
training: {iterations: 2, eval_every: 1}
search: {gamma: {grid: [0.0, 0.5, 0.9]}}
"""


def finished_sweep(out, policy_dir):
    """A sweep directory as `rliv sweep` leaves it after its trials ran: sweep.yaml, each
    trial's JSON record (finished, two reports) and cached truth."""
    import yaml

    from rliv_ray.sweep.config import parse_sweep
    from rliv_ray.sweep.records import write_record
    from rliv_ray.sweep.space import plan_trials

    out.mkdir(parents=True)
    (out / "sweep.yaml").write_text(SWEEP_YAML)
    plan = plan_trials(parse_sweep(yaml.safe_load(SWEEP_YAML)))
    for i, (trial_id, point) in enumerate(plan.items()):
        policy = policy_dir / trial_id / "policies" / "iter_000002.pt"
        policy.parent.mkdir(parents=True)
        policy.write_bytes(b"weights")
        reports = [{"iteration": k, "eval/ncis": float(i + k), "eval/snips": float(3 - i),
                    "policy": str(policy)} for k in (1, 2)]
        write_record(out / "trials", {"trial_id": trial_id, "point": point, "seed": i,
                                      "status": "finished", "reports": reports, "error": None})
        (out / "trials" / trial_id / "truth.json").write_text(json.dumps(
            {"policy": str(policy), "truth": {"truth/value": 10.0 - i}}))
    return plan


def resume(tmp_path, out, monkeypatch, capsys):
    """`rliv sweep CONFIG --resume` with the data and Tune stubbed out: (exit status, the
    trials handed to Tune)."""
    import socket

    from rliv_ray.sweep import data
    from rliv_ray.sweep import run as sweep_run

    handed = []
    monkeypatch.setattr(sweep_run, "_prepare_data", lambda config, out, say: (out / "w", {}))
    monkeypatch.setattr(data, "samples_for", lambda *args: "unused-samples")
    monkeypatch.setattr(sweep_run, "_run_tune",
                        lambda config, out, world, samples, tracker, plan, pending, done,
                        address: handed.extend(pending))
    config = tmp_path / "crafted.yaml"
    config.write_text(SWEEP_YAML)
    with socket.socket() as s:  # MLflow at a free port: one warning, the sweep goes on
        s.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{s.getsockname()[1]}"
    code = sweep_run.run_sweep(config, out, resume=True, tracking_uri=uri, say=print)
    capsys.readouterr()
    return code, handed


def test_sweep_resume_ignores_crafted_tune_state_and_reads_only_its_json(tmp_path, marker,
                                                                           monkeypatch, capsys):
    out = tmp_path / "sweep"
    plan = finished_sweep(out, out / "trials")
    tune = out / "tune" / "attempt_1"
    for name in ("tuner.pkl", "trainable.pkl", "searcher-state-2025-01-01_00-00-00.pkl",
                 "trial_0/params.pkl", "trial_0/checkpoint_000000/data.pkl"):
        craft(tune / name, marker, "pickle")
    craft(tune / "experiment_state-2025-01-01_00-00-00.json", marker, "pickle")
    first = next(iter(plan))
    craft(out / "trials" / first / "trial.json", marker, "pickle")  # not JSON: runs again

    code, handed = resume(tmp_path, out, monkeypatch, capsys)
    assert handed == [first]  # the others' records say finished: never run again
    assert code == 130  # Tune (stubbed) did not run it, so the sweep is not over
    assert not marker.exists()

    from rliv_ray.sweep.records import read_record

    assert read_record(out / "trials", first) is None  # the crafted record reads as none
    finished_sweep(tmp_path / "again", tmp_path / "again" / "trials")
    for name in ("tuner.pkl", "experiment_state-2025-01-01_00-00-00.json"):
        craft(tmp_path / "again" / "tune" / name, marker, "torch")
    code, handed = resume(tmp_path, tmp_path / "again", monkeypatch, capsys)
    assert code == 0 and handed == []  # every trial finished: the summary, without Tune
    summary = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert [t["trial_id"] for t in summary["trials"]] == list(plan)
    assert summary["regret"]["estimator_pick"] == list(plan)[-1]  # best eval/ncis
    assert summary["regret_by_metric"]["eval/snips"]["estimator_pick"] == list(plan)[0]
    assert not marker.exists()


def test_no_code_path_unpickles_or_restores_tune_state():
    """The package neither unpickles (``rliv ope``'s Ray tasks return Arrow columns) nor
    restores a Tune experiment (its state is pickled)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "rliv_ray"
    pattern = re.compile(r"pickle\.loads?\(|Tuner\.restore\(|cloudpickle|weights_only=False")
    hits = [f"{path.relative_to(root)}:{n}" for path in root.rglob("*.py")
            for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []
