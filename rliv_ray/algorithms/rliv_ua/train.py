"""``rliv train rliv-ua``: RLIV-UA on sample shards with RLlib, checkpoints and an export.

    OUT/checkpoints/...      RLlib checkpoints every K iterations (see rliv_ray.train_loop)
    OUT/metrics.jsonl        per-iteration losses per tower, Q statistics, TD errors, speed
    OUT/scorer.pt            the trained network exported for serving without Ray
    OUT/train.json           settings, data, final metrics

CPU accounting on small machines (RLLIB_NOTES "Silent hang"): the reader tasks and the one
pre-learner actor take half a CPU each, remote learners half a CPU each, and a local Ray gets
at least 4 logical CPUs, so ``num_learners`` 0, 1 and 2 all fit on 2 cores.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from rliv_ray.algorithms.rliv_ua.config import RLIVUAConfig
from rliv_ray.offline.shards import ShardInfo, inspect_shards
from rliv_ray.train_loop import LoopSettings, Resumed, latest_checkpoint, run_iterations

MODULE_PATH = ("learner_group", "learner", "rl_module", "default_policy")
SCORER_FILE = "scorer.pt"
REPORT_FILE = "train.json"


@dataclass(frozen=True)
class TrainSettings:
    loop: LoopSettings = field(default_factory=LoopSettings)
    updates_per_iteration: int = 100
    num_learners: int = 0
    address: str | None = None
    seed: int = 0
    materialize: bool = True
    """Keep the mapped shards in Ray's object store (fast epochs; set False for logs larger
    than memory, which then stream from Parquet every epoch)."""
    training: dict[str, Any] = field(default_factory=dict)
    """RLIVUAConfig.training() fields, e.g. {"gamma": 0.9, "towers": ("follow",)}."""

    def __post_init__(self) -> None:
        if self.updates_per_iteration < 1:
            raise ValueError(f"updates_per_iteration must be >= 1, got "
                             f"{self.updates_per_iteration}")
        if self.num_learners < 0:
            raise ValueError(f"num_learners must be >= 0, got {self.num_learners}")


def build_config(info: ShardInfo, settings: TrainSettings) -> RLIVUAConfig:
    """The RLlib config for these shards: spaces, towers and gap index from their metadata."""
    import ray.data

    from rliv_ray.offline.prelearner import ColumnarPreLearner

    training = {"gap_index": info.gap_index, **settings.training}
    if "towers" not in settings.training:  # a source without gifts trains no gift tower
        training["towers"] = info.labels
        if "gift" not in info.labels:
            training.setdefault("gift_assist", False)
    config = RLIVUAConfig().training(**training)
    errors = config.field_errors()
    if errors:
        raise ValueError("; ".join(errors))
    remote = settings.num_learners > 0
    return (
        config.environment(
            observation_space=gym.spaces.Box(-np.inf, np.inf, (info.state_dim,), np.float32),
            action_space=gym.spaces.Discrete(config.n_actions))
        .learners(num_learners=settings.num_learners,
                  num_cpus_per_learner=0.5 if remote else 1)
        .offline_data(
            input_=[str(f) for f in info.files], input_read_method="read_parquet",
            input_read_method_kwargs={"num_cpus": 0.5},
            prelearner_class=ColumnarPreLearner,
            map_batches_kwargs={"compute": ray.data.ActorPoolStrategy(size=1),
                                "num_cpus": 0.5, "batch_format": "pyarrow"},
            materialize_mapped_data=settings.materialize,
            dataset_num_iters_per_learner=settings.updates_per_iteration)
        .debugging(seed=settings.seed)
    )


def train_rliv_ua(samples: str | Path, out: str | Path, settings: TrainSettings, *,
                  resume: bool = False, overwrite: bool = False,
                  tracking_uri: str | None = None) -> dict[str, Any]:
    """Train, checkpoint and export; returns the report also written to OUT/train.json."""
    from rliv_ray.runner import start_ray
    from rliv_ray.tracking import tracking_run

    out = Path(out)
    next_state = settings.training.get("next_state", "asa")
    info = inspect_shards(samples, next_state=next_state)
    start = _prepare_out(out, resume=resume, overwrite=overwrite)
    config = build_config(info, settings)
    import ray

    # Our per-iteration lines are the progress display; Ray Data's would drown them.
    started = start_ray(address=settings.address, num_cpus=max(4, os.cpu_count() or 1),
                        progress=False)
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    began = time.perf_counter()
    algo = None
    try:
        algo = config.build_algo()
        if start is not None:
            algo.restore_from_path(str(start.checkpoint.resolve()))
        run_name = f"train-rliv-ua__{Path(samples).name}__{settings.seed}"
        with tracking_run(tracking_uri, run_name) as tracker:
            tracker.log_params({"samples": str(Path(samples).resolve()), "rows": info.rows,
                                "settings": _plain(asdict(settings)),
                                "config": _config_fields(config)})
            result = run_iterations(algo, out, settings.loop,
                                    updates_per_iteration=settings.updates_per_iteration,
                                    rows_per_update=config.train_batch_size_per_learner
                                    * max(1, settings.num_learners),
                                    start=start, tracker=tracker)
            _stop(algo)
            checkpoint = latest_checkpoint(out).checkpoint
            export_checkpoint(checkpoint, out / SCORER_FILE, config)
            tracker.log_artifact(out / SCORER_FILE)
    finally:
        del algo
        gc.collect()  # the learner's data iterator must finish while Ray is still up
        if started:
            ray.shutdown()
    report = {"samples": str(Path(samples).resolve()), "rows": info.rows,
              "state_names": list(info.state_names), "sample_mode": info.mode,
              "resumed_from": str(start.checkpoint) if start else None,
              "settings": _plain(asdict(settings)), "config": _config_fields(config),
              "checkpoint": str(checkpoint), "scorer": str(out / SCORER_FILE),
              "wall_s": time.perf_counter() - began, **result}
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report


def _stop(algo) -> None:
    """Stop the algorithm, closing its open data iterators first (they would otherwise be
    finalised after Ray shuts down, with a noisy traceback)."""
    iterators = getattr(algo.offline_data, "batch_iterators", None)
    for iterator in iterators if isinstance(iterators, list) else [iterators]:
        if hasattr(iterator, "close"):
            iterator.close()
    algo.stop()
    gc.collect()


def load_module(checkpoint: str | Path):
    """The trained RLIVUAModule of a checkpoint, without starting Ray or an Algorithm
    (``Algorithm.from_checkpoint`` fails for env-less algorithms in Ray 2.60)."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    return RLModule.from_checkpoint(str(Path(checkpoint).joinpath(*MODULE_PATH).resolve()))


def export_checkpoint(checkpoint: str | Path, path: str | Path, config: RLIVUAConfig) -> Path:
    """Export a checkpoint's network to a file that scores with plain torch (serving.py)."""
    from rliv_ray.serving import export_scorer

    module = load_module(checkpoint)
    return export_scorer(module.net, path, gamma=config.gamma, grid=config.action_grid)


def _prepare_out(out: Path, *, resume: bool, overwrite: bool) -> Resumed | None:
    if resume:
        start = latest_checkpoint(out)
        if start is None:
            raise FileNotFoundError(f"{out}: no checkpoint to resume from")
        return start
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty: pass --resume to continue its "
                                  "training or --overwrite to start again")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return None


def _config_fields(config: RLIVUAConfig) -> dict[str, Any]:
    from rliv_ray.algorithms.rliv_ua.config import NETWORK_DEFAULTS, RLIV_DEFAULTS

    names = (*NETWORK_DEFAULTS, *RLIV_DEFAULTS, "gamma", "lr", "train_batch_size_per_learner")
    return _plain({name: getattr(config, name) for name in names})


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
