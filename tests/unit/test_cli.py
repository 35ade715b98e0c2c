"""The ``rliv`` command, run in-process: outputs, one-line errors, exit codes, no partial output."""

import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from rliv_ray import schema as S
from rliv_ray.cli import EXIT_INVALID, EXIT_USAGE, main
from rliv_ray.data import io, ua_generate
from tests.logtables import make_log_table, write_log

WORLD = ["--users", "30", "--days", "3", "--quiet"]


def test_generate_validate_summary(tmp_path, capsys):
    out = tmp_path / "world"
    assert main(["generate", str(out), *WORLD]) == 0
    assert "wrote" in capsys.readouterr().out
    assert json.loads((out / io.MANIFEST).read_text())["world"]["n_users"] == 30
    assert main(["validate", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("ok: ")
    assert main(["summary", str(out), "--json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["users"] == 30
    assert summary["sequence_length"] == 30  # the world's own setting, read from the manifest
    assert 0 < summary["stitchable_share"] < 1
    assert summary["stitchable_share_by_history"]["first_contact"] == 0.0


def test_help_explains_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for command in ("generate", "convert-kuairand", "validate", "summary", "check-world"):
        assert command in text


def test_existing_output_is_refused(tmp_path, capsys):
    (tmp_path / "world").mkdir()
    assert main(["generate", str(tmp_path / "world"), *WORLD]) == EXIT_USAGE
    assert "already exists" in capsys.readouterr().err


def test_bad_world_setting_is_one_line(tmp_path, capsys):
    assert main(["generate", str(tmp_path / "w"), "--set", "click_rate=3", *WORLD]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err == "rliv generate: error: invalid world setting: click_rate must be in (0, 1), got 3"
    assert not (tmp_path / "w").exists()


def test_unknown_rliv_ua_preset_lists_the_choices(tmp_path, capsys):
    args = ["train", "rliv-ua", str(tmp_path), "--out", str(tmp_path / "o"), "--ablation"]
    assert main([*args, "bogus"]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err.startswith("rliv train: error: unknown ablation 'bogus' (choose from [")
    assert "'cql', 'dqn', 'full'" in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_interrupted_generate_leaves_nothing(tmp_path, monkeypatch, capsys):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ua_generate, "bucket_tables", interrupt)
    assert main(["generate", str(tmp_path / "w"), *WORLD]) == 130
    assert "no partial output" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_sigterm_cleans_up_as_ctrl_c_and_exits_143(tmp_path, monkeypatch, capsys):
    """A scheduler's SIGTERM (issue 17 s3): the same clean-up and one line, exit 128 + 15."""
    import os
    import signal

    def terminate(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(ua_generate, "bucket_tables", terminate)
    assert main(["generate", str(tmp_path / "w"), *WORLD]) == 143
    assert capsys.readouterr().err == ("rliv generate: interrupted (SIGTERM); no partial output "
                                       "was kept\n")
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is put back


def _corrupt(table: pa.Table, column: str, values) -> pa.Table:
    index = table.schema.get_field_index(column)
    return table.set_column(index, pa.field(column, values.type), values)


@pytest.mark.parametrize(
    ("break_table", "column", "row"),
    [
        (lambda t: t.drop_columns([S.CLICK]), S.CLICK, None),
        (lambda t: _corrupt(t, S.USER_ID, pc.cast(t[S.USER_ID], pa.float64())), S.USER_ID, None),
        (lambda t: _corrupt(t, S.CLICK, pa.array([0] * 7 + [2] + [0] * (t.num_rows - 8),
                                                  pa.int8())), S.CLICK, 7),
    ],
)
def test_malformed_log_is_one_line_with_file_column_row(tmp_path, capsys, break_table, column,
                                                        row):
    log_dir = tmp_path / io.LOG_DIR
    log_dir.mkdir()
    pq.write_table(break_table(make_log_table()), log_dir / io.part_name(0))
    assert main(["validate", str(log_dir), "--quiet"]) == EXIT_INVALID
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "part-00000.parquet" in err and f"column '{column}'" in err
    if row is not None:
        assert f"row {row}" in err


def test_truncated_parquet_is_reported(tmp_path, capsys):
    log_dir = write_log(make_log_table(), tmp_path)
    file = log_dir / io.part_name(0)
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
    assert main(["validate", str(log_dir), "--quiet"]) == EXIT_INVALID
    assert "not a readable Parquet file" in capsys.readouterr().err
    assert file.read_bytes() == data[: len(data) // 2]
