"""Peak memory and speed of `rliv ope` at 1M / 4M / 10M logged decisions (issue 16, section 2).

Synthesises live-stream allocation logs straight in the log schema (vectorised NumPy, files
of ``--file-rows`` rows, users sorted, a known logging policy; the larger logs reuse the
smaller ones' files through links, the copies offset in user and request ids, so 10M rows cost
10 files of writing), then runs the real command in a child process per log and samples the
child's process tree every 0.2 s: peak RSS and peak PSS summed over the tree (PSS counts
shared pages once: the honest figure when Ray workers share libraries), plus the kernel's
peak RSS and CPU time of the child (``wait4``). Rows/s is the command's own figure (reading,
the policy, the sums; without the imports); rows per CPU-second (of the child, imports
included; Ray workers not counted) is the figure a shared machine does not blur.

    python benchmarks/ope_memory.py --sizes 1000000,4000000,10000000 --ray-sizes 4000000 \
        --network-rows 1000000 --workdir /tmp/ope-bench

The policy is ``python:ope_memory:logistic_policy`` (a fixed logistic rule on the features:
the memory of the data path, not of a network), and, with ``--network-rows N``, an untrained
SL-MGAC policy file of the default size (its reward model runs for DM/DR) on the first N rows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rliv_ray import schema as S  # noqa: E402

USER_DIM, LIVE_DIM, HISTORY = 9, 5, S.HISTORY_LENGTH
ESTIMATORS = "ips,snips,ncis,ncis_trajectory,ncis_per_decision,pdis"


def logistic_policy(obs: dict) -> np.ndarray:
    """P(inject) = sigmoid(mean user feature + first live feature), 0 with nothing on air."""
    z = obs[S.USER_FEATURES].mean(axis=1) + obs[S.LIVE_FEATURES][:, 0]
    p = 0.1 + 0.8 / (1.0 + np.exp(-z))
    return np.stack([1.0 - p, p], axis=1)


def synthetic_file(rows: int, seed: int) -> pa.Table:
    """One file of a live-stream allocation log: users of 1..59 requests, sorted."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 60, rows // 20)
    lengths = lengths[: np.searchsorted(np.cumsum(lengths), rows) + 1]
    lengths[-1] -= lengths.sum() - rows
    user = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    first = np.repeat(np.cumsum(lengths) - lengths, lengths)
    index = np.arange(rows, dtype=np.int64) - first
    live = np.where(rng.random(rows) < 0.65, rng.integers(0, 2000, rows), -1)
    p_log = np.where(live >= 0, rng.uniform(0.1, 0.9, rows), 0.0)
    action = (rng.random(rows) < p_log).astype(np.int8)
    behavior = np.where(action == 1, p_log, 1.0 - p_log).astype(np.float32)
    n_videos = rng.integers(3, 13, rows).astype(np.int16)
    cols = {
        S.REQUEST_ID: np.arange(rows, dtype=np.int64), S.USER_REQUEST_IDX: index,
        S.TS_MS: 1_767_225_600_000 + index * 30_000, S.USER_ID: user,
        S.USER_FEATURES: S.vectors_to_arrow(rng.standard_normal((rows, USER_DIM), np.float32)),
        S.LIVE_ID: live,
        S.LIVE_FEATURES: S.vectors_to_arrow(rng.standard_normal((rows, LIVE_DIM), np.float32)),
        S.LIVE_HISTORY: S.ids_to_arrow(rng.integers(-1, 255, (rows, HISTORY), np.int32)),
        S.VIDEO_HISTORY: S.ids_to_arrow(rng.integers(-1, 255, (rows, HISTORY), np.int32)),
        S.LIVE_WATCH_3W_S: rng.exponential(600.0, rows).astype(np.float32),
        S.ACTION: action, S.BEHAVIOR_PROB: behavior,
        S.LIVE_CLICK: action, S.LIVE_WATCH_S: (action * rng.exponential(60.0, rows))
        .astype(np.float32),
        S.VIDEO_WATCH_S: rng.exponential(40.0, rows).astype(np.float32),
        S.N_VIDEOS: n_videos, S.SESSION_END: rng.random(rows) < 0.08}
    schema = S.live_log_schema([f"u{i}" for i in range(USER_DIM)],
                               [f"l{i}" for i in range(LIVE_DIM)], source="ope-benchmark")
    return pa.Table.from_arrays([pa.array(cols[f.name], f.type)
                                 if not isinstance(cols[f.name], pa.Array) else cols[f.name]
                                 for f in schema], schema=schema)


def offset(table: pa.Table, part: int, rows: int) -> pa.Table:
    """The same rows as new users and requests (ids shifted by part * rows)."""
    for name in (S.REQUEST_ID, S.USER_ID):
        shifted = pa.array(table[name].to_numpy() + part * rows)
        table = table.set_column(table.column_names.index(name), table.field(name), shifted)
    return table


def make_logs(workdir: Path, sizes: list[int], file_rows: int) -> dict[int, Path]:
    parts = workdir / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    needed = max(sizes) // file_rows
    base = None
    for part in range(needed):
        path = parts / f"part-{part:05d}.parquet"
        if not path.exists():
            base = base if base is not None else synthetic_file(file_rows, seed=0)
            pq.write_table(offset(base, part, file_rows), path, row_group_size=256 * 1024)
    logs = {}
    for size in sizes:
        log = workdir / f"log-{size}"
        log.mkdir(exist_ok=True)
        for part in range(size // file_rows):
            link = log / f"part-{part:05d}.parquet"
            if not link.exists():
                link.symlink_to(parts / link.name)
        logs[size] = log
    return logs


def tree_memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes, summed over the process and its descendants."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    rss = pss = 0
    for proc in procs:
        try:
            info = proc.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss, pss = rss + info.rss, pss + getattr(info, "pss", info.rss)
    return rss, pss


def run_ope(log: Path, policy: str, estimators: str, out: Path, workers: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), str(REPO / "benchmarks"), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "rliv_ray.cli", "ope", str(log), "--policy", policy,
               "--estimators", estimators, "--beta", "0.5", "--workers", str(workers),
               "--quiet", "--out", str(out)]
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    peak_rss = peak_pss = 0
    while True:  # wait4, not poll: the kernel's peak RSS of the child comes with it
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        rss, pss = tree_memory(child.pid)
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(0.2)
    wall = time.perf_counter() - started
    printed = child.stdout.read()
    code = os.waitstatus_to_exitcode(status)
    child.returncode = code
    if code:
        return {"rows": 0, "failed": f"exit {code}", "printed": printed}
    report = json.loads((out / "ope.json").read_text())
    return {"rows": report["rows"], "users": report["users"], "files": report["files"],
            "workers": workers, "seconds": report["seconds"], "wall_s": round(wall, 1),
            "rows_per_s": round(report["rows"] / report["seconds"]),
            "peak_rss_mb": round(peak_rss / 2**20), "peak_pss_mb": round(peak_pss / 2**20),
            "child_maxrss_mb": round(usage.ru_maxrss / 1024),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "printed": printed}


def network_policy(workdir: Path) -> str:
    """An untrained SL-MGAC policy file of the paper's size (section 4.3 defaults)."""
    from dataclasses import asdict

    import torch

    from rliv_ray.algorithms.sl_mgac.network import SLMGACNetwork, SLMGACSpec

    path = workdir / "policy.pt"
    spec = SLMGACSpec(user_dim=USER_DIM, live_dim=LIVE_DIM)
    torch.manual_seed(0)
    meta = {"spec": asdict(spec), "edges": [0.0, 60.0, 300.0, 900.0, 1800.0], "groups": 6,
            "method": "SL-MGAC"}
    torch.save({"meta": json.dumps(meta), "state_dict": SLMGACNetwork(spec).state_dict()},
               path)
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,4000000,10000000")
    parser.add_argument("--file-rows", type=int, default=1_000_000)
    parser.add_argument("--ray-sizes", default="", help="sizes also run on Ray Data with "
                        "--ray-workers tasks (comma-separated; default none)")
    parser.add_argument("--ray-workers", type=int, default=2)
    parser.add_argument("--network-rows", type=int, default=0, help="also score the first N "
                        "rows (a multiple of --file-rows) with an SL-MGAC network (0: not)")
    parser.add_argument("--workdir", default="/tmp/rliv-ope-bench")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    began = time.perf_counter()
    ray_sizes = [int(size) for size in args.ray_sizes.split(",") if size]
    logs = make_logs(workdir, sorted({*sizes, *ray_sizes, args.network_rows} - {0}),
                     args.file_rows)
    sample = pq.read_table(logs[min(logs)] / "part-00000.parquet")
    row_bytes = sample.nbytes / sample.num_rows
    print(f"logs ready in {time.perf_counter() - began:.0f}s; {row_bytes:.0f} bytes per row "
          "in Arrow", flush=True)
    results = []
    python = "python:ope_memory:logistic_policy"
    runs = [(size, python, ESTIMATORS, 0) for size in sizes]
    runs += [(size, python, ESTIMATORS, args.ray_workers) for size in ray_sizes]
    if args.network_rows:
        runs.append((args.network_rows, network_policy(workdir), ESTIMATORS + ",dm,dr", 0))
    for size, policy, estimators, workers in runs:
        out = workdir / f"out-{size}-{workers}-{'net' if policy.endswith('.pt') else 'py'}"
        result = run_ope(logs[size], policy, estimators, out, workers)
        if "failed" in result:
            print(f"rliv ope --workers {workers} on {size:,} rows failed ({result['failed']}); "
                  "see its stderr above", flush=True)
            continue
        result.update(policy="SL-MGAC network" if policy.endswith(".pt") else "python logistic",
                      log_in_memory_mb=round(size * row_bytes / 2**20))
        print(json.dumps({k: v for k, v in result.items() if k != "printed"}), flush=True)
        results.append(result)
    print(markdown(results))
    if results:
        print("\n" + results[-1]["printed"])


def markdown(results: list[dict]) -> str:
    lines = ["| logged decisions | policy | workers | log in memory (Arrow) | peak RSS, child "
             "(kernel) | peak RSS, tree | peak PSS, tree | rows/s | rows per CPU-s | wall |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        lines.append(f"| {r['rows']:,} | {r['policy']} | {r['workers']} | "
                     f"{r['log_in_memory_mb']:,} MB | {r['child_maxrss_mb']:,} MB | "
                     f"{r['peak_rss_mb']:,} MB | {r['peak_pss_mb']:,} MB | "
                     f"{r['rows_per_s']:,} | {r['rows'] / r['cpu_s']:,.0f} | "
                     f"{r['wall_s']:.0f} s |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
