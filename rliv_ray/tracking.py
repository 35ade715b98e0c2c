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
