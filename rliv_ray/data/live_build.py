"""SL-MGAC training samples and held-out users from a live-stream allocation log, file by file.

Output layout::

    OUT/
      train/part-00000.parquet ...   SL-MGAC transitions (:func:`live_samples`) of the train users
      test/part-00000.parquet ...    the held-out users' raw log rows (for NCIS / OPE)
      manifest.json                  groups, edges, split, counts and the source log's manifest

Users are split 4:1 by a hash of their id (:func:`~rliv_ray.ope.split.split_users`, SL-MGAC
section 4.1). Two passes over the log, each holding one file in memory:

1. read ``user_id``, ``user_request_idx`` and ``live_watch_3w_s`` only; take each train user's
   3-week live watch time at their first request (:func:`user_watch_3w` semantics) and compute
   the K activity-group edges on the train users alone (:func:`group_edges`), so held-out users
   never shape the groups the policy is trained with;
2. validate each file (:func:`validate_live_table`), turn its train users into transitions and
   copy its test users' rows. Part ``i`` of ``train/`` and ``test/`` comes from the ``i``-th log
   file; empty parts are not written.

Each file must hold whole users (the generator and the converters bucket users by a hash).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rliv_ray import schema as S
from rliv_ray.checks import InvalidInput
from rliv_ray.data import io
from rliv_ray.data.live_samples import (
    DEFAULT_TERMINAL,
    check_terminal,
    group_edges,
    live_samples,
    user_watch_3w,
)
from rliv_ray.data.live_validate import validate_live_table
from rliv_ray.data.validate import LogValidationError
from rliv_ray.ope.split import DEFAULT_TEST_SHARE, split_users
from rliv_ray.outdir import check_not_input
from rliv_ray.progress import Progress

TRAIN_DIR = "train"
TEST_DIR = "test"
_SCAN_COLUMNS = [S.USER_ID, S.USER_REQUEST_IDX, S.LIVE_WATCH_3W_S]


def build_live_samples(logs: str | os.PathLike, out: str | os.PathLike, *, groups: int = 6,
                       test_share: float = DEFAULT_TEST_SHARE, seed: int = 0,
                       terminal: str = DEFAULT_TERMINAL, overwrite: bool = False,
                       progress: bool = True) -> dict:
    """Write ``out/train`` (SL-MGAC samples), ``out/test`` (held-out raw rows) and the manifest.

    ``logs``: a dataset directory, a folder of Parquet files or one file. ``terminal``: which
    transitions are ``done`` (:data:`~rliv_ray.data.live_samples.TERMINAL_MODES`, recorded in
    the manifest). Raises
    :class:`LogValidationError` on a bad log, ``ValueError`` on bad settings (e.g. more groups
    than train users with live watch time); nothing is left at ``out`` on any error.
    """
    started = time.perf_counter()
    _check_settings(groups=groups, test_share=test_share, seed=seed)
    check_not_input(out, [logs])
    check_terminal(terminal)
    files = io.log_files(logs)
    with io.atomic_output_dir(out, overwrite=overwrite, inputs=[logs]) as tmp:
        with Progress(len(files), "build-live-samples: scan", unit="files",
                      enabled=progress) as bar:
            values = _train_watch_3w(files, test_share=test_share, seed=seed, bar=bar)
        edges = _train_edges(values, groups)
        with Progress(len(files), "build-live-samples: write", unit="files",
                      enabled=progress) as bar:
            counts = _write_parts(files, tmp, edges, groups=groups, test_share=test_share,
                                  seed=seed, terminal=terminal, bar=bar)
        manifest = {
            "groups": groups,
            "edges": [float(e) for e in edges],
            "test_share": test_share,
            "seed": seed,
            "terminal": terminal,
            "files": len(files),
            "train_users_with_live_watch": int((values > 0).sum()),
            **counts,
            "source": _source_manifest(logs),
            "seconds": round(time.perf_counter() - started, 2),
        }
        io.write_manifest(tmp, manifest)
    return manifest


def _check_settings(*, groups: int, test_share: float, seed: int) -> None:
    """Fail on bad settings before any file is read."""
    if groups < 2:
        raise ValueError(f"group count K must be >= 2, got {groups}")
    split_users(np.empty(0, np.int64), test_share=test_share, seed=seed)  # its own checks


def _train_watch_3w(files: list[Path], *, test_share: float, seed: int,
                    bar: Progress) -> np.ndarray:
    """Pass 1: the train users' 3-week live watch time at their first request, one per user.

    Also checks each file's schema and that no user spans two files."""
    users, values = [], []
    for file in files:
        table = _read(file, _SCAN_COLUMNS)
        order = np.lexsort((table[S.USER_REQUEST_IDX].to_numpy(), table[S.USER_ID].to_numpy()))
        table = table.take(pa.array(order))
        user = np.unique(table[S.USER_ID].to_numpy())  # (U_f,) sorted, as user_watch_3w's
        value = user_watch_3w(table).astype(np.float64)  # (U_f,)
        if not (np.isfinite(value) & (value >= 0)).all():
            validate_live_table(_read(file), file=str(file))  # names the bad row
        train, _ = split_users(user, test_share=test_share, seed=seed)
        users.append(user)
        values.append(value[train])
        bar.update(1)
    _check_whole_users(files, users)
    return np.concatenate(values)


def _check_whole_users(files: list[Path], users: list[np.ndarray]) -> None:
    """Raise if a user has rows in two files (their transitions would be cut in two)."""
    all_users = np.concatenate(users)
    file_of = np.repeat(np.arange(len(users)), [len(u) for u in users])
    order = np.argsort(all_users, kind="stable")
    dup = np.flatnonzero(all_users[order][1:] == all_users[order][:-1])
    if len(dup):
        first, second = file_of[order][dup[0]], file_of[order][dup[0] + 1]
        raise InvalidInput(f"user {all_users[order][dup[0]]} has rows in {files[first]} and "
                         f"{files[second]}: each file must hold whole users")


def _train_edges(values: np.ndarray, groups: int) -> np.ndarray:
    try:
        return group_edges(values, groups)
    except ValueError as err:
        raise ValueError(f"{err}, among the {len(values)} train users") from err


def _write_parts(files: list[Path], tmp: Path, edges: np.ndarray, *, groups: int,
                 test_share: float, seed: int, terminal: str, bar: Progress) -> dict:
    """Pass 2: validate each file, write its train samples and its test rows."""
    counts = {split: {"rows": 0, "users": 0, "parts": 0} for split in (TRAIN_DIR, TEST_DIR)}
    for split in counts:
        (tmp / split).mkdir()
    for index, file in enumerate(files):
        table = _read(file, list(S.LIVE_LOG_COLUMNS))
        validate_live_table(table, file=str(file))
        train, test = split_users(table[S.USER_ID].to_numpy(), test_share=test_share, seed=seed)
        parts = {TRAIN_DIR: table.filter(pa.array(train)), TEST_DIR: table.filter(pa.array(test))}
        del table
        if parts[TRAIN_DIR].num_rows:
            parts[TRAIN_DIR] = live_samples(parts[TRAIN_DIR], groups=groups, edges=edges,
                                           terminal=terminal)
        for split, part in parts.items():
            if part.num_rows == 0:
                continue
            pq.write_table(part, tmp / split / io.part_name(index))
            counts[split]["rows"] += part.num_rows
            counts[split]["users"] += len(np.unique(part[S.USER_ID].to_numpy()))
            counts[split]["parts"] += 1
        bar.update(1)
    return counts


def _read(file: Path, columns: list[str] | None = None) -> pa.Table:
    """One log file (schema metadata kept); unreadable files and missing columns become
    :class:`LogValidationError` naming the file."""
    try:
        parquet = pq.ParquetFile(file)
    except (pa.ArrowException, OSError) as err:
        raise LogValidationError(str(file), f"not a readable Parquet file ({err})") from None
    validate_live_table(parquet.schema_arrow.empty_table(), file=str(file))  # schema only
    try:
        return parquet.read(columns=columns)
    except (pa.ArrowException, OSError) as err:
        raise LogValidationError(str(file), f"not a readable Parquet file ({err})") from None


def _source_manifest(logs: str | os.PathLike) -> dict:
    """The log dataset's manifest (world config, for on-policy truth), also when ``logs`` is
    the dataset's ``log/`` folder; ``{}`` when there is none."""
    path = Path(logs)
    manifest = io.read_manifest(path) if path.is_dir() else {}
    if not manifest and path.name == io.LOG_DIR:
        manifest = io.read_manifest(path.parent)
    return manifest
