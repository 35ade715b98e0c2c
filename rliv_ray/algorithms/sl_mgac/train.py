"""``rliv train sl-mgac``: SL-MGAC on the train shards of ``rliv build-live-samples``.

    OUT/checkpoints/...      checkpoints every K iterations (see rliv_ray.train_loop)
    OUT/metrics.jsonl        per-iteration critic, RPN and actor losses, Q and policy stats
    OUT/policy.pt            the trained network, its spec and the group edges (plain torch)
    OUT/train.json           settings, data, final metrics, the final off-policy estimates

With ``ope`` (``rliv train sl-mgac``'s default: ncis, snips, dr), the policy of the last
checkpoint (of every checkpoint with ``ope_each_checkpoint``) is scored on the samples' held-out
users by ``rliv ope``'s streaming estimators (:mod:`rliv_ray.ope.metrics`): ``eval/<name>``,
``eval/<name>_lo``, ``_hi`` and ``_ess`` join that iteration's line of metrics.jsonl and its
MLflow step, and train.json's ``ope``.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import pyarrow.parquet as pq

from rliv_ray import schema as S
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
from rliv_ray.algorithms.sl_mgac.config import SETTINGS_DEFAULTS, SPEC_DEFAULTS, SLMGACConfig
from rliv_ray.algorithms.sl_mgac.network import SLMGACNetwork
from rliv_ray.data.io import read_manifest
from rliv_ray.offline.live_prelearner import required_live_columns
from rliv_ray.offline.prelearner import ShardError
from rliv_ray.offline.shards import check_shard_values
from rliv_ray.tensor_files import DataFileError, load_meta_file, save_tensors, to_json, why

POLICY_FILE = "policy.pt"
REPORT_FILE = "train.json"
TRAIN_DIR = "train"


def train_files(samples: str | Path) -> tuple[list[Path], dict]:
    """The train shards of a build-live-samples output and its manifest; ShardError if not."""
    root = Path(samples)
    files = sorted((root / TRAIN_DIR).glob("*.parquet"))
    manifest = read_manifest(root)
    if not files or "edges" not in manifest:
        raise ShardError(f"{root}: not a `rliv build-live-samples` output (no {TRAIN_DIR}/ "
                         "shards or no group edges in manifest.json)")
    schema = pq.read_schema(files[0])
    for column in required_live_columns():
        if column not in schema.names:
            raise ShardError(f"{files[0]}: sample shard lacks column '{column}'")
    return files, manifest


def build_config(files: list[Path], manifest: dict, settings: TrainSettings) -> SLMGACConfig:
    """The RLlib config: feature widths from the schema, K from the samples' groups."""
    from rliv_ray.offline.live_prelearner import LivePreLearner

    schema = pq.read_schema(files[0])
    widths = {"user_dim": schema.field(S.USER_FEATURES).type.list_size,
              "live_dim": schema.field(S.LIVE_FEATURES).type.list_size}
    groups = settings.training.get("groups", manifest["groups"])
    if groups != manifest["groups"]:
        raise ValueError(f"the samples were built with K={manifest['groups']} user groups, "
                         f"not {groups}: rebuild them with `rliv build-live-samples --groups "
                         f"{groups}`")
    config = configured(SLMGACConfig, {**settings.training, **widths, "groups": groups})
    config = config.environment(
        observation_space=gym.spaces.Box(-np.inf, np.inf, (widths["user_dim"],), np.float32),
        action_space=gym.spaces.Discrete(2))
    return with_offline_data(config, files, settings, LivePreLearner)


def train_sl_mgac(samples: str | Path, out: str | Path, settings: TrainSettings, *,
                  resume: bool = False, overwrite: bool = False,
                  tracking_uri: str | None = None,
                  on_export: Callable[[Path, int, dict], None] | None = None,
                  ope=None, ope_each_checkpoint: bool = False,
                  say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train, checkpoint and save the policy; returns the report also in OUT/train.json.
    ``on_export(policy, iteration, metrics)``: the policy is saved at every checkpoint too and
    handed over (``rliv sweep``). ``ope``: an :class:`~rliv_ray.ope.metrics.OPEMetricSettings`
    (module docstring); None: no off-policy estimates."""
    out = Path(out)
    say = say or _stderr
    files, manifest = train_files(samples)
    # Settings, data and CPUs are checked before OUT is claimed: a refused run leaves nothing.
    settings = resumed_training(out, settings, resume=resume)
    config = build_config(files, manifest, settings)
    check_shard_values(files)
    check_resume(out, config, resume=resume)
    if ope is not None and not _held_out(samples):
        say(f"note: {samples} has no held-out users ({TEST_DIR}/): no off-policy estimates")
        ope = None
    with training_ray(settings), \
            training_out(out, samples, resume=resume, overwrite=overwrite) as start:
        settings = remember_training(out, settings, start)
        params = {"samples": str(Path(samples).resolve()), "files": len(files),
                  "groups": manifest["groups"], "terminal": manifest.get("terminal", "session"),
                  "settings": settings_params(settings),
                  "config": plain({k: getattr(config, k) for k in (*SPEC_DEFAULTS,
                                                                    *SETTINGS_DEFAULTS)})}
        skipped: dict[str, str] = {}
        evaluate = (None if ope is None else
                    _ope_evaluator(samples, manifest, config, ope, skipped, say))
        if ope is not None:
            params["ope"] = {"estimators": list(ope.estimators), "epsilon": ope.epsilon,
                             "bootstrap": ope.bootstrap, "each_checkpoint": ope_each_checkpoint}
        result = run_training(
            config, out, settings, start=start, params=params, tracking_uri=tracking_uri,
            run_name=f"train-sl-mgac__{Path(samples).name}__{settings.seed}",
            export=lambda checkpoint: save_policy(checkpoint, out / POLICY_FILE, manifest),
            on_export=on_export, evaluate=evaluate, evaluate_each_checkpoint=ope_each_checkpoint)
        evaluation = result.pop("evaluation", {})
        report = {**params, **result, "policy": result["export"]}
        if ope is not None:
            report["ope"] = {k: v if math.isfinite(v) else None for k, v in evaluation.items()}
            report["ope_skipped"] = skipped
        (out / REPORT_FILE).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report


TEST_DIR = "test"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _held_out(samples: str | Path) -> bool:
    return any((Path(samples) / TEST_DIR).glob("*.parquet"))


def _ope_evaluator(samples: str | Path, manifest: dict, config: SLMGACConfig, ope,
                   skipped: dict[str, str], say: Callable[[str], None]):
    """``evaluate(policy, iteration)`` of :func:`run_training`: the policy's off-policy
    estimates on the held-out users (nan where one cannot be made, its reason in ``skipped``).
    A failure costs the estimates, never the training: one warning line."""
    from rliv_ray.data.live_config import LiveWorldConfig
    from rliv_ray.ope.metrics import held_out_metrics, network_target

    world = manifest.get("source", {}).get("world")
    beta = LiveWorldConfig.from_dict(world).beta if world else config.beta

    def evaluate(policy: Path, iteration: int) -> dict[str, float]:
        try:
            target = network_target(policy, epsilon=ope.epsilon,
                                    reward_scale=config.reward_scale)
            metrics, why = held_out_metrics(samples, target, ope, beta=beta)
        except ValueError as err:  # OPEInputError and DataFileError among them
            say(f"warning: no off-policy estimates at iteration {iteration}: "
                f"{str(err).splitlines()[0] if str(err) else type(err).__name__}")
            return {}
        skipped.clear()
        skipped.update(why)
        return metrics

    return evaluate


def save_policy(checkpoint: str | Path, path: Path, manifest: dict) -> Path:
    """The trained network with its spec and the samples' group edges, for evaluation: the
    tensors and one JSON string, so that :func:`load_policy` never unpickles code."""
    module = load_module(checkpoint)
    meta = {"spec": asdict(module.spec), "edges": [float(e) for e in manifest["edges"]],
            "groups": manifest["groups"], "method": module.model_config["method"]}
    return save_tensors({"meta": to_json(meta), "state_dict": dict(module.net.state_dict())},
                        path)


class TrainedPolicy(NamedTuple):
    net: SLMGACNetwork
    edges: np.ndarray
    method: str
    """The row of Tables 1-2 it was trained as; ``baselines.method(name).probability`` gives
    its P(a = 1 | s)."""


def load_policy(path: str | Path) -> TrainedPolicy:
    """The network (eval mode), group edges and method saved by :func:`save_policy`."""
    from rliv_ray.algorithms.sl_mgac.config import spec_from_fields

    what = "a policy file written by `rliv train sl-mgac` of this version"
    meta, state_dict = load_meta_file(path, what, "train again")
    try:
        spec = dict(meta["spec"])
        spec.setdefault("session_state", False)  # saved before the network read the session
        for name in ("live_bins", "video_bins"):
            spec[name] = list(spec[name]["boundaries"])
        net = SLMGACNetwork(spec_from_fields(spec))
        net.load_state_dict(state_dict)
        return TrainedPolicy(net.eval(), np.asarray(meta["edges"]), meta["method"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise DataFileError(f"{path}: not {what} ({why(err)}; train again)") from err
