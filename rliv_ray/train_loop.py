"""The iteration loop shared by our offline RLlib algorithms: metrics, checkpoints, resume.

    OUT/checkpoints/iter_000010/     module.pt, state.pt (tensors only) and state.json
                                     (iteration, updates, last metrics, the module's
                                     description): rliv_ray.algorithms.common.checkpoint
    OUT/checkpoints/latest           the name of the newest good checkpoint
    OUT/metrics.jsonl                one line of metrics per iteration

Every iteration's loss is checked: a NaN or infinite loss stops training with
:class:`TrainingDiverged`, and no checkpoint is written after it, so ``latest`` stays the last
good one. A checkpoint is written into ``iter_NNNNNN.tmp-<pid>`` and renamed when complete, so
``latest`` never names a partial one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rliv_ray.tracking import NoOpTracker, Tracker

CHECKPOINTS = "checkpoints"
LATEST = "latest"
STATE_FILE = "state.json"
SaveState = Callable[[Any, Path], dict]
"""``save_state(algo, directory) -> fields``: writes the algorithm's state files into the
directory and returns what ``state.json`` records besides the loop's counters."""
METRICS_FILE = "metrics.jsonl"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the last good checkpoint."""


@dataclass(frozen=True)
class LoopSettings:
    iterations: int = 20
    """RLlib iterations (``algo.train()`` calls) to reach, counting resumed ones."""
    checkpoint_every: int = 5
    """Write a checkpoint every this many iterations (and always after the last)."""
    loss_key: str = "loss/total"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.checkpoint_every < 1:
            raise ValueError(f"iterations and checkpoint_every must be >= 1, got "
                             f"{self.iterations}, {self.checkpoint_every}")


@dataclass(frozen=True)
class Resumed:
    checkpoint: Path
    iteration: int
    updates: int


def latest_checkpoint(out: str | Path) -> Resumed | None:
    """The newest good checkpoint under ``out``, or None when there is none; DataFileError
    (one line) if it is not one this version wrote."""
    from rliv_ray.tensor_files import DataFileError

    pointer = Path(out) / CHECKPOINTS / LATEST
    if not pointer.exists():
        return None
    checkpoint = pointer.parent / pointer.read_text().strip()
    try:
        state = json.loads((checkpoint / STATE_FILE).read_text())
        return Resumed(checkpoint, int(state["iteration"]), int(state["updates"]))
    except FileNotFoundError as err:
        old = (checkpoint / "rliv_train.json").exists()
        raise DataFileError(f"{checkpoint}: " + (
            "an RLlib checkpoint of an earlier rliv-ray, which is not read (its pickles could "
            "run code): start again with --overwrite" if old else
            f"no {STATE_FILE}, not a checkpoint")) from err
    except (ValueError, KeyError, TypeError) as err:
        raise DataFileError(f"{checkpoint / STATE_FILE}: not a checkpoint's state "
                            f"({type(err).__name__}: {err})") from err


def learner_metrics(result: dict[str, Any], module_id: str = "default_policy") -> dict:
    """Our loss and Q metrics of one ``algo.train()`` result (flat ``loss/...`` keys)."""
    metrics = result.get("learners", {}).get(module_id, {})
    return {k: float(v) for k, v in metrics.items()
            if k.startswith(("loss/", "q/", "td/", "pi/", "reward"))}


def run_iterations(algo, out: str | Path, settings: LoopSettings, *, updates_per_iteration: int,
                   rows_per_update: int, save_state: SaveState, start: Resumed | None = None,
                   tracker: Tracker | None = None,
                   on_checkpoint: Callable[[Path, int, dict], None] | None = None,
                   evaluate: Callable[[Path, int], dict[str, float]] | None = None
                   ) -> dict[str, Any]:
    """Train ``algo`` up to ``settings.iterations``; return the last metrics and the timing.

    ``evaluate(checkpoint, iteration)`` is called after every checkpoint is written and its
    metrics (off-policy estimates of the policy) join that iteration's: its line of
    ``metrics.jsonl``, its MLflow step and the returned ``evaluation``.
    ``on_checkpoint(checkpoint, iteration, metrics)`` is called after that line is written (a
    sweep's trial evaluates and reports the policy there)."""
    out = Path(out)
    tracker = tracker or NoOpTracker()
    (out / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    iteration = start.iteration if start else 0
    updates = start.updates if start else 0
    metrics: dict[str, float] = {}
    evaluation: dict[str, float] = {}
    seconds = 0.0
    while iteration < settings.iterations:
        began = time.perf_counter()
        result = algo.train()
        took = time.perf_counter() - began
        seconds += took
        iteration += 1
        updates += updates_per_iteration
        metrics = learner_metrics(result)
        loss = metrics.get(settings.loss_key, math.nan)
        if not math.isfinite(loss):
            good = latest_checkpoint(out)
            raise TrainingDiverged(
                f"training loss ({settings.loss_key}) is {loss} at iteration {iteration}; "
                f"stopped. Last good checkpoint: "
                f"{good.checkpoint if good else 'none (no checkpoint was written yet)'}. "
                "Try a lower learning rate, or check the shards for extreme values.")
        metrics["time/iteration_s"] = took
        metrics["time/updates_per_s"] = updates_per_iteration / took
        metrics["time/rows_per_s"] = updates_per_iteration * rows_per_update / took
        checkpoint, extra = None, {}
        if iteration % settings.checkpoint_every == 0 or iteration == settings.iterations:
            checkpoint = save_checkpoint(algo, out, iteration, updates, metrics, save_state)
            if evaluate is not None:
                extra = evaluation = evaluate(checkpoint, iteration) or {}
        tracker.log_metrics({**metrics, **{k: v for k, v in extra.items() if math.isfinite(v)}},
                            step=iteration)
        with (out / METRICS_FILE).open("a") as f:
            f.write(json.dumps({"iteration": iteration, "updates": updates, **metrics,
                                **{k: _finite_or_none(v) for k, v in extra.items()}}) + "\n")
        if settings.progress:
            _show(iteration, settings.iterations, metrics)
        if checkpoint is not None and on_checkpoint is not None:
            on_checkpoint(checkpoint, iteration, metrics)
    return {"iteration": iteration, "updates": updates, "seconds": seconds, "metrics": metrics,
            "evaluation": evaluation}


def _finite_or_none(value: float) -> float | None:
    """JSON has no nan: an estimate that could not be made is null."""
    return value if math.isfinite(value) else None


def save_checkpoint(algo, out: Path, iteration: int, updates: int, metrics: dict,
                    save_state: SaveState) -> Path:
    """Write ``OUT/checkpoints/iter_NNNNNN`` (complete or not at all) and point ``latest``
    at it."""
    name = f"iter_{iteration:06d}"
    path = out / CHECKPOINTS / name
    tmp = path.with_name(f"{name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    fields = save_state(algo, tmp)
    state = {**fields, "iteration": iteration, "updates": updates, "metrics": metrics}
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
    if path.exists():  # written by a run that stopped before pointing latest at it
        shutil.rmtree(path)
    tmp.rename(path)
    pointer = out / CHECKPOINTS / LATEST
    tmp = pointer.with_suffix(".tmp")
    tmp.write_text(name + "\n")
    tmp.replace(pointer)  # atomic: latest never names a half-written checkpoint
    return path


def _show(iteration: int, total: int, metrics: dict[str, float]) -> None:
    """One line: the total loss, then per tower (RLIV-UA) or per term (SL-MGAC), and speed."""
    towers = sorted(k.split("/")[-1] for k in metrics if k.startswith("loss/td/"))
    if towers:
        td = " ".join(f"{t}={metrics[f'loss/td/{t}']:.4f}" for t in towers)
        q = " ".join(f"{t}={metrics[f'q/mean/{t}']:.3f}" for t in towers)
        detail = f"td[{td}]  Q[{q}]"
    else:
        detail = "  ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())
                           if k.count("/") == 1 and k != "loss/total"
                           and k.startswith(("loss/", "q/mean", "pi/")))
    sys.stderr.write(f"iter {iteration}/{total}  loss {metrics['loss/total']:.4f}  {detail}  "
                     f"{metrics['time/updates_per_s']:.1f} updates/s "
                     f"({metrics['time/rows_per_s']:,.0f} rows/s)\n")
    sys.stderr.flush()
