"""Ctrl-C and SIGTERM in `rliv train`, as a terminal and a scheduler send them: the run stops
after the iteration in progress, writes its checkpoint, says so in one line, exits 130 / 143
with Ray shut down, and `--resume` (the same command) finishes the run with every iteration
logged once."""

import re
import signal

import pytest

from rliv_ray.cli import main
from rliv_ray.train_loop import latest_checkpoint
from tests.integration.processes import Command, metrics_lines, no_traceback, wait_gone
from tests.sampleshards import write_shards

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ITERATIONS = 30
KEPT = re.compile(r"rliv train: interrupted \((SIGINT|SIGTERM)\); kept the checkpoint of "
                  r"iteration (\d+) \((.+)\): run the same command with --resume to continue")


@pytest.fixture(scope="module")
def ua_shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("ua"), rows=1024, files=2)


@pytest.fixture(scope="module")
def live_samples(tmp_path_factory):
    root = tmp_path_factory.mktemp("live")
    assert main(["generate-live", str(root / "world"), "--users", "80", "--days", "1",
                 "--quiet"]) == 0
    assert main(["build-live-samples", str(root / "world"), str(root / "samples"),
                 "--groups", "2", "--quiet"]) == 0
    return root / "samples"


def train_args(algorithm, samples, out):
    """Many short iterations, a checkpoint every 10: the interrupt's checkpoint is its own."""
    small = {"rliv-ua": ["--set", "train_batch_size_per_learner=128", "--set", "id_buckets=1024"],
             "sl-mgac": ["--set", "train_batch_size_per_learner=128"]}[algorithm]
    return ["train", algorithm, samples, "--out", out, "--iterations", ITERATIONS,
            "--updates-per-iteration", 2, "--checkpoint-every", 10, "--quiet", *small]


@pytest.mark.parametrize("algorithm,signum", [("rliv-ua", signal.SIGINT),
                                              ("sl-mgac", signal.SIGTERM)])
def test_an_interrupted_run_keeps_its_checkpoint_and_resumes(algorithm, signum, ua_shards,
                                                              live_samples, tmp_path):
    samples = ua_shards if algorithm == "rliv-ua" else live_samples
    out = tmp_path / "run"
    first = Command(train_args(algorithm, samples, out), tmp_path, "first")
    first.wait_for(lambda: len(metrics_lines(out)) >= 1, "the first iteration")
    if signum == signal.SIGINT:
        first.interrupt()  # Ctrl-C: the whole foreground process group
    else:
        first.signal(signum)  # a scheduler: the command's process
    assert first.finish() == 128 + signum, first.stderr()[-3000:]
    err = first.stderr()
    no_traceback(err)
    assert err.count("rliv train:") == 1
    said = KEPT.fullmatch(err.strip().splitlines()[-1])  # the last line: nothing after it
    assert said, err[-2000:]
    assert said.group(1) == signal.Signals(signum).name
    kept = latest_checkpoint(out)
    assert (kept.iteration, str(kept.checkpoint)) == (int(said.group(2)), said.group(3))
    assert kept.iteration < ITERATIONS and kept.iteration % 10  # written for the interrupt
    assert [m["iteration"] for m in metrics_lines(out)] == list(range(1, kept.iteration + 1))
    assert wait_gone(first.pid) == []  # Ray was shut down with it
    assert not first.stdout().strip()  # no report: the run did not finish

    again = Command([*train_args(algorithm, samples, out), "--resume"], tmp_path, "again")
    assert again.finish() == 0, again.stderr()[-3000:]
    no_traceback(again.stderr())
    assert [m["iteration"] for m in metrics_lines(out)] == list(range(1, ITERATIONS + 1))
    assert latest_checkpoint(out).iteration == ITERATIONS
    assert (out / ("scorer.pt" if algorithm == "rliv-ua" else "policy.pt")).exists()


def test_an_interrupt_before_the_first_iteration_leaves_nothing(ua_shards, tmp_path):
    """SIGTERM while Ray starts or the algorithm is built: one line, exit 143, and OUT is gone
    (a new run had nothing to keep), so the same command can simply be run again."""
    out = tmp_path / "run"
    run = Command(train_args("rliv-ua", ua_shards, out), tmp_path, "early")
    run.wait_for(lambda: (out / "training_fields.json").exists(), "OUT being claimed")
    run.signal(signal.SIGTERM)
    assert run.finish() == 143, run.stderr()[-3000:]
    err = run.stderr()
    no_traceback(err)
    assert err.strip().splitlines()[-1] == ("rliv train: interrupted (SIGTERM) before the first "
                                            "checkpoint; nothing to resume")
    assert not out.exists() and not list(tmp_path.glob("run.*"))  # no OUT, no lock
    assert wait_gone(run.pid) == []
