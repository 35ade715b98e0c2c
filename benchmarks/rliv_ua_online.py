"""RLIV-UA trained with the world in the loop: does each round's policy get better in the world?

    python benchmarks/rliv_ua_online.py WORLD --out DIR [--train-seeds 0 1] [--rounds 3] \
        [--users-per-round 300] [--iterations 10] [--eval-seeds 4] [--users 200] \
        [--offline DIR_OF_full_sSEED_RUNS]

For each training seed it runs ``rliv train rliv-ua-online WORLD --out DIR/full_sSEED`` (skipped
when its last round's scorer exists; ``--resume`` when it was cut short), then evaluates the
policy after every round (DIR/full_sSEED/rounds/RRR), greedy, in the world on the same users and
rollout seeds as the RankingModel and, with ``--offline``, the offline-trained ``full_sSEED`` of
``benchmarks/rliv_ua_world.py``. Margins are paired per rollout seed, with 95% intervals over
training seeds. Writes DIR/online_table.md and DIR/online_result.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from rliv_ray.data import io
from rliv_ray.data.ua_config import UAWorldConfig
from rliv_ray.evaluation.report import LABELS
from rliv_ray.evaluation.world import WorldEval, evaluate_policies

sys.path.insert(0, str(Path(__file__).parent))
from rliv_ua_world import paired_gain, pct  # noqa: E402

SHOWN = ("session_length", "watch_time_min", "ctr", "ua_count", "ltv")


def train(world: str, out: Path, seed: int, args) -> None:
    if (out / "rounds" / f"{args.rounds:03d}" / "scorer.pt").exists():
        return
    cmd = [str(Path(sys.executable).parent / "rliv"), "train", "rliv-ua-online", world, "--out",
           str(out), "--seed", str(seed), "--rounds", str(args.rounds), "--users-per-round",
           str(args.users_per_round), "--iterations", str(args.iterations),
           "--updates-per-iteration", "100", "--checkpoint-every", str(args.iterations),
           "--resume" if (out / "online.json").exists() else "--overwrite", "--quiet"]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("world")
    p.add_argument("--out", required=True)
    p.add_argument("--train-seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--users-per-round", type=int, default=300)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--eval-seeds", type=int, default=4)
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--offline", help="a rliv_ua_world.py directory with full_sSEED runs")
    args = p.parse_args()
    out = Path(args.out)
    for seed in args.train_seeds:
        train(args.world, out / f"full_s{seed}", seed, args)
    rows = {f"round {r}": [f"rliv:{out / f'full_s{s}' / 'rounds' / f'{r:03d}'}"
                           for s in args.train_seeds] for r in range(args.rounds + 1)}
    if args.offline:
        rows["offline full"] = [f"rliv:{Path(args.offline) / f'full_s{s}'}"
                                for s in args.train_seeds]
    world = UAWorldConfig.from_dict(io.read_manifest(args.world)["world"])
    setup = WorldEval(world, seeds=tuple(range(args.eval_seeds)), users=args.users)
    specs = ["RankingModel", *(s for v in rows.values() for s in v)]
    result = evaluate_policies(setup, specs, progress=False)
    base = ["RankingModel"] * len(args.train_seeds)
    lines = [f"Greedy policy after each round, margins over the RankingModel paired per rollout "
             f"seed, 95% interval over training seeds {args.train_seeds} ({args.eval_seeds} "
             f"rollout seeds, {args.users} users).", "",
             "| Policy | " + " | ".join(LABELS[m] for m in SHOWN) + " |",
             "|---" * (len(SHOWN) + 1) + "|",
             "| RankingModel (value) | " + " | ".join(
                 f"{result['RankingModel'][m]['mean']:.4g}" for m in SHOWN) + " |"]
    for row, row_specs in rows.items():
        lines.append(f"| {row} | " + " | ".join(
            pct(paired_gain(result, row_specs, base, m)) for m in SHOWN) + " |")
    last = f"round {args.rounds}"
    for other in ("round 0", "offline full"):
        if other in rows:
            lines.append(f"| {last} vs {other} | " + " | ".join(
                pct(paired_gain(result, rows[last], rows[other], m)) for m in SHOWN) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    (out / "online_table.md").write_text(text)
    rounds = {s: json.loads((out / f"full_s{s}" / "online.json").read_text())["rounds"]
              for s in args.train_seeds}
    (out / "online_result.json").write_text(json.dumps(
        {"args": vars(args), "rows": rows, "result": result, "rounds": rounds}, indent=2))


if __name__ == "__main__":
    main()
