"""A trial's point of the search space: its Tune form, its sample build and its training fields.

Pure functions of the :class:`~rliv_ray.sweep.config.SweepConfig` (``tune_space`` imports Ray
Tune when called).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from typing import Any

from rliv_ray.sweep.config import BIN_PARAMS, DATA_PARAMS, SweepConfig


def tune_space(config: SweepConfig) -> dict[str, Any]:
    """The Tune ``param_space``: one entry per searched hyperparameter (bins by name)."""
    from ray import tune

    make = {"grid": lambda v: tune.grid_search(list(v)), "choice": lambda v: tune.choice(list(v)),
            "uniform": lambda v: tune.uniform(*v), "loguniform": lambda v: tune.loguniform(*v)}
    return {dim.name: make[dim.kind](dim.values) for dim in config.search}


def data_settings(config: SweepConfig, point: dict[str, Any]) -> dict[str, Any]:
    """The settings a trial's samples are built with: the fixed ones, then the searched
    data-changing ones (K, sequence length), with the world they come from."""
    searched = {k: point[k] for k in DATA_PARAMS[config.algorithm] if k in point}
    world = {"path": config.data.path} if config.data.path else {"generate":
                                                                   config.data.generate}
    return {"world": world, **config.data.samples, **searched}


def data_points(config: SweepConfig) -> list[dict[str, Any]]:
    """Every distinct sample build the sweep needs (data-changing settings are discrete)."""
    names = [d.name for d in config.search if d.name in DATA_PARAMS[config.algorithm]]
    values = [config.values_of(name) for name in names]
    return [data_settings(config, dict(zip(names, combo, strict=True)))
            for combo in itertools.product(*values)]


def data_key(settings: dict[str, Any]) -> str:
    """A directory name for one sample build: the data-changing settings, readable, and a hash
    of all its settings (the world included), so a changed setting never reuses a build."""
    text = json.dumps(settings, sort_keys=True, default=str)
    digest = hashlib.sha1(text.encode()).hexdigest()[:10]
    readable = "_".join(f"{k}{settings[k]}" for k in sorted(settings)
                        if k != "world" and isinstance(settings[k], int | float | str))
    readable = re.sub(r"[^A-Za-z0-9_.-]", "-", readable)[:60]
    return f"{readable}__{digest}" if readable else digest


def training_fields(config: SweepConfig, point: dict[str, Any]) -> dict[str, Any]:
    """The algorithm config fields of a trial: the fixed ``training.set``, then the searched
    ones; bin names become their boundary vectors; data-changing settings are left out (the
    samples carry them)."""
    fields = {**config.training.fields, **point}
    for name in DATA_PARAMS[config.algorithm]:
        fields.pop(name, None)
    for name in BIN_PARAMS:
        if isinstance(fields.get(name), str):
            if fields[name] not in config.bins:
                raise ValueError(f"training.set.{name}: no bin vector named {fields[name]!r} "
                                 f"under 'bins' (named: {sorted(config.bins) or 'none'})")
            fields[name] = list(config.bins[fields[name]])
    return fields


def trial_params(config: SweepConfig, point: dict[str, Any]) -> dict[str, Any]:
    """What a person chose for a trial (MLflow params, the summary): the searched values as
    written in the YAML (bins by name), floats rounded for reading."""
    return {d.name: _readable(point[d.name]) for d in config.search if d.name in point}


def _readable(value: Any) -> Any:
    return float(f"{value:.4g}") if isinstance(value, float) else value
