"""`rliv` submitted as a Ray Job to a head node started by the test (ray + slow tiers).

The head's dashboard binds to 127.0.0.1; its other ports (GCS, raylet, Ray Client on 10001,
agents) listen on every interface or the machine's address, because on Linux ``ray start``
replaces ``--node-ip-address=127.0.0.1`` with the machine's address (cluster/README.md, "What
listens where"; ``test_cluster.py`` runs a loopback-only cluster). The head runs in its own
session with ``--block`` so that stopping it stops every process it started, and token auth is
disabled on both sides explicitly (``../shared/RLLIB_NOTES.md``).
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rliv_ray.data.ua_config import UAWorldConfig
from rliv_ray.data.ua_generate import generate_ua_world

pytestmark = [pytest.mark.ray, pytest.mark.slow]
BIN = Path(sys.executable).parent
POLLS = 600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def ray_head(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    from ray.job_submission import JobSubmissionClient

    dashboard = free_port()
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus=2",
         "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dashboard}", f"--port={free_port()}", "--disable-usage-stats"],
        env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        for attempt in range(POLLS):  # a hang guard, not a speed check
            try:
                client = JobSubmissionClient(f"http://127.0.0.1:{dashboard}")
                break
            except ConnectionError:
                if attempt == POLLS - 1 or head.poll() is not None:
                    raise
                time.sleep(1)
        yield client
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)


def test_asa_report_as_a_ray_job(ray_head, tmp_path):
    from ray.job_submission import JobStatus

    generate_ua_world(tmp_path / "w", UAWorldConfig(n_users=60, days=5), n_files=2,
                      progress=False)
    rliv = shutil.which("rliv", path=str(BIN))
    for attempt in range(POLLS):  # the head's job agent registers after its dashboard answers
        try:
            job = ray_head.submit_job(
                entrypoint=f"{rliv} asa-report {tmp_path / 'w'} --workers 2 --asa-epochs 1 "
                           "--quiet", runtime_env={"env_vars": {"RAY_AUTH_MODE": "disabled"}})
            break
        except RuntimeError as err:
            if "No available agent" not in str(err) or attempt == POLLS - 1:
                raise
            time.sleep(1)
    done = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED)
    for _ in range(POLLS):  # a hang guard, not a speed check
        if (status := ray_head.get_job_status(job)) in done:
            break
        time.sleep(1)
    else:
        pytest.fail(f"the job was still {status} after {POLLS} polls")
    logs = ray_head.get_job_logs(job)
    assert status == JobStatus.SUCCEEDED, logs[-2000:]
    assert "Table 4" in logs and "stitching" in logs
