"""MLflow for a training run that is resumed, interrupted or loses its server: one run per OUT,
each step once, one warning line when tracking is lost."""

import json

import pytest

from rliv_ray.tracking import RUN_FILE, MLflowTracker, tracking_run

mlflow = pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    """One store for the module (creating an SQLite store takes seconds); each test its own
    experiment."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


def history(uri, run_id, key="loss/total"):
    return sorted(m.step for m in mlflow.MlflowClient(uri).get_metric_history(run_id, key))


def test_a_resumed_run_continues_its_mlflow_run_without_repeating_steps(uri, tmp_path):
    with tracking_run(uri, "train", out=tmp_path, experiment="resumed") as first:
        first.log_params({"settings": {"iterations": 3}, "seed": 0})
        for step in (1, 2, 3):  # killed after step 3, its checkpoint at 2
            first.log_metrics({"loss/total": 1.0 / step}, step=step)
    run_id = json.loads((tmp_path / RUN_FILE).read_text())["run_id"]

    with tracking_run(uri, "train", out=tmp_path, resume=True,
                      experiment="resumed") as resumed:
        assert resumed.run_id == run_id and resumed.skip_through == 3
        resumed.log_params({"settings": {"iterations": 5}, "seed": 0, "new": 1})  # no error
        for step in (3, 4, 5):
            resumed.log_metrics({"loss/total": 2.0 / step}, step=step)
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("resumed").experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]
    assert history(uri, run_id) == [1, 2, 3, 4, 5]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"settings/iterations": "3", "seed": "0", "new": "1"}
    assert run.data.metrics["loss/total"] == pytest.approx(2.0 / 5)


def test_a_resume_recorded_for_another_store_starts_a_new_run(uri, tmp_path):
    with tracking_run(uri, "train", out=tmp_path, experiment="moved") as first:
        first.log_metrics({"loss/total": 1.0}, step=1)
    (tmp_path / RUN_FILE).write_text(json.dumps({"tracking_uri": "sqlite:////elsewhere.db",
                                                 "run_id": first.run_id}))  # as if moved
    with tracking_run(uri, "train", out=tmp_path, resume=True, experiment="moved") as second:
        assert second.skip_through is None and second.run_id != first.run_id
        second.log_metrics({"loss/total": 1.0}, step=2)
    assert json.loads((tmp_path / RUN_FILE).read_text()) == {"tracking_uri": uri,
                                                             "run_id": second.run_id}


def test_an_interrupted_run_ends_killed_a_failed_one_failed(uri, tmp_path):
    for error, status in ((KeyboardInterrupt, "KILLED"), (RuntimeError, "FAILED")):
        with pytest.raises(error), tracking_run(uri, "train", out=tmp_path) as tracker:
            raise error()
        assert mlflow.MlflowClient(uri).get_run(tracker.run_id).info.status == status


class DeadServer:
    """An MLflow client whose server has gone away."""

    calls = 0

    def __getattr__(self, name):
        def fail(*args, **kwargs):
            DeadServer.calls += 1
            raise ConnectionError("HTTPConnectionPool(host='127.0.0.1', port=5999): Max "
                                  "retries exceeded\nwith url: /api/2.0/mlflow/runs/log-batch")
        return fail


def test_a_lost_server_is_one_warning_line_and_tracking_stops(capsys):
    tracker = MLflowTracker(DeadServer(), "run", "http://127.0.0.1:5999")
    tracker.log_metrics({"loss/total": 1.0}, step=1)
    tracker.log_metrics({"loss/total": 0.5}, step=2)
    tracker.log_artifact("policy.pt")
    tracker.end("FINISHED")
    err = capsys.readouterr().err
    assert err == ("rliv: warning: MLflow at http://127.0.0.1:5999 failed (log metrics: "
                   "HTTPConnectionPool(host='127.0.0.1', port=5999): Max retries exceeded); "
                   "going on without tracking\n")
    assert DeadServer.calls == 1 and tracker.off
