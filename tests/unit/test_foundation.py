"""Small building blocks: action grid (Eq. 1), atomic outputs, bucketing, schema, tracking."""

import numpy as np
import pytest

from rliv_ray import schema as S
from rliv_ray.actions import ActionGrid
from rliv_ray.data import io
from rliv_ray.progress import Progress
from rliv_ray.tracking import NoOpTracker, flatten, tracking_run


def test_final_score_is_eq1():
    grid = ActionGrid(weights=(0.0, 0.5, 1.0), c=1.0, w=2.0, b=0.5)
    rank = np.array([0.2, 0.2, 0.9])
    got = grid.final_score(rank, np.array([0, 2, 1]))
    assert np.allclose(got, [0.2 * 1.0, 0.2 * 3.0**0.5, 0.9 * 2.0**0.5])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weights": (0.0, 0.0, 1.0)}, "strictly increasing"),
        ({"weights": (1.0,)}, "at least 2"),
        ({"b": 0.0}, "b must be > 0"),
        ({"c": -1.0}, "c \\+ a\\*w must be > 0"),
    ],
)
def test_action_grid_validates(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ActionGrid(**kwargs)


def test_atomic_output_dir_keeps_nothing_on_failure(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), io.atomic_output_dir(target) as tmp:
        (tmp / "partial.parquet").write_text("half")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    with io.atomic_output_dir(target) as tmp:
        (tmp / "done").write_text("ok")
    assert (target / "done").read_text() == "ok"
    with pytest.raises(io.OutputExistsError), io.atomic_output_dir(target):
        pass
    with io.atomic_output_dir(target, overwrite=True) as tmp:
        (tmp / "new").write_text("ok")
    assert sorted(p.name for p in target.iterdir()) == ["new"]


def test_user_bucket_is_stable_and_spreads_users():
    ids = np.arange(100_000)
    buckets = io.user_bucket(ids, 16)
    assert np.array_equal(buckets, io.user_bucket(ids.copy(), 16))
    counts = np.bincount(buckets, minlength=16)
    assert counts.min() > 0.9 * counts.mean()
    assert io.user_bucket(np.array([12345]), 16)[0] == buckets[12345]


def test_log_files_resolves_dataset_dir_and_skips_hidden(tmp_path):
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "part-00000.parquet").write_bytes(b"x")
    (tmp_path / "log" / "_tmp.parquet").write_bytes(b"x")
    assert [p.name for p in io.log_files(tmp_path)] == ["part-00000.parquet"]
    with pytest.raises(FileNotFoundError, match="no such file"):
        io.log_files(tmp_path / "missing")


def test_request_ids_increase_with_time_and_separate_users():
    ts = np.array([S.REQUEST_EPOCH_MS + 5, S.REQUEST_EPOCH_MS + 5, S.REQUEST_EPOCH_MS + 6])
    ids = S.make_request_id(ts, np.array([1, 2, 1]))
    assert ids[0] < ids[1] < ids[2]


def test_log_schema_refuses_undeclarable_absent_columns():
    with pytest.raises(ValueError, match="cannot be declared absent"):
        S.log_schema(["u"], ["a"], absent=(S.CLICK,))
    schema = S.log_schema(["u"], ["a"], absent=(S.GIFT,))
    assert S.absent_columns(schema) == {S.GIFT}
    assert S.feature_names(schema, S.META_USER_FEATURES) == ["u"]


def test_progress_reports_rate(capsys):
    import sys

    with Progress(10, "work", unit="rows", stream=sys.stdout, every_s=0) as bar:
        bar.update(4)
        bar.update(6)
    out = capsys.readouterr().out
    assert "work: 10/10 rows (100.0%)" in out


def test_progress_is_a_tqdm_bar_in_a_terminal():
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    with Progress(10, "work", unit="rows", stream=stream) as bar:
        bar.update(4)
        bar.update(6)
    assert "\r" in stream.getvalue() and "work: 100%" in stream.getvalue()
    assert "10/10" in stream.getvalue()


def test_tracking_without_uri_is_noop(monkeypatch):
    monkeypatch.delenv("RLIV_TRACKING_URI", raising=False)
    with tracking_run(None, "x") as tracker:
        assert isinstance(tracker, NoOpTracker)
    assert flatten({"a": {"b": 1, "c": {"d": 2}}}) == {"a/b": 1, "a/c/d": 2}


def test_tracking_to_local_mlflow_store(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with tracking_run(uri, "summary__test") as tracker:
        tracker.log_params({"world": {"seed": 3}})
        tracker.log_metrics({"data": {"click_rate": 0.03, "note": "text is skipped",
                                      "share_by_history": {"6+": 0.5}}})
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["rliv-ray"])
    assert runs.loc[0, "metrics.data/click_rate"] == pytest.approx(0.03)
    assert runs.loc[0, "params.world/seed"] == "3"
    assert runs.loc[0, "metrics.data/share_by_history/6plus"] == pytest.approx(0.5)
    assert runs.loc[0, "tags.mlflow.runName"] == "summary__test"


def test_mlflow_artifacts_go_beside_the_database_not_the_current_directory(tmp_path,
                                                                            monkeypatch):
    pytest.importorskip("mlflow")
    store, elsewhere = tmp_path / "store", tmp_path / "cwd"
    store.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (store / "table.md").write_text("| a |\n")
    with tracking_run(f"sqlite:///{store / 'mlflow.db'}", "summary__artifacts") as tracker:
        tracker.log_artifact(store / "table.md")
    assert list((store / "mlartifacts").rglob("table.md"))
    assert list(elsewhere.iterdir()) == []
