"""Faults survived, output identical (issue 17, section 7):

* `rliv train` killed with SIGKILL and run again with the same command plus --resume ends with
  the parameters of an uninterrupted run; metrics.jsonl and the MLflow run have each iteration
  once;
* a Ray worker killed (SIGKILL) while it runs a task of `rliv build-samples --workers 2`: Ray
  Data runs the task again, the command succeeds and its shards are byte for byte those of an
  undisturbed run;
* the MLflow server killed while `rliv train` logs to it: training finishes (exit 0) and the
  loss of tracking is one warning line;
* a loss that becomes infinite (an extreme reward in one tower's column): one line naming the
  iteration, the update, the tower and the loss term; the last good checkpoint is kept, exit 1.
"""

import contextlib
import json
import os
import signal
import subprocess
import time

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rliv_ray import schema as S
from rliv_ray.cli import main
from rliv_ray.train_loop import latest_checkpoint
from tests.integration.processes import (
    Command,
    assert_same_parameters,
    metrics_lines,
    no_traceback,
    parameters,
    session,
)
from tests.sampleshards import write_shards

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def live_samples(tmp_path_factory):
    root = tmp_path_factory.mktemp("live")
    assert main(["generate-live", str(root / "world"), "--users", "80", "--days", "1",
                 "--quiet"]) == 0
    assert main(["build-live-samples", str(root / "world"), str(root / "samples"),
                 "--groups", "2", "--quiet"]) == 0
    return root / "samples"


def sl_mgac_args(samples, out, *extra):
    return ["train", "sl-mgac", str(samples), "--out", str(out), "--iterations", "12",
            "--updates-per-iteration", "2", "--checkpoint-every", "3", "--quiet",
            "--set", "train_batch_size_per_learner=128", *map(str, extra)]


def test_killed_and_restarted_training_equals_an_uninterrupted_run(ray4, live_samples,
                                                                   tmp_path):
    from mlflow.tracking import MlflowClient

    assert main(sl_mgac_args(live_samples, tmp_path / "whole")) == 0  # the reference

    out, uri = tmp_path / "run", f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = sl_mgac_args(live_samples, out, "--tracking-uri", uri)
    killed = Command(args, tmp_path, "killed")
    # Killed after iteration 4: its last checkpoint is iteration 3, or 6 if it got that far.
    killed.wait_for(lambda: len(metrics_lines(out)) >= 4, "iteration 4")
    killed.signal(signal.SIGKILL)
    assert killed.finish() == -signal.SIGKILL
    assert latest_checkpoint(out).iteration in (3, 6)

    restarted = Command([*args, "--resume"], tmp_path, "restarted")
    assert restarted.finish() == 0, restarted.stderr()[-3000:]
    no_traceback(restarted.stderr())
    assert_same_parameters(parameters(tmp_path / "whole"), parameters(out))
    assert [m["iteration"] for m in metrics_lines(out)] == list(range(1, 13))

    client = MlflowClient(uri)
    run_id = json.loads((out / "mlflow_run.json").read_text())["run_id"]
    runs = client.search_runs([client.get_experiment_by_name("rliv-ray").experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]  # the restart continued the same run
    history = client.get_metric_history(run_id, "loss/total")
    assert sorted(m.step for m in history) == list(range(1, 13))  # each iteration once
    assert client.get_run(run_id).info.status == "FINISHED"


def test_a_ray_worker_killed_while_building_samples(ray4, tmp_path):
    """The worker runs a task of ours when it is killed (its title names the function); Ray
    Data retries tasks whose worker died (``max_retries=-1``), and the per-file functions write
    their outputs whole, so the retried task writes what the first attempt would have."""
    world = tmp_path / "world"
    assert main(["generate", str(world), "--users", "300", "--days", "3", "--files", "4",
                 "--quiet"]) == 0
    build = ["build-samples", str(world), "--workers", "2", "--asa-epochs", "1", "--quiet"]
    assert main([*build[:2], str(tmp_path / "undisturbed"), *build[2:]]) == 0

    run = Command([*build[:2], tmp_path / "disturbed", *build[2:]], tmp_path, "disturbed")
    victims = []

    def a_task_is_running() -> bool:
        for process in session(run.pid):
            try:
                title = process.cmdline()
            except Exception:  # noqa: BLE001 - gone meanwhile
                continue
            if title and title[0].startswith("ray::MapBatches(_call_on_batch)"):
                os.kill(process.pid, signal.SIGKILL)
                victims.append((process.pid, title[0]))
                return True
        return False

    run.wait_for(a_task_is_running, "a Ray Data task of build-samples")
    assert run.finish() == 0, run.stderr()[-3000:]
    assert len(victims) == 1
    expected = sorted((tmp_path / "undisturbed" / "samples").glob("*.parquet"))
    got = sorted((tmp_path / "disturbed" / "samples").glob("*.parquet"))
    assert [p.name for p in got] == [p.name for p in expected] and len(got) == 4
    for a, b in zip(expected, got, strict=True):
        assert a.read_bytes() == b.read_bytes(), b.name


@pytest.fixture
def mlflow_server(tmp_path):
    from rliv_ray.cli_ui import free_port, server_command, server_env, wait_until_ready

    port = free_port("127.0.0.1")
    log = (tmp_path / "mlflow-server.log").open("w")
    proc = subprocess.Popen(server_command(f"sqlite:///{tmp_path / 'server.db'}", "127.0.0.1",
                                           port), cwd=tmp_path, env=server_env(), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_ready(proc, f"http://127.0.0.1:{port}", timeout=300)
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        for process in [proc, *session(proc.pid)]:
            with contextlib.suppress(ProcessLookupError, psutil.Error):
                process.kill()
        proc.wait()
        log.close()


def test_training_goes_on_when_the_mlflow_server_goes_away(mlflow_server, live_samples,
                                                           tmp_path):
    server, uri = mlflow_server
    out = tmp_path / "run"
    run = Command(sl_mgac_args(live_samples, out, "--tracking-uri", uri), tmp_path, "train")
    run.wait_for(lambda: len(metrics_lines(out)) >= 1, "the first iteration")
    os.killpg(server.pid, signal.SIGKILL)  # the server and its workers
    server.wait()
    began = time.monotonic()
    assert run.finish() == 0, run.stderr()[-3000:]
    err = run.stderr()
    no_traceback(err)
    warnings = [line for line in err.splitlines() if "MLflow" in line]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"rliv: warning: MLflow at {uri} failed (log metrics: ")
    assert warnings[0].endswith("going on without tracking")
    assert time.monotonic() - began < 120  # not minutes of retries
    report = json.loads((out / "train.json").read_text())
    assert report["iteration"] == 12 and (out / "policy.pt").exists()
    assert [m["iteration"] for m in metrics_lines(out)] == list(range(1, 13))


def test_an_infinite_loss_names_the_tower_and_term_and_keeps_the_last_checkpoint(
        ray4, tmp_path, capsys):
    """One gift reward of 1e30 (finite, so the shard reader takes it) in the third batch: the
    gift tower's TD error squared overflows at update 3."""
    samples = write_shards(tmp_path / "shards", rows=512, files=2)  # 4 batches of 128
    second = sorted((samples / "samples").glob("*.parquet"))[1]
    table = pq.read_table(second)
    gift = S.reward_column(S.GIFT)
    rewards = table[gift].to_numpy().copy()
    rewards[10] = 1e30  # row 256 + 10 of the log: batch 3
    index = table.schema.get_field_index(gift)
    pq.write_table(table.set_column(index, table.schema.field(index),
                                    pa.array(rewards.astype(np.float32))), second)
    out = tmp_path / "run"
    code = main(["train", "rliv-ua", str(samples), "--out", str(out), "--iterations", "6",
                 "--updates-per-iteration", "1", "--checkpoint-every", "1", "--quiet",
                 "--set", "train_batch_size_per_learner=128", "--set", "id_buckets=1024"])
    err = capsys.readouterr().err
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("rliv train:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("rliv train: error: training diverged at iteration 3, update 3: "
                               "the td loss of tower gift is inf (also not finite: ")
    good = latest_checkpoint(out)
    assert good.iteration == 2 and f"Last good checkpoint: {good.checkpoint}." in lines[0]
    assert [m["iteration"] for m in metrics_lines(out)] == [1, 2]
