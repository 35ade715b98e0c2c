"""`rliv ope`'s data path: a live-stream allocation log streamed file by file into the sums of
:mod:`rliv_ray.ope.streaming`, in this process or on Ray Data (the thin shell).

The unit of work is one Parquet file. A file is read in record batches of ``batch_rows`` and
cut into *user-aligned* blocks: a user's rows never straddle two blocks (the rows of the last
user of a batch are carried into the next), so the policy's session state (it reads where a
request sits in the user's sessions) and the per-user estimators see whole users. Memory holds
one block, the policy and the running sums: it does not grow with the log. Each file must hold
its users' requests together, sorted by user then ``user_request_idx``, as `rliv generate-live`
and `rliv build-live-samples` (test/) write them; a file that is not fails with one line. A
user whose rows continue in another file would be taken as two users: such users start at
``user_request_idx > 0``, and the run counts them (:data:`MID_HISTORY`).

With ``workers >= 1`` the files are items of a Ray Data dataset mapped by one task per file
(``workers`` at a time; CPU accounting as ``runner.RayRunner``); each task loads the policy once
per worker process and returns its file's sums (a few kB to MB) as an Arrow table of plain
columns, one row per sum (its key, its shape and its float64 values), which the driver merges
as they arrive: nothing is pickled by this module or unpickled by the driver. Invalid input
comes back as data (a row with the one-line error), not as a wrapped task exception.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rliv_ray import schema as S
from rliv_ray.data import io
from rliv_ray.ope.streaming import MODEL_ESTIMATORS, Stats, StreamSettings, block_stats, merge
from rliv_ray.ope.support import check_propensities
from rliv_ray.ope.targets import OPEInputError, TargetSpec, load_target

__all__ = ["BATCH_ROWS", "LOG_COLUMNS", "MID_HISTORY", "STATS_SCHEMA", "file_stats", "ope_files",
           "scan", "stats_from_table", "stats_table", "user_batches"]

LOG_COLUMNS = (S.REQUEST_ID, S.USER_REQUEST_IDX, S.TS_MS, S.USER_ID, S.USER_FEATURES,
               S.LIVE_ID, S.LIVE_FEATURES, S.LIVE_HISTORY, S.VIDEO_HISTORY, S.LIVE_WATCH_3W_S,
               S.ACTION, S.BEHAVIOR_PROB, S.LIVE_WATCH_S, S.VIDEO_WATCH_S, S.N_VIDEOS)
"""What `rliv ope` reads of a live-stream allocation log."""
BATCH_ROWS = 65_536
"""Rows per record batch read (a block is one batch plus at most one carried user)."""
MID_HISTORY = "mid_history"
"""Stats key: users whose first row in their file has user_request_idx > 0."""
TEST_DIR = "test"


def ope_files(logs: str | Path) -> tuple[list[Path], str]:
    """The Parquet files to score and what they are: a `rliv build-live-samples` output gives
    its held-out users (test/), anything else ``io.log_files``."""
    root = Path(logs)
    if (root / TEST_DIR).is_dir() and "edges" in io.read_manifest(root):
        files = sorted((root / TEST_DIR).glob("*.parquet"))
        if files:
            return files, "held-out users of a build-live-samples output"
    return io.log_files(root), "log"


def check_schema(path: Path, schema: pa.Schema) -> tuple[int, int]:
    """(user feature width, live feature width) of a live-stream allocation log file;
    OPEInputError with one line for a log of another world or without propensities."""
    names = set(schema.names)
    if S.LIVE_ID not in names and (S.AUTHOR_ID in names or S.STATE in names):
        raise OPEInputError(
            f"{path}: a user-author log of RLIV-UA's world (it has {S.AUTHOR_ID}, no "
            f"{S.LIVE_ID}), not a live-stream allocation log: `rliv ope` scores one "
            "inject-or-not decision per request (SL-MGAC's)")
    if S.BEHAVIOR_PROB not in names or S.BEHAVIOR_PROB in S.absent_columns(schema):
        raise OPEInputError(f"{path}: no {S.BEHAVIOR_PROB}: importance weights need the "
                            "logging policy's probability of every logged action (a log "
                            "without propensities cannot be scored off-policy)")
    missing = [c for c in LOG_COLUMNS if c not in names]
    if missing:
        raise OPEInputError(f"{path}: not a live-stream allocation log: missing columns "
                            f"{missing}")
    widths = []
    for name in (S.USER_FEATURES, S.LIVE_FEATURES):
        dtype = schema.field(name).type
        if not pa.types.is_fixed_size_list(dtype):
            raise OPEInputError(f"{path}: {name} must be a fixed-size list, got {dtype}")
        widths.append(dtype.list_size)
    return widths[0], widths[1]


def check_finite(table: pa.Table, file: str, offset: int) -> None:
    from rliv_ray.data.live_validate import check_finite as check

    check(table, file, offset)


def _check_order(path: Path, user: np.ndarray, index: np.ndarray, offset: int) -> None:
    same = user[1:] == user[:-1]
    bad = (user[1:] < user[:-1]) | (same & (index[1:] <= index[:-1]))
    if bad.any():
        row = offset + int(np.flatnonzero(bad)[0]) + 1
        raise OPEInputError(
            f"{path}: rows are not sorted by user, then {S.USER_REQUEST_IDX} (row {row:,} of "
            "the file): each file must hold its users' requests together and in order, as "
            "`rliv generate-live` writes them (the session state and the per-user estimators "
            "need whole users)")


def user_batches(path: Path, batch_rows: int = BATCH_ROWS) -> Iterator[tuple[pa.Table, int]]:
    """(block, first row of the block in the file): record batches cut so that each block
    holds whole users (see the module docstring); checks the order of the rows."""
    carry, offset = None, 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows,
                                                   columns=list(LOG_COLUMNS)):
        table = pa.Table.from_batches([batch])
        if carry is not None:
            table = pa.concat_tables([carry, table])
        user = table[S.USER_ID].to_numpy()
        _check_order(path, user, table[S.USER_REQUEST_IDX].to_numpy(), offset)
        changes = np.flatnonzero(user[1:] != user[:-1])
        if len(changes) == 0:  # one user so far: keep reading
            carry = table
            continue
        cut = int(changes[-1]) + 1
        yield table.slice(0, cut), offset
        carry, offset = table.slice(cut), offset + cut
    if carry is not None and carry.num_rows:
        yield carry, offset


def _block_stats(table: pa.Table, target, settings: StreamSettings, beta: float,
                 with_model: bool) -> Stats:
    from rliv_ray.data.live_metrics import allocation_rewards
    from rliv_ray.data.live_policies import observation_from_log

    obs = observation_from_log(table)
    col = {name: table[name].to_numpy() for name in (
        S.ACTION, S.BEHAVIOR_PROB, S.LIVE_WATCH_S, S.VIDEO_WATCH_S, S.N_VIDEOS)}
    check_propensities(col[S.BEHAVIOR_PROB])  # the data first, then the policy's cost
    reward = allocation_rewards(col[S.ACTION], col[S.LIVE_WATCH_S], col[S.VIDEO_WATCH_S],
                                col[S.N_VIDEOS], beta)
    probs = target.probabilities(obs)  # (n, 2)
    q_hat = target.reward_model(obs, col[S.N_VIDEOS], beta) if with_model else None
    stats = block_stats(col[S.ACTION], col[S.BEHAVIOR_PROB], probs, reward,
                        row_keys=obs[S.REQUEST_ID], user=obs[S.USER_ID], q_hat=q_hat,
                        settings=settings)
    first = np.flatnonzero(np.r_[True, obs[S.USER_ID][1:] != obs[S.USER_ID][:-1]])
    stats[MID_HISTORY] = np.array([float((obs[S.USER_REQUEST_IDX][first] > 0).sum())])
    stats["users"] = np.array([float(len(first))])
    return stats


def file_stats(path: str | Path, target_spec: TargetSpec | None, settings: StreamSettings, *,
               beta: float, batch_rows: int = BATCH_ROWS, on_rows=None, target=None) -> Stats:
    """The merged sums of one file; OPEInputError (one line, naming the file) on bad input.
    ``on_rows(n)`` is called after each block (progress). ``target``: an already loaded
    target (``targets.NetworkTarget``, as training runs and sweep trials build it) instead of
    ``load_target(target_spec)``."""
    path = Path(path)
    target = target if target is not None else load_target(target_spec)
    target.check_widths(*check_schema(path, pq.read_schema(path)))
    with_model = (target.reward_note is None
                  and any(e in MODEL_ESTIMATORS for e in settings.estimators))
    total: Stats | None = None
    for table, offset in user_batches(path, batch_rows):
        check_finite(table, str(path), offset)  # LogValidationError: invalid data
        try:
            stats = _block_stats(table, target, settings, beta, with_model)
        except OPEInputError:
            raise
        except ValueError as err:
            where = f"{path}" if offset == 0 else f"{path} (the block from row {offset:,})"
            raise OPEInputError(f"{where}: {err}") from err
        total = stats if total is None else merge(total, stats)
        if on_rows is not None:
            on_rows(table.num_rows)
    if total is None:
        raise OPEInputError(f"{path}: no rows")
    return total


STATS_SCHEMA = pa.schema([("key", pa.string()), ("shape", pa.list_(pa.int64())),
                          ("values", pa.list_(pa.float64())), ("error", pa.string())])
"""A file's sums on the wire: one row per key of its Stats, or one row holding its error."""


def stats_table(stats: Stats) -> pa.Table:
    """Stats as plain Arrow columns (:data:`STATS_SCHEMA`), one row per key."""
    keys = sorted(stats)
    arrays = [np.asarray(stats[k], dtype=np.float64) for k in keys]
    return pa.table({"key": keys, "shape": [list(a.shape) for a in arrays],
                     "values": [a.ravel() for a in arrays], "error": [None] * len(keys)},
                    schema=STATS_SCHEMA)


def error_table(message: str) -> pa.Table:
    return pa.table({"key": [""], "shape": [[]], "values": [[]], "error": [message]},
                    schema=STATS_SCHEMA)


def stats_from_table(table: pa.Table) -> Iterator[Stats]:
    """The inverse of :func:`stats_table`, one key at a time (sums merge key by key);
    OPEInputError with a row's error."""
    for i in range(table.num_rows):
        error = table["error"][i].as_py()
        if error is not None:
            raise OPEInputError(error)
        flat = table["values"][i].values  # a float64 Arrow array (None when empty)
        values = (np.empty(0) if flat is None
                  else flat.to_numpy(zero_copy_only=False).astype(np.float64, copy=True))
        yield {table["key"][i].as_py(): values.reshape(table["shape"][i].as_py())}


def _ray_file_stats(batch: dict, target_spec: TargetSpec, settings: StreamSettings,
                    beta: float, batch_rows: int) -> pa.Table:
    """Ray Data batch of file paths -> their sums, or their one-line errors, as
    :data:`STATS_SCHEMA` rows."""
    from rliv_ray.evaluation.world import one_torch_thread

    out = []
    for path in batch["path"]:
        try:
            with one_torch_thread():  # one task is one CPU
                out.append(stats_table(file_stats(str(path), target_spec, settings, beta=beta,
                                                  batch_rows=batch_rows)))
        except (ValueError, FileNotFoundError) as err:  # OPEInputError, LogValidationError
            out.append(error_table(str(err)))
    return pa.concat_tables(out)


def _scan_ray(files: list[Path], target_spec: TargetSpec, settings: StreamSettings, *,
              beta: float, workers: int, address: str | None, progress: bool,
              batch_rows: int) -> Iterator[Stats]:
    import logging

    import ray

    from rliv_ray.runner import start_ray

    started = start_ray(address=address, num_cpus=workers, progress=progress)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = progress
        if not progress:
            logging.getLogger("ray.data").setLevel(logging.WARNING)
        ds = ray.data.from_items([{"path": str(f)} for f in files],
                                 override_num_blocks=len(files))
        mapped = ds.map_batches(
            _ray_file_stats, batch_size=1, batch_format="numpy", num_cpus=1,
            compute=ray.data.TaskPoolStrategy(size=min(workers, len(files))),
            fn_kwargs={"target_spec": target_spec, "settings": settings, "beta": beta,
                       "batch_rows": batch_rows})
        for table in mapped.iter_batches(batch_size=None, batch_format="pyarrow"):
            yield from stats_from_table(table)
    finally:
        if started:
            ray.shutdown()


def scan(files: list[Path], target_spec: TargetSpec, settings: StreamSettings, *,
         beta: float, workers: int = 0, address: str | None = None, progress: bool = False,
         batch_rows: int = BATCH_ROWS) -> Stats:
    """The merged sums of every file: in this process (``workers == 0``) or on Ray Data."""
    from rliv_ray.progress import Progress

    if not files:
        raise OPEInputError("no log files to score")
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    total: Stats | None = None
    with Progress(rows, "ope", unit="rows", enabled=progress) as bar:
        if workers == 0:
            parts = (file_stats(f, target_spec, settings, beta=beta, batch_rows=batch_rows,
                                on_rows=bar.update) for f in files)
        else:
            parts = _scan_ray(files, target_spec, settings, beta=beta, workers=workers,
                              address=address, progress=False, batch_rows=batch_rows)
        for stats in parts:
            total = stats if total is None else merge(total, stats)
            if workers and "n_rows" in stats:  # Ray Data: the sums come key by key
                bar.update(int(stats["n_rows"][0]))
    return total
