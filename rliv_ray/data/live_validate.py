"""Validation of live-stream allocation logs: schema, types, nulls, ranges, the allocation rules
and per-user order, with one-line errors naming file, column and row.

Same contract as :mod:`rliv_ray.data.validate` (whose error type and vectorised helpers it
reuses): files are read in record batches, every check is vectorised, and the first problem
raises :class:`~rliv_ray.data.validate.LogValidationError`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rliv_ray import schema as S
from rliv_ray.data.validate import (
    BATCH_ROWS,
    LogReport,
    LogValidationError,
    _check_finite,
    _read,
    _resolve,
    _Rows,
    _UserOrder,
)
from rliv_ray.progress import Progress

_FEATURE_KEYS = {S.USER_FEATURES: S.META_USER_FEATURES, S.LIVE_FEATURES: S.META_LIVE_FEATURES}
_HISTORIES = (S.LIVE_HISTORY, S.VIDEO_HISTORY)
_NON_NEGATIVE = (S.REQUEST_ID, S.USER_REQUEST_IDX, S.USER_ID, S.LIVE_WATCH_3W_S,
                 S.LIVE_WATCH_S, S.VIDEO_WATCH_S)


def validate_live_log(path: str | os.PathLike, *, progress: bool = False) -> LogReport:
    """Check every file of the live-stream log at ``path`` (dataset directory, directory of
    Parquet files or one file); raise :class:`LogValidationError` at the first problem."""
    files = _resolve(path)
    order, rows, source = _UserOrder(strict=(S.REQUEST_ID,)), 0, "unknown"
    with Progress(len(files), "validate", unit="files", enabled=progress) as bar:
        for file in files:
            source = _validate_file(file, order)
            rows += order.rows_in_file
            bar.update(1)
    return LogReport(len(files), rows, len(order.last), (), source)


def is_live_log(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a live-stream log (its first file has a live_id column);
    False where that cannot be told (the validators then name the problem)."""
    try:
        files = _resolve(path)
        return S.LIVE_ID in pq.read_schema(files[0]).names
    except (LogValidationError, OSError, pa.ArrowException):
        return False


def validate_live_table(table: pa.Table, *, file: str = "<table>", row_offset: int = 0) -> None:
    """The per-batch checks on an in-memory table (``row_offset``: file row of its first row)."""
    _check_schema(table.schema, file)
    _check_values(table, _Rows(file, row_offset), _feature_names(table.schema))
    _UserOrder(strict=(S.REQUEST_ID,)).check(table, file, row_offset)


def check_finite(table: pa.Table, file: str, row_offset: int = 0) -> None:
    """No NaN or infinite number in any float column or feature vector of a live-stream log
    table (LogValidationError naming file, column and row)."""
    rows = _Rows(file, row_offset)
    for name in table.column_names:
        kind = table.schema.field(name).type
        if pa.types.is_fixed_size_list(kind) and pa.types.is_floating(kind.value_type):
            names = [str(i) for i in range(kind.list_size)]
            _check_finite(table.column(name), name, rows, names)
        elif pa.types.is_floating(kind):
            _check_finite(table.column(name), name, rows)


def _validate_file(path: Path, order: _UserOrder) -> str:
    file = str(path)
    parquet = _read(file, lambda: pq.ParquetFile(path))
    schema = parquet.schema_arrow
    _check_schema(schema, file)
    names = _feature_names(schema)
    order.start_file(file)
    batches = parquet.iter_batches(batch_size=BATCH_ROWS, columns=list(S.LIVE_LOG_COLUMNS))
    while (batch := _read(file, lambda: next(batches, None))) is not None:
        table = pa.Table.from_batches([batch])
        _check_values(table, _Rows(file, order.rows_in_file), names)
        order.check(table, file, order.rows_in_file)
    return (schema.metadata or {}).get(S.META_SOURCE, b"unknown").decode()


def _feature_names(schema: pa.Schema) -> dict[str, list[str]]:
    return {column: S.feature_names(schema, key) for column, key in _FEATURE_KEYS.items()}


def _check_schema(schema: pa.Schema, file: str) -> None:
    try:
        names = _feature_names(schema)
    except ValueError as err:
        raise LogValidationError(file, f"unreadable rliv schema metadata ({err})") from None
    length = S.HISTORY_LENGTH
    if S.LIVE_HISTORY in schema.names and pa.types.is_fixed_size_list(
            schema.field(S.LIVE_HISTORY).type):
        length = schema.field(S.LIVE_HISTORY).type.list_size
    expected = S.live_log_schema(names[S.USER_FEATURES], names[S.LIVE_FEATURES],
                                 history_length=length)
    for field in expected:
        if field.name not in schema.names:
            raise LogValidationError(file, "missing column", column=field.name)
        actual = schema.field(field.name).type
        if actual != field.type:
            hint = ""
            if field.name in _FEATURE_KEYS:
                key = _FEATURE_KEYS[field.name].decode()
                hint = f" (the metadata {key} names {len(names[field.name])} features)"
            raise LogValidationError(file, f"expected {field.type}, got {actual}{hint}",
                                     column=field.name)


def _check_values(table: pa.Table, rows: _Rows, names: dict[str, list[str]]) -> None:
    for name in S.LIVE_LOG_COLUMNS:
        v = table.column(name)
        rows.fail_where(pc.is_null(v), v, name, "null value")
        if name in _FEATURE_KEYS:
            _check_finite(v, name, rows, names[name])
        elif pa.types.is_floating(v.type):
            _check_finite(v, name, rows)
    _check_ranges(table, rows)
    _check_allocation(table, rows)


def _check_ranges(table: pa.Table, rows: _Rows) -> None:
    for name in (S.ACTION, S.LIVE_CLICK):
        v = table.column(name)
        rows.fail_where(pc.and_(pc.not_equal(v, 0), pc.not_equal(v, 1)), v, name,
                        f"{name} {{v}}, expected 0 or 1")
    v = table.column(S.BEHAVIOR_PROB)
    rows.fail_where(pc.or_(pc.less_equal(v, 0), pc.greater(v, 1)), v, S.BEHAVIOR_PROB,
                    "behavior_prob {v}, expected in (0, 1]")
    v = table.column(S.N_VIDEOS)
    rows.fail_where(pc.less(v, 1), v, S.N_VIDEOS, "n_videos {v}, expected >= 1")
    v = table.column(S.LIVE_ID)
    rows.fail_where(pc.less(v, S.NO_LIVE), v, S.LIVE_ID, "live_id {v}, expected >= -1")
    for name in _NON_NEGATIVE:
        v = table.column(name)
        rows.fail_where(pc.less(v, 0), v, name, "negative value {v}")
    for name in _HISTORIES:
        flat = pc.list_flatten(table.column(name))
        size = table.schema.field(name).type.list_size
        bad = pc.index(pc.less(flat, S.HISTORY_PAD), True).as_py()
        if bad >= 0:
            raise LogValidationError(rows.file, f"id {flat[bad].as_py()}, expected >= -1 "
                                     "(-1 pads)", column=name, row=rows.offset + bad // size)


def _check_allocation(table: pa.Table, rows: _Rows) -> None:
    """The rules of the allocation decision: a = 1 needs a live stream on air; without a = 1
    there is no live click or live watch time; no live stream means propensity 1."""
    action, live = table.column(S.ACTION), table.column(S.LIVE_ID)
    no_live = pc.equal(live, S.NO_LIVE)
    rows.fail_where(pc.and_(pc.equal(action, 1), no_live), action, S.ACTION,
                    "action {v} but no live stream on air (live_id = -1)")
    idle = pc.equal(action, 0)
    for name in (S.LIVE_WATCH_S, S.LIVE_CLICK):
        v = table.column(name)
        rows.fail_where(pc.and_(idle, pc.not_equal(v, 0)), v, name,
                        f"{name} {{v}} with action 0, expected 0")
    v = table.column(S.BEHAVIOR_PROB)
    rows.fail_where(pc.and_(no_live, pc.not_equal(v, 1)), v, S.BEHAVIOR_PROB,
                    "behavior_prob {v} without a live stream on air, expected 1 (a = 0 forced)")
