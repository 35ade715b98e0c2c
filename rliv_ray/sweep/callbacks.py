"""Ray Tune callbacks of a sweep, run in the driver: MLflow child runs and progress lines.

Tune pickles them with the experiment, so a resumed sweep gets them back as they were.
"""

from __future__ import annotations

import math

from ray.tune import Callback

from rliv_ray.sweep.config import SweepConfig
from rliv_ray.sweep.space import trial_params
from rliv_ray.sweep.tracking import SweepTracker
from rliv_ray.sweep.trainable import trial_seed


def child_run_name(config: SweepConfig, trial_id: str) -> str:
    return f"{config.algorithm}__{config.name}__{trial_id}"


class MLflowCallback(Callback):
    """Tune's events -> the trials' child runs (the parent is handled by ``run_sweep``)."""

    def __init__(self, tracker: SweepTracker, config: SweepConfig):
        self.tracker, self.config = tracker, config

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        params = {**trial_params(self.config, trial.config), "trial_id": trial.trial_id,
                  "seed": trial_seed(self.config, trial.trial_id)}
        self.tracker.child(trial.trial_id, child_run_name(self.config, trial.trial_id), params)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        metrics = {k: v for k, v in result.items() if k.startswith(("eval/", "train/"))}
        self.tracker.log(self.tracker.child_id(trial.trial_id), metrics=metrics,
                         step=int(result.get("iteration", 0)))

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.tracker.end(self.tracker.child_id(trial.trial_id), "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.tracker.end(self.tracker.child_id(trial.trial_id), "FAILED")


class ProgressCallback(Callback):
    """One line per report and per trial's end (Tune's own tables are off)."""

    def __init__(self, config: SweepConfig):
        self.config = config

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        metric = self.config.metric
        print(f"  {trial.trial_id} {trial_params(self.config, trial.config)}: iteration "
              f"{result.get('iteration')}, {metric} {result.get(metric, math.nan):.4g}",
              flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        print(f"  {trial.trial_id}: done", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        print(f"  {trial.trial_id}: failed (see {trial.path}/error.txt)", flush=True)
