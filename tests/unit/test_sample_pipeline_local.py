"""The sample pipeline in-process (workers=0): outputs, bad input, edge cases."""

import contextlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rliv_ray import schema as S
from rliv_ray import tracking
from rliv_ray.cli import EXIT_INVALID, main
from rliv_ray.data import io
from rliv_ray.data.validate import LogValidationError
from rliv_ray.mdp import pipeline
from rliv_ray.mdp.asa import ASAConfig
from rliv_ray.mdp.pipeline import asa_report, build_samples
from rliv_ray.mdp.samples import SampleConfig
from tests.logtables import make_log_table, write_log

FAST_ASA = ASAConfig(epochs=2, hidden_sizes=(16,))


def small_log(tmp_path, **kwargs):
    table = make_log_table(n_users=12, requests_per_user=40, items_per_request=1, **kwargs)
    return write_log(table, tmp_path / "logs", n_files=3), table


def test_build_samples_writes_shards_model_and_manifest(tmp_path):
    logs, table = small_log(tmp_path)
    report = build_samples(logs, tmp_path / "out", config=SampleConfig(), asa_config=FAST_ASA,
                           workers=0, progress=False)
    out = tmp_path / "out"
    shards = pq.read_table(out / "samples")
    assert shards.num_rows == table.num_rows == report["samples_written"]
    assert (out / "asa.pt").stat().st_size > 0
    manifest = json.loads((out / io.MANIFEST).read_text())
    assert manifest["input_bucketed_by_user"] is True
    assert 0 < manifest["stitching"]["success_rate"] < 1
    assert manifest["stitching"]["success_rate_by_history"]["first_contact"] == 0.0
    assert set(manifest["table4"]) >= {"asa", "rule_based"}
    assert not list(out.glob("_*"))  # scratch folders removed


def test_no_asa_keeps_only_stitched_rows(tmp_path):
    logs, _ = small_log(tmp_path)
    report = build_samples(logs, tmp_path / "out", config=SampleConfig(mode="no_asa"),
                           asa_config=FAST_ASA, workers=0, progress=False)
    shards = pq.read_table(tmp_path / "out" / "samples")
    assert shards[S.STITCHED].to_numpy(zero_copy_only=False).all()
    assert shards.num_rows == report["samples_written"] < report["rows"]


def test_invalid_log_fails_before_anything_is_written(tmp_path, capsys):
    table = make_log_table()
    bad = table.set_column(table.schema.get_field_index(S.CLICK), S.CLICK,
                           pa.array(np.full(table.num_rows, 2, np.int8)))
    logs = write_log(bad, tmp_path / "logs")
    with pytest.raises(LogValidationError, match="click"):
        build_samples(logs, tmp_path / "out", config=SampleConfig(), asa_config=FAST_ASA,
                      workers=0, progress=False)
    assert not (tmp_path / "out").exists()
    assert main(["build-samples", str(logs), str(tmp_path / "out"), "--workers", "0",
                 "--quiet"]) == EXIT_INVALID
    assert "column 'click'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]


def test_empty_file_single_interaction_user_and_duplicate_timestamps(tmp_path):
    table = make_log_table(n_users=10, requests_per_user=30, items_per_request=1, seed=4)
    ts = table[S.TS_MS].to_numpy().copy()
    ts[5] = ts[4]  # two requests of user 0 at the same millisecond
    table = table.set_column(table.schema.get_field_index(S.TS_MS), S.TS_MS, pa.array(ts))
    lonely = make_log_table(n_users=1, requests_per_user=1, items_per_request=1, seed=5)
    lonely = lonely.set_column(lonely.schema.get_field_index(S.USER_ID), S.USER_ID,
                               pa.array([99], pa.int64()))
    logs = write_log(table, tmp_path / "logs", n_files=2)
    pq.write_table(lonely, logs / "part-00007.parquet")
    pq.write_table(table.slice(0, 0), logs / "part-00008.parquet")  # an empty partition
    report = asa_report(logs, config=SampleConfig(), asa_config=FAST_ASA, workers=0,
                        progress=False)
    assert report["rows"] == table.num_rows + 1
    assert report["stitching"]["rows_by_history"]["first_contact"] >= 1


def test_nothing_stitchable_is_a_clear_error(tmp_path):
    table = make_log_table(n_users=3, requests_per_user=1, items_per_request=1)
    logs = write_log(table, tmp_path / "logs")
    with pytest.raises(ValueError, match="no interaction could be stitched"):
        asa_report(logs, config=SampleConfig(), asa_config=FAST_ASA, workers=0, progress=False)


def test_cli_asa_report_and_build_samples(tmp_path, capsys):
    logs, table = small_log(tmp_path)
    common = ["--workers", "0", "--asa-epochs", "1", "--quiet"]
    assert main(["asa-report", str(logs), "--sequence-length", "3", *common]) == 0
    out = capsys.readouterr().out
    assert "Table 4" in out and "rule_based" in out and "stitching can't reach" in out
    assert main(["build-samples", str(logs), str(tmp_path / "s"), "--hybrid", *common]) == 0
    assert f"wrote {table.num_rows:,} samples (hybrid)" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "s" / io.MANIFEST).read_text())
    assert manifest["sample_config"]["mode"] == "hybrid"
    with pytest.raises(SystemExit) as info:  # refused by the parser: one line, status 2
        main(["build-samples", str(logs), str(tmp_path / "t"), "--sequence-length", "0",
              *common])
    assert info.value.code == 2
    assert "argument --sequence-length: must be >= 1, got 0" in capsys.readouterr().err


def test_cli_workers_auto_is_the_default_announced_and_recorded(tmp_path, capsys, monkeypatch):
    logs, _ = small_log(tmp_path)
    monkeypatch.setattr(pipeline, "local_cpus", lambda: 2)  # the project's 2-core machine
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    params = []

    @contextlib.contextmanager
    def recording_run(uri, name):
        tracker = tracking.NoOpTracker()
        tracker.log_params = params.append
        yield tracker

    monkeypatch.setattr(tracking, "tracking_run", recording_run)
    expected = {"engine": "in_process", "requested": "auto"}
    for i, extra in enumerate(([], ["--workers", "auto"])):
        out = tmp_path / f"s{i}"
        assert main(["build-samples", str(logs), str(out), "--asa-epochs", "1", "--quiet",
                     *extra]) == 0
        first = capsys.readouterr().out.splitlines()[0]
        assert first.startswith("sample path: in this process, without Ray (--workers auto: "
                                "2 local CPUs and 3 files allow 2 tasks at once")
        manifest = json.loads((out / io.MANIFEST).read_text())
        assert manifest["workers"] == 0
        assert manifest["sample_path"].items() >= expected.items()
        assert params[-1]["workers"] == 0
        assert params[-1]["sample_path"].items() >= expected.items()


def test_cli_workers_zero_is_in_process_and_nonsense_is_refused(tmp_path, capsys):
    logs, _ = small_log(tmp_path)
    assert main(["asa-report", str(logs), "--workers", "0", "--asa-epochs", "1",
                 "--quiet"]) == 0
    assert capsys.readouterr().out.startswith(
        "sample path: in this process, without Ray (--workers 0: 0 runs in this process)\n")
    for bad in ("two", "-1", "local"):
        with pytest.raises(SystemExit) as info:
            main(["build-samples", str(logs), str(tmp_path / "s"), "--workers", bad])
        assert info.value.code == 2
        assert f"expected 'auto' or an integer >= 0, got '{bad}'" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
