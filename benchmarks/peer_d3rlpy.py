"""Peer benchmark: RLIV-UA's learner against d3rlpy 2.8.1 DoubleDQN and DiscreteCQL.

All three train on the same RLIV-UA sample shards at the same batch size, hidden sizes, gamma
and learning rate (``RLIVUAConfig`` and ``NetworkSpec`` defaults: 1,024, (64, 64), 0.9, 1e-3).

Setup, once (d3rlpy lives only in this benchmark's own environment, never in the package's
dependencies; torch first, so that pip takes the CPU wheel instead of a multi-GB CUDA build):

    python3 -m venv .venv-peer
    .venv-peer/bin/pip install torch==2.13.0
    .venv-peer/bin/pip install d3rlpy==2.8.1 pyarrow

Run from the repository root. The project venv drives and trains RLIV-UA; every d3rlpy run is
a subprocess, ``.venv-peer/bin/python benchmarks/peer_d3rlpy_worker.py``, which reads the
shards with pyarrow only and prints one JSON line:

    .venv/bin/rliv generate /tmp/peer/world --users 1000 --seed 0
    .venv/bin/rliv build-samples /tmp/peer/world /tmp/peer/samples --workers 2 --asa-epochs 5
    .venv/bin/python benchmarks/peer_d3rlpy.py /tmp/peer/samples --markdown /tmp/peer/peer.md

**Data.** d3rlpy's transitions are exactly the shard rows as the project's pre-learner
(``shard_batch_to_arrays``) gives them: observation = ``obs`` (the dense state), action =
``actions``, reward = the sum of the label reward columns the source has, next observation =
``new_obs``, terminal = ``terminateds`` (all False: the pair MDP is lifelong). The run stops if
the worker's checksums (row count, sums of every array) differ from ``shard_batch_to_arrays``'.

**Throughput**, ``--repeats`` rounds of RLIV-UA, DoubleDQN, DiscreteCQL, interleaved so that
the shared machine's load falls on all three. RLIV-UA: ``train_rliv_ua`` (``rliv train
rliv-ua``, ``num_learners=0``) for ``--iterations`` x ``--updates`` updates; rows/s = the median
of ``time/updates_per_s`` over the iterations after the first (which holds Ray's and the data
pipeline's start-up), or in a run longer than an epoch over those after the first epoch (later
epochs are replayed from memory, ``--batch-cache-mb``), x the batch size. d3rlpy: ``fit`` for
``--updates`` warm-up updates plus the same number of timed updates as the project's, in
blocks of ``--updates``; rows/s = the median block's updates/s x the batch size. Dataset
construction and model building are outside the timing; d3rlpy's per-row sampling is inside
it, as the project's reader and pre-learner are.
The ratio project / peer is taken within each round, then summarised (median, min-max, IQR).
Torch runs ``--torch-threads`` intra-op threads on both sides (default 1: with 2 threads on a
2-core machine that other jobs share, tiny-MLP updates of both libraries were seen to slow down
10-30x, erratically, as the thread pool spins against the other processes).

**Convergence**, one more round of ``--curve-updates`` updates per method. The learning curve
is the mean training loss of every block of ``--updates`` updates: the objective each method
minimises (RLIV-UA ``loss/total`` from OUT/metrics.jsonl; DoubleDQN ``loss``; DiscreteCQL
``loss`` = TD + alpha x conservative term) and, separately, its TD part (RLIV-UA the sum of
``loss/td/<tower>``; DiscreteCQL ``td_loss``). The rule, per curve: smooth with a trailing
moving average over ``--window`` blocks (fewer at the start); F = the mean of the raw curve over
its last ``--tail`` fraction; the curve has *flattened* after U updates, U the end of the first
block from which on every smoothed point lies within ``--tolerance`` x |F| of F. U is reported
in updates, in epochs of the shards, and as wall time at the method's median steady speed of
the throughput rounds (plus the time measured in the curve run, which for RLIV-UA includes the
start-up in its first iteration). ``flat`` is false when U falls in the last ``--tail`` of the
run: U is then a lower bound, train longer. A flat training loss is not a converged policy, and
a band relative to F is wide for a curve on a large offset: DiscreteCQL's objective carries its
logsumexp term (about log n_actions), so it counts as flat almost at once; the JSON keeps every
curve (updates, raw, smoothed) to read beside the figure.

Settings that differ by design: d3rlpy copies its target network every
``--target-update-interval`` updates (default 1 / tau = 200, the time constant of the project's
Polyak average with tau = 0.005 each update; d3rlpy's own default is 8,000); otherwise d3rlpy
keeps its defaults (one critic, Huber TD loss, Adam, alpha 1). See NOTES for the work per update.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from peer_d3rlpy_worker import checksum, reward_sum  # beside this file: numpy and pyarrow only

from rliv_ray.algorithms.common import memory

HERE = Path(__file__).resolve().parent
WORKER = HERE / "peer_d3rlpy_worker.py"
PEER_PYTHON = str(HERE.parent / ".venv-peer" / "bin" / "python")
PROJECT = "rliv_ua"
PEERS = ("double_dqn", "discrete_cql")
SETUP = ("python3 -m venv .venv-peer && .venv-peer/bin/pip install torch==2.13.0 && "
         ".venv-peer/bin/pip install d3rlpy==2.8.1 pyarrow")
NOTES = ("One RLIV-UA update runs, per tower, one reward head and n_critics critics as batched "
         "MLP heads on H = [user; author; state; gap] embeddings (two hashed id tables, see "
         "project_network), online on s and online + target on s', plus the gift-assistance "
         "head, and Polyak-averages the target; d3rlpy's DoubleDQN and DiscreteCQL run one MLP "
         "Q-network of the same hidden sizes on the dense state and copy their target every "
         "target_update_interval updates; DiscreteCQL adds a logsumexp conservative term. The "
         "ratio compares learners as users run them, not work per FLOP.")
NETWORK_FIELDS = ("towers", "n_critics", "hidden", "embedding_dim", "id_buckets", "tau")


# ---------------------------------------------------------------- the three runs

def project_run(samples: str, updates: int, iterations: int,
                seed: int) -> tuple[list[dict], dict]:
    """``rliv train rliv-ua`` through its Python API: the lines of OUT/metrics.jsonl and the
    network's fields as trained (NETWORK_FIELDS of the report's config)."""
    from rliv_ray.algorithms.rliv_ua.train import TrainSettings, train_rliv_ua
    from rliv_ray.train_loop import METRICS_FILE, LoopSettings

    with tempfile.TemporaryDirectory(prefix="peer_rliv_ua_") as out:
        settings = TrainSettings(loop=LoopSettings(iterations=iterations,
                                                   checkpoint_every=iterations, progress=False),
                                 updates_per_iteration=updates, num_learners=0, seed=seed)
        config = train_rliv_ua(samples, out, settings).get("config", {})
        text = (Path(out) / METRICS_FILE).read_text()
    network = {k: config[k] for k in NETWORK_FIELDS if k in config}
    return [json.loads(line) for line in text.splitlines()], network


def project_rows_per_s(lines: list[dict], batch_size: int, rows: int) -> float:
    """The median over the iterations after the first, or, when the run is longer than an
    epoch, over those that start after the first epoch: the learner replays later epochs from
    memory (``batch_cache_mb``), as d3rlpy samples its in-memory buffer."""
    epoch = math.ceil(rows / batch_size)
    later = [line for line, before in zip(lines[1:], lines, strict=False)
             if before["updates"] >= epoch]
    return statistics.median(line["time/updates_per_s"] for line in later or lines[1:]) * \
        batch_size


def project_curve(lines: list[dict]) -> list[dict]:
    points, elapsed = [], 0.0
    for line in lines:
        elapsed += line["time/iteration_s"]
        points.append({"updates": line["updates"], "elapsed_s": elapsed,
                       "objective": line["loss/total"],
                       "td": sum(v for k, v in line.items() if k.startswith("loss/td/"))})
    return points


def peer_env(reuse_freed_memory: bool) -> dict[str, str]:
    """The d3rlpy worker's environment: with ``reuse_freed_memory``, glibc's malloc gets the
    thresholds the project's learners set in-process (``common/memory.py``), as variables."""
    if not reuse_freed_memory:
        return dict(os.environ)
    return {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(memory.MMAP_THRESHOLD),
            "MALLOC_TRIM_THRESHOLD_": str(memory.TRIM_THRESHOLD),
            "MALLOC_TOP_PAD_": str(memory.TOP_PAD)}


def peer_run(peer_python: str, spec: dict, reference: dict, env: dict[str, str]) -> dict:
    """One d3rlpy run in the peer venv; checks that it trained on exactly the shard rows."""
    done = subprocess.run([peer_python, str(WORKER), json.dumps(spec)], capture_output=True,
                          text=True, check=False, env=env)
    lines = [x for x in done.stdout.splitlines() if x.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"d3rlpy worker ({spec['algo']}) failed with code "
                           f"{done.returncode}:\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1])
    got = result["checksum"]
    bad = [k for k in reference if not np.isclose(got[k], reference[k], rtol=1e-9, atol=0)]
    if bad or result["transitions"] != reference["rows"]:
        raise RuntimeError(f"d3rlpy's transitions differ from the shard rows in {bad}: "
                           f"{got} vs {reference}")
    return result


def shard_spec(samples: str) -> tuple[dict, dict]:
    """The worker's spec (files, columns, the project's settings) and the rows' checksum as
    the project's pre-learner reads them."""
    from rliv_ray import schema as S
    from rliv_ray.algorithms.rliv_ua.config import NETWORK_DEFAULTS, RLIVUAConfig
    from rliv_ray.offline.prelearner import shard_batch_to_arrays
    from rliv_ray.offline.shards import inspect_shards

    info = inspect_shards(samples)
    config = RLIVUAConfig()
    rewards = [S.reward_column(label) for label in info.labels]
    table = pa.concat_tables(pq.read_table(f) for f in info.files)
    ours = {k.split("/", 1)[1]: v
            for k, v in shard_batch_to_arrays(table, module_id="m").items()}
    reference = checksum({"obs": ours["obs"], "new_obs": ours["new_obs"],
                          "actions": ours["actions"],
                          "reward": reward_sum([ours[c] for c in rewards]),
                          "terminals": ours["terminateds"]})
    spec = {"files": [str(f) for f in info.files], "n_actions": config.n_actions,
            "columns": {"obs": S.STATE, "new_obs": S.NEXT_STATE, "action": S.ACTION,
                        "rewards": rewards},
            "batch_size": config.train_batch_size_per_learner,
            "hidden": list(NETWORK_DEFAULTS["hidden"]), "gamma": config.gamma,
            "lr": config.lr, "tau": config.tau, "rows": info.rows}
    return spec, reference


# ---------------------------------------------------------------- summaries

def spread(values: list[float]) -> dict:
    q1, _, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "iqr": [q1, q3], "values": [round(v, 4) for v in values]}


def flattening(points: list[dict], key: str, *, window: int, tolerance: float,
               tail: float) -> dict:
    """The convergence rule of the module docstring on the curve ``points[i][key]``."""
    raw = [p[key] for p in points]
    smooth = [statistics.fmean(raw[max(0, i + 1 - window):i + 1]) for i in range(len(raw))]
    final = statistics.fmean(raw[int(len(raw) * (1 - tail)):])
    outside = [i for i, s in enumerate(smooth) if abs(s - final) > tolerance * abs(final)]
    first = min(outside[-1] + 1 if outside else 0, len(points) - 1)
    updates = points[first]["updates"]
    return {"updates": updates, "flat": updates <= (1 - tail) * points[-1]["updates"],
            "final": final, "elapsed_in_run_s": points[first]["elapsed_s"],
            "curve": [[p["updates"], round(r, 6), round(s, 6)]
                      for p, r, s in zip(points, raw, smooth, strict=True)]}


def convergence(points: list[dict], steady_updates_per_s: float, base: dict, args) -> dict:
    out = {}
    for key in ("objective", "td"):
        conv = flattening(points, key, window=args.window, tolerance=args.tolerance,
                          tail=args.tail)
        out[key] = {**conv, "epochs": conv["updates"] * base["batch_size"] / base["rows"],
                    "wall_s_at_steady_speed": conv["updates"] / steady_updates_per_s}
    return out


def markdown(report: dict) -> str:
    s, threads = report["settings"], report["torch_threads"]
    rows = ["| method | rows/s median (min-max) | project / method median (min-max) [IQR] | "
            "updates to flat (epochs, wall at steady speed): objective / TD |",
            "|---|---|---|---|"]
    for name, method in report["methods"].items():
        rate, ratio = method["rows_per_s"], report["ratios"].get(name)
        ratio_text = (f"{ratio['median']:.3f} ({ratio['min']:.3f}-{ratio['max']:.3f}) "
                      f"[{ratio['iqr'][0]:.3f}-{ratio['iqr'][1]:.3f}]" if ratio else "-")
        conv = [method["convergence"][k] for k in ("objective", "td")
                if "convergence" in method]
        conv_text = " / ".join(f"{c['updates']:,}{'' if c['flat'] else ' (not flat)'} "
                               f"({c['epochs']:.2f}, {c['wall_s_at_steady_speed']:.0f} s)"
                               for c in conv) or "-"
        rows.append(f"| {name} | {rate['median']:,.0f} ({rate['min']:,.0f}-{rate['max']:,.0f})"
                    f" | {ratio_text} | {conv_text} |")
    return "\n".join([
        f"{s['repeats']} interleaved rounds on {s['rows']:,} shard rows, batch "
        f"{s['batch_size']}, hidden {tuple(s['hidden'])}, torch threads {threads['project']} "
        f"(project) / {threads['d3rlpy']} (d3rlpy), convergence over {s['curve_updates']:,} "
        f"updates, load average {report['load_average'][0]} -> "
        f"{report['load_average'][1]}, {report['wall_s'] / 60:.1f} min.", "", *rows, "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + ".", ""])


# ---------------------------------------------------------------- driver

def main() -> None:
    args = parse_args()
    import torch

    if not Path(args.peer_python).exists():
        sys.exit(f"{args.peer_python} not found; set up the peer environment first:\n  {SETUP}")
    began, load_before = time.perf_counter(), os.getloadavg()[0]
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    base, reference = shard_spec(args.samples)
    base.update(threads=args.torch_threads, seed=args.seed, block=args.updates,
                target_update_interval=args.target_update_interval or round(1 / base["tau"]))
    rates, network, peer = throughput_rounds(args, base, reference, began)
    curves = convergence_runs(args, base, reference) if args.curve_updates else {}
    report = summarize(args, base, rates, curves, peer)
    report.update(project_network=network, wall_s=time.perf_counter() - began,
                  load_average=[round(load_before, 2), round(os.getloadavg()[0], 2)])
    print(json.dumps(report, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(markdown(report))


def throughput_rounds(args, base: dict, reference: dict, began: float):
    """Rows/s of every method per round (A, B, C, A, B, C, ...), the project's network fields
    and the last d3rlpy result (threads, versions)."""
    timed = (args.iterations - 1) * args.updates
    rates: dict[str, list[float]] = {PROJECT: [], **{p: [] for p in PEERS}}
    for round_ in range(args.repeats):
        walls, started = [], time.perf_counter()
        lines, network = project_run(args.samples, args.updates, args.iterations, args.seed)
        rates[PROJECT].append(project_rows_per_s(lines, base["batch_size"], base["rows"]))
        for algo in PEERS:
            walls.append(time.perf_counter() - started)
            peer = peer_run(args.peer_python, {**base, "algo": algo, "mode": "throughput",
                                               "warmup": args.updates, "steps": timed},
                            reference, peer_env(args.peer_reuse_freed_memory))
            rates[algo].append(peer["throughput"]["rows_per_s"])
        walls.append(time.perf_counter() - started)
        runs = zip(rates.items(), np.diff([0.0, *walls]), strict=True)
        log(f"round {round_ + 1}/{args.repeats} at {time.perf_counter() - began:.0f} s: " +
            ", ".join(f"{k} {v[-1]:,.0f} rows/s ({wall:.0f} s)" for (k, v), wall in runs))
    return rates, network, peer


def convergence_runs(args, base: dict, reference: dict) -> dict[str, list[dict]]:
    """One learning curve per method, --curve-updates updates in blocks of --updates."""
    iterations = args.curve_updates // args.updates
    lines, _ = project_run(args.samples, args.updates, iterations, args.seed)
    curves = {PROJECT: project_curve(lines)}
    for algo in PEERS:
        curves[algo] = peer_run(args.peer_python, {**base, "algo": algo, "mode": "curve",
                                                   "steps": iterations * args.updates},
                                reference, peer_env(args.peer_reuse_freed_memory))["curve"]
    log("convergence curves done")
    return curves


def summarize(args, base: dict, rates: dict, curves: dict, peer: dict) -> dict:
    import ray
    import torch

    methods = {}
    for name, values in rates.items():
        methods[name] = {"rows_per_s": spread(values)}
        if name in curves:
            steady = methods[name]["rows_per_s"]["median"] / base["batch_size"]
            methods[name]["convergence"] = convergence(curves[name], steady, base, args)
    ratios = {p: spread([a / b for a, b in zip(rates[PROJECT], rates[p], strict=True)])
              for p in PEERS}
    settings = {k: v for k, v in base.items() if k not in ("files", "columns", "block")}
    return {
        "settings": {**settings, "repeats": args.repeats, "updates": args.updates,
                     "iterations": args.iterations, "timed_updates": (args.iterations - 1)
                     * args.updates, "curve_updates": args.curve_updates,
                     "window": args.window, "tolerance": args.tolerance, "tail": args.tail,
                     "peer_reuse_freed_memory": args.peer_reuse_freed_memory},
        "torch_threads": {"project": torch.get_num_threads(), "d3rlpy": peer["torch_threads"]},
        "versions": {"python": sys.version.split()[0], "ray": ray.__version__,
                     "torch": torch.__version__,
                     **{f"peer {k}": v for k, v in peer["versions"].items()}},
        "methods": methods, "ratios": ratios, "notes": NOTES,
    }


def log(message: str) -> None:
    sys.stderr.write(f"[peer_d3rlpy] {message}\n")
    sys.stderr.flush()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("samples", help="a build-samples output directory")
    parser.add_argument("--repeats", type=int, default=4, help="interleaved throughput rounds")
    parser.add_argument("--updates", type=int, default=50,
                        help="updates per project iteration = per d3rlpy block")
    parser.add_argument("--iterations", type=int, default=5,
                        help="project iterations per throughput run (the first is warm-up; "
                        "`make bench-peer` runs 30 of 50 updates, past the first epoch of its "
                        "shards, so that the later epochs' replay is measured)")
    parser.add_argument("--curve-updates", type=int, default=1000,
                        help="updates of each convergence run (0: skip)")
    parser.add_argument("--window", type=int, default=5, help="moving average, in blocks")
    parser.add_argument("--tolerance", type=float, default=0.10, help="relative band around F")
    parser.add_argument("--tail", type=float, default=0.25,
                        help="fraction of the run that defines F (and flags 'not flat')")
    parser.add_argument("--target-update-interval", type=int, default=None,
                        help="d3rlpy's target copy interval (default: round(1 / tau))")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch intra-op threads on both sides (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--peer-python", default=PEER_PYTHON)
    parser.add_argument("--markdown", help="also write the summary as Markdown here")
    parser.add_argument("--peer-reuse-freed-memory", action="store_true",
                        help="give d3rlpy the malloc thresholds the project's learners set "
                             "(common/memory.py) through MALLOC_* variables")
    args = parser.parse_args()
    if args.repeats < 1 or args.iterations < 2 or args.updates < 1:
        parser.error("--repeats >= 1, --iterations >= 2 and --updates >= 1 are required")
    if args.curve_updates and args.curve_updates < 4 * args.updates:
        parser.error("--curve-updates must be 0 or at least 4 x --updates")
    return args


if __name__ == "__main__":
    main()
