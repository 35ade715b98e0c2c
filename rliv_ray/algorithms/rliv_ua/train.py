"""``rliv train rliv-ua``: RLIV-UA on sample shards with RLlib, checkpoints and an export.

    OUT/checkpoints/...      checkpoints every K iterations (see rliv_ray.train_loop)
    OUT/metrics.jsonl        per-iteration losses per tower, Q statistics, TD errors, speed
    OUT/scorer.pt            the trained network exported for serving without Ray
    OUT/train.json           settings, data, final metrics
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from rliv_ray.algorithms.common.driver import (
    TrainSettings,
    check_resume,
    configured,
    load_module,
    plain,
    remember_training,
    resumed_training,
    run_training,
    settings_params,
    training_out,
    training_ray,
    with_offline_data,
)
from rliv_ray.algorithms.rliv_ua.config import RLIVUAConfig
from rliv_ray.algorithms.rliv_ua.network import sized_id_buckets
from rliv_ray.data import uris
from rliv_ray.offline.shards import ShardInfo, check_shard_values, distinct_ids, inspect_shards

SCORER_FILE = "scorer.pt"
REPORT_FILE = "train.json"
__all__ = ["TrainSettings", "build_config", "export_checkpoint", "load_module", "train_rliv_ua"]


def build_config(info: ShardInfo, settings: TrainSettings,
                 config_class: type[RLIVUAConfig] = RLIVUAConfig) -> RLIVUAConfig:
    """The RLlib config for these shards: spaces, towers and gap index from their metadata.
    ``config_class`` may be a subclass on the same samples (the TD3 baselines' TD3Config).

    The towers default to the shards' labels (a source without gifts trains no gift tower);
    gift assistance is decided after the ablation preset is merged (:func:`resolve_gift_assist`).
    """
    from rliv_ray.algorithms.rliv_ua.config import resolve_gift_assist
    from rliv_ray.offline.prelearner import ColumnarPreLearner

    training = {"gap_index": info.gap_index, "towers": info.labels, **settings.training}
    absent = [tower for tower in training["towers"] if tower in info.absent_rewards]
    if absent:
        raise ValueError(f"towers {absent} have no reward in these samples (labels: "
                         f"{info.labels})")
    training["gift_assist"] = resolve_gift_assist(training, info.labels)
    config = configured(config_class, training)
    if config.id_rows_per_id:  # id_buckets is then the cap
        config.id_buckets = sized_id_buckets(max(distinct_ids(info).values()),
                                             config.id_rows_per_id, config.id_buckets)
    config = config.environment(
        observation_space=gym.spaces.Box(-np.inf, np.inf, (info.state_dim,), np.float32),
        action_space=gym.spaces.Discrete(config.n_actions))
    return with_offline_data(config, list(info.files), settings, ColumnarPreLearner)


def train_rliv_ua(samples: str | Path, out: str | Path, settings: TrainSettings, *,
                  resume: bool = False, overwrite: bool = False,
                  tracking_uri: str | None = None,
                  config_class: type[RLIVUAConfig] = RLIVUAConfig,
                  on_export: Callable[[Path, int, dict], None] | None = None) -> dict[str, Any]:
    """Train, checkpoint and export; returns the report also written to OUT/train.json.
    ``on_export(scorer, iteration, metrics)``: the scorer is exported at every checkpoint too
    and handed over (``rliv sweep``)."""
    out = Path(out)
    info = inspect_shards(samples, next_state=settings.training.get("next_state", "asa"))
    # Settings, data and CPUs are checked before OUT is claimed: a refused run leaves nothing.
    settings = resumed_training(out, settings, resume=resume)
    config = build_config(info, settings, config_class)
    check_shard_values(info.files, n_actions=config.n_actions)
    check_resume(out, config, resume=resume)
    with training_ray(settings), \
            training_out(out, samples, resume=resume, overwrite=overwrite) as start:
        settings = remember_training(out, settings, start)
        params = {"samples": uris.absolute(samples), "rows": info.rows,
                  "settings": settings_params(settings), "config": _config_fields(config)}
        result = run_training(
            config, out, settings, start=start, params=params, tracking_uri=tracking_uri,
            run_name=f"train-rliv-ua__{uris.name(samples)}__{settings.seed}",
            export=lambda checkpoint: export_checkpoint(checkpoint, out / SCORER_FILE, config),
            on_export=on_export)
        report = {**params, "state_names": list(info.state_names), "sample_mode": info.mode,
                  **result, "scorer": result["export"]}
        (out / REPORT_FILE).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report


def export_checkpoint(checkpoint: str | Path, path: str | Path, config: RLIVUAConfig) -> Path:
    """Export a checkpoint's network to a file that scores with plain torch (serving.py), with
    the config's serving tower and epsilon as its serving defaults."""
    return config.export_module(load_module(checkpoint), path)


def _config_fields(config: RLIVUAConfig) -> dict[str, Any]:
    names = (*config.FIELDS, "gamma", "lr", "train_batch_size_per_learner")
    return plain({name: getattr(config, name) for name in names})
