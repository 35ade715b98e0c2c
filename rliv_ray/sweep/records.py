"""The sweep's own record of each trial, ``SWEEP/trials/<trial id>/trial.json``: what a resume
reads, and all it reads.

    {"trial_id": "trial_00002", "point": {"gamma": 0.9, "groups": 2}, "seed": 2,
     "status": "running" | "finished" | "stopped early" | "error",
     "reports": [{"iteration": 2, "eval/ncis": ..., "train/loss/total": ..., "policy": ...}],
     "error": null | "<Tune's error.txt of the trial>"}

The driver writes it from Tune's callbacks (:class:`~rliv_ray.sweep.callbacks.RecordCallback`):
at the trial's start, at each report and at its end, each time whole (a temporary file renamed
over the old one). ``rliv sweep --resume`` plans the same trials again
(:func:`~rliv_ray.sweep.space.plan_trials`), keeps those whose record says ``finished`` or
``stopped early`` for the planned point, and runs every other one again from scratch; the
summary is built from the records. Tune's own experiment files (pickles, which could run code)
are never read back: each run of Tune writes into a new ``SWEEP/tune/attempt_N``. A record
that is not valid JSON of this shape is treated as no record (its trial runs again).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

RECORD_FILE = "trial.json"
DONE = ("finished", "stopped early")
ENDED = (*DONE, "error")
_KEYS = ("trial_id", "point", "status", "reports")


def record_path(trials_dir: str | Path, trial_id: str) -> Path:
    return Path(trials_dir) / trial_id / RECORD_FILE


def read_record(trials_dir: str | Path, trial_id: str) -> dict[str, Any] | None:
    """The trial's record, or None when it has none that reads as one (JSON only)."""
    try:
        record = json.loads(record_path(trials_dir, trial_id).read_text())
    except (OSError, ValueError):
        return None
    if (not isinstance(record, dict) or any(k not in record for k in _KEYS)
            or record["trial_id"] != trial_id or not isinstance(record["reports"], list)
            or not all(isinstance(r, dict) for r in record["reports"])
            or not isinstance(record["point"], dict)):
        return None
    return record


def write_record(trials_dir: str | Path, record: dict[str, Any]) -> None:
    """Write the record whole: a temporary file, then renamed over the old one."""
    path = record_path(trials_dir, record["trial_id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{RECORD_FILE}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)


def is_done(record: dict[str, Any] | None, point: dict[str, Any]) -> bool:
    """True when the record is of a finished (or early-stopped) trial at ``point``."""
    return (record is not None and record["status"] in DONE and record["point"] == point
            and bool(record["reports"]))


def finished_trials(trials_dir: str | Path,
                    plan: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """trial id -> record of every planned trial that is done (:func:`is_done`)."""
    records = {tid: read_record(trials_dir, tid) for tid in plan}
    return {tid: r for tid, r in records.items() if is_done(r, plan[tid])}


def report_entry(result: dict[str, Any]) -> dict[str, Any]:
    """What a record keeps of one of Tune's results: the iteration, the ``eval/`` and
    ``train/`` numbers and the exported policy."""
    entry: dict[str, Any] = {}
    for key, value in result.items():
        if key == "policy" and isinstance(value, str):
            entry[key] = value
        elif (key == "iteration" or key.startswith(("eval/", "train/"))) and isinstance(
                value, int | float) and not isinstance(value, bool):
            entry[key] = value if math.isfinite(value) else None
    return entry


def number(value: Any) -> float:
    """A record's number (None: nan)."""
    return math.nan if value is None else float(value)
