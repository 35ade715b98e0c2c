"""Experiment tracking behind a small interface: MLflow when a tracking URI is given, else no-op.

``mlflow`` is imported only where it is used. MLflow 3.17 refuses a plain ``./mlruns`` file
store; a local store is ``sqlite:////abs/path/mlflow.db`` (see ``../shared/RLLIB_NOTES.md``).
Run names follow ``algo__dataset__seed``; metric keys are namespaced (``data/click_rate``).

A run is created when it starts; an MLflow that fails then is an error. After that every call
is guarded: the first failure (a server that went away, say) prints one warning line and
tracking stops for the rest of the command, which goes on. A server is retried twice, not for
minutes. A training run records its MLflow run in ``OUT/mlflow_run.json``; ``--resume``
continues that run and logs no step it already has, so its metric history has every iteration
once.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

TRACKING_URI_ENV = "RLIV_TRACKING_URI"
EXPERIMENT = "rliv-ray"
RUN_FILE = "mlflow_run.json"
"""In a training OUT: the tracking URI and the MLflow run that ``--resume`` continues."""
HTTP_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
"""MLflow's defaults retry a server for minutes; a run that lost its server should not wait."""


class Tracker(Protocol):
    def log_params(self, params: dict) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: str | Path) -> None: ...


class NoOpTracker:
    """Accepts everything, records nothing (tests, runs without a tracking URI)."""

    def log_params(self, params: dict) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def log_artifact(self, path: str | Path) -> None:
        pass


class MLflowTracker:
    """Logs to one MLflow run through a client; every call guarded (module docstring).

    ``skip_through``: steps up to this one are not logged again (a resumed run continues its
    MLflow run); ``known_params``: parameters the run has already (MLflow refuses to change
    them, so a resumed run logs only new ones)."""

    def __init__(self, client, run_id: str, uri: str, *, skip_through: int | None = None,
                 known_params: frozenset[str] = frozenset()):
        self._client, self.run_id, self.uri = client, run_id, uri
        self.skip_through, self.known_params = skip_through, known_params
        self.off = False

    def _guard(self, what: str, call) -> None:
        if self.off:
            return
        try:
            call()
        except Exception as err:  # noqa: BLE001 - tracking must never stop the command
            self.off = True
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            print(f"rliv: warning: MLflow at {self.uri} failed ({what}: {first}); going on "
                  "without tracking", file=sys.stderr, flush=True)

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        values = {mlflow_key(k): str(v)[:500] for k, v in flatten(params).items()}
        batch = [Param(k, v) for k, v in values.items() if k not in self.known_params]
        if batch:
            self._guard("log params", lambda: self._client.log_batch(self.run_id, params=batch))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        if step is not None and self.skip_through is not None and step <= self.skip_through:
            return  # logged by the run this one resumes
        now = int(time.time() * 1000)
        batch = [Metric(mlflow_key(k), float(v), now, step or 0)
                 for k, v in flatten(metrics).items() if _is_number(v)]
        self._guard("log metrics", lambda: self._client.log_batch(self.run_id, metrics=batch))

    def log_artifact(self, path: str | Path) -> None:
        self._guard("log an artifact",
                    lambda: self._client.log_artifact(self.run_id, str(path)))

    def end(self, status: str) -> None:
        self._guard("end the run",
                    lambda: self._client.set_terminated(self.run_id, status=status))


ARTIFACTS_DIR = "mlartifacts"


def artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a SQLite store's database
    (``sqlite:////abs/dir/mlflow.db`` -> ``file:///abs/dir/mlartifacts``), never in the current
    directory; None (the server's own default) for any other store."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri[len("sqlite:///"):]).resolve().parent / ARTIFACTS_DIR).as_uri()


def experiment_id(client, name: str = EXPERIMENT) -> str:
    """The id of experiment ``name`` in the client's store, created (artifacts at
    :func:`artifact_location`) if missing."""
    found = client.get_experiment_by_name(name)
    if found:
        return found.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location(
        client.tracking_uri))


def resolve_tracking_uri(uri: str | None) -> str | None:
    """The URI given, else ``$RLIV_TRACKING_URI``, else None (no tracking)."""
    return uri or os.environ.get(TRACKING_URI_ENV) or None


STORE_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks",
                 "databricks-uc")
"""Tracking stores MLflow 3 opens (a plain folder or ``file:`` store is refused by it)."""
TIMEOUT_S = 5.0


def check_tracking_uri(uri: str | None) -> str | None:
    """The tracking URI a command will use (``uri``, else ``$RLIV_TRACKING_URI``, else None),
    checked before any work so that a run never fails at its end, after its output was
    written: a scheme MLflow opens; for ``sqlite:`` an absolute path in an existing, writable
    folder (an existing file must be an SQLite database); for ``http(s):`` a server that
    answers. CLIError (exit status 2) naming the option or the variable if not."""
    from rliv_ray.checks import CLIError

    resolved = resolve_tracking_uri(uri)
    if resolved is None:
        return None
    where = f"--tracking-uri {resolved}" if uri else f"${TRACKING_URI_ENV}={resolved}"
    problem = _tracking_problem(resolved)
    if problem:
        raise CLIError(f"{where}: {problem}")
    return resolved


def _tracking_problem(uri: str) -> str | None:
    from urllib.parse import urlsplit

    scheme = uri.split(":", 1)[0].lower() if re.match(r"^[A-Za-z][\w+.-]*:", uri) else ""
    driver = scheme.split("+", 1)[0]
    if driver not in STORE_SCHEMES:
        return ("not a tracking store MLflow opens; use sqlite:////ABS/PATH/mlflow.db or "
                "http://HOST:PORT of an MLflow server")
    if driver == "sqlite":
        return _sqlite_problem(uri)
    if driver in ("http", "https"):
        from rliv_ray.ray_address import ClusterUnreachable, check_reachable

        parts = urlsplit(uri)
        try:
            port = parts.port or (443 if driver == "https" else 80)
        except ValueError as err:
            return str(err)
        if not parts.hostname:
            return "no host in the URI"
        try:
            check_reachable(parts.hostname, port, "the MLflow server", TIMEOUT_S)
        except ClusterUnreachable as err:
            return str(err)
    return None


def _sqlite_problem(uri: str) -> str | None:
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri == prefix:
        return "expected sqlite:////ABS/PATH/mlflow.db"
    path = Path(uri[len(prefix):])
    if not path.is_absolute():
        return (f"the path {path} is relative (to whatever folder a command runs in); use "
                f"sqlite:///{Path(os.path.abspath(path))}")
    if path.exists():
        if not path.is_file():
            return f"{path} is not a file"
        with path.open("rb") as f:
            head = f.read(16)
        if head and head != b"SQLite format 3\x00":
            return f"{path} is not an SQLite database"
        return None
    folder = path.parent
    if not folder.is_dir():
        what = "is a file, not a directory" if folder.exists() else "does not exist"
        return f"the folder of the database, {folder}, {what}"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"the folder of the database, {folder}, is not writable"
    return None


@contextlib.contextmanager
def tracking_run(uri: str | None, run_name: str, *, experiment: str = EXPERIMENT,
                 out: str | Path | None = None, resume: bool = False) -> Iterator[Tracker]:
    """A tracker for one run: MLflow at ``uri`` if set (or ``$RLIV_TRACKING_URI``), else no-op.

    With ``out`` (a training run), the run's id is kept in ``OUT/mlflow_run.json`` and
    ``resume`` continues that run. The run ends FINISHED, KILLED (an interrupt) or FAILED."""
    uri = resolve_tracking_uri(uri)
    if uri is None:
        yield NoOpTracker()
        return
    import mlflow
    from mlflow.tracking import MlflowClient

    if uri.startswith(("http://", "https://")):
        for name, value in HTTP_RETRIES.items():
            os.environ.setdefault(name, value)
    mlflow.set_tracking_uri(uri)  # as before: mlflow's own calls in this process go there too
    client = MlflowClient(uri)
    tracker = _reopen(client, uri, Path(out) / RUN_FILE) if out is not None and resume else None
    if tracker is None:
        run = client.create_run(experiment_id(client, experiment), run_name=run_name)
        tracker = MLflowTracker(client, run.info.run_id, uri)
        if out is not None:
            (Path(out) / RUN_FILE).write_text(
                json.dumps({"tracking_uri": uri, "run_id": run.info.run_id}) + "\n")
    status = "FINISHED"
    try:
        yield tracker
    except BaseException as err:
        status = "KILLED" if _interrupt(err) else "FAILED"
        raise
    finally:
        tracker.end(status)


def _reopen(client, uri: str, record: Path) -> MLflowTracker | None:
    """The tracker of the MLflow run a resumed training run continues (``OUT/mlflow_run.json``),
    or None if there is none in this store (another URI, a deleted run)."""
    try:
        saved = json.loads(record.read_text())
        if saved.get("tracking_uri") != uri:
            return None
        run = client.get_run(saved["run_id"])
    except Exception:  # noqa: BLE001 - no record, or not in this store: a new run
        return None
    if run.info.lifecycle_stage != "active":
        return None
    keys = sorted(run.data.metrics, key=lambda k: k != "loss/total")[:1]  # all logged at once
    steps = [m.step for key in keys for m in client.get_metric_history(run.info.run_id, key)]
    client.update_run(run.info.run_id, status="RUNNING")
    return MLflowTracker(client, run.info.run_id, uri, skip_through=max(steps, default=None),
                         known_params=frozenset(run.data.params))


def _interrupt(err: BaseException) -> bool:
    return isinstance(err, KeyboardInterrupt)  # Ctrl-C, SIGTERM, a training run's interrupts


def flatten(data: dict, prefix: str = "", sep: str = "/") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a/b": 1}``."""
    out = {}
    for key, value in data.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, name, sep))
        else:
            out[name] = value
    return out


def mlflow_key(key: str) -> str:
    """A key MLflow accepts: ``+`` spelled ``plus``, other odd characters as ``_``."""
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", key.replace("+", "plus"))


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
