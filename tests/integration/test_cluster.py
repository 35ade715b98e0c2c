"""`rliv submit` on a real multi-node Ray cluster on this machine (ray + slow tiers).

One cluster for the module: ``cluster/local_cluster.py`` (the recipe cluster/README.md gives)
starts a head without CPUs (it holds the GCS, the dashboard and the jobs' drivers) and two
worker nodes with 3 logical CPUs each, every node a raylet of its own, on 127.0.0.1 only, with
token auth (``RAY_AUTH_MODE=token`` set explicitly, a fresh token in the cluster's own temp
dir). With no CPU on the head, every Ray task and actor runs on a worker node, so where a
job's work runs is decided by CPUs, not by chance.

Every command goes through ``rliv submit`` in a subprocess, as a person runs it, and its
output is compared with the same command run locally (no ``--address``; a private Ray,
loopback-only too, or in this process without Ray). To save wall time every job and local run
starts at once (the ``jobs`` fixture) and each test collects its own. Where the work ran comes
from Ray's own records (``rliv submit --placement``: the state API's actors and tasks with
their node ids). Every process the tests start is sampled for listening sockets; the module
ends by stopping the cluster and checking that no process the tests started is left.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest
import yaml

from rliv_ray.cli import main
from tests.listeners import LOOPBACK, Listeners

pytestmark = [pytest.mark.ray, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
POLLS = 300  # hang guards (seconds), not speed checks
JOB_TIMEOUT_S = 900
TRAIN = ["--iterations", "2", "--updates-per-iteration", "3", "--checkpoint-every", "2",
         "--set", "train_batch_size_per_learner=512", "--set", "id_buckets=4096", "--quiet"]
SWEEP = {  # one SL-MGAC trial of one iteration: a sweep end to end, as small as it gets
    "name": "tiny", "algorithm": "sl-mgac",
    "data": {"generate": {"users": 200, "days": 1, "seed": 0}, "samples": {"test_share": 0.25}},
    "training": {"iterations": 1, "updates_per_iteration": 2, "eval_every": 1,
                 "set": {"train_batch_size_per_learner": 64}},
    "search": {"gamma": {"grid": [0.9]}}, "scheduler": {"type": "fifo"},
    "evaluation": {"truth_seeds": 1},
    "resources": {"ray_cpus": 4, "cpus_per_trial": 1, "max_concurrent_trials": 1},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def listeners():
    with Listeners() as watch:
        yield watch


@pytest.fixture(scope="module")
def cluster(listeners):
    """The three-node cluster: its ready file (addresses, node ids, client environment)."""
    home = Path(tempfile.mkdtemp(prefix="rliv-ct-", dir="/tmp"))  # short: Ray's socket paths
    ready = home / "ready.json"
    env = environment({"RAY_AUTH_MODE": "token"})
    log = (home / "cluster.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "cluster" / "local_cluster.py"), "--nodes", "3",
         "--head-cpus", "0", "--num-cpus", "3", "--dashboard-port", str(free_port()),
         "--dir", str(home / "ray"), "--ready-file", str(ready), "--stop-with-parent"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    listeners.roots.add(proc.pid)
    try:
        for _ in range(POLLS):
            if ready.exists() or proc.poll() is not None:
                break
            time.sleep(1)
        assert ready.exists(), (home / "cluster.log").read_text()[-3000:]
        info = json.loads(ready.read_text())
        assert info["env"]["RAY_AUTH_MODE"] == "token" and len(info["nodes"]) == 3
        yield {**info, "home": home}
    finally:
        listeners.sample()
        stop(proc)
        log.close()
        for _ in range(60):  # Ray's workers exit shortly after their raylet
            left = listeners.alive() + [
                f"{p.info['pid']} {p.info['name']}" for p in psutil.process_iter(
                    ["pid", "name", "cmdline"]) if str(home) in " ".join(p.info["cmdline"] or [])]
            if not left:
                break
            time.sleep(1)
        shutil.rmtree(home, ignore_errors=True)
        assert not left, f"processes left running: {left}"


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM (the cluster stops its nodes), then SIGKILL to its whole session."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def environment(extra: dict[str, str]) -> dict[str, str]:
    """This checkout first on PYTHONPATH, the venv's `python` first on PATH (job entrypoints
    run `python -m rliv_ray.cli`), no inherited Ray address."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["PATH"] = os.pathsep.join((str(BIN), env.get("PATH", "")))
    return {**env, **extra}


def start_rliv(args: list, cluster: dict, listeners: Listeners, log: Path) -> subprocess.Popen:
    """`rliv ARGS` in a subprocess with the cluster's client environment (also for local runs:
    their private Ray is then loopback-only and token-authenticated too)."""
    out = log.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "rliv_ray.cli", *map(str, args)],
                            env=environment(cluster["env"]), stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)
    listeners.roots.add(proc.pid)
    proc.log_file, proc.log_path = out, log
    return proc


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        code = proc.wait(JOB_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            stop(proc)
        proc.log_file.flush()
    return code, proc.log_path.read_text()


def submit(cluster: dict, *command, options=()) -> list:
    return ["submit", "--address", cluster["dashboard_url"], *options, "--", *command]


def placement_nodes(path: Path) -> dict[str, dict]:
    return json.loads(path.read_text())["nodes"]


def worker_ids(cluster: dict) -> set[str]:
    return {n["node_id"] for n in cluster["nodes"] if not n["head"]}


def head_id(cluster: dict) -> str:
    return next(n["node_id"] for n in cluster["nodes"] if n["head"])


def test_unreachable_addresses_are_one_line_errors(tmp_path, capsys):
    closed = free_port()  # nothing listens there
    cases = [
        (["submit", "--address", f"http://127.0.0.1:{closed}", "--", "train", "rliv-ua", "S",
          "--out", "O"], "the Ray dashboard (Jobs API)"),
        (["build-samples", "L", "O", "--address", f"127.0.0.1:{closed}"], "the Ray cluster"),
        (["train", "rliv-ua", "S", "--out", str(tmp_path / "o"), "--address",
          f"ray://127.0.0.1:{closed}"], "the Ray cluster"),
    ]
    for argv, what in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and what in err[0] and "cannot reach" in err[0], err
    assert not (tmp_path / "o").exists()  # refused before any work


@pytest.fixture(scope="module")
def jobs(cluster, listeners, tmp_path_factory):
    """Every job of the module and the local run to compare with, all started at once: they
    wait on Ray process start-ups and on each other's CPUs, not on the tests, which each
    collect their own. The build-samples job goes first, to have the CPUs to itself."""
    from rliv_ray.data.ua_config import UAWorldConfig
    from rliv_ray.data.ua_generate import generate_ua_world
    from tests.logtables import make_log_table, write_log
    from tests.sampleshards import write_shards

    base = tmp_path_factory.mktemp("jobs")
    world = base / "world"
    generate_ua_world(world, UAWorldConfig(n_users=60, days=5), n_files=4, progress=False)
    shards = write_shards(base / "shards", rows=512, files=1)  # one batch: comparable runs
    upload = base / "upload"  # a runtime env's working_dir: Ray uploads it
    write_log(make_log_table(n_users=4, requests_per_user=5, items_per_request=1),
              upload / "logs", n_files=1)
    (base / "runtime_env.yaml").write_text(yaml.safe_dump({"working_dir": str(upload)}))
    (base / "tiny.yaml").write_text(yaml.safe_dump(SWEEP))
    commands = {
        "samples": submit(cluster, "build-samples", world, base / "samples", "--workers", "4",
                          "--asa-epochs", "1", "--quiet",
                          options=["--placement", base / "samples.json"]),
        "train": submit(cluster, "train", "rliv-ua", shards, "--out", base / "train", *TRAIN,
                        options=["--placement", base / "train.json"]),
        "train_local": ["train", "rliv-ua", shards, "--out", base / "train_local", *TRAIN],
        "sweep": submit(cluster, "sweep", base / "tiny.yaml", "--out", base / "sweep",
                        "--tracking-uri", f"sqlite:///{base / 'mlflow.db'}"),
        "asa": submit(cluster, "asa-report", world, "--workers", "2", "--asa-epochs", "1",
                      "--quiet"),
        "validate": submit(cluster, "validate", "logs",
                           options=["--runtime-env", base / "runtime_env.yaml"]),
        "bad": submit(cluster, "train", "rliv-ua", shards, "--out", base / "bad",
                      "--set", "no_such_field=1"),  # passes the parser, fails in the job
    }
    runs = {name: start_rliv(args, cluster, listeners, base / f"{name}.log")
            for name, args in commands.items()}
    try:
        yield SimpleNamespace(base=base, world=world, runs=runs)
    finally:
        for proc in runs.values():
            if proc.poll() is None:
                stop(proc)
            proc.log_file.close()


def test_build_samples_job_runs_on_both_nodes_and_equals_a_local_build(cluster, jobs,
                                                                     tmp_path):
    assert main(["build-samples", str(jobs.world), str(tmp_path / "local"), "--workers", "0",
                 "--asa-epochs", "1", "--quiet"]) == 0  # in this process, without Ray
    code, log = finish(jobs.runs["samples"])
    assert code == 0, log[-3000:]
    assert "sample path: Ray Data, 4 tasks at a time" in log and "succeeded" in log

    nodes = placement_nodes(jobs.base / "samples.json")
    ran = {node for node, n in nodes.items()
           if any(name.startswith("MapBatches(_call_on_batch)") for name in n["tasks"])}
    assert ran == worker_ids(cluster), nodes  # the per-file tasks ran on both worker nodes
    assert nodes[head_id(cluster)]["driver"]

    local = sorted((tmp_path / "local" / "samples").glob("*.parquet"))
    remote = sorted((jobs.base / "samples" / "samples").glob("*.parquet"))
    assert [p.name for p in local] == [p.name for p in remote] and len(local) == 4
    for a_path, b_path in zip(local, remote, strict=True):
        a, b = pq.read_table(a_path), pq.read_table(b_path)
        assert a.schema == b.schema and a.num_rows == b.num_rows
        for name in a.column_names:
            x, y = a[name].to_numpy(zero_copy_only=False), b[name].to_numpy(zero_copy_only=False)
            if x.dtype == object:  # fixed-size lists: the states
                x, y = np.stack(x), np.stack(y)
            np.testing.assert_allclose(x, y, atol=1e-5, err_msg=f"{b_path.name}:{name}")


def test_runtime_env_file_and_a_failing_jobs_exit_status(jobs):
    code, log = finish(jobs.runs["validate"])  # `logs` is in the runtime env's working_dir
    assert code == 0 and "ok: 20 rows, 4 users in 1 files" in log, log[-3000:]
    code, log = finish(jobs.runs["bad"])
    assert code == 2, log[-3000:]  # `rliv train`'s own status for a bad setting
    last = log.strip().splitlines()[-1]
    assert last.startswith("rliv submit: job raysubmit_") and "exit status 2" in last, log


def test_train_job_spans_nodes_and_equals_a_local_run(cluster, jobs):
    from rliv_ray.algorithms.rliv_ua.train import load_module

    for name in ("train", "train_local"):
        code, log = finish(jobs.runs[name])
        assert code == 0, f"{name}: {log[-3000:]}"

    # The learner updates in the job's driver, on the head; the Parquet reads and the
    # pre-learner run on worker nodes (the head has no CPU for them).
    nodes = placement_nodes(jobs.base / "train.json")
    data = {node for node, n in nodes.items() if n["tasks"] or any(
        name.startswith("MapWorker") for name in n["actors"])}
    assert nodes[head_id(cluster)]["driver"] and data and data <= worker_ids(cluster), nodes

    checkpoint = Path("checkpoints") / "iter_000002"
    first = load_module(jobs.base / "train_local" / checkpoint).state_dict()
    second = load_module(jobs.base / "train" / checkpoint).state_dict()
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_allclose(first[key].numpy(), second[key].numpy(), rtol=1e-5,
                                   atol=1e-6, err_msg=key)


def test_sweep_job_completes_with_the_data_a_local_sweep_builds(jobs, tmp_path):
    """The sweep's world and sample builds equal those the same YAML gives locally; its trial
    table is complete. The trial's metrics are not compared: `rliv train sl-mgac` itself gives
    different losses in two identical local runs (cluster/README.md, "What is tested")."""
    from rliv_ray.sweep.config import load_sweep
    from rliv_ray.sweep.data import prepare_samples, prepare_world

    sweep = load_sweep(jobs.base / "tiny.yaml")  # the sweep's own data steps, without Ray
    prepare_samples(sweep, prepare_world(sweep, tmp_path, say=lambda _: None), tmp_path,
                    say=lambda _: None)
    code, log = finish(jobs.runs["sweep"])
    assert code == 0, log[-3000:]
    assert "all 1 trials ended" in log and "regret" in log

    built = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.parquet"))
    assert any(p.parts[0] == "world" for p in built) and any(p.parts[0] == "samples" for p in built)
    for path in built:
        assert pq.read_table(jobs.base / "sweep" / path).equals(pq.read_table(tmp_path / path))
    (trial,) = json.loads((jobs.base / "sweep" / "summary.json").read_text())["trials"]
    assert trial["params"] == {"gamma": 0.9} and trial["status"] == "finished"
    assert trial["iterations"] == 1
    assert np.isfinite([trial["eval/ncis"], trial["truth/value"]]).all()


def test_asa_report_job_prints_table_4(jobs):
    code, log = finish(jobs.runs["asa"])
    assert code == 0, log[-3000:]
    assert "Table 4" in log and "stitching" in log, log[-3000:]


def test_a_client_without_the_token_is_refused_in_one_line(cluster, tmp_path):
    env = {**environment({}), "RAY_AUTH_MODE": "disabled"}  # no token sent
    done = subprocess.run([sys.executable, "-m", "rliv_ray.cli", *submit(cluster, "validate",
                                                                          tmp_path)],
                          env=env, capture_output=True, text=True, timeout=POLLS)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"rliv submit: error: {cluster['dashboard_url']} refused this client: Authentication "
        "required: Unauthorized: Missing authentication token (token auth: set "
        "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN)"]


def test_everything_listens_on_loopback_only(cluster, listeners):
    listeners.sample()
    assert any(name == "gcs_server" for name, _, _ in listeners.seen)  # the watch saw Ray
    outside = sorted(s for s in listeners.seen if s[1] not in LOOPBACK)
    assert not outside, f"listening beyond 127.0.0.1: {outside}"
