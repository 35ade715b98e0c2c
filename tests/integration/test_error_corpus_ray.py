"""The few broken inputs of the error corpus (``tests/unit/test_error_corpus.py``) that need a
Ray runtime: a cluster with fewer CPUs than the learners ask for (the README's
``--num-learners 4`` on a 2-CPU head hung silently) and invalid values found by Ray Data
workers. Each is one line on stderr, the right exit status and no OUT."""

import pytest

from rliv_ray import schema as S
from rliv_ray.cli import EXIT_INVALID, EXIT_USAGE
from tests.logtables import make_log_table, write_log
from tests.sampleshards import write_shards
from tests.unit.test_error_corpus import run_in_process, set_value

pytestmark = pytest.mark.ray


def test_learners_that_do_not_fit_the_cluster_fail_in_one_line(local_ray, tmp_path, capfd):
    samples = write_shards(tmp_path / "samples", rows=64, files=1)
    out = tmp_path / "run"
    code, err = run_in_process(["train", "rliv-ua", str(samples), "--out", str(out),
                                "--num-learners", "4", "--quiet"], capfd)
    assert code == EXIT_USAGE and len(err.splitlines()) == 1, err
    assert err.startswith("rliv train: error: --num-learners 4 needs 3 CPUs") and (
        "the running Ray has 2: use at most 2 learners" in err), err
    assert not out.exists() and local_ray.is_initialized()


def test_a_nan_found_by_ray_data_workers_is_one_line(local_ray, tmp_path, capfd):
    log = tmp_path / "data"
    write_log(set_value(make_log_table(n_users=6, requests_per_user=10), S.WATCH_TIME_S, 30,
                        float("nan")), log, n_files=2)
    out = tmp_path / "samples"
    code, err = run_in_process(["build-samples", str(log), str(out), "--workers", "2",
                                "--asa-epochs", "1", "--quiet"], capfd)
    assert code == EXIT_INVALID and len(err.splitlines()) == 1, err
    assert "column 'watch_time_s'" in err and "NaN value" in err, err
    assert not out.exists()
