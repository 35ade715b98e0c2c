"""Interaction-log validation: valid logs pass, each malformed one names file, column and row."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rliv_ray import schema as s
from rliv_ray.data import validate
from rliv_ray.data.io import part_name
from rliv_ray.data.validate import LogReport, LogValidationError, validate_log, validate_table
from tests.logtables import make_log_table, write_log


def with_column(table: pa.Table, name: str, values, type: pa.DataType | None = None) -> pa.Table:
    """``table`` with column ``name`` replaced by ``values`` (of the schema's type by default)."""
    field = pa.field(name, type or table.schema.field(name).type)
    return table.set_column(table.schema.get_field_index(name), field,
                            pa.array(values, type=field.type))


def set_value(name: str, row: int, value, type: pa.DataType | None = None):
    """A corruption: column ``name`` gets ``value`` at ``row``."""
    def corrupt(table: pa.Table) -> pa.Table:
        values = table.column(name).to_pylist()
        values[row] = value
        return with_column(table, name, values, type)
    return corrupt


def with_metadata(**changes):
    """A corruption: schema metadata keys (``rliv.<key>``) set to JSON values."""
    def corrupt(table: pa.Table) -> pa.Table:
        extra = {f"rliv.{k}".encode(): json.dumps(v) for k, v in changes.items()}
        return table.replace_schema_metadata({**table.schema.metadata, **extra})
    return corrupt


def shift_back(name: str, row: int, to_row: int = 0):
    """A corruption: column ``name`` at ``row`` becomes smaller than its value at ``to_row``."""
    def corrupt(table: pa.Table) -> pa.Table:
        values = table.column(name).to_numpy().copy()
        values[row] = values[to_row] - 1
        return with_column(table, name, values)
    return corrupt


def nan_feature(row: int, index: int):
    def corrupt(table: pa.Table) -> pa.Table:
        values = np.stack(table.column(s.USER_FEATURES).to_numpy())
        values[row, index] = np.nan
        flat = pa.array(values.ravel().astype(np.float32))
        return with_column(table, s.USER_FEATURES,
                           pa.FixedSizeListArray.from_arrays(flat, values.shape[1]))
    return corrupt


@pytest.fixture
def table() -> pa.Table:
    return make_log_table(n_users=4, requests_per_user=10)


def check(table: pa.Table, tmp_path) -> LogValidationError:
    """Write ``table`` as one file, validate it and return the error it must raise."""
    write_log(table, tmp_path)
    with pytest.raises(LogValidationError) as info:
        validate_log(tmp_path)
    return info.value


def test_valid_log_passes_and_is_counted(tmp_path, table):
    write_log(table, tmp_path, n_files=3)
    report = validate_log(tmp_path)
    assert report == LogReport(files=3, rows=80, users=4, absent_columns=(), source="test")
    assert validate_log(tmp_path / "log" / part_name(0)).users == 2  # one file: users 0, 1


@pytest.mark.parametrize("variant", ["absent_gift", "null_duration", "extra_column", "no_grid"])
def test_valid_variants_pass(tmp_path, table, variant):
    if variant == "absent_gift":
        for name in (s.GIFT, s.UA_GIFT_COUNT):
            table = with_column(table, name, [None] * table.num_rows)
        table = with_metadata(absent_columns=[s.GIFT, s.UA_GIFT_COUNT])(table)
    elif variant == "null_duration":
        table = set_value(s.DURATION_S, 3, None)(table)
    elif variant == "extra_column":
        table = table.append_column("note", pa.array(["x"] * table.num_rows))
    else:
        table = with_metadata(action_grid=[])(set_value(s.ACTION, 2, 9)(table))
    write_log(table, tmp_path)
    report = validate_log(tmp_path)
    assert report.rows == 80
    if variant == "absent_gift":
        assert report.absent_columns == (s.GIFT, s.UA_GIFT_COUNT)


CORRUPTIONS = {
    "missing column": (lambda t: t.drop_columns([s.ACTION_WEIGHT]),
                       s.ACTION_WEIGHT, None, "missing column"),
    "wrong dtype": (lambda t: with_column(t, s.CLICK, t.column(s.CLICK).to_pylist(), pa.int64()),
                    s.CLICK, None, "expected int8, got int64"),
    "label 2": (set_value(s.CLICK, 7, 2), s.CLICK, 7, "label value 2, expected 0 or 1"),
    "float user_id with NaN": (set_value(s.USER_ID, 3, float("nan"), pa.float64()),
                               s.USER_ID, None, "expected int64, got double"),
    "null user_id": (set_value(s.USER_ID, 3, None), s.USER_ID, 3, "null value"),
    "null label": (set_value(s.FOLLOW, 12, None), s.FOLLOW, 12, "null value"),
    "behavior_prob 0": (set_value(s.BEHAVIOR_PROB, 5, 0.0), s.BEHAVIOR_PROB, 5,
                        "behavior_prob 0, expected in (0, 1]"),
    "behavior_prob 1.5": (set_value(s.BEHAVIOR_PROB, 5, 1.5), s.BEHAVIOR_PROB, 5,
                          "behavior_prob 1.5, expected in (0, 1]"),
    "NaN watch time": (set_value(s.WATCH_TIME_S, 9, float("nan")), s.WATCH_TIME_S, 9,
                       "NaN value"),
    "inf rank score": (set_value(s.RANK_SCORE, 2, float("inf")), s.RANK_SCORE, 2,
                       "infinite value"),
    "NaN in a feature vector": (nan_feature(4, 1), s.USER_FEATURES, 4,
                                "NaN value (feature 'u1')"),
    "feature list of float64": (lambda t: with_column(t, s.USER_FEATURES, t.column(
        s.USER_FEATURES).to_pylist(), pa.list_(pa.float64(), 3)), s.USER_FEATURES, None,
                                "expected fixed-size list<float32>"),
    "feature size vs names": (with_metadata(user_feature_names=["a", "b", "c", "d"]),
                              s.USER_FEATURES, None,
                              "3 values per row but the metadata rliv.user_feature_names "
                              "names 4"),
    "negative watch time": (set_value(s.WATCH_TIME_S, 6, -1.0), s.WATCH_TIME_S, 6,
                            "negative value -1"),
    "zero duration": (set_value(s.DURATION_S, 8, 0.0), s.DURATION_S, 8, "expected > 0"),
    "negative author id": (set_value(s.AUTHOR_ID, 8, -1), s.AUTHOR_ID, 8, "negative value -1"),
    "negative pair count": (set_value(s.UA_CLICK_COUNT, 1, -2), s.UA_CLICK_COUNT, 1,
                            "negative value -2"),
    "action outside the grid": (set_value(s.ACTION, 6, 5), s.ACTION, 6,
                                "action 5 outside the action grid [0, 5)"),
    "action weight off the grid": (set_value(s.ACTION_WEIGHT, 6, 0.3), s.ACTION_WEIGHT, 6,
                                   "differs from the grid value"),
    "absent column holding values": (with_metadata(absent_columns=[s.GIFT]), s.GIFT, 0,
                                     "declared absent but holds a value"),
    "absent column not absentable": (with_metadata(absent_columns=[s.CLICK]), s.CLICK, None,
                                     "cannot be absent"),
    "request_id goes back": (shift_back(s.REQUEST_ID, 10), s.REQUEST_ID, 10,
                             "user 0: request_id goes back"),
    "ts_ms goes back": (shift_back(s.TS_MS, 23, to_row=20), s.TS_MS, 23,
                        "user 1: ts_ms goes back"),
    "user_request_idx goes back": (shift_back(s.USER_REQUEST_IDX, 30, to_row=28),
                                   s.USER_REQUEST_IDX, 30, "user 1: user_request_idx goes back"),
    "one request, two user_request_idx": (set_value(s.USER_REQUEST_IDX, 11, 6),
                                          s.USER_REQUEST_IDX, 11, "has user_request_idx 6 but 5"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corruption_names_file_column_and_row(tmp_path, table, name):
    corrupt, column, row, fragment = CORRUPTIONS[name]
    err = check(corrupt(table), tmp_path)
    assert (err.file, err.column, err.row) == (str(tmp_path / "log" / part_name(0)), column, row)
    assert fragment in err.message
    assert "\n" not in str(err)
    where = f"column '{column}'" + ("" if row is None else f", row {row}")
    assert str(err) == f"{err.file}: {where}: {err.message}"


def test_truncated_parquet(tmp_path, table):
    file = write_log(table, tmp_path) / part_name(0)
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
    with pytest.raises(LogValidationError, match="not a readable Parquet file") as info:
        validate_log(tmp_path)
    assert (info.value.file, info.value.column, info.value.row) == (str(file), None, None)
    assert str(info.value).startswith(f"{file}: not a readable Parquet file (")
    assert "\n" not in str(info.value)


def test_not_parquet_and_no_files(tmp_path):
    (tmp_path / "a.parquet").write_text("user_id,click\n1,0\n")
    with pytest.raises(LogValidationError, match="not a readable Parquet file"):
        validate_log(tmp_path / "a.parquet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LogValidationError, match="no Parquet files found") as info:
        validate_log(tmp_path / "empty")
    assert info.value.file == str(tmp_path / "empty")
    with pytest.raises(LogValidationError, match="no such file"):
        validate_log(tmp_path / "missing")


def test_user_going_back_in_time_across_files(tmp_path):
    table = make_log_table(n_users=1, requests_per_user=10)
    log = tmp_path / "log"
    log.mkdir()
    pq.write_table(table.slice(10), log / part_name(0))  # later requests first
    pq.write_table(table.slice(0, 10), log / part_name(1))
    with pytest.raises(LogValidationError) as info:
        validate_log(tmp_path)
    err = info.value
    assert (err.file, err.column, err.row) == (str(log / part_name(1)), s.REQUEST_ID, 0)
    assert "user 0" in err.message and f"row 9 of {log / part_name(0)}" in err.message


def test_feature_sizes_differ_across_files(tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    pq.write_table(make_log_table(n_users=1), log / part_name(0))
    pq.write_table(make_log_table(n_users=1, n_user_features=4), log / part_name(1))
    with pytest.raises(LogValidationError, match="earlier files of this log have 3") as info:
        validate_log(tmp_path)
    assert (info.value.file, info.value.column) == (str(log / part_name(1)), s.USER_FEATURES)


def test_checks_carry_across_batches(tmp_path, table, monkeypatch):
    monkeypatch.setattr(validate, "BATCH_ROWS", 7)  # requests of 2 rows split across batches
    write_log(table, tmp_path)
    assert validate_log(tmp_path).rows == 80
    for corrupt, column, row in [(set_value(s.CLICK, 33, 2), s.CLICK, 33),
                                 (shift_back(s.REQUEST_ID, 30, to_row=27), s.REQUEST_ID, 30),
                                 (set_value(s.USER_REQUEST_IDX, 21, 1), s.USER_REQUEST_IDX, 21)]:
        err = check(corrupt(table), tmp_path / column)
        assert (err.column, err.row) == (column, row)


def test_validate_table_reports_rows_with_offset(table):
    validate_table(table)
    with pytest.raises(LogValidationError) as info:
        validate_table(set_value(s.GIFT, 3, 2)(table), file="batch", row_offset=100)
    assert str(info.value) == "batch: column 'gift', row 103: label value 2, expected 0 or 1"


def test_error_is_one_line_and_picklable():
    err = LogValidationError("f.parquet", "bad\nthing", column="click", row=4)
    assert str(err) == "f.parquet: column 'click', row 4: bad thing"
    assert str(LogValidationError("f.parquet", "broken")) == "f.parquet: broken"
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.file, copy.column, copy.row, str(copy)) == ("f.parquet", "click", 4, str(err))
    assert isinstance(err, ValueError)


def test_progress_display(tmp_path, table, capsys):
    write_log(table, tmp_path, n_files=2)
    validate_log(tmp_path, progress=True)
    assert "validate: 2/2 files" in capsys.readouterr().err
