"""The Ray Tune function trainable of a sweep: one trial = one ``rliv train`` run.

A Tune trial's config is ``{"trial_id": ID}``: the trial's point comes from the sweep's plan
(:func:`~rliv_ray.sweep.space.plan_trials`), carried in the :class:`TrialContext`.

A trial trains through the same entry point as ``rliv train rliv-ua`` / ``rliv train sl-mgac``
(``train_rliv_ua`` / ``train_sl_mgac``), which checkpoints every ``training.eval_every``
iterations; each checkpoint's exported policy is kept under ``policies/`` and evaluated
(:func:`~rliv_ray.sweep.evaluate.report_metrics`), and that evaluation is reported to Tune,
with the training metrics beside it under ``train/``. ASHA stops a trial at a report.

    SWEEP/trials/<trial id>/run/         the training output (checkpoints, metrics.jsonl, ...)
    SWEEP/trials/<trial id>/policies/    the policy of each report (iter_NNNNNN.pt)
    SWEEP/trials/<trial id>/starts.log   one line per start (a resumed sweep restarts only
                                         the trials that had not finished)
    SWEEP/trials/<trial id>/trial.json   the driver's record of the trial (records.py)
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rliv_ray.sweep.config import SweepConfig

POLICIES_DIR = "policies"
STARTS_FILE = "starts.log"
TRUTH_FILE = "truth.json"


@dataclass(frozen=True)
class TrialContext:
    """What every trial needs besides its point (passed with ``tune.with_parameters``)."""

    config: SweepConfig
    world: str
    samples: dict[str, str]
    """Sample builds by data key (:func:`~rliv_ray.sweep.data.prepare_samples`)."""
    trials_dir: str
    points: dict[str, dict[str, Any]]
    """The plan: trial id -> point."""


def trial_seed(config: SweepConfig, trial_id: str) -> int:
    """``training.seed`` plus the trial's index (ids end in ``_NNNNN``), so repeated points
    (``num_samples`` > 1) train with different seeds, the same ones on a resume."""
    from rliv_ray.sweep.space import trial_index

    return config.training.seed + trial_index(trial_id)


def run_trial(tune_config: dict[str, Any], context: TrialContext) -> None:
    """Train one point of the search space, reporting an evaluation at every checkpoint."""
    from ray import tune

    from rliv_ray.sweep.data import samples_for
    from rliv_ray.sweep.evaluate import report_metrics
    from rliv_ray.sweep.space import training_fields

    config = context.config
    trial_id = tune_config["trial_id"]
    point = context.points[trial_id]
    out = Path(context.trials_dir) / trial_id
    policies = out / POLICIES_DIR
    shutil.rmtree(policies, ignore_errors=True)  # a restarted trial starts from scratch
    (out / TRUTH_FILE).unlink(missing_ok=True)
    policies.mkdir(parents=True, exist_ok=True)
    with (out / STARTS_FILE).open("a") as f:
        f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
    samples = samples_for(context.samples, config, point)

    def on_export(exported: Path, iteration: int, metrics: dict) -> None:
        kept = policies / f"iter_{iteration:06d}{exported.suffix}"
        shutil.copy2(exported, kept)
        evaluation = report_metrics(config, samples, context.world, kept,
                                    training_fields(config, point))
        result = {"iteration": iteration, **evaluation,
                  **{f"train/{k}": v for k, v in metrics.items()}, "policy": str(kept)}
        tune.report(result)

    _train(config, samples, out / "run", point, trial_seed(config, trial_id), on_export)


def _train(config: SweepConfig, samples: str, out: Path, point: dict[str, Any], seed: int,
           on_export) -> None:
    from rliv_ray.algorithms.common.driver import TrainSettings
    from rliv_ray.sweep.space import training_fields
    from rliv_ray.train_loop import LoopSettings

    t = config.training
    settings = TrainSettings(
        loop=LoopSettings(iterations=t.iterations, checkpoint_every=t.eval_every, progress=False),
        updates_per_iteration=t.updates_per_iteration, seed=seed,
        training=training_fields(config, point))
    # A restarted trial (resumed sweep, errored before) starts again from scratch.
    if config.algorithm == "sl-mgac":
        from rliv_ray.algorithms.sl_mgac.train import train_sl_mgac

        train_sl_mgac(samples, out, settings, overwrite=True, on_export=on_export)
    else:
        from rliv_ray.algorithms.rliv_ua.train import train_rliv_ua

        train_rliv_ua(samples, out, settings, overwrite=True, on_export=on_export)
