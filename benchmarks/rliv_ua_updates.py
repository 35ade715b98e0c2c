"""Learner updates/s: the id-table optimisers compared, and the RLlib loop against bare torch.

1. *Bare torch*: the shards loaded into tensors once; each update slices a random batch, runs
   ``rliv_ua_loss`` (objective.py), the optimiser steps and the target update exactly as the
   learner does (``optim.make_optimizers``, ``optim.IdTableTargets`` / ``polyak_update``).
   Variants, interleaved A, B, A, B, ... in one run (``--repeats``):
   * ``baseline`` (``--baseline-tree TREE``): another checkout's own bare loop, e.g. the
     commit before the learner-speed issue (``git worktree add /tmp/base b668ac2``);
   * ``before``: dense Adam over 2 x 65,536-row id tables and full Polyak (the optimiser
     settings before the learner-speed issue, on today's network);
   * ``dense``: dense Adam, tables sized from the data (``id_rows_per_id`` 16);
   * ``after``: the default, lazy Adam on the sized tables and row-wise Polyak.
2. *RLlib* (``--rllib``): ``train_rliv_ua`` (reader -> columnar pre-learner -> learner) with
   the default settings; the steady rate is the median over iterations after the first (which
   includes the data pipeline's start-up), from OUT/metrics.jsonl.

``--profile N`` prints a torch.profiler table of N updates of each variant (where the time
goes, before and after).

    python benchmarks/rliv_ua_updates.py SAMPLES_DIR [--variants before after] [--repeats 3]
        [--baseline-tree TREE]
        [--updates 100] [--threads 1] [--profile 20] [--rllib --iterations 6 --num-learners 0]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.flop_counter import FlopCounterMode

from rliv_ray.algorithms.common.memory import reuse_freed_memory
from rliv_ray.algorithms.common.targets import polyak_update
from rliv_ray.algorithms.rliv_ua.config import RLIVUAConfig
from rliv_ray.algorithms.rliv_ua.module import network_spec
from rliv_ray.algorithms.rliv_ua.network import RLIVUANetwork
from rliv_ray.algorithms.rliv_ua.objective import rliv_ua_loss
from rliv_ray.algorithms.rliv_ua.optim import IdTableTargets, make_optimizers
from rliv_ray.algorithms.rliv_ua.train import TrainSettings, build_config
from rliv_ray.offline.prelearner import shard_batch_to_arrays
from rliv_ray.offline.shards import inspect_shards


def bare_torch(samples: str, updates: int, batch_size: int, warmup: int = 10, *,
               training: dict | None = None, profile_updates: int = 0) -> tuple[float, int]:
    """Updates/s of the bare loop and the matmul FLOPs of one update (FlopCounterMode); with
    ``profile_updates`` also prints a torch.profiler table of that many updates (top ops by
    self CPU time)."""
    info = inspect_shards(samples)
    table = pa.concat_tables(pq.read_table(f) for f in info.files)
    arrays = shard_batch_to_arrays(table, module_id="m")
    data = {k.split("/", 1)[1]: torch.from_numpy(v) for k, v in arrays.items()}
    config = build_config(info, TrainSettings(training=dict(training or {})))
    torch.manual_seed(0)
    net = RLIVUANetwork(network_spec(info.state_dim, config.n_actions,
                                     config._model_config_auto_includes))
    target = copy.deepcopy(net).requires_grad_(False)
    optimizers = [o for o, _ in make_optimizers(net, config.id_optimizer, config.lr).values()]
    lazy = (IdTableTargets(net, target, config.tau) if config.id_optimizer == "lazy_adam"
            else None)
    rows = len(data["obs"])
    generator = torch.Generator().manual_seed(0)

    def update() -> None:
        index = torch.randint(0, rows, (batch_size,), generator=generator)
        batch = {k: v[index] for k, v in data.items()}
        if lazy:
            lazy.catch_up(batch)
        loss, _ = rliv_ua_loss(net, target, batch, config.gamma)
        for optimizer in optimizers:
            optimizer.zero_grad()
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
        if lazy:
            lazy.step()
        else:
            polyak_update(net, target, config.tau)

    for _ in range(warmup):
        update()
    with FlopCounterMode(display=False) as counter:
        update()
    started = time.perf_counter()
    for _ in range(updates):
        update()
    rate = updates / (time.perf_counter() - started)
    if profile_updates:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(profile_updates):
                update()
        print(f"# {config.id_optimizer}, id_buckets {config.id_buckets}: "
              f"{profile_updates} updates")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    return rate, counter.get_total_flops()


def rllib(samples: str, updates: int, iterations: int, num_learners: int) -> dict:
    from rliv_ray.algorithms.rliv_ua.train import train_rliv_ua
    from rliv_ray.train_loop import METRICS_FILE, LoopSettings

    with tempfile.TemporaryDirectory() as out:
        settings = TrainSettings(loop=LoopSettings(iterations=iterations,
                                                   checkpoint_every=iterations, progress=False),
                                 updates_per_iteration=updates, num_learners=num_learners)
        report = train_rliv_ua(samples, out, settings)
        lines = [json.loads(x) for x in (Path(out) / METRICS_FILE).read_text().splitlines()]
    rates = [x["time/updates_per_s"] for x in lines]
    return {"steady_updates_per_s": statistics.median(rates[1:]), "first_iteration_s":
            lines[0]["time/iteration_s"], "per_iteration": [round(r, 2) for r in rates],
            "wall_s": report["wall_s"]}


BASELINE = """
import sys, torch
tree, samples, updates, batch, threads = sys.argv[1:6]
sys.path[:0] = [tree, tree + "/benchmarks"]
if int(threads):
    torch.set_num_threads(int(threads))
import rliv_ray, rliv_ua_updates
assert rliv_ray.__file__.startswith(tree), rliv_ray.__file__
rate = rliv_ua_updates.bare_torch(samples, int(updates), int(batch))
print(rate[0] if isinstance(rate, tuple) else rate)  # newer loops also return their FLOPs
"""


def baseline_tree(tree: str, samples: str, updates: int, batch_size: int, threads: int) -> float:
    """Updates/s of another checkout's bare loop (``git worktree add TREE COMMIT``), run in a
    child process with that checkout's package first on the path."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", BASELINE, str(Path(tree).resolve()), samples,
                          str(updates), str(batch_size), str(threads)],
                         capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


VARIANTS = {"before": {"id_optimizer": "adam", "id_rows_per_id": 0},
            "dense": {"id_optimizer": "adam"},
            "after": {}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("samples")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS),
                        default=["before", "after"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--updates", type=int, default=100, help="updates per measurement "
                        "(and per RLlib iteration)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="print a profile of N updates of each variant")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--baseline-tree", metavar="TREE",
                        help="also time this checkout's bare loop, interleaved, as 'baseline'")
    parser.add_argument("--rllib", action="store_true", help="also run the RLlib loop")
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--num-learners", type=int, default=0)
    parser.add_argument("--malloc-defaults", action="store_true",
                        help="keep glibc's malloc settings (the learners call "
                             "memory.reuse_freed_memory; this measures the loop without it)")
    args = parser.parse_args()
    if not args.malloc_defaults:
        reuse_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    batch_size = RLIVUAConfig().train_batch_size_per_learner
    names = (["baseline"] if args.baseline_tree else []) + args.variants
    rates: dict[str, list[float]] = {name: [] for name in names}
    gflop: dict[str, float] = {}
    for repeat in range(args.repeats):
        if args.baseline_tree:
            rates["baseline"].append(baseline_tree(args.baseline_tree, args.samples,
                                                   args.updates, batch_size, args.threads))
        for name in args.variants:
            profile = args.profile if repeat == args.repeats - 1 else 0
            rate, flops = bare_torch(args.samples, args.updates, batch_size,
                                     training=VARIANTS[name], profile_updates=profile)
            rates[name].append(rate)
            gflop[name] = flops / 1e9
    summary = {name: {"median_updates_per_s": statistics.median(r),
                      "min": min(r), "max": max(r)} for name, r in rates.items()}
    first = names[0]
    ratios = {f"{name}/{first}": [b / a for a, b in zip(rates[first], rates[name],
                                                         strict=True)]
              for name in names[1:]}
    result = {"torch_threads": torch.get_num_threads(), "batch_size": batch_size,
              "bare_torch": summary,
              "paired_ratios": {k: {"median": statistics.median(v), "min": min(v),
                                    "max": max(v)} for k, v in ratios.items()},
              "matmul_gflop_per_update": gflop}
    if args.rllib:
        ray_run = rllib(args.samples, args.updates, args.iterations, args.num_learners)
        result["rllib"] = ray_run
        result["rllib_over_bare_after"] = (ray_run["steady_updates_per_s"] /
                                           statistics.median(rates.get("after", [float("nan")])))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
