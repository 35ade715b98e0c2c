"""Log -> RL sample shards, file by file, in-process or on Ray Data (RLIV-UA Algorithm 1).

1. **Bucket** (only for logs whose files do not each hold whole users): every input file is
   split by a hash of the user id into bucket parts, once; afterwards a bucket holds whole users.
2. **Stitch** each bucket (one vectorised function, no shuffle) and keep a seeded sample of its
   stitched tuples, at most ``max_train_tuples`` over the whole log.
3. **Train ASA** once on the driver on the tuples of 80% of the users; evaluate ASA and the
   rule-based approximation on the other 20% (paper Table 4).
4. **Predict and write**: ASA's weights are shipped to the workers; each bucket gets
   s_hat' for every interaction and is written as one shard. The true approximation error
   epsilon is measured against the pair's true next interaction in the full log, for every
   interaction that has one, including those stitching cannot reach (EQUATIONS 2.1(m)).

Where the per-file work runs is :func:`choose_sample_path`'s decision: in this process, or on
Ray Data when Ray can run enough files at once to pay for its start-up (or a cluster is given).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rliv_ray import schema as S
from rliv_ray.checks import InvalidInput
from rliv_ray.data import io, uris
from rliv_ray.data.validate import LogValidationError, check_log_files, validate_log
from rliv_ray.mdp import samples as SM
from rliv_ray.mdp.asa import (
    ASAConfig,
    ASAPredictor,
    approximation_errors,
    rule_based_next_state,
    validation_mask,
)
from rliv_ray.mdp.state import StateLayout
from rliv_ray.mdp.stitching import HISTORY_BUCKETS
from rliv_ray.runner import make_runner

SAMPLES_DIR = "samples"
ASA_MODEL = "asa.pt"
_TUPLES, _BUCKETS = "_asa_tuples", "_buckets"
AUTO = "auto"
RAY_MIN_TASKS = 3
"""Fewest tasks at a time for which ``workers="auto"`` starts a local Ray. With 2 workers on 2
cores Ray Data ran at 0.69x the in-process path at 2M rows and 0.97x at 10M
(``benchmarks/RESULTS.md``): its start-up and background processes eat the second task's gain."""


@dataclass(frozen=True)
class SamplePath:
    """Where the per-file work runs: in this process (``workers == 0``) or on Ray Data with
    ``workers`` tasks at a time. ``requested`` is what was asked for, ``reason`` why."""

    requested: str
    workers: int
    reason: str

    @property
    def engine(self) -> str:
        return "ray_data" if self.workers else "in_process"

    def describe(self) -> str:
        where = (f"Ray Data, {self.workers} tasks at a time" if self.workers
                 else "in this process, without Ray")
        return f"sample path: {where} (--workers {self.requested}: {self.reason})"


def choose_sample_path(requested: int | str, *, address: str | None, cpus: int,
                       files: int) -> SamplePath:
    """The rule behind ``--workers``; pure, so it is tested without Ray.

    An integer is obeyed (0: in-process). ``auto`` takes Ray Data on a cluster (one task per
    file; Ray places them) and locally when ``min(cpus, files) >= RAY_MIN_TASKS``, with that
    many tasks; otherwise the in-process path, which Ray cannot beat there.
    """
    if requested != AUTO:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 0:
            raise ValueError(f"workers must be {AUTO!r} or an integer >= 0, got {requested!r}")
        if requested == 0:
            unused = "; the cluster address is not used" if address else ""
            return SamplePath("0", 0, "0 runs in this process" + unused)
        return SamplePath(str(requested), requested, "as asked")
    if address:
        tasks = max(files, 1)
        return SamplePath(AUTO, tasks, f"a Ray cluster at {address}: one task per file")
    tasks = min(cpus, files)
    if tasks < RAY_MIN_TASKS:
        return SamplePath(AUTO, 0, f"{cpus} local CPUs and {files} files allow {tasks} tasks "
                          f"at once; Ray needs {RAY_MIN_TASKS}+ to beat this process")
    return SamplePath(AUTO, tasks, f"{cpus} local CPUs and {files} files allow {tasks} tasks "
                      "at once")


def local_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count() or 1


def sample_path(requested: int | str | SamplePath, *, address: str | None,
                files: int) -> SamplePath:
    """:func:`choose_sample_path` for this machine and ``$RAY_ADDRESS``; a path already
    chosen is kept."""
    if isinstance(requested, SamplePath):
        return requested
    return choose_sample_path(requested, address=address or os.environ.get("RAY_ADDRESS"),
                              cpus=local_cpus(), files=files)


def build_samples(logs: str | Path, out: str | Path, *, config: SM.SampleConfig,
                  asa_config: ASAConfig, workers: int | str | SamplePath = AUTO,
                  address: str | None = None, overwrite: bool = False,
                  progress: bool = True) -> dict:
    """Write ``out/samples/part-*.parquet``, ``out/asa.pt`` and ``out/manifest.json``. Every
    file's footer and schema are checked before OUT is created or Ray starts; the values as
    each file is read."""
    files = check_log_files(logs)
    path = sample_path(workers, address=address, files=len(files))
    with io.atomic_output_dir(out, overwrite=overwrite, inputs=[logs]) as tmp:
        report, model = _run(logs, files, tmp, tmp / SAMPLES_DIR, config, asa_config, path,
                             address, progress)
        (tmp / ASA_MODEL).write_bytes(model)
        io.write_manifest(tmp, report)
    return report


def asa_report(logs: str | Path, *, config: SM.SampleConfig, asa_config: ASAConfig,
               workers: int | str | SamplePath = AUTO, address: str | None = None,
               progress: bool = True) -> dict:
    """Stitching rates, ASA vs rule-based (Table 4) and epsilon, writing nothing."""
    files = check_log_files(logs)
    path = sample_path(workers, address=address, files=len(files))
    with tempfile.TemporaryDirectory(prefix="rliv-asa-") as scratch:
        report, _ = _run(logs, files, Path(scratch), None, config, asa_config, path, address,
                         progress)
    return report


def validate_file(path: str) -> dict:
    """Validate one file; the error's fields, or ``{}``."""
    try:
        validate_log(path)
    except LogValidationError as err:
        return {"file": err.file, "message": err.message, "column": err.column, "row": err.row}
    return {}


def _feature_sizes(schema: pa.Schema) -> tuple:
    return tuple(schema.field(c).type.list_size for c in (S.USER_FEATURES, S.AUTHOR_FEATURES)
                 if c in schema.names and pa.types.is_fixed_size_list(schema.field(c).type))


class _Clock:
    """Seconds spent in each named step."""

    def __init__(self):
        self.start = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self.last, 2)
        self.last = now

    def total(self) -> dict[str, float]:
        return {**self.laps, "total_s": round(time.perf_counter() - self.start, 2)}


def _run(logs, files, scratch: Path, shards: Path | None, config, asa_config, path: SamplePath,
         address, progress) -> tuple[dict, bytes]:
    clock = _Clock()
    runner = make_runner(path.workers, address=address if path.workers else None,
                         progress=progress)
    try:
        clock.lap("start_s")
        buckets, bucketed = _buckets(logs, files, scratch, runner, progress)
        clock.lap("bucket_s")
        stats = _stitch_all(logs, files, buckets, scratch, runner, config, asa_config,
                            validate=bucketed)
        clock.lap("validate_stitch_s")
        schema = pq.read_schema(files[0])
        layout = StateLayout.from_schema(schema)
        predictor, table4 = train_asa(scratch / _TUPLES, layout, _n_actions(schema),
                                      asa_config, progress)
        model = predictor.to_bytes()
        clock.lap("asa_train_s")
        if shards is not None:
            shards.mkdir()
        items = [{"path": str(b), "index": i} for i, b in enumerate(buckets)]
        errors = runner.map(predict_bucket, items, "samples", model=model, config=config,
                            out_dir=str(shards) if shards else "",
                            absent=sorted(S.absent_columns(schema) & set(S.LABELS)))
        clock.lap("predict_write_s")
    finally:
        runner.close()
    for name in (_TUPLES, _BUCKETS):
        shutil.rmtree(scratch / name, ignore_errors=True)
    return {
        "rows": int(sum(s["rows"] for s in stats)),
        "files": len(files), "buckets": len(buckets), "input_bucketed_by_user": bucketed,
        "workers": runner.workers,
        "sample_path": {"engine": path.engine, "requested": path.requested,
                        "reason": path.reason},
        "sample_config": _plain(asdict(config)),
        "asa_config": _plain(asdict(asa_config)), "layout": list(layout.names),
        "stitching": merge_stitch_stats(stats), "table4": table4,
        "epsilon": merge_errors(errors), "seconds": clock.total(),
        "samples_written": int(sum(e["samples"] for e in errors)),
    }, model


def _plain(value):
    return json.loads(json.dumps(value, default=str))


def _n_actions(schema: pa.Schema) -> int:
    grid = json.loads((schema.metadata or {}).get(S.META_ACTION_GRID, b"[]"))
    if not grid:
        raise InvalidInput("the log's schema metadata has no action grid (rliv.action_grid)")
    return len(grid)


# --- step 1: buckets holding whole users -------------------------------------------------------

def _buckets(logs, files: list[Path], scratch: Path, runner,
             progress: bool) -> tuple[list[Path], bool]:
    """The files themselves when each holds whole users (validated later, in parallel), else
    bucket parts made once after validating the whole log in order (users cross files)."""
    try:
        if files_hold_whole_users(files):
            return files, True
    except (OSError, pa.ArrowException):
        pass  # an unreadable file: validate_log names it
    validate_log(logs, progress=progress)
    out = scratch / _BUCKETS
    out.mkdir()
    items = [{"path": str(f), "index": i} for i, f in enumerate(files)]
    runner.map(split_by_user, items, "bucket", out_dir=str(out), n_buckets=len(files))
    return sorted(p for p in out.iterdir() if p.is_dir()), False


def files_hold_whole_users(files: list[Path]) -> bool:
    """True when no user id appears in two files (reads only the user id column)."""
    seen = [np.unique(pq.read_table(f, columns=[S.USER_ID])[S.USER_ID].to_numpy())
            for f in files]
    everyone = np.concatenate(seen) if seen else np.zeros(0)
    return len(everyone) == len(np.unique(everyone))


def split_by_user(path: str, index: int, out_dir: str, n_buckets: int) -> dict:
    """Write this file's rows into ``out_dir/bucket-XXXXX/from-<index>.parquet`` by user hash."""
    table = pq.read_table(path)
    bucket = io.user_bucket(table[S.USER_ID].to_numpy(), n_buckets)
    for b in np.unique(bucket):
        target = Path(out_dir) / f"bucket-{b:05d}"
        target.mkdir(exist_ok=True)
        pq.write_table(table.filter(pa.array(bucket == b)), target / f"from-{index:05d}.parquet")
    return {"rows": table.num_rows}


def _read_bucket(path: str) -> pa.Table:
    """A bucket: one Parquet file (a local path or URI), or a local folder of parts with one
    shared schema."""
    if not uris.is_uri(path) and Path(path).is_dir():
        return pa.concat_tables([pq.read_table(f) for f in sorted(Path(path).glob("*.parquet"))])
    return pq.read_table(path)


# --- step 2: stitching -------------------------------------------------------------------------

def _stitch_all(logs, files, buckets, scratch: Path, runner, config, asa_config,
                validate: bool) -> list[dict]:
    """Stitch every bucket (validating it first when asked); raise the first invalid file."""
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    out = scratch / _TUPLES
    out.mkdir()
    items = [{"path": str(b), "index": i} for i, b in enumerate(buckets)]
    stats = runner.map(stitch_bucket, items, "stitch", out_dir=str(out), config=config,
                       quota=asa_config.max_train_tuples / max(total, 1), seed=asa_config.seed,
                       validate=validate)
    problems = sorted((s["index"], s["error"]) for s in stats if "error" in s)
    if problems:
        raise LogValidationError(**problems[0][1])
    if len({_feature_sizes(pq.read_schema(f)) for f in files}) > 1:
        validate_log(logs)  # names the file whose feature sizes differ
    return stats


def stitch_bucket(path: str, index: int, out_dir: str, config: SM.SampleConfig, quota: float,
                  seed: int, validate: bool = False) -> dict:
    """Stitch one bucket; keep a seeded ``quota`` share (of its rows) of its ASA tuples.

    With ``validate``, the file is validated first and an error comes back as ``error``.
    """
    if validate and (problem := validate_file(path)):
        return {"index": index, "error": problem}
    prep = SM.prepare(_read_bucket(path), config)
    tuples = SM.asa_tuples(prep)
    keep = int(np.ceil(quota * prep.rows))
    if tuples.num_rows > keep:
        rng = np.random.default_rng([seed, index])
        tuples = tuples.take(np.sort(rng.choice(tuples.num_rows, keep, replace=False)))
    pq.write_table(tuples, Path(out_dir) / io.part_name(index), use_dictionary=False)
    stats = {"index": index, **SM.stitch_stats(prep)}
    del prep, tuples
    pa.default_memory_pool().release_unused()  # long-lived Ray workers give memory back
    return stats


def merge_stitch_stats(stats: list[dict]) -> dict:
    """Stitching success rate overall and by pair-history bucket (paper: 47%)."""
    rows = sum(s["rows"] for s in stats)
    stitched = sum(s["stitched"] for s in stats)
    by_rows = np.sum([s["rows_by_history"] for s in stats], axis=0)
    by_ok = np.sum([s["stitched_by_history"] for s in stats], axis=0)
    return {
        "rows": int(rows), "stitched": int(stitched), "success_rate": stitched / max(rows, 1),
        "success_rate_by_history": {
            name: (float(by_ok[i] / by_rows[i]) if by_rows[i] else None)
            for i, name in enumerate(HISTORY_BUCKETS)},
        "rows_by_history": {n: int(by_rows[i]) for i, n in enumerate(HISTORY_BUCKETS)},
    }


# --- step 3: ASA ------------------------------------------------------------------------------

def train_asa(tuples_dir: Path, layout: StateLayout, n_actions: int, asa_config: ASAConfig,
              progress: bool) -> tuple[ASAPredictor, dict]:
    """Fit f_theta on 80% of users' stitched tuples; Table 4 on the other 20%."""
    tuples = pq.read_table(tuples_dir)
    # Canonical order (users in id order, each user's tuples in time order) so the model does
    # not depend on how users were spread over files or workers.
    tuples = tuples.take(np.argsort(tuples[S.USER_ID].to_numpy(), kind="stable"))
    if tuples.num_rows == 0:
        raise ValueError("no interaction could be stitched, so ASA has nothing to learn from: "
                         "raise the sequence length or use --content exposures")
    states = S.arrow_to_matrix(tuples[S.STATE])
    nxt = S.arrow_to_matrix(tuples[S.TRUE_NEXT_STATE])
    actions, rewards = tuples[S.ACTION].to_numpy(), S.arrow_to_matrix(tuples["rewards"])
    held_out = validation_mask(tuples[S.USER_ID].to_numpy(), asa_config.validation_share,
                               asa_config.seed)
    del tuples
    if held_out.all() or not held_out.any():
        held_out = np.arange(len(held_out)) % 5 == 0  # too few users for a user split
    train = ~held_out
    predictor = ASAPredictor(layout, n_actions, asa_config)
    history = predictor.fit(states[train], actions[train], rewards[train], nxt[train],
                            progress=progress)
    v = held_out
    scale = predictor.target_scale
    table4 = {
        "asa": approximation_errors(predictor.predict(states[v], actions[v], rewards[v]),
                                    nxt[v], layout, asa_config.targets, scale),
        "rule_based": approximation_errors(
            rule_based_next_state(states[v], actions[v], rewards[v], layout), nxt[v], layout,
            asa_config.targets, scale),
        "train_tuples": int(train.sum()), "validation_tuples": int(v.sum()),
        "train_loss": history["train_loss"],
    }
    return predictor, table4


# --- step 4: predict and write ----------------------------------------------------------------

def predict_bucket(path: str, index: int, model: bytes, config: SM.SampleConfig, out_dir: str,
                   absent: list[str]) -> dict:
    """ASA's next state for every interaction, the shard, and epsilon against the truth."""
    prep = SM.prepare(_read_bucket(path), config)
    predictor = ASAPredictor.from_bytes(model)
    layout, targets = predictor.layout, predictor.config.targets
    predicted = predictor.predict(prep.states, prep.actions, prep.rewards)
    rule = rule_based_next_state(prep.states, prep.actions, prep.rewards, layout)
    has_next = prep.next_row >= 0
    unreachable = has_next & (prep.stitched_next < 0)
    errors = {}
    for name, rows in (("all", has_next), ("unreachable", unreachable)):
        if rows.any():
            true = prep.states[prep.next_row[rows]]
            errors[name] = {
                method: approximation_errors(pred[rows], true, layout, targets,
                                             predictor.target_scale)
                for method, pred in (("asa", predicted), ("rule_based", rule))}
    samples = 0
    if out_dir:
        shard = SM.sample_table(prep, predicted, layout, config, tuple(absent))
        pq.write_table(shard, Path(out_dir) / io.part_name(index), use_dictionary=False)
        samples = shard.num_rows
        del shard
    del prep, predicted, rule
    pa.default_memory_pool().release_unused()  # long-lived Ray workers give memory back
    return {"index": index, "samples": samples, "errors": errors}


def merge_errors(results: list[dict]) -> dict:
    """Row-weighted means of the per-bucket errors; maxima of eps_max."""
    out: dict = {}
    for subset in ("all", "unreachable"):
        for method in ("asa", "rule_based"):
            parts = [r["errors"][subset][method] for r in results if subset in r["errors"]]
            if not parts:
                continue
            rows = sum(p["rows"] for p in parts)
            merged = {key: sum(p[key] * p["rows"] for p in parts) / rows
                      for key in ("mse", "cosine_loss", "eps_mean")}
            merged.update(eps_max=max(p["eps_max"] for p in parts), rows=rows,
                          norm=parts[0]["norm"])
            out.setdefault(subset, {})[method] = merged
    return out
