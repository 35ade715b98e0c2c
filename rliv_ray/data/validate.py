"""Interaction-log validation: schema, types, nulls, ranges and per-user order, with clear errors.

Every command that reads a log calls :func:`validate_log` first, so bad input fails early with
one line naming the file, column and row (0-based, within the file), and nothing is written.
Files are read in record batches (never the whole log in memory) and every check is vectorised;
:func:`validate_table` runs the per-batch checks on an in-memory table for other writers.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rliv_ray.data.io import log_files, path_exists
from rliv_ray.progress import Progress
from rliv_ray.schema import (
    ABSENTABLE,
    ACTION,
    ACTION_WEIGHT,
    AUTHOR_FEATURES,
    AUTHOR_ID,
    BEHAVIOR_PROB,
    DURATION_S,
    ITEM_ID,
    LABELS,
    LOG_COLUMNS,
    META_ACTION_GRID,
    META_AUTHOR_FEATURES,
    META_SOURCE,
    META_USER_FEATURES,
    NULLABLE,
    PAIR_FEATURES,
    REQUEST_ID,
    TS_MS,
    USER_FEATURES,
    USER_GROUP,
    USER_ID,
    USER_REQUEST_IDX,
    WATCH_TIME_S,
    absent_columns,
    feature_names,
    log_schema,
)

BATCH_ROWS = 1 << 17
"""Rows per record batch read from a file."""
WEIGHT_TOLERANCE = 1e-6
"""Largest allowed |action_weight - grid[action]|."""

_FEATURE_KEYS = {USER_FEATURES: META_USER_FEATURES, AUTHOR_FEATURES: META_AUTHOR_FEATURES}
_ORDERED = (REQUEST_ID, USER_REQUEST_IDX, TS_MS)  # non-decreasing per user, in file order
_NON_NEGATIVE = (WATCH_TIME_S, *PAIR_FEATURES, USER_GROUP,
                 REQUEST_ID, USER_REQUEST_IDX, USER_ID, AUTHOR_ID, ITEM_ID)


class LogValidationError(ValueError):
    """The first problem found in a log: ``{file}: column '{column}', row {row}: {message}``."""

    def __init__(self, file: str, message: str, column: str | None = None,
                 row: int | None = None):
        self.file, self.column, self.row = str(file), column, row
        self.message = " ".join(str(message).split())  # always one line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = [f"column '{self.column}'"] if self.column is not None else []
        where += [f"row {self.row}"] if self.row is not None else []
        return ": ".join([self.file, *([", ".join(where)] if where else []), self.message])

    def __reduce__(self):  # picklable (Ray ships exceptions between processes)
        return type(self), (self.file, self.message, self.column, self.row)


@dataclass(frozen=True)
class LogReport:
    """What a valid log holds."""

    files: int
    rows: int
    users: int
    absent_columns: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class _Meta:
    """What a file's schema metadata says: feature names, absent columns, action grid."""

    features: dict[str, list[str]]
    absent: frozenset[str]
    grid: np.ndarray  # (n_actions,) float64, empty when the source has no grid
    source: str


def validate_log(path: str | os.PathLike, *, progress: bool = False) -> LogReport:
    """Check every file of the log at ``path`` (a dataset directory, a directory of Parquet
    files or one file); raise :class:`LogValidationError` at the first problem."""
    files = _resolve(path)
    order, rows, metas = _UserOrder(), 0, []
    with Progress(len(files), "validate", unit="files", enabled=progress) as bar:
        for path_i in files:
            metas.append(_validate_file(path_i, order, metas[0] if metas else None))
            rows += order.rows_in_file
            bar.update(1)
    absent = sorted(set().union(*(m.absent for m in metas)))
    return LogReport(len(files), rows, len(order.last), tuple(absent), metas[0].source)


def validate_table(table: pa.Table, *, file: str = "<table>", row_offset: int = 0) -> None:
    """The per-batch checks (schema, nulls, NaN, ranges, per-user order within ``table``).

    ``row_offset`` is the file row of the table's first row, used in error messages.
    """
    meta = _check_schema(table.schema, file)
    _check_values(table, meta, file, row_offset)
    _UserOrder().check(table, file, row_offset)


def _resolve(path: str | os.PathLike) -> list[Path]:
    if not path_exists(path):
        raise LogValidationError(str(path), "no such file or directory")
    try:
        return log_files(path)
    except FileNotFoundError:
        raise LogValidationError(str(path), "no Parquet files found") from None


def _validate_file(path: Path, order: _UserOrder, first: _Meta | None) -> _Meta:
    file = str(path)
    parquet = _read(file, lambda: pq.ParquetFile(path))
    meta = _check_schema(parquet.schema_arrow, file)
    _check_same_features(meta, first, file)
    order.start_file(file)
    batches = parquet.iter_batches(batch_size=BATCH_ROWS, columns=list(LOG_COLUMNS))
    while (batch := _read(file, lambda: next(batches, None))) is not None:
        table = pa.Table.from_batches([batch])
        _check_values(table, meta, file, order.rows_in_file)
        _check_duplicates(table, file, order.rows_in_file)
        order.check(table, file, order.rows_in_file)
    return meta


def _check_duplicates(table: pa.Table, file: str, offset: int) -> None:
    """No item twice in one request (a repeated row)."""
    keys = pd.DataFrame({c: table.column(c).to_numpy() for c in (USER_ID, REQUEST_ID, ITEM_ID)})
    twice = keys.duplicated().to_numpy()
    if twice.any():
        row = int(np.flatnonzero(twice)[0])
        raise LogValidationError(file, f"item {keys[ITEM_ID].iloc[row]} appears twice in request "
                                 f"{keys[REQUEST_ID].iloc[row]} of user {keys[USER_ID].iloc[row]}",
                                 column=ITEM_ID, row=offset + row)


def check_log_files(path: str | os.PathLike) -> list[Path]:
    """The cheap part of :func:`validate_log`, from the files' footers only: every file is a
    readable Parquet file with the log schema and the same features. The log's files, or
    :class:`LogValidationError` at the first problem (before any work, before Ray)."""
    files, first = _resolve(path), None
    for file in files:
        meta = _check_schema(_read(str(file), lambda f=file: pq.read_schema(f)), str(file))
        _check_same_features(meta, first, str(file))
        first = first or meta
    return files


def _read(file: str, read):
    """``read()``, with Arrow's read errors (truncated or foreign file) turned into ours."""
    try:
        return read()
    except (pa.ArrowException, OSError) as err:
        raise LogValidationError(file, f"not a readable Parquet file ({err})") from None


def _parse_meta(schema: pa.Schema, file: str) -> _Meta:
    try:
        features = {col: feature_names(schema, key) for col, key in _FEATURE_KEYS.items()}
        absent = absent_columns(schema)
        grid = np.asarray(json.loads((schema.metadata or {}).get(META_ACTION_GRID, b"[]")),
                          dtype=np.float64).reshape(-1)
    except (ValueError, TypeError) as err:
        raise LogValidationError(file, f"unreadable rliv schema metadata ({err})") from None
    source = (schema.metadata or {}).get(META_SOURCE, b"unknown").decode()
    return _Meta(features, absent, grid, source)


def _check_schema(schema: pa.Schema, file: str) -> _Meta:
    """Check 2 and the absent-column declaration: columns present with the schema's types."""
    meta = _parse_meta(schema, file)
    expected = log_schema(meta.features[USER_FEATURES], meta.features[AUTHOR_FEATURES])
    for field in expected:
        if field.name not in schema.names:
            raise LogValidationError(file, "missing column", column=field.name)
        actual = schema.field(field.name).type
        if field.name in _FEATURE_KEYS:
            _check_feature_type(actual, meta, field.name, file)
        elif actual != field.type:
            raise LogValidationError(file, f"expected {field.type}, got {actual}",
                                     column=field.name)
    not_absentable = sorted(meta.absent - ABSENTABLE)
    if not_absentable:
        raise LogValidationError(file, "declared absent but this column cannot be absent",
                                 column=not_absentable[0])
    return meta


def _check_feature_type(actual: pa.DataType, meta: _Meta, column: str, file: str) -> None:
    if not (pa.types.is_fixed_size_list(actual) and actual.value_type == pa.float32()):
        raise LogValidationError(file, f"expected fixed-size list<float32>, got {actual}",
                                 column=column)
    n_names = len(meta.features[column])
    if actual.list_size != n_names:
        key = _FEATURE_KEYS[column].decode()
        raise LogValidationError(
            file, f"{actual.list_size} values per row but the metadata {key} names {n_names}",
            column=column)


def _check_same_features(meta: _Meta, first: _Meta | None, file: str) -> None:
    for column in _FEATURE_KEYS:
        if first is not None and len(meta.features[column]) != len(first.features[column]):
            raise LogValidationError(
                file, f"{len(meta.features[column])} features per row, but earlier files of "
                f"this log have {len(first.features[column])}", column=column)


@dataclass(frozen=True)
class _Rows:
    """Where a batch sits: its file and the file row of its first row."""

    file: str
    offset: int

    def fail_where(self, mask, values: pa.ChunkedArray, column: str, message: str) -> None:
        """Raise at the first row where ``mask`` is true; ``{v}`` in ``message`` is its value."""
        bad = _first(mask)
        if bad is not None:
            value = values[bad].as_py()
            text = f"{value:.7g}" if isinstance(value, float) else str(value)
            raise LogValidationError(self.file, message.format(v=text), column=column,
                                     row=self.offset + bad)


def _first(mask: pa.Array | pa.ChunkedArray) -> int | None:
    """Index of the first true value of a boolean mask (nulls count as false), or None."""
    index = pc.index(mask, True).as_py()
    return None if index < 0 else index


def _check_values(table: pa.Table, meta: _Meta, file: str, offset: int) -> None:
    """Checks 3 and 4: absent columns, nulls, NaN/inf, label and range rules."""
    rows = _Rows(file, offset)
    for name in LOG_COLUMNS:
        v = table.column(name)
        if name in meta.absent:
            rows.fail_where(pc.is_valid(v), v, name, "declared absent but holds a value ({v})")
        elif name not in NULLABLE:
            rows.fail_where(pc.is_null(v), v, name, "null value")
    for name in LOG_COLUMNS:
        if name in _FEATURE_KEYS:
            _check_finite(table.column(name), name, rows, meta.features[name])
        elif pa.types.is_floating(table.schema.field(name).type):
            _check_finite(table.column(name), name, rows)
    _check_ranges(table, meta, rows)


def _check_finite(values: pa.ChunkedArray, column: str, rows: _Rows,
                  names: list[str] | None = None) -> None:
    """No NaN or inf; for a feature group (``names`` given) no null inside a vector either."""
    flat, size = (values, 1) if names is None else (pc.list_flatten(values), len(names))
    bad = _first(pc.invert(pc.fill_null(pc.is_finite(flat), names is None)))
    if bad is not None:
        value = flat[bad].as_py()
        what = ("null value" if value is None else "NaN value" if np.isnan(value)
                else f"infinite value ({value})")
        what += f" (feature '{names[bad % size]}')" if names else ""
        raise LogValidationError(rows.file, what, column, rows.offset + bad // size)


def _check_ranges(table: pa.Table, meta: _Meta, rows: _Rows) -> None:
    for label in LABELS:
        v = table.column(label)
        rows.fail_where(pc.and_(pc.not_equal(v, 0), pc.not_equal(v, 1)), v, label,
                        "label value {v}, expected 0 or 1")
    v = table.column(BEHAVIOR_PROB)
    rows.fail_where(pc.or_(pc.less_equal(v, 0), pc.greater(v, 1)), v, BEHAVIOR_PROB,
                    "behavior_prob {v}, expected in (0, 1]")
    v = table.column(DURATION_S)
    rows.fail_where(pc.less_equal(v, 0), v, DURATION_S, "duration_s {v}, expected > 0")
    _check_actions(table.column(ACTION), table.column(ACTION_WEIGHT), meta.grid, rows)
    for name in _NON_NEGATIVE:
        v = table.column(name)
        rows.fail_where(pc.less(v, 0), v, name, "negative value {v}")


def _check_actions(action: pa.ChunkedArray, weight: pa.ChunkedArray, grid: np.ndarray,
                   rows: _Rows) -> None:
    n = len(grid)
    outside = pc.less(action, 0)
    if n:
        outside = pc.or_(outside, pc.greater_equal(action, n))
    rows.fail_where(outside, action, ACTION, f"action {{v}} outside the action grid [0, {n})")
    if n:
        expected = grid[action.to_numpy()]  # (rows,)
        off = np.abs(weight.to_numpy().astype(np.float64) - expected) > WEIGHT_TOLERANCE
        rows.fail_where(pa.array(off), weight, ACTION_WEIGHT,
                        "action_weight {v} differs from the grid value of its action")


class _UserOrder:
    """Check 5: each user's request_id, user_request_idx and ts_ms never go back, in file order
    (across batches and files), and rows of one request share its user_request_idx.

    Keeps each user's last row seen: (request_id, user_request_idx, ts_ms, row, file index).
    """

    def __init__(self, strict: tuple[str, ...] = ()) -> None:
        self.strict = strict  # columns that must increase (one row per request)
        self.files: list[str] = []
        self.rows_in_file = 0
        self.last = pd.DataFrame({c: np.empty(0, np.int64) for c in (*_ORDERED, "row", "file")},
                                 index=pd.Index(np.empty(0, np.int64), name=USER_ID))

    def start_file(self, file: str) -> None:
        self.files.append(file)
        self.rows_in_file = 0

    def check(self, table: pa.Table, file: str, offset: int) -> None:
        if not self.files:
            self.start_file(file)
        batch = pd.DataFrame({c: table.column(c).to_numpy() for c in (USER_ID, *_ORDERED)})
        batch["row"] = offset + np.arange(len(batch))
        batch["file"] = len(self.files) - 1
        prev = self.last.loc[self.last.index.intersection(batch[USER_ID].unique())]
        frame = pd.concat([prev.reset_index(), batch], ignore_index=True)
        frame = frame.sort_values(USER_ID, kind="stable")  # earlier rows first within a user
        self._check_sorted({k: frame[k].to_numpy() for k in frame.columns}, file)
        update = frame.drop_duplicates(USER_ID, keep="last").set_index(USER_ID)
        self.last = pd.concat([self.last.drop(index=update.index, errors="ignore"), update])
        self.rows_in_file += len(batch)

    def _check_sorted(self, seq: dict[str, np.ndarray], file: str) -> None:
        same_user = seq[USER_ID][1:] == seq[USER_ID][:-1]
        for name in _ORDERED:
            v = seq[name]
            self._raise_at(same_user & (v[1:] < v[:-1]), seq, name, file,
                           "user {u}: {c} goes back from {p} ({where}) to {v}")
        for name in self.strict:
            v = seq[name]
            self._raise_at(same_user & (v[1:] == v[:-1]), seq, name, file,
                           "user {u}: {c} {v} appears twice (also at {where}); one row per "
                           "request")
        same_request = same_user & (seq[REQUEST_ID][1:] == seq[REQUEST_ID][:-1])
        uri = seq[USER_REQUEST_IDX]
        self._raise_at(same_request & (uri[1:] != uri[:-1]), seq, USER_REQUEST_IDX, file,
                       "user {u}: request {r} has {c} {v} but {p} ({where})")

    def _raise_at(self, bad: np.ndarray, seq: dict[str, np.ndarray], column: str, file: str,
                  message: str) -> None:
        if not bad.any():
            return
        rows = np.where(bad, seq["row"][1:], np.iinfo(np.int64).max)
        i = int(np.argmin(rows)) + 1  # the offending row; i - 1 is the user's row before it
        prev_file = int(seq["file"][i - 1])
        where = f"row {seq['row'][i - 1]}"
        if prev_file != len(self.files) - 1:
            where += f" of {self.files[prev_file]}"
        text = message.format(u=seq[USER_ID][i], c=column, p=seq[column][i - 1],
                              v=seq[column][i], r=seq[REQUEST_ID][i], where=where)
        raise LogValidationError(file, text, column=column, row=int(seq["row"][i]))
