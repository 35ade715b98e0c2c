"""Inputs given as URIs: a real S3 API (moto's server on 127.0.0.1) holds the log and the
sample shards; `rliv validate`, `build-samples` and `train rliv-ua` read them through
pyarrow.fs and Ray Data, and their outputs equal those of the same commands on local copies
(ray tier: training reads the shards with Ray Data)."""

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from rliv_ray.cli import EXIT_USAGE, main
from rliv_ray.data.ua_config import UAWorldConfig
from rliv_ray.data.ua_generate import generate_ua_world
from tests.sampleshards import write_shards

pytestmark = pytest.mark.ray
POLLS = 120  # a hang guard (seconds), not a speed check
TRAIN = ["--iterations", "2", "--updates-per-iteration", "2", "--set",
         "train_batch_size_per_learner=512", "--set", "id_buckets=1024", "--quiet"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on a free loopback port: the query every URI carries to reach it."""
    pytest.importorskip("moto")
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(POLLS):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(1)
        yield f"?endpoint_override=127.0.0.1:{port}&scheme=http"
    finally:
        server.terminate()
        server.wait(30)


@pytest.fixture()
def aws_env(monkeypatch):
    for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)


def upload(local: Path, bucket_path: str, query: str) -> None:
    import pyarrow.fs as pafs

    port = query.split("endpoint_override=")[1].split("&")[0]
    s3 = pafs.S3FileSystem(endpoint_override=port, scheme="http", allow_bucket_creation=True)
    s3.create_dir(bucket_path.split("/")[0])
    pafs.copy_files(str(local), bucket_path, destination_filesystem=s3)


def assert_same_tables(a_dir: Path, b_dir: Path) -> None:
    a_files, b_files = sorted(a_dir.glob("*.parquet")), sorted(b_dir.glob("*.parquet"))
    assert [p.name for p in a_files] == [p.name for p in b_files] and a_files
    for a_path, b_path in zip(a_files, b_files, strict=True):
        a, b = pq.read_table(a_path), pq.read_table(b_path)
        assert a.schema.equals(b.schema, check_metadata=True)
        for name in a.column_names:  # NaN where no true next state: equal as arrays
            x, y = a[name].to_numpy(zero_copy_only=False), b[name].to_numpy(zero_copy_only=False)
            if x.dtype == object:
                x, y = np.stack(x), np.stack(y)
            np.testing.assert_array_equal(x, y, err_msg=f"{b_path.name}:{name}")


def test_log_and_shards_on_s3_give_what_local_copies_give(s3, aws_env, tmp_path, capsys):
    from rliv_ray.algorithms.rliv_ua.train import load_module

    world = tmp_path / "world"
    generate_ua_world(world, UAWorldConfig(n_users=60, days=5), n_files=2, progress=False)
    upload(world, "bkt/world", s3)
    assert main(["validate", f"s3://bkt/world{s3}", "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("ok: ")

    build = ["--workers", "0", "--asa-epochs", "1", "--quiet"]
    assert main(["build-samples", f"s3://bkt/world{s3}", str(tmp_path / "remote"), *build]) == 0
    assert main(["build-samples", str(world), str(tmp_path / "local"), *build]) == 0
    assert_same_tables(tmp_path / "local" / "samples", tmp_path / "remote" / "samples")

    # One shard of one batch, so that the two runs see the same rows in the same order.
    shards = write_shards(tmp_path / "shards", rows=512, files=1)
    upload(shards, "bkt/shards", s3)
    assert main(["train", "rliv-ua", f"s3://bkt/shards{s3}", "--out", str(tmp_path / "a"),
                 *TRAIN]) == 0
    assert main(["train", "rliv-ua", str(shards), "--out", str(tmp_path / "b"), *TRAIN]) == 0
    checkpoint = Path("checkpoints") / "iter_000002"
    first = load_module(tmp_path / "a" / checkpoint).state_dict()
    second = load_module(tmp_path / "b" / checkpoint).state_dict()
    for key in first:
        np.testing.assert_array_equal(first[key].numpy(), second[key].numpy(), err_msg=key)

    capsys.readouterr()
    assert main(["build-samples", str(world), f"s3://bkt/out{s3}", *build]) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "must be a local or mounted path" in err[0], err
    assert not list(tmp_path.glob("s3*")) and not Path("s3:").exists()
    shutil.rmtree(tmp_path / "a")
