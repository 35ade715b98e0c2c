"""A command that starts its own Ray exposes nothing beyond 127.0.0.1 (ray tier).

`rliv train` runs in a subprocess with a private Ray (the offline reader); every process under
it (GCS, raylet, agents, workers) is sampled for listening TCP sockets while it trains.
"""

import os
import subprocess
import sys

import pytest

from rliv_ray.ray_logs import UNACTIONABLE
from tests.listeners import LOOPBACK, Listeners
from tests.sampleshards import write_shards

pytestmark = pytest.mark.ray


def test_training_with_a_private_ray_listens_on_loopback_only(tmp_path):
    shards = write_shards(tmp_path / "shards", rows=512, files=1)
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    with Listeners() as watch:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rliv_ray.cli", "train", "rliv-ua", str(shards), "--out",
             str(tmp_path / "run"), "--iterations", "3", "--updates-per-iteration", "2",
             "--set", "train_batch_size_per_learner=256"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        watch.roots.add(proc.pid)
        _, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    names = {name for name, _, _ in watch.seen}
    assert {"gcs_server", "raylet"} <= names, watch.seen  # the watch saw Ray's sockets
    outside = sorted(s for s in watch.seen if s[1] not in LOOPBACK)
    assert not outside, f"listening beyond 127.0.0.1: {outside}"
    for starts in UNACTIONABLE.values():  # and the lines nobody can act on stay silent
        assert not any(line.split(" -- ", 1)[-1].startswith(starts)
                       for line in err.splitlines()), err
