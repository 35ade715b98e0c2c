"""A local Ray runtime for the ``ray`` tier, started once per module and always shut down,
listening on 127.0.0.1 only (as the CLI's own local Ray)."""

import pytest

from rliv_ray.runner import LOOPBACK, loopback_only


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    loopback_only()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False, ignore_reinit_error=True, _node_ip_address=LOOPBACK)
    try:
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.execution_options.resource_limits = ray.data.ExecutionResources(cpu=1)
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def ray4():
    """Four logical CPUs, as `rliv train` gives itself, so 2 remote learners fit."""
    ray = pytest.importorskip("ray")
    loopback_only()
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
             configure_logging=False, _node_ip_address=LOOPBACK)
    yield ray
    ray.shutdown()
