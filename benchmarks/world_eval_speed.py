"""Requests/s of evaluating one learned policy in the synthetic user-author world (issue 12).

The issue's figure: one learned policy runs at >= 2,000 requests/s on one core at N = 100
candidates, and scales with Ray workers. A world of ``--users`` users over ``--days`` days with
N = 100 candidates per request; a freshly initialised RLIV-UA network of the default
NetworkSpec over the world's state layout, exported with ``export_scorer`` (random weights
cost the same as trained ones). Then

* one core: :func:`rollout_sums` of one bucket holding every user, in this process (torch on
  one thread), for ``rliv:`` (the exported scorer), ``python:`` zero scores (the same world,
  states built, no model: the difference is the model's share) and ``RankingModel`` (no states
  built at all). Rates per wall second and per CPU second of this process (the second leaves
  out time spent waiting for a core that other processes hold);
* Ray: :func:`evaluate_policies` of ``rliv:`` over ``--buckets`` user buckets in-process
  (workers 0) and with 1 and 2 Ray workers, on a local Ray of ``--ray-cpus`` CPUs started
  and warmed up first (so no timed run pays a worker's imports). These rates include what
  every task repeats: building the population and loading the scorer, and Ray Data's
  scheduling.

    python benchmarks/world_eval_speed.py [--users 200] [--days 2] [--buckets 4]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rliv_ray.actions import ActionGrid
from rliv_ray.algorithms.rliv_ua.network import NetworkSpec, RLIVUANetwork
from rliv_ray.data.ua_config import UAWorldConfig
from rliv_ray.data.ua_generate import log_schema_for_world
from rliv_ray.evaluation.world import WorldEval, evaluate_policies, rollout_sums, state_dim
from rliv_ray.mdp.state import StateLayout
from rliv_ray.runner import start_ray
from rliv_ray.serving import export_scorer

CANDIDATES, POOL, AUTHORS = 100, 200, 1_000
GAMMA, SERVING = 0.9, {"serving_tower": "effective_view", "epsilon": 0.0}
N_ACTIONS = ActionGrid().size
TARGET = 2_000


def zero_scores(user_id: np.ndarray, author_id: np.ndarray, state: np.ndarray) -> np.ndarray:
    """A ``python:`` policy without a model: (M, A) zeros, so action 0 everywhere."""
    return np.zeros((len(state), N_ACTIONS), np.float32)


def export_fresh_scorer(world: UAWorldConfig, path: Path, seed: int = 0) -> Path:
    """A freshly initialised RLIV-UA network over the world's state layout, exported."""
    layout = StateLayout.from_schema(log_schema_for_world(world))
    assert layout.dim == state_dim(world)
    spec = NetworkSpec(layout.dim, layout.gap.start, n_actions=world.action_grid.size)
    torch.manual_seed(seed)
    return export_scorer(RLIVUANetwork(spec).eval(), path, gamma=GAMMA,
                         grid=world.action_grid, **SERVING)


def clocked(fn, *args, **kwargs) -> tuple[object, float, float]:
    """fn's result, wall seconds and CPU seconds of this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def one_core(spec: str, setup: WorldEval) -> dict:
    """One bucket of every user through ``rollout_sums`` in this process."""
    sums, wall, cpu = clocked(rollout_sums, spec, 0, 0, setup)
    return {"requests": sums["requests"], "wall_s": wall, "cpu_s": cpu}


def with_ray(spec: str, setup: WorldEval, workers: int) -> dict:
    """evaluate_policies of one spec; requests from its per-user mean (one seed)."""
    result, wall, _ = clocked(evaluate_policies, setup, [spec], workers=workers, progress=False)
    requests = round(result[spec]["requests"]["mean"] * setup.n_users * len(setup.seeds))
    return {"requests": requests, "wall_s": wall, "metrics": result[spec]}


def rate(row: dict, key: str) -> str:
    return f"{row['requests'] / row[key]:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--buckets", type=int, default=4, help="Ray part: tasks per seed")
    parser.add_argument("--ray-cpus", type=int, default=2)
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    world = UAWorldConfig(n_users=args.users, n_authors=AUTHORS, pool_size=POOL,
                          candidates_per_request=CANDIDATES, days=args.days, seed=0)
    print(f"N = {CANDIDATES} candidates, pool {POOL}, {args.users} users x {args.days} days, "
          f"state_dim {state_dim(world)}, torch {torch.__version__}, "
          f"{len(os.sched_getaffinity(0))} CPUs, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="rliv-world-eval-") as tmp:
        rliv = f"rliv:{export_fresh_scorer(world, Path(tmp) / 'scorer.pt')}"
        one_core_table(rliv, world)
        if not args.no_ray:
            ray_scaling(rliv, world, args)


def one_core_table(rliv: str, world: UAWorldConfig) -> None:
    setup = WorldEval(world, seeds=(0,), buckets=1)
    rollout_sums(rliv, 0, 0, WorldEval(world, seeds=(0,), buckets=1, users=5))  # warm-up
    model = one_core(rliv, setup)
    bare = one_core("python:__main__:zero_scores", setup)
    rows = {"rliv: (exported scorer)": model,
            "python: zero scores (states, no model)": bare,
            "RankingModel (no states)": one_core("RankingModel", setup)}
    print("\n| one core, rollout_sums | requests | wall s | req/s (wall) | req/s (CPU) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, row in rows.items():
        print(f"| {name} | {row['requests']:,} | {row['wall_s']:.1f} | "
              f"{rate(row, 'wall_s')} | {rate(row, 'cpu_s')} |")
    share = {k: 1 - (bare[k] / bare["requests"]) / (model[k] / model["requests"])
             for k in ("wall_s", "cpu_s")}
    print(f"\nModel forward (rliv: minus zero scores, per request): {share['cpu_s']:.0%} of CPU "
          f"time, {share['wall_s']:.0%} of wall time; target {TARGET:,} req/s on one core.")


def ray_scaling(rliv: str, world: UAWorldConfig, args: argparse.Namespace) -> None:
    import ray

    setup = WorldEval(world, seeds=(0,), buckets=args.buckets)
    _, start_s, _ = clocked(start_ray, address=None, num_cpus=args.ray_cpus, progress=False)
    try:  # warm-up: every Ray worker process imports torch and rliv_ray once, not timed
        warm = WorldEval(world, seeds=(0,), buckets=args.ray_cpus, users=min(8, args.users))
        evaluate_policies(warm, [rliv], workers=args.ray_cpus, progress=False)
        rows = {w: with_ray(rliv, setup, w) for w in (0, 1, 2)}
    finally:
        ray.shutdown()
    base = rows[1]["wall_s"]
    print(f"\nevaluate_policies, {args.buckets} buckets of ~{args.users // args.buckets} "
          f"users; local Ray of {args.ray_cpus} CPUs started in {start_s:.1f} s and warmed up "
          "(not counted)")
    print("| workers | requests | wall s | req/s (wall) | speed-up over 1 worker |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for w, row in rows.items():
        name = "0 (in-process)" if w == 0 else str(w)
        print(f"| {name} | {row['requests']:,} | {row['wall_s']:.1f} | {rate(row, 'wall_s')} | "
              f"{base / row['wall_s']:.2f}x |")
    same = all(row["metrics"] == rows[0]["metrics"] for row in rows.values())
    print(f"\nMetrics identical for every worker count (common random numbers): {same}")


if __name__ == "__main__":
    main()
