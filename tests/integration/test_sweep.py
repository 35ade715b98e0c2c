"""``rliv sweep`` end to end on a tiny live-stream world, as a person runs it: Tune trials with
ASHA on a chosen estimator (SNIPS, NCIS reported beside it), Ctrl-C, ``--resume`` from the
sweep's own records (finished trials are not run again), the summary with the regret per
estimator and the MLflow store (a parent run, a child run per trial with its params, metrics
and artifacts)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CONFIG = {
    "name": "tiny", "algorithm": "sl-mgac",
    "data": {"generate": {"users": 200, "days": 1, "seed": 0}, "samples": {"test_share": 0.25}},
    "training": {"iterations": 2, "updates_per_iteration": 3, "eval_every": 1,
                 "set": {"train_batch_size_per_learner": 64}},
    "search": {"gamma": {"grid": [0.0, 0.5, 0.9]}, "groups": {"choice": [2, 3]}},
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    "evaluation": {"estimators": ["snips", "ncis"], "metric": "eval/snips", "bootstrap": 20},
    "resources": {"ray_cpus": 4, "cpus_per_trial": 1, "max_concurrent_trials": 1},
}
TRIALS = 3


def sweep_command(config: Path, out: Path, uri: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "rliv_ray.cli", "sweep", str(config), "--out", str(out),
            "--tracking-uri", uri, *extra]


def environment() -> dict:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "RAY_AUTH_MODE": "disabled"}


def interrupt_after_first_trial(command: list[str], cwd: Path) -> tuple[int, str, list[str]]:
    """Run the sweep, press Ctrl-C once a trial has finished; (exit status, output, the
    trials that had finished)."""
    proc = subprocess.Popen(command, cwd=cwd, env=environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines, done = [], []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.strip().endswith(": done"):
                done.append(line.split()[0])
                proc.send_signal(signal.SIGINT)
                break
        rest, _ = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(lines) + rest
    done += [x.split()[0] for x in rest.splitlines() if x.strip().endswith(": done")]
    return proc.returncode, output, done


def test_sweep_interrupt_resume_summary_and_mlflow(tmp_path):
    from mlflow.tracking import MlflowClient

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    out, uri = tmp_path / "sweep", f"sqlite:///{tmp_path / 'mlflow.db'}"

    status, output, done_before = interrupt_after_first_trial(sweep_command(config, out, uri),
                                                              tmp_path)
    assert status == 130, output
    assert "interrupted after" in output and "--resume" in output
    assert 1 <= len(done_before) < TRIALS
    assert len(list((out / "samples").iterdir())) == 2  # one build per K, shared by trials

    second = subprocess.run(sweep_command(config, out, uri, "--resume"), cwd=tmp_path,
                            env=environment(), capture_output=True, text=True)
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.count(": cached") == 2
    assert "regret" in second.stdout and "| trial | gamma | groups |" in second.stdout

    summary = json.loads((out / "summary.json").read_text())
    trials = {t["trial_id"]: t for t in summary["trials"]}
    assert len(trials) == TRIALS
    assert {t["status"] for t in trials.values()} <= {"finished", "stopped early"}
    assert summary["regret"]["estimator_pick"] in trials
    assert summary["metric"] == "eval/snips"
    assert set(summary["regret_by_metric"]) == {"eval/snips", "eval/ncis"}
    assert "| eval/ncis |" in second.stdout  # the regret had NCIS been the metric
    assert sorted(p.name for p in (out / "tune").iterdir()) == ["attempt_1", "attempt_2"]
    for trial_id in trials:
        starts = (out / "trials" / trial_id / "starts.log").read_text().splitlines()
        assert len(starts) >= 1
        if trial_id in done_before:  # a finished trial is never run again
            assert len(starts) == 1
            assert trial_id not in second.stdout.split("measuring the true values")[0]

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("rliv-ray")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.info.run_name == "sweep__tiny"]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["metric"] == "eval/snips"
    assert {"sweep/regret", "sweep/regret/snips", "sweep/regret/ncis"} <= set(
        parent.data.metrics)
    parent_files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary.md", "sweep.png", "curves.png", "sweep.yaml"} <= parent_files
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
                and r.info.status == "FINISHED"]
    assert sorted(r.data.tags["rliv.trial_id"] for r in children) == sorted(trials)
    for child in children:
        trial = trials[child.data.tags["rliv.trial_id"]]
        assert float(child.data.params["gamma"]) == trial["params"]["gamma"]
        assert int(child.data.params["groups"]) == trial["params"]["groups"]
        assert {"eval/snips", "eval/snips_lo", "eval/snips_hi", "eval/snips_ess", "eval/ncis",
                "truth/value", "train/loss/total"} <= set(child.data.metrics)
        history = client.get_metric_history(child.info.run_id, "eval/snips")
        assert sorted(m.step for m in history) == list(range(1, trial["iterations"] + 1))
        files = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"policy", "plots"} <= files
