"""Per-request latency of RLIV-UA serving: in-memory Scorer vs the exported TorchScript file.

Builds a network of the default NetworkSpec (random weights; hidden (64, 64), embedding 32,
4 towers, 2 critics, 5 actions, ``id_buckets`` rows per id table) over the synthetic world's
state layout, exports and reloads it, then times ``Scorer.rank`` on fresh random requests (new
user, author ids, states and rank scores each time; making them is not timed). Rows: the
default single tower (effective view) and a mix of all four towers (four times the heads).

    python benchmarks/serving_latency.py --requests 2000 --candidates 300 --threads 1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rliv_ray.actions import ActionGrid
from rliv_ray.algorithms.rliv_ua.network import NetworkSpec, RLIVUANetwork
from rliv_ray.data.ua_population import AUTHOR_FEATURE_NAMES, USER_FEATURE_NAMES
from rliv_ray.mdp.state import StateLayout
from rliv_ray.schema import LABELS
from rliv_ray.serving import Scorer, ServingConfig, export_scorer, load_scorer

GAMMA, TOP_K, WARMUP = 0.9, 10, 200
SERVING = {"serving_tower": "effective_view", "epsilon": 0.1}  # RLIVUAConfig's defaults
MIXES = {"effective_view": {"effective_view": 1.0},
         "all 4 towers": dict.fromkeys(LABELS, 0.25)}


def time_requests(scorer: Scorer, spec: NetworkSpec, requests: int, candidates: int,
                  seed: int) -> np.ndarray:
    """Milliseconds of each of ``requests`` rank calls on fresh random inputs."""
    rng = np.random.default_rng(seed)
    took = np.empty(requests)
    for i in range(requests + WARMUP):
        user = int(rng.integers(0, 10**9))
        authors = rng.integers(0, 10**9, size=candidates)
        states = rng.normal(size=(candidates, spec.state_dim)).astype(np.float32)
        gap = rng.integers(0, 100, size=candidates)
        states[:, spec.gap_index] = np.log1p(gap)
        states[:, spec.gap_index + 1] = gap == 0
        scores = rng.uniform(size=candidates)
        started = time.perf_counter()
        scorer.rank(user, authors, states, scores)
        if i >= WARMUP:
            took[i - WARMUP] = (time.perf_counter() - started) * 1e3
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--candidates", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    layout = StateLayout(USER_FEATURE_NAMES, AUTHOR_FEATURE_NAMES)
    grid = ActionGrid()
    spec = NetworkSpec(layout.dim, layout.gap.start, n_actions=grid.size)
    torch.manual_seed(0)
    net = RLIVUANetwork(spec).eval()
    with tempfile.TemporaryDirectory(prefix="rliv-serving-bench-") as tmp:
        started = time.perf_counter()
        path = export_scorer(net, Path(tmp) / "scorer.pt", gamma=GAMMA, grid=grid, **SERVING)
        print(f"state_dim {spec.state_dim}, id_buckets {spec.id_buckets}, "
              f"{args.candidates} candidates, top-{TOP_K}, "
              f"{args.threads} thread(s), torch {torch.__version__}; export "
              f"{time.perf_counter() - started:.1f}s, {path.stat().st_size / 2**20:.0f} MiB")
        print("| scorer | towers | requests | p50 ms | p99 ms | mean ms |")
        print("| --- | --- | ---: | ---: | ---: | ---: |")
        for mix_name, mix in MIXES.items():
            config = ServingConfig(top_k=TOP_K, tower_weights=mix,
                                   max_candidates=max(300, args.candidates))
            scorers = {"in-memory": Scorer.from_network(net, gamma=GAMMA, grid=grid,
                                                        config=config, rng=0, **SERVING),
                       "exported": load_scorer(path, config, rng=0)}
            for name, scorer in scorers.items():
                ms = time_requests(scorer, spec, args.requests, args.candidates, seed=1)
                print(f"| {name} | {mix_name} | {args.requests} | {np.percentile(ms, 50):.3f} "
                      f"| {np.percentile(ms, 99):.3f} | {ms.mean():.3f} |")


if __name__ == "__main__":
    main()
