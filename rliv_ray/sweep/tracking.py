"""MLflow for a sweep: one parent run, one child run per trial, all logged from the driver.

The trials never talk to MLflow: a Tune callback in the driver turns their reports into the
child runs' metrics (one step per report), so a SQLite store has one writer and a down server
costs one warning. Runs go to the ``rliv-ray`` experiment (``rliv ui`` opens on it):

    sweep__<name>                      parent: the YAML's settings as params, the summary
                                       table (Markdown), the plots, the regret
      <algorithm>__<name>__<trial>     child (tag ``mlflow.parentRunId``): the values the
                                       search chose, per-report ``eval/...`` and ``train/...``
                                       metrics, ``truth/...`` after the sweep, the exported
                                       policy and its learning curves

Store: ``--tracking-uri``, else ``$RLIV_TRACKING_URI``, else ``$MLFLOW_TRACKING_URI``, else
``sqlite:///<cwd>/mlflow.db``. Every MLflow call is guarded: the first failure (an unreachable
server, say) prints one warning and tracking stops; the sweep goes on.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from rliv_ray.tracking import experiment_id, flatten, mlflow_key, resolve_tracking_uri

DEFAULT_STORE = "mlflow.db"
TRIAL_TAG = "rliv.trial_id"
SWEEP_TAG = "rliv.sweep"


def sweep_tracking_uri(uri: str | None) -> str:
    """The store a sweep logs to (module docstring)."""
    return (resolve_tracking_uri(uri) or os.environ.get("MLFLOW_TRACKING_URI")
            or f"sqlite:///{(Path.cwd() / DEFAULT_STORE).resolve()}")


class SweepTracker:
    """MLflow's client with explicit run ids (several runs are open at once), every call
    guarded (module docstring). Picklable: Tune stores it with the experiment."""

    def __init__(self, uri: str, parent_run_id: str | None = None):
        self.uri, self.parent_run_id = uri, parent_run_id
        self._client = None
        self._off = False
        self._children: dict[str, str] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_client": None}

    @property
    def active(self) -> bool:
        return not self._off

    def _call(self, what: str, fn):
        if self._off:
            return None
        try:
            if self._client is None:
                self._client = _connect(self.uri)
            return fn(self._client)
        except Exception as err:  # noqa: BLE001 - tracking must never stop a sweep
            self._off = True
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            print(f"warning: MLflow at {self.uri} failed ({what}: {first}); the sweep goes on "
                  "without tracking", file=sys.stderr, flush=True)
            return None

    def start_parent(self, name: str, params: dict[str, Any]) -> str | None:
        """Create the sweep's run (or reopen it on a resume); its id."""
        def start(client):
            if self.parent_run_id:
                client.update_run(self.parent_run_id, status="RUNNING")
                return self.parent_run_id
            run = client.create_run(experiment_id(client), run_name=f"sweep__{name}",
                                    tags={SWEEP_TAG: name})
            _log(client, run.info.run_id, params=params)
            return run.info.run_id

        self.parent_run_id = self._call("start the sweep's run", start) or self.parent_run_id
        return self.parent_run_id

    def child(self, trial_id: str, run_name: str, params: dict[str, Any]) -> str | None:
        """The trial's run: created at its (re)start; a run left open by an interrupted
        sweep is closed as KILLED and a new one started."""
        def start(client):
            for old in _trial_runs(client, trial_id, self.parent_run_id):
                if old.info.status == "RUNNING":
                    client.set_terminated(old.info.run_id, status="KILLED")
            tags = {"mlflow.parentRunId": self.parent_run_id, TRIAL_TAG: trial_id}
            run = client.create_run(experiment_id(client), run_name=run_name, tags=tags)
            _log(client, run.info.run_id, params=params)
            return run.info.run_id

        run_id = self._call(f"start trial {trial_id}'s run", start)
        if run_id:
            self._children[trial_id] = run_id
        return run_id

    def child_id(self, trial_id: str) -> str | None:
        """The trial's latest run (this process's, else the store's)."""
        if trial_id in self._children or self._off:
            return self._children.get(trial_id)

        def find(client):
            runs = _trial_runs(client, trial_id, self.parent_run_id)
            return runs[0].info.run_id if runs else None

        run_id = self._call("find a trial's run", find)
        if run_id:
            self._children[trial_id] = run_id
        return run_id

    def log(self, run_id: str | None, *, params: dict | None = None,
            metrics: dict | None = None, step: int | None = None) -> None:
        if run_id:
            self._call("log", lambda c: _log(c, run_id, params=params, metrics=metrics,
                                             step=step))

    def artifact(self, run_id: str | None, path: str | Path, folder: str | None = None) -> None:
        if run_id and Path(path).exists():
            self._call("log an artifact", lambda c: c.log_artifact(run_id, str(path), folder))

    def end(self, run_id: str | None, status: str = "FINISHED") -> None:
        if run_id:
            self._call("end a run", lambda c: c.set_terminated(run_id, status=status))


def _connect(uri: str):
    """A client of the store; a server is asked for ``/health`` first (5 s), so a dead one
    fails at once instead of through MLflow's minutes of retries."""
    if uri.startswith(("http://", "https://")):
        import urllib.request

        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5).close()  # noqa: S310
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def _trial_runs(client, trial_id: str, parent_run_id: str | None) -> list:
    """The runs of a trial of this sweep, newest first."""
    return client.search_runs([experiment_id(client)],
                              f"tags.`{TRIAL_TAG}` = '{trial_id}' and "
                              f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
                              order_by=["attributes.start_time DESC"])




def _log(client, run_id: str, *, params: dict | None = None, metrics: dict | None = None,
         step: int | None = None) -> None:
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    flat_params = [Param(mlflow_key(k), str(v)[:500]) for k, v in flatten(params or {}).items()]
    flat_metrics = [Metric(mlflow_key(k), float(v), now, step or 0)
                    for k, v in flatten(metrics or {}).items()
                    if isinstance(v, int | float) and not isinstance(v, bool)
                    and math.isfinite(v)]
    for i in range(0, max(len(flat_params), len(flat_metrics)), 100):  # MLflow's batch limit
        client.log_batch(run_id, metrics=flat_metrics[i:i + 100], params=flat_params[i:i + 100])
