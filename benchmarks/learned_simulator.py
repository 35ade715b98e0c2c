"""How faithful is a simulator learned from the log? Kendall tau against the ground-truth world.

    python benchmarks/learned_simulator.py WORLD SCORERS --out DIR \
        [--variants full wo_mt wo_mt_sl dqn] [--train-seeds 0 1 2 3 4 5] [--users 200] \
        [--eval-seeds 3] [--epochs 5]

1. ``rliv fit-simulator WORLD`` fits the learned simulator to the world's log (skipped when
   DIR/simulator exists);
2. the same policies run in the ground-truth world and in the learned simulator, on the same
   users and rollout seeds: RankingModel, Greedy, Logging, and every scorer
   SCORERS/VARIANT_sSEED trained by ``benchmarks/rliv_ua_world.py`` (paper's argmax rule), plus
   full@best_value;
3. per metric, Kendall's tau-b (``rliv_ray/evaluation/fidelity.py``) between the two orders of
   the Table 1 rows (a variant's value is its mean over training seeds), and between the orders
   of every single policy (more pairs, finer differences).

The Oracle is left out: it reads the world's latent state, which a learned simulator has not.
Writes DIR/fidelity.md and DIR/fidelity.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from rliv_ray.data import io
from rliv_ray.data.ua_config import UAWorldConfig
from rliv_ray.evaluation.fidelity import rank_agreement
from rliv_ray.evaluation.report import LABELS
from rliv_ray.evaluation.world import WorldEval, evaluate_policies

REFERENCE = ("RankingModel", "Greedy", "Logging")
METRICS = ("session_length", "watch_time_min", "ctr", "diversity", "new_fans", "ltv")


def fit(world: str, out: Path, epochs: int) -> None:
    if (out / "simulator.json").exists():
        return
    cmd = [str(Path(sys.executable).parent / "rliv"), "fit-simulator", world, "--out", str(out),
           "--epochs", str(epochs)]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def rows_of(policies: dict[str, list[str]], result: dict, metric: str) -> dict[str, float]:
    """Table 1 rows: each row's metric mean over its specs (training seeds)."""
    return {row: float(np.mean([result[s][metric]["mean"] for s in specs]))
            for row, specs in policies.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("world")
    parser.add_argument("scorers", help="directory of VARIANT_sSEED scorers")
    parser.add_argument("--out", required=True)
    parser.add_argument("--variants", nargs="+", default=["full", "wo_mt", "wo_mt_sl", "dqn"])
    parser.add_argument("--train-seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--eval-seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fit(args.world, out / "simulator", args.epochs)

    rows = {name: [name] for name in REFERENCE}
    for variant in args.variants:
        rows[variant] = [f"rliv:{Path(args.scorers) / f'{variant}_s{t}'}"
                         for t in args.train_seeds]
    rows["full@best_value"] = [f"{s}@best_value" for s in rows.get("full", [])]
    rows = {k: v for k, v in rows.items() if v}
    specs = [s for v in rows.values() for s in v]
    world = UAWorldConfig.from_dict(io.read_manifest(args.world)["world"])
    results, seconds = {}, {}
    for where, simulator in (("world", None), ("simulator", str((out / "simulator").resolve()))):
        setup = WorldEval(world, seeds=tuple(range(args.eval_seeds)), users=args.users,
                          buckets=2, simulator=simulator)
        began = time.perf_counter()
        results[where] = evaluate_policies(setup, specs, progress=False)
        seconds[where] = time.perf_counter() - began
        print(f"{where}: {len(specs)} policies in {seconds[where]:.0f}s", flush=True)

    table = {}
    for metric in METRICS:
        by_row = [rows_of(rows, results[w], metric) for w in ("world", "simulator")]
        by_spec = [{s: results[w][s][metric]["mean"] for s in specs}
                   for w in ("world", "simulator")]
        table[metric] = {"rows": rank_agreement(*by_row), "policies": rank_agreement(*by_spec),
                         "values": {"world": by_row[0], "simulator": by_row[1]}}
    text = render(table, rows, args, seconds)
    (out / "fidelity.md").write_text(text)
    (out / "fidelity.json").write_text(json.dumps(
        {"args": vars(args), "seconds": seconds, "table": table, "results": results}, indent=2))
    print(text)


def render(table: dict, rows: dict, args, seconds: dict) -> str:
    lines = [f"{args.users} users, {args.eval_seeds} rollout seeds, training seeds "
             f"{args.train_seeds}; world {seconds['world']:.0f}s, learned simulator "
             f"{seconds['simulator']:.0f}s.", "",
             f"| Metric | tau, {len(rows)} Table 1 rows | tau, every policy | world order | "
             "simulator order |", "|---|---|---|---|---|"]
    for metric, t in table.items():
        lines.append(f"| {LABELS.get(metric, metric)} | {t['rows']['tau']:+.2f} | "
                     f"{t['policies']['tau']:+.2f} (n = {t['policies']['policies']}) | "
                     f"{' > '.join(t['rows']['world_order'])} | "
                     f"{' > '.join(t['rows']['simulator_order'])} |")
    lines += ["", "| Row | " + " | ".join(f"{LABELS.get(m, m)} world / sim" for m in table)
              + " |", "|---|" + "---|" * len(table)]
    for row in rows:
        cells = [f"{t['values']['world'][row]:.4g} / {t['values']['simulator'][row]:.4g}"
                 for t in table.values()]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
