"""Faults survived, output identical (issue 17, section 7), each in this process on the test's
Ray while a watcher thread brings the fault:

* a Ray worker killed (SIGKILL) while it runs a task of `rliv build-samples --workers 2`: Ray
  Data runs the task again, the command succeeds and its shards are byte for byte those of an
  undisturbed run;
* the MLflow server killed while `rliv train` logs to it: training finishes (exit 0) and the
  loss of tracking is one warning line.

`rliv train` killed with SIGKILL and restarted: tests/integration/test_interrupts.py; a loss
that becomes NaN or infinite: tests/integration/test_rliv_ua_train.py
(``test_a_diverging_loss_stops_training``).
"""

import contextlib
import os
import signal
import subprocess
import threading
import time

import psutil
import pytest

from rliv_ray.cli import main
from tests.integration.processes import Command, metrics_lines, no_traceback, session, wait_gone
from tests.sampleshards import write_shards

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@contextlib.contextmanager
def watching(fault):
    """Call ``fault()`` every 20 ms in a thread until it returns True (it brought the fault)
    or the block ends."""
    done = threading.Event()

    def watch():
        while not done.is_set() and not fault():
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def test_a_ray_worker_killed_while_building_samples(ray4, tmp_path):
    """Ray Data retries a task whose worker died, and the per-file functions write their
    outputs whole, so the retried task writes what the first attempt would have."""
    world = tmp_path / "world"
    assert main(["generate", str(world), "--users", "200", "--days", "2", "--files", "4",
                 "--quiet"]) == 0

    def build(out):
        return main(["build-samples", str(world), str(out), "--workers", "2", "--asa-epochs",
                     "1", "--quiet"])

    assert build(tmp_path / "undisturbed") == 0
    victims = []

    def kill_a_task() -> bool:
        for process in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error, IndexError):
                title = process.cmdline()[0]
                if title.startswith("ray::MapBatches(_call_on_batch)"):
                    process.kill()
                    victims.append(title)
                    return True
        return False

    with watching(kill_a_task):
        assert build(tmp_path / "disturbed") == 0
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


def test_training_goes_on_when_the_mlflow_server_goes_away(ray4, mlflow_server, tmp_path,
                                                           capsys):
    server, uri = mlflow_server
    samples, out = write_shards(tmp_path / "shards", rows=512, files=1), tmp_path / "run"
    gone = []

    def kill_the_server() -> bool:
        if not metrics_lines(out):
            return False
        os.killpg(server.pid, signal.SIGKILL)  # the server and its workers
        server.wait()
        gone.append(len(metrics_lines(out)))
        return True

    with watching(kill_the_server):
        code = main(["train", "rliv-ua", str(samples), "--out", str(out), "--iterations", "12",
                     "--updates-per-iteration", "2", "--checkpoint-every", "4", "--quiet",
                     "--set", "train_batch_size_per_learner=128", "--set", "id_buckets=1024",
                     "--tracking-uri", uri])
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    assert gone and gone[0] < 12  # the server went away while the run went on
    no_traceback(err)
    warnings = [line for line in err.splitlines() if "MLflow" in line]
    assert len(warnings) == 1, err[-3000:]
    assert warnings[0].startswith(f"rliv: warning: MLflow at {uri} failed (")
    assert warnings[0].endswith("going on without tracking")
    assert [m["iteration"] for m in metrics_lines(out)] == list(range(1, 13))
    assert (out / "scorer.pt").exists()


def test_remote_learners_leave_no_process_behind(tmp_path):
    """`rliv train --num-learners 2` in a process of its own (its own local Ray): when it ends,
    every process it started has ended too. A remote learner used to stay on, orphaned,
    retrying to reach the Ray that had shut down (``runner.no_reconnect_in_workers``)."""

    shards = write_shards(tmp_path / "shards", rows=512, files=2)
    run = Command(["train", "rliv-ua", str(shards), "--out", str(tmp_path / "out"),
                   "--iterations", "1", "--updates-per-iteration", "2", "--num-learners", "2",
                   "--quiet", "--set", "train_batch_size_per_learner=64",
                   "--set", "id_buckets=1024"], tmp_path, "train")
    try:
        assert run.proc.wait() == 0, run.stderr()[-3000:]
        assert wait_gone(run.pid) == []
    finally:
        run.kill_all()
