"""The sweep's trials and each one's point of the search space, sample build and training fields.

Pure functions of the :class:`~rliv_ray.sweep.config.SweepConfig`. The trials are planned here,
not drawn by Tune (:func:`plan_trials`), so that the same config gives the same trials with
the same points every time: a resumed sweep knows which of them are finished from its own JSON
records (:mod:`rliv_ray.sweep.records`) and runs only the others.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from typing import Any

import numpy as np

from rliv_ray.sweep.config import BIN_PARAMS, DATA_PARAMS, SweepConfig

TRIAL_PREFIX = "trial_"
_DRAW_STREAM = 0x5EA2C4
"""Tags the random stream of the search draws, apart from training's own seeds."""


def trial_name(index: int) -> str:
    return f"{TRIAL_PREFIX}{index:05d}"


def trial_index(trial_id: str) -> int:
    """The index of a trial id of :func:`trial_name` (0 for anything else)."""
    tail = trial_id.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def plan_trials(config: SweepConfig) -> dict[str, dict[str, Any]]:
    """Every trial of the sweep, trial id -> point, in order.

    The grid dimensions' product (YAML order, the last one varying fastest), ``num_samples``
    times; each ``choice``, ``uniform`` and ``loguniform`` dimension drawn per trial from
    NumPy's generator seeded with (``training.seed``, a fixed tag, the trial's index), so
    the same config gives the same trials and points, and a trial's draws do not depend on how
    many trials there are."""
    grid = [d for d in config.search if d.kind == "grid"]
    combos = list(itertools.product(*(d.values for d in grid)))
    plan: dict[str, dict[str, Any]] = {}
    for _ in range(config.num_samples):
        for combo in combos:
            index = len(plan)
            rng = np.random.default_rng([config.training.seed, _DRAW_STREAM, index])
            fixed = dict(zip((d.name for d in grid), combo, strict=True))
            point: dict[str, Any] = {}
            for dim in config.search:
                if dim.kind == "grid":
                    point[dim.name] = fixed[dim.name]
                elif dim.kind == "choice":
                    point[dim.name] = dim.values[int(rng.integers(len(dim.values)))]
                elif dim.kind == "uniform":
                    point[dim.name] = float(rng.uniform(*dim.values))
                else:
                    low, high = (math.log(v) for v in dim.values)
                    point[dim.name] = float(math.exp(rng.uniform(low, high)))
            plan[trial_name(index)] = point
    return plan


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
