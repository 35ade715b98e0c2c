"""Learner updates/s: the RLlib training loop against a bare PyTorch loop, same module and loss.

1. *Bare torch*: the shards loaded into tensors once; each update slices a random batch, runs
   ``rliv_ua_loss`` (objective.py), one Adam step (foreach, as the learner) and the Polyak
   update of the target network (``polyak_update``, as the learner).
2. *RLlib*: ``train_rliv_ua`` (reader -> columnar pre-learner -> learner) with the same batch
   size and network; the steady rate is the median over iterations after the first (which
   includes the data pipeline's start-up), from OUT/metrics.jsonl.

The ratio RLlib / bare is the figure of issue 4 (target >= 0.8). Both runs happen in this one
process, one after the other, so the machine's load affects both.

    python benchmarks/rliv_ua_updates.py SAMPLES_DIR [--updates 100] [--iterations 6]
        [--num-learners 0]
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

from rliv_ray.algorithms.common.targets import polyak_update
from rliv_ray.algorithms.rliv_ua.config import RLIVUAConfig
from rliv_ray.algorithms.rliv_ua.module import network_spec
from rliv_ray.algorithms.rliv_ua.network import RLIVUANetwork
from rliv_ray.algorithms.rliv_ua.objective import rliv_ua_loss
from rliv_ray.offline.prelearner import shard_batch_to_arrays
from rliv_ray.offline.shards import inspect_shards


def bare_torch(samples: str, updates: int, batch_size: int, warmup: int = 10) -> float:
    info = inspect_shards(samples)
    table = pa.concat_tables(pq.read_table(f) for f in info.files)
    arrays = shard_batch_to_arrays(table, module_id="m")
    data = {k.split("/", 1)[1]: torch.from_numpy(v) for k, v in arrays.items()}
    config = RLIVUAConfig().training(gap_index=info.gap_index, towers=info.labels)
    torch.manual_seed(0)
    net = RLIVUANetwork(network_spec(info.state_dim, config.n_actions,
                                     config._model_config_auto_includes))
    target = copy.deepcopy(net).requires_grad_(False)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, foreach=True)
    rows = len(data["obs"])
    generator = torch.Generator().manual_seed(0)
    for step in range(warmup + updates):
        if step == warmup:
            started = time.perf_counter()
        index = torch.randint(0, rows, (batch_size,), generator=generator)
        batch = {k: v[index] for k, v in data.items()}
        loss, _ = rliv_ua_loss(net, target, batch, config.gamma)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        polyak_update(net, target, config.tau)
    return updates / (time.perf_counter() - started)


def rllib(samples: str, updates: int, iterations: int, num_learners: int) -> dict:
    from rliv_ray.algorithms.rliv_ua.train import TrainSettings, train_rliv_ua
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("samples")
    parser.add_argument("--updates", type=int, default=100, help="updates per iteration")
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--num-learners", type=int, default=0)
    args = parser.parse_args()
    batch_size = RLIVUAConfig().train_batch_size_per_learner
    bare = bare_torch(args.samples, args.updates * 2, batch_size)
    ray_run = rllib(args.samples, args.updates, args.iterations, args.num_learners)
    print(json.dumps({"torch_threads": torch.get_num_threads(), "batch_size": batch_size,
                      "num_learners": args.num_learners, "bare_torch_updates_per_s": bare,
                      "rllib": ray_run,
                      "ratio": ray_run["steady_updates_per_s"] / bare}, indent=2))


if __name__ == "__main__":
    main()
