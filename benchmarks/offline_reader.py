"""Rows/s of the columnar offline reader, alone and through Ray Data as RLlib runs it.

1. *Per actor, direct*: ``ColumnarPreLearner`` called on in-memory Arrow batches.
2. *Through Ray Data*: ``read_parquet(shards).map_batches(ColumnarPreLearner,
   batch_format="pyarrow", compute=ActorPoolStrategy(size=1), num_cpus=0.5)`` consumed with
   ``iter_batches``, which is the path ``OfflineData`` takes (RLLIB_NOTES). Start-up (about
   10 s here) is reported apart from the steady rate.

    python benchmarks/offline_reader.py SAMPLES_DIR [--batch-size 1024] [--kind sl-mgac]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from rliv_ray.algorithms.rliv_ua.config import RLIVUAConfig
from rliv_ray.offline.live_prelearner import LivePreLearner
from rliv_ray.offline.prelearner import ColumnarPreLearner

READERS = {"rliv-ua": ColumnarPreLearner, "sl-mgac": LivePreLearner}
"""The pre-learner of each algorithm's shards (build-samples / build-live-samples train)."""
READER = ColumnarPreLearner


def direct(path: str, batch_size: int) -> float:
    table = pq.read_table(path)
    batches = [pa.Table.from_batches([b]) for b in table.to_batches(max_chunksize=batch_size)]
    reader = READER(config=RLIVUAConfig())
    started = time.perf_counter()
    for batch in batches:
        reader(batch)
    return table.num_rows / (time.perf_counter() - started)


def through_ray_data(path: str, batch_size: int) -> dict:
    import ray
    import ray.data

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    started = time.perf_counter()
    ds = ray.data.read_parquet(path).map_batches(
        READER, fn_constructor_kwargs={"config": RLIVUAConfig()}, batch_size=batch_size,
        batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.5)
    rows, first = 0, None
    for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
        if first is None:
            first = time.perf_counter()
        rows += len(batch["default_policy/action" + ("s" if READER is ColumnarPreLearner
                                                         else "")])
    end = time.perf_counter()
    ray.shutdown()
    return {"rows": rows, "startup_s": round(first - started, 1),
            "steady_rows_per_s": round(rows / (end - first)),
            "end_to_end_rows_per_s": round(rows / (end - started))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", help="folder of RL sample shards (build-samples OUT/samples)")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--kind", choices=sorted(READERS), default="rliv-ua",
                        help="whose shards: rliv-ua (build-samples) or sl-mgac "
                        "(build-live-samples OUT/train)")
    args = parser.parse_args()
    global READER
    READER = READERS[args.kind]
    first_file = sorted(Path(args.samples).glob("*.parquet"))[0]
    result = {"batch_size": args.batch_size,
              "direct_rows_per_s_per_actor": round(direct(str(first_file), args.batch_size)),
              **through_ray_data(args.samples, args.batch_size)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
