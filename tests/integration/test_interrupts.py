"""`rliv train` stopped as a scheduler stops it, then killed, then resumed (issue 17, sections 3
and 7): SIGTERM stops the run after the iteration in progress, writes its checkpoint, says so
in one line and exits 143 with its Ray shut down; the same command with --resume, killed with
SIGKILL, and run once more with --resume, ends with the parameters of one uninterrupted run,
every iteration once in metrics.jsonl and once in its one MLflow run.

(SIGINT takes the same path as SIGTERM, :class:`rliv_ray.interrupts.StopSignals`, and exits
130: tests/unit/test_train_loop.py.)"""

import re
import signal

import pytest

from rliv_ray.cli import main
from rliv_ray.train_loop import latest_checkpoint
from tests.integration.processes import (
    Command,
    assert_same_parameters,
    metrics_lines,
    no_traceback,
    parameters,
    wait_gone,
)
from tests.sampleshards import write_shards

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ITERATIONS = 10
KEPT = re.compile(r"rliv train: interrupted \(SIGTERM\); kept the checkpoint of iteration (\d+) "
                  r"\((.+)\): run the same command with --resume to continue")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("ua"), rows=1024, files=2)  # 8 batches


def train_args(samples, out, *extra):
    """Many short iterations, a checkpoint every 4: the interrupt's checkpoint is its own."""
    return ["train", "rliv-ua", str(samples), "--out", str(out), "--iterations", str(ITERATIONS),
            "--updates-per-iteration", "2", "--checkpoint-every", "4", "--quiet",
            "--set", "train_batch_size_per_learner=128", "--set", "id_buckets=1024", *extra]


def test_sigterm_then_sigkill_then_resume_equals_one_run(ray4, shards, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    assert main(train_args(shards, tmp_path / "whole")) == 0  # the reference, in this process
    out, uri = tmp_path / "run", f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = train_args(shards, out, "--tracking-uri", uri)

    first = Command(args, tmp_path, "first")
    first.wait_for(lambda: len(metrics_lines(out)) >= 1, "the first iteration")
    first.signal(signal.SIGTERM)
    assert first.finish() == 143, first.stderr()[-3000:]
    err = first.stderr()
    no_traceback(err)
    assert [line for line in err.splitlines() if line.startswith("rliv")] == [
        err.strip().splitlines()[-1]], err[-3000:]  # one line of ours, the last one
    said = KEPT.fullmatch(err.strip().splitlines()[-1])
    assert said, err[-2000:]
    kept = latest_checkpoint(out)
    assert (kept.iteration, str(kept.checkpoint)) == (int(said.group(1)), said.group(2))
    assert kept.iteration < ITERATIONS
    assert [m["iteration"] for m in metrics_lines(out)] == list(range(1, kept.iteration + 1))
    assert wait_gone(first.pid) == []  # its Ray was shut down with it
    assert not first.stdout().strip()  # no report: the run did not finish

    second = Command([*args, "--resume"], tmp_path, "second")
    second.wait_for(lambda: len(metrics_lines(out)) >= kept.iteration + 2, "two more iterations")
    second.signal(signal.SIGKILL)
    assert second.finish() == -signal.SIGKILL
    assert kept.iteration <= latest_checkpoint(out).iteration < ITERATIONS

    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    no_traceback(capsys.readouterr().err)
    assert_same_parameters(parameters(tmp_path / "whole"), parameters(out))
    assert [m["iteration"] for m in metrics_lines(out)] == list(range(1, ITERATIONS + 1))

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("rliv-ray").experiment_id])
    assert len(runs) == 1  # both restarts continued the first run
    history = client.get_metric_history(runs[0].info.run_id, "loss/total")
    assert sorted(m.step for m in history) == list(range(1, ITERATIONS + 1))  # each step once
    assert client.get_run(runs[0].info.run_id).info.status == "FINISHED"
