"""The shared training loop with a stand-in algorithm: checkpoints, NaN stop, resume."""

import json
import math
from pathlib import Path

import pytest

from rliv_ray.checks import interrupted
from rliv_ray.interrupts import Abort, StopSignals, TrainingInterrupted
from rliv_ray.tensor_files import DataFileError
from rliv_ray.train_loop import (
    CHECKPOINTS,
    METRICS_FILE,
    LoopSettings,
    LossNotFinite,
    TrainingDiverged,
    latest_checkpoint,
    nonfinite_terms,
    run_iterations,
)


class FakeAlgo:
    """Returns the given losses, one per train(); save_state records where it was saved."""

    def __init__(self, losses):
        self.losses = list(losses)
        self.saved = []

    def train(self):
        loss = self.losses.pop(0)
        return {"learners": {"default_policy": {"loss/total": loss, "loss/td/click": loss / 2,
                                                "q/mean/click": 1.0, "other": 3.0}}}

    def save_state(self, path: Path) -> dict:
        assert path.is_dir() and path.name.startswith("iter_") and ".tmp-" in path.name
        (path / "module.pt").write_text("weights")
        self.saved.append(path.name.split(".tmp-")[0])
        return {"module": "fake"}


def save_state(algo, path):
    return algo.save_state(path)


def run(algo, out, iterations, every=2, start=None, stop=None):
    return run_iterations(algo, out, LoopSettings(iterations=iterations, checkpoint_every=every,
                                                  progress=False),
                          updates_per_iteration=10, rows_per_update=4, start=start,
                          save_state=save_state, stop=stop)


def test_checkpoints_every_k_and_at_the_end(tmp_path):
    algo = FakeAlgo([1.0, 0.9, 0.8, 0.7, 0.6])
    result = run(algo, tmp_path, 5)
    assert algo.saved == ["iter_000002", "iter_000004", "iter_000005"]
    latest = latest_checkpoint(tmp_path)
    assert (latest.iteration, latest.updates) == (5, 50)
    assert (latest.checkpoint / "module.pt").exists()  # written in place, then renamed
    state = json.loads((latest.checkpoint / "state.json").read_text())
    assert state["module"] == "fake" and state["metrics"]["loss/total"] == 0.6
    assert not list((tmp_path / CHECKPOINTS).glob("*.tmp-*"))
    assert result["metrics"]["loss/total"] == 0.6 and "other" not in result["metrics"]
    lines = [json.loads(x) for x in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert [x["iteration"] for x in lines] == [1, 2, 3, 4, 5]
    assert lines[0]["time/rows_per_s"] == pytest.approx(lines[0]["time/updates_per_s"] * 4)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    algo = FakeAlgo([1.0, 0.9, 0.8, math.nan, 0.5])
    with pytest.raises(TrainingDiverged, match=r"at iteration 4: the td loss of tower click is "
                       r"nan \(also not finite: loss/total\); stopped.*iter_000002"):
        run(algo, tmp_path, 5)
    assert latest_checkpoint(tmp_path).checkpoint.name == "iter_000002"
    assert len(algo.saved) == 1


def test_nan_before_any_checkpoint_says_so(tmp_path):
    with pytest.raises(TrainingDiverged, match="none \\(no checkpoint"):
        run(FakeAlgo([math.inf]), tmp_path, 3)


def test_resume_counts_from_the_checkpoint(tmp_path):
    run(FakeAlgo([1.0, 0.9]), tmp_path, 2)
    start = latest_checkpoint(tmp_path)
    algo = FakeAlgo([0.8, 0.7])
    result = run(algo, tmp_path, 4, start=start)
    assert (result["iteration"], result["updates"]) == (4, 40)
    assert sorted(p.name for p in (tmp_path / CHECKPOINTS).iterdir()) == [
        "iter_000002", "iter_000004", "latest"]


def test_no_checkpoint_means_nothing_to_resume(tmp_path):
    assert latest_checkpoint(tmp_path) is None


def test_settings_are_validated():
    with pytest.raises(ValueError, match="iterations and checkpoint_every"):
        LoopSettings(iterations=0)


def test_on_checkpoint_sees_every_checkpoint_once_written(tmp_path):
    seen = []

    def on_checkpoint(checkpoint, iteration, metrics):
        assert latest_checkpoint(tmp_path).checkpoint == checkpoint  # written and pointed to
        seen.append((checkpoint.name, iteration, metrics["loss/total"]))

    run_iterations(FakeAlgo([1.0, 0.9, 0.8]), tmp_path,
                   LoopSettings(iterations=3, checkpoint_every=2, progress=False),
                   updates_per_iteration=10, rows_per_update=4, on_checkpoint=on_checkpoint,
                   save_state=save_state)
    assert seen == [("iter_000002", 2, 0.9), ("iter_000003", 3, 0.8)]


def test_a_checkpoint_of_an_earlier_version_is_refused_with_one_line(tmp_path):
    """RLlib's pickled checkpoints (what earlier versions wrote) are never read back."""
    old = tmp_path / CHECKPOINTS / "iter_000002"
    old.mkdir(parents=True)
    (old / "rliv_train.json").write_text('{"iteration": 2, "updates": 20}')
    (old / "algorithm_state.pkl").write_bytes(b"crafted")
    (tmp_path / CHECKPOINTS / "latest").write_text("iter_000002\n")
    with pytest.raises(DataFileError, match="earlier rliv-ray, which is not read") as err:
        latest_checkpoint(tmp_path)
    assert "\n" not in str(err.value)


def test_evaluate_adds_its_metrics_to_the_checkpoints_line_and_tracker(tmp_path):
    """`rliv train sl-mgac`'s off-policy estimates: computed on the checkpoint just written,
    logged in that iteration's line (nan as null) and MLflow step (finite values only)."""
    logged, seen = [], []

    class Tracker:
        def log_metrics(self, metrics, step=None):
            logged.append((step, metrics))

    def evaluate(checkpoint, iteration):
        assert latest_checkpoint(tmp_path).checkpoint == checkpoint
        seen.append(iteration)
        return {"eval/ncis": 10.0 * iteration, "eval/dr": math.nan}

    result = run_iterations(FakeAlgo([1.0, 0.9, 0.8]), tmp_path,
                            LoopSettings(iterations=3, checkpoint_every=2, progress=False),
                            updates_per_iteration=10, rows_per_update=4, evaluate=evaluate,
                            tracker=Tracker(), save_state=save_state)
    assert seen == [2, 3]
    lines = [json.loads(x) for x in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert [x["iteration"] for x in lines] == [1, 2, 3]
    assert "eval/ncis" not in lines[0]
    assert lines[1]["eval/ncis"] == 20.0 and lines[1]["eval/dr"] is None
    assert logged[2][0] == 3 and logged[2][1]["eval/ncis"] == 30.0
    assert "eval/dr" not in logged[2][1] and "eval/ncis" not in logged[0][1]
    assert result["evaluation"]["eval/ncis"] == 30.0


def test_the_first_non_finite_term_is_named_with_its_tower():
    metrics = {"loss/total": math.inf, "loss/td/click": 0.2, "loss/td/gift": math.inf,
               "loss/reward/gift": math.nan, "q/mean/gift": math.inf}
    assert nonfinite_terms(metrics) == ("the td loss of tower gift is inf (also not finite: "
                                        "loss/total, loss/reward/gift)")
    assert nonfinite_terms({"loss/total": math.nan, "loss/critic": 1.0}) == "the total loss is nan"
    assert nonfinite_terms({"loss/total": 1.0, "loss/rpn": 2.0}) is None


class LossNotFiniteAlgo(FakeAlgo):
    """A learner that stops at its first non-finite update, as ours do (wrapped by Ray)."""

    def train(self):
        if len(self.losses) == 1:
            try:
                raise LossNotFinite("update 27: the critic loss is nan")
            except LossNotFinite as err:
                raise RuntimeError("ray.exceptions.RayTaskError(...)") from err
        return super().train()


def test_a_learner_s_non_finite_update_stops_training_with_its_name(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"^training diverged at iteration 3, update 27: "
                       r"the critic loss is nan; stopped. Last good checkpoint: .*iter_000002"):
        run(LossNotFiniteAlgo([1.0, 0.9, 0.8]), tmp_path, 3)


class SignalledAlgo(FakeAlgo):
    """Delivers a signal to the loop's StopSignals during the given train() call."""

    def __init__(self, losses, stop, at, signals=1):
        super().__init__(losses)
        self.stop, self.at, self.signals, self.calls = stop, at, signals, 0

    def train(self):
        self.calls += 1
        if self.calls == self.at:
            for _ in range(self.signals):
                self.stop._handle(15, None)
        return super().train()


def test_a_signal_stops_after_the_iteration_and_checkpoints_it(tmp_path):
    stop = StopSignals()
    algo = SignalledAlgo([1.0, 0.9, 0.8, 0.7, 0.6], stop, at=3)
    with pytest.raises(TrainingInterrupted) as err:
        run(algo, tmp_path, 5, every=2, stop=stop)
    assert algo.saved == ["iter_000002", "iter_000003"] and algo.calls == 3
    assert (err.value.iteration, err.value.checkpoint.name) == (3, "iter_000003")
    assert interrupted(err.value) == (143, str(err.value))
    assert str(err.value) == (f"interrupted (SIGTERM); kept the checkpoint of iteration 3 "
                              f"({tmp_path / CHECKPOINTS / 'iter_000003'}): run the same "
                              "command with --resume to continue")
    assert latest_checkpoint(tmp_path).iteration == 3


def test_a_second_signal_stops_at_once_keeping_the_last_checkpoint(tmp_path):
    stop = StopSignals()
    algo = SignalledAlgo([1.0, 0.9, 0.8, 0.7, 0.6], stop, at=3, signals=2)
    with pytest.raises(Abort) as err:
        run(algo, tmp_path, 5, every=2, stop=stop)
    assert interrupted(err.value) == (143, "interrupted (SIGTERM); no partial output was kept")
    assert algo.saved == ["iter_000002"] and latest_checkpoint(tmp_path).iteration == 2


def test_a_signal_before_the_iterations_stops_at_once(tmp_path):
    stop = StopSignals()
    with pytest.raises(Abort):
        stop._handle(2, None)  # not armed: Ray or the algorithm were being built
    with pytest.raises(Abort):
        run(FakeAlgo([1.0]), tmp_path, 1, stop=stop)


def test_resume_drops_the_metrics_and_checkpoints_after_its_checkpoint(tmp_path):
    """A run killed (SIGKILL) after iteration 3, its last checkpoint at 2, and while writing
    checkpoint 4: the resumed run has every iteration once in metrics.jsonl."""
    run(FakeAlgo([1.0, 0.9, 0.8]), tmp_path, 3, every=2)  # checkpoints 2 and 3
    (tmp_path / CHECKPOINTS / "latest").write_text("iter_000002\n")  # as if 3 was never named
    (tmp_path / CHECKPOINTS / "iter_000004.tmp-999999").mkdir()
    with (tmp_path / METRICS_FILE).open("a") as f:
        f.write('{"iteration": 4, "upd')  # cut short by the kill
    start = latest_checkpoint(tmp_path)
    run(FakeAlgo([0.7, 0.6, 0.5]), tmp_path, 5, every=2, start=start)
    lines = [json.loads(x) for x in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert [x["iteration"] for x in lines] == [1, 2, 3, 4, 5]
    assert [x["loss/total"] for x in lines] == [1.0, 0.9, 0.7, 0.6, 0.5]
    assert sorted(p.name for p in (tmp_path / CHECKPOINTS).iterdir()) == [
        "iter_000002", "iter_000004", "iter_000005", "latest"]


def test_stop_signals_restore_the_handlers_they_replaced():
    import signal

    before = {s: signal.getsignal(s) for s in StopSignals.SIGNALS}
    with StopSignals() as stop:
        assert all(signal.getsignal(s) == stop._handle for s in StopSignals.SIGNALS)
    assert {s: signal.getsignal(s) for s in StopSignals.SIGNALS} == before


def test_a_new_run_stopped_before_its_first_checkpoint_leaves_nothing(tmp_path):
    """Issue 17 s3: a failed or interrupted new run leaves no OUT (the same command can simply
    be run again), and the OUT that --overwrite moved aside is put back; once a checkpoint is
    written, OUT is kept for --resume. Ctrl-C exits 130."""
    from rliv_ray.algorithms.common.driver import training_out

    samples, out = tmp_path / "samples", tmp_path / "out"
    samples.mkdir()
    out.mkdir()
    (out / "old.txt").write_text("the previous run")
    with pytest.raises(KeyboardInterrupt) as err, training_out(out, samples, resume=False,
                                                                overwrite=True) as start:
        assert start is None and not (out / "old.txt").exists()
        (out / "training_fields.json").write_text("{}")
        raise KeyboardInterrupt
    assert interrupted(err.value) == (130, "interrupted (SIGINT); no partial output was kept")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "samples"]
    assert [p.name for p in out.iterdir()] == ["old.txt"]

    with pytest.raises(TrainingDiverged), training_out(out, samples, resume=False,
                                                       overwrite=True):
        run(FakeAlgo([1.0, 0.9, math.nan]), out, 3)
    assert latest_checkpoint(out).iteration == 2  # kept: what --resume continues


def test_the_data_fingerprint_tells_changed_shards_apart(tmp_path):
    """A resumed run moves its reader on only over the data its checkpoint was trained on."""
    from rliv_ray.algorithms.common.checkpoint import data_fingerprint

    shard = tmp_path / "part-00000.parquet"
    shard.write_bytes(b"x" * 5000)
    first = data_fingerprint([shard])
    assert data_fingerprint([str(shard)]) == first
    shard.write_bytes(b"x" * 4999 + b"y")  # another footer
    assert data_fingerprint([shard]) != first
    assert data_fingerprint(["s3://b/a.parquet"]) != data_fingerprint(["s3://b/c.parquet"])
