"""`--workers`: which path sample building takes (in-process or Ray Data), without Ray."""

import pytest

from rliv_ray.mdp import pipeline
from rliv_ray.mdp.pipeline import AUTO, RAY_MIN_TASKS, SamplePath, choose_sample_path

CLUSTER = "ray://head:10001"


@pytest.mark.parametrize("cpus", [1, 2, 3, 4, 16, 64])
@pytest.mark.parametrize("files", [1, 2, 3, 20])
def test_auto_on_a_local_machine_uses_ray_only_with_enough_tasks_at_once(cpus, files):
    path = choose_sample_path(AUTO, address=None, cpus=cpus, files=files)
    tasks = min(cpus, files)
    if tasks < RAY_MIN_TASKS:
        assert (path.engine, path.workers) == ("in_process", 0)
    else:
        assert (path.engine, path.workers) == ("ray_data", tasks)
    assert path.requested == AUTO and f"{cpus} local CPUs" in path.reason


@pytest.mark.parametrize("cpus", [1, 2, 64])
@pytest.mark.parametrize("files", [1, 2, 20])
def test_auto_with_a_cluster_address_uses_ray_one_task_per_file(cpus, files):
    path = choose_sample_path(AUTO, address=CLUSTER, cpus=cpus, files=files)
    assert (path.engine, path.workers) == ("ray_data", files)
    assert CLUSTER in path.reason


@pytest.mark.parametrize("address", [None, CLUSTER])
@pytest.mark.parametrize("cpus", [1, 2, 64])
def test_an_explicit_number_is_obeyed(address, cpus):
    assert choose_sample_path(0, address=address, cpus=cpus, files=8).engine == "in_process"
    for workers in (1, 2, 5):
        path = choose_sample_path(workers, address=address, cpus=cpus, files=8)
        assert (path.engine, path.workers, path.requested) == ("ray_data", workers, str(workers))


@pytest.mark.parametrize("bad", [-1, "two", "local", 1.5, True, None])
def test_anything_else_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="workers must be 'auto' or an integer >= 0"):
        choose_sample_path(bad, address=None, cpus=2, files=2)


def test_the_announcement_is_one_line_naming_path_and_reason():
    local = choose_sample_path(AUTO, address=None, cpus=2, files=4).describe()
    assert local.startswith("sample path: in this process, without Ray (--workers auto: ")
    assert "2 local CPUs and 4 files allow 2 tasks at once" in local
    ray = choose_sample_path(3, address=None, cpus=2, files=4).describe()
    assert ray == "sample path: Ray Data, 3 tasks at a time (--workers 3: as asked)"
    assert "\n" not in local + ray


def test_this_machine_counts_the_cpus_it_may_run_on_and_ray_address(monkeypatch):
    monkeypatch.setattr(pipeline.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert pipeline.local_cpus() == 2
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert pipeline.sample_path(AUTO, address=None, files=8).engine == "in_process"
    monkeypatch.setenv("RAY_ADDRESS", CLUSTER)  # inside `ray job submit`
    assert pipeline.sample_path(AUTO, address=None, files=8).workers == 8
    chosen = SamplePath("0", 0, "given")
    assert pipeline.sample_path(chosen, address=None, files=8) is chosen
