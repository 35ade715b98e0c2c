"""Experiment tracking behind a small interface: MLflow when a tracking URI is given, else no-op.

``mlflow`` is imported only where it is used. MLflow 3.17 refuses a plain ``./mlruns`` file
store; a local store is ``sqlite:////abs/path/mlflow.db`` (see ``../shared/RLLIB_NOTES.md``).
Run names follow ``algo__dataset__seed``; metric keys are namespaced (``data/click_rate``).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

TRACKING_URI_ENV = "RLIV_TRACKING_URI"
EXPERIMENT = "rliv-ray"


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
    """Logs to the active MLflow run."""

    def __init__(self, mlflow_module):
        self._mlflow = mlflow_module

    def log_params(self, params: dict) -> None:
        self._mlflow.log_params({mlflow_key(k): str(v)[:500] for k, v in flatten(params).items()})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        clean = {mlflow_key(k): float(v) for k, v in flatten(metrics).items() if _is_number(v)}
        self._mlflow.log_metrics(clean, step=step)

    def log_artifact(self, path: str | Path) -> None:
        self._mlflow.log_artifact(str(path))


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
def tracking_run(uri: str | None, run_name: str, *,
                 experiment: str = EXPERIMENT) -> Iterator[Tracker]:
    """A tracker for one run: MLflow at ``uri`` if set (or ``$RLIV_TRACKING_URI``), else no-op."""
    uri = resolve_tracking_uri(uri)
    if uri is None:
        yield NoOpTracker()
        return
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_id=experiment_id(MlflowClient(uri), experiment))
    with mlflow.start_run(run_name=run_name):
        yield MLflowTracker(mlflow)


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
