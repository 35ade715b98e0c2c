"""The sample pipeline on Ray Data gives what the in-process reference gives (ray tier)."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from rliv_ray import schema as S
from rliv_ray.data import io
from rliv_ray.mdp import pipeline
from rliv_ray.mdp.asa import ASAConfig
from rliv_ray.mdp.pipeline import asa_report, build_samples
from rliv_ray.mdp.samples import SampleConfig
from tests.logtables import make_log_table, write_log

pytestmark = pytest.mark.ray


def _sorted_samples(path):
    table = pq.read_table(path / "samples")
    order = np.lexsort((np.stack(table[S.STATE].to_numpy(zero_copy_only=False))[:, -3],
                        table[S.AUTHOR_ID].to_numpy(), table[S.USER_ID].to_numpy()))
    return table.take(order)


def test_ray_on_unbucketed_logs_matches_local_reference(local_ray, tmp_path):
    table = make_log_table(n_users=16, requests_per_user=40, items_per_request=1, seed=9)
    bucketed = write_log(table, tmp_path / "bucketed", n_files=2)
    # The same rows split by row order: users straddle the two files.
    scattered = tmp_path / "scattered" / io.LOG_DIR
    scattered.mkdir(parents=True)
    half = table.num_rows // 2 + 7
    pq.write_table(table.slice(0, half), scattered / io.part_name(0))
    pq.write_table(table.slice(half), scattered / io.part_name(1))
    asa = ASAConfig(epochs=2, hidden_sizes=(16,))
    local = build_samples(bucketed, tmp_path / "local", config=SampleConfig(), asa_config=asa,
                          workers=0, progress=False)
    on_ray = build_samples(scattered, tmp_path / "ray", config=SampleConfig(), asa_config=asa,
                           workers=2, progress=False)
    assert local["input_bucketed_by_user"] and not on_ray["input_bucketed_by_user"]
    assert on_ray["workers"] == 2
    assert on_ray["stitching"] == local["stitching"]
    a, b = _sorted_samples(tmp_path / "local"), _sorted_samples(tmp_path / "ray")
    assert a.num_rows == b.num_rows == table.num_rows
    for column in (S.USER_ID, S.AUTHOR_ID, S.ACTION, S.STITCHED, S.GAP, S.reward_column("click")):
        assert np.array_equal(a[column].to_numpy(zero_copy_only=False),
                              b[column].to_numpy(zero_copy_only=False)), column
    for column in (S.STATE, S.NEXT_STATE):
        x = np.stack(a[column].to_numpy(zero_copy_only=False))
        y = np.stack(b[column].to_numpy(zero_copy_only=False))
        np.testing.assert_allclose(x, y, atol=1e-5, err_msg=column)


def test_invalid_file_found_by_a_ray_worker_is_one_clear_error(local_ray, tmp_path):
    import pyarrow as pa

    from rliv_ray.data.validate import LogValidationError

    table = make_log_table(n_users=6, requests_per_user=10, items_per_request=1)
    logs = write_log(table, tmp_path / "logs", n_files=2)
    second = logs / io.part_name(1)
    bad = pq.read_table(second)
    probs = bad[S.BEHAVIOR_PROB].to_numpy().copy()
    probs[3] = 1.5
    bad = bad.set_column(bad.schema.get_field_index(S.BEHAVIOR_PROB), S.BEHAVIOR_PROB,
                         pa.array(probs, pa.float32()))
    pq.write_table(bad, second)
    with pytest.raises(LogValidationError) as info:
        build_samples(logs, tmp_path / "out", config=SampleConfig(),
                      asa_config=ASAConfig(epochs=1), workers=2, progress=False)
    assert (info.value.column, info.value.row) == (S.BEHAVIOR_PROB, 3)
    assert info.value.file.endswith(io.part_name(1))
    assert not (tmp_path / "out").exists()


def test_auto_takes_ray_data_where_cpus_and_files_allow(local_ray, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "local_cpus", lambda: 8)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    table = make_log_table(n_users=12, requests_per_user=20, items_per_request=1, seed=3)
    logs = write_log(table, tmp_path / "logs", n_files=3)
    report = asa_report(logs, config=SampleConfig(), progress=False,
                        asa_config=ASAConfig(epochs=1, hidden_sizes=(16,)))
    assert report["workers"] == 3
    assert report["sample_path"]["engine"] == "ray_data"
    assert report["sample_path"]["requested"] == "auto"
    assert report["rows"] == table.num_rows
