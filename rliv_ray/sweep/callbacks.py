"""Ray Tune callbacks of a sweep, run in the driver: the trials' records, MLflow child runs and
progress lines.

A Tune trial's config is ``{"trial_id": ID}``, one of the sweep's planned trials
(:func:`~rliv_ray.sweep.space.plan_trials`); its point comes from the plan.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ray.tune import Callback

from rliv_ray.sweep.config import SweepConfig
from rliv_ray.sweep.records import read_record, report_entry, write_record
from rliv_ray.sweep.space import trial_params
from rliv_ray.sweep.tracking import SweepTracker
from rliv_ray.sweep.trainable import trial_seed

TRIAL_KEY = "trial_id"


def child_run_name(config: SweepConfig, trial_id: str) -> str:
    return f"{config.algorithm}__{config.name}__{trial_id}"


def sweep_id(trial) -> str:
    """The sweep's id of a Tune trial."""
    return trial.config[TRIAL_KEY]


class RecordCallback(Callback):
    """Tune's events -> ``SWEEP/trials/<id>/trial.json`` (:mod:`rliv_ray.sweep.records`). Runs
    first, so a trial's record is written before its progress line is printed."""

    def __init__(self, config: SweepConfig, plan: dict[str, dict[str, Any]], trials_dir: str):
        self.config, self.plan, self.trials_dir = config, plan, trials_dir
        self._records: dict[str, dict[str, Any]] = {}

    def _record(self, trial_id: str) -> dict[str, Any]:
        if trial_id not in self._records:
            self._records[trial_id] = read_record(self.trials_dir, trial_id) or self._fresh(
                trial_id)
        return self._records[trial_id]

    def _fresh(self, trial_id: str) -> dict[str, Any]:
        return {"trial_id": trial_id, "point": self.plan[trial_id],
                "seed": trial_seed(self.config, trial_id), "status": "running", "reports": [],
                "error": None}

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        record = self._records[sweep_id(trial)] = self._fresh(sweep_id(trial))
        write_record(self.trials_dir, record)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if "iteration" not in result:  # not one of the trial's reports
            return
        record = self._record(sweep_id(trial))
        record["reports"].append(report_entry(result))
        write_record(self.trials_dir, record)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        """A trial that returned, or that the scheduler stopped (never one that Ctrl-C
        interrupted: Tune stops those without this call, so they stay ``running``)."""
        record = self._record(sweep_id(trial))
        reports = record["reports"]
        last = reports[-1].get("iteration", 0) if reports else 0
        record["status"] = ("finished" if (last or 0) >= self.config.training.iterations
                            else "stopped early")
        write_record(self.trials_dir, record)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        record = self._record(sweep_id(trial))
        record["status"] = "error"
        record["error"] = str(Path(trial.path) / "error.txt") if trial.path else None
        write_record(self.trials_dir, record)


class MLflowCallback(Callback):
    """Tune's events -> the trials' child runs (the parent is handled by ``run_sweep``)."""

    def __init__(self, tracker: SweepTracker, config: SweepConfig,
                 plan: dict[str, dict[str, Any]]):
        self.tracker, self.config, self.plan = tracker, config, plan

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        trial_id = sweep_id(trial)
        params = {**trial_params(self.config, self.plan[trial_id]), "trial_id": trial_id,
                  "seed": trial_seed(self.config, trial_id)}
        self.tracker.child(trial_id, child_run_name(self.config, trial_id), params)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        metrics = {k: v for k, v in result.items() if k.startswith(("eval/", "train/"))}
        self.tracker.log(self.tracker.child_id(sweep_id(trial)), metrics=metrics,
                         step=int(result.get("iteration", 0)))

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.tracker.end(self.tracker.child_id(sweep_id(trial)), "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.tracker.end(self.tracker.child_id(sweep_id(trial)), "FAILED")


class ProgressCallback(Callback):
    """One line per report and per trial's end (Tune's own tables are off)."""

    def __init__(self, config: SweepConfig, plan: dict[str, dict[str, Any]]):
        self.config, self.plan = config, plan

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        metric, trial_id = self.config.metric, sweep_id(trial)
        value = result.get(metric)
        value = math.nan if value is None else value
        print(f"  {trial_id} {trial_params(self.config, self.plan[trial_id])}: iteration "
              f"{result.get('iteration')}, {metric} {value:.4g}", flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        print(f"  {sweep_id(trial)}: done", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        print(f"  {sweep_id(trial)}: failed (see {trial.path}/error.txt)", flush=True)
