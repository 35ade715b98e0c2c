"""The iteration loop shared by our offline RLlib algorithms: metrics, checkpoints, resume.

    OUT/checkpoints/iter_000010/     module.pt, state.pt (tensors only) and state.json
                                     (iteration, updates, last metrics, the module's
                                     description): rliv_ray.algorithms.common.checkpoint
    OUT/checkpoints/latest           the name of the newest good checkpoint
    OUT/metrics.jsonl                one line of metrics per iteration

Every loss is checked: a NaN or infinite loss stops training with :class:`TrainingDiverged`,
whose one line names the loss term (and tower) that went first, and no checkpoint is written
after it, so ``latest`` stays the last good one. The learners check every update
(:class:`LossNotFinite`); the loop checks every iteration's metrics too. A checkpoint is
written into ``iter_NNNNNN.tmp-<pid>`` and renamed when complete, so ``latest`` never names a
partial one.

Interrupts (:class:`StopSignals`): the first SIGINT or SIGTERM during the iterations lets the
current iteration finish, writes its checkpoint and raises :class:`TrainingInterrupted`; a
second one stops at once (at the next update) and keeps the last checkpoint written. A signal
while Ray starts or the algorithm is built stops the run as soon as that step is over (a Ray
cut short half-way leaves processes behind); a second one stops it at once.

Resuming (``start``) first makes OUT exactly what the checkpoint continues: ``metrics.jsonl``
loses the lines of iterations after it (a run killed with SIGKILL wrote them) and checkpoint
folders that were never completed are removed.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rliv_ray.interrupts import Abort, StopSignals, TrainingInterrupted
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


class LossNotFinite(FloatingPointError):
    """Raised by a learner at the first update whose loss terms are not all finite; the
    message (one line) names the update and the terms, e.g. ``update 57: the td loss of
    tower gift is inf (also not finite: loss/total)``; :func:`run_iterations` turns it into
    :class:`TrainingDiverged`."""


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


def describe_term(key: str) -> str:
    """``loss/td/gift`` -> ``td loss of tower gift``; ``loss/critic`` -> ``critic loss``."""
    parts = key.split("/")[1:] if key.startswith("loss/") else [key]
    if len(parts) == 2:
        return f"{parts[0]} loss of tower {parts[1]}"
    return f"{parts[0]} loss" if parts else key


def nonfinite_terms(metrics: dict[str, float]) -> str | None:
    """None if every loss term of ``metrics`` is finite, else one phrase naming the first
    non-finite term (the total only when it alone is not finite) and its value, then the
    others, e.g. ``the td loss of tower gift is inf (also not finite: loss/total)``."""
    bad = [k for k, v in metrics.items() if k.startswith("loss/") and not math.isfinite(v)]
    if not bad:
        return None
    terms = [k for k in bad if k != "loss/total"] or bad
    first = terms[0]
    others = [k for k in bad if k != first]
    return (f"the {describe_term(first)} is {metrics[first]}"
            + (f" (also not finite: {', '.join(others)})" if others else ""))


def check_loss_terms(metrics: dict[str, float], update: int) -> None:
    """Raise :class:`LossNotFinite` if a loss term of one update is NaN or infinite."""
    problem = nonfinite_terms(metrics)
    if problem is not None:
        raise LossNotFinite(f"update {update}: {problem}")


def _loss_not_finite(err: BaseException) -> str | None:
    """The message of a LossNotFinite raised by a learner, wrapped by RLlib or Ray or not."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, LossNotFinite):
            return str(err).strip().splitlines()[-1]
        found = re.search(rf"{LossNotFinite.__name__}: (.+)", str(err))
        if found:
            return found.group(1).strip()
        err = err.__cause__ or err.__context__
    return None


def _diverged(out: Path, iteration: int, problem: str) -> TrainingDiverged:
    good = latest_checkpoint(out)
    return TrainingDiverged(
        f"training diverged at iteration {iteration}{problem}; stopped. Last good "
        f"checkpoint: {good.checkpoint if good else 'none (no checkpoint was written yet)'}. "
        "Try a lower learning rate, or check the shards for extreme values.")


def prepare_resume(out: Path, start: Resumed) -> None:
    """Make OUT what ``start`` continues: drop the metrics of later iterations (and a line cut
    short) from ``metrics.jsonl``, and remove unfinished checkpoint folders (``*.tmp-*``) and
    checkpoints after ``start`` that ``latest`` never named."""
    metrics = out / METRICS_FILE
    if metrics.exists():
        kept = []
        for line in metrics.read_text().splitlines():
            try:
                if int(json.loads(line)["iteration"]) <= start.iteration:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                continue  # cut short by a kill
        tmp = metrics.with_name(f"{METRICS_FILE}.tmp-{os.getpid()}")
        tmp.write_text("".join(f"{line}\n" for line in kept))
        tmp.replace(metrics)
    folder = out / CHECKPOINTS
    for path in folder.glob("iter_*"):
        number = re.fullmatch(r"iter_(\d+)", path.name)
        if ".tmp-" in path.name or (number and int(number.group(1)) > start.iteration):
            shutil.rmtree(path, ignore_errors=True)
    (folder / f"{LATEST}.tmp").unlink(missing_ok=True)


def run_iterations(algo, out: str | Path, settings: LoopSettings, *, updates_per_iteration: int,
                   rows_per_update: int, save_state: SaveState, start: Resumed | None = None,
                   tracker: Tracker | None = None,
                   on_checkpoint: Callable[[Path, int, dict], None] | None = None,
                   evaluate: Callable[[Path, int], dict[str, float]] | None = None,
                   stop: StopSignals | None = None) -> dict[str, Any]:
    """Train ``algo`` up to ``settings.iterations``; return the last metrics and the timing.

    ``evaluate(checkpoint, iteration)`` is called after every checkpoint is written and its
    metrics (off-policy estimates of the policy) join that iteration's: its line of
    ``metrics.jsonl``, its MLflow step and the returned ``evaluation``.
    ``on_checkpoint(checkpoint, iteration, metrics)`` is called after that line is written (a
    sweep's trial evaluates and reports the policy there). With ``stop`` (armed here), a signal
    stops the loop after the current iteration, which is checkpointed:
    :class:`TrainingInterrupted`."""
    out = Path(out)
    tracker = tracker or NoOpTracker()
    (out / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    if start is not None:
        prepare_resume(out, start)
    iteration = start.iteration if start else 0
    updates = start.updates if start else 0
    metrics: dict[str, float] = {}
    evaluation: dict[str, float] = {}
    seconds = 0.0
    if stop is not None:
        if stop.requested:  # a signal while the run was starting
            raise Abort(stop.signum)
        stop.armed = True
    while iteration < settings.iterations:
        began = time.perf_counter()
        try:
            result = algo.train()
        except Exception as err:
            problem = _loss_not_finite(err)
            if problem is None:
                raise
            raise _diverged(out, iteration + 1, f", {problem}") from None
        took = time.perf_counter() - began
        seconds += took
        iteration += 1
        updates += updates_per_iteration
        metrics = learner_metrics(result)
        problem = nonfinite_terms(metrics)
        if problem is None and not math.isfinite(metrics.get(settings.loss_key, math.nan)):
            problem = f"{settings.loss_key} is {metrics.get(settings.loss_key, math.nan)}"
        if problem is not None:
            raise _diverged(out, iteration, f": {problem}")
        metrics["time/iteration_s"] = took
        metrics["time/updates_per_s"] = updates_per_iteration / took
        metrics["time/rows_per_s"] = updates_per_iteration * rows_per_update / took
        stopping = stop is not None and stop.requested
        checkpoint, extra = None, {}
        if (iteration % settings.checkpoint_every == 0 or iteration == settings.iterations
                or stopping):
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
        if stopping and iteration < settings.iterations:
            raise TrainingInterrupted(stop.signum, checkpoint, iteration)
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
