"""RLIV-UA in the ground-truth world: train variants over seeds, run each in the world, compare.

    python benchmarks/rliv_ua_world.py WORLD SAMPLES --out DIR \
        [--variants full wo_mt wo_mt_sl] [--train-seeds 0 1 2 ...] [--iterations 20] \
        [--updates-per-iteration 100] [--eval-seeds 5] [--users N] [--best-value full ...] \
        [--train-only] [--reuse-eval DIR/world_result.json]

For each variant (an ``rliv train rliv-ua --ablation`` preset) and training seed it runs
``rliv train rliv-ua`` (skipped when DIR/VARIANT_sSEED/scorer.pt exists, so an interrupted run
resumes), then evaluates every trained scorer and the reference policies (RankingModel, Greedy,
Oracle) in the world with ``rliv_ray.evaluation`` on the same users and rollout seeds. The
paper's serving rule (argmax per candidate) is used; ``--best-value V`` also evaluates variant
V's scorers under our ``@best_value`` rule (rliv_ray/evaluation/policies.py).

Evidence (DEVELOPERS.md): per training seed t the paired margin of a variant over RankingModel
is mean_s (m(v, t, s) - m(RM, s)) / mean_s m(RM, s) over rollout seeds s (common random
numbers); the interval is a 95% t-interval over training seeds. Variant orders (full > wo_mt >
wo_mt_sl) are paired per training seed too. Writes DIR/world_table.md and DIR/world_result.json.
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
from rliv_ray.data.ua_lever import interval
from rliv_ray.evaluation.report import LABELS
from rliv_ray.evaluation.world import WorldEval, evaluate_policies

REFERENCE = ("RankingModel", "Greedy", "Oracle")
ORDERS = (("full", "wo_mt"), ("wo_mt", "wo_mt_sl"), ("full", "dqn"), ("full", "cql"),
          ("full", "td3_bc"), ("full", "td3_ua"),
          ("full", "wo_al_sl"), ("full", "wo_sl"), ("full", "wo_asa"),
          ("full@best_value", "full"))
"""Pairs compared per training seed (Table 1's order, the baselines, Table 2's ablations, our
rule)."""
SHOWN = ("session_length", "watch_time_min", "ctr", "diversity", "ua_count", "new_fans",
         "gifted_users", "revenue", "ltv")


def train(samples: str, out: Path, variant: str, seed: int, args) -> float:
    """Train one variant and seed with the CLI; seconds taken (0 when already there)."""
    if (out / "scorer.pt").exists():
        return 0.0
    cmd = [str(Path(sys.executable).parent / "rliv"), "train", "rliv-ua", samples,
           "--out", str(out), "--ablation", variant, "--seed", str(seed),
           "--iterations", str(args.iterations),
           "--updates-per-iteration", str(args.updates_per_iteration),
           "--checkpoint-every", str(args.iterations), "--overwrite", "--quiet"]
    print("$ " + " ".join(cmd), flush=True)
    began = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def paired_gain(result: dict, better: list[str], worse: list[str], metric: str) -> dict:
    """Per training seed (a pair of specs): mean over rollout seeds of better minus worse,
    relative to worse; mean and 95% interval over training seeds."""
    gains = []
    for b, w in zip(better, worse, strict=True):
        vb, vw = (np.asarray(result[s][metric]["values"]) for s in (b, w))
        gains.append(float((vb - vw).mean() / vw.mean()))
    return interval(gains)


def rollout_gain(result: dict, spec: str, base: str, metric: str) -> dict:
    """One policy against another over rollout seeds s: (m_s - b_s) / mean_s b_s, mean and
    95% interval (for reference policies, or a single training seed)."""
    b = np.asarray(result[base][metric]["values"])
    return interval(list((np.asarray(result[spec][metric]["values"]) - b) / b.mean()))


def pct(stat: dict) -> str:
    return f"{100 * stat['mean']:+.1f}% [{100 * stat['low']:+.1f}, {100 * stat['high']:+.1f}]"


def render(result: dict, runs: dict, n_train: int, n_eval: int) -> str:
    lines = [f"Margins over RankingModel, paired per rollout seed, 95% interval over "
             f"{n_train} training seeds ({n_eval} rollout seeds each; reference policies: "
             "interval over rollout seeds).", "",
             "| Policy | " + " | ".join(LABELS.get(m, m) for m in SHOWN) + " |",
             "|---" * (len(SHOWN) + 1) + "|"]
    base = result["RankingModel"]
    lines.append("| RankingModel (value) | " + " | ".join(
        f"{base[m]['mean']:.4g}" for m in SHOWN) + " |")
    for name in REFERENCE[1:]:
        lines.append(f"| {name} | " + " | ".join(
            pct(rollout_gain(result, name, "RankingModel", m)) for m in SHOWN) + " |")
    for variant, specs in runs.items():
        base = ["RankingModel"] * len(specs)
        lines.append(f"| RLIV-UA {variant} | " + " | ".join(
            pct(paired_gain(result, specs, base, m)) for m in SHOWN) + " |")
    for better, worse in (pair for pair in ORDERS if set(pair) <= set(runs)):
        lines.append(f"| {better} vs {worse} | " + " | ".join(
            pct(paired_gain(result, runs[better], runs[worse], m)) for m in SHOWN) + " |")
    return "\n".join(lines)


def earlier_results(path: str, specs: list[str], args) -> dict:
    """The results in an earlier DIR/world_result.json for the specs of this call, when that
    run evaluated the same world, users and rollout seeds and no scorer changed since (a
    policy's rollouts are then the same: common random numbers, deterministic policies)."""
    earlier = json.loads(Path(path).read_text())
    same = ("world", "users", "eval_seeds")
    if any(earlier["args"][k] != vars(args)[k] for k in same):
        raise SystemExit(f"{path} was evaluated with other {same}: "
                         f"{ {k: earlier['args'][k] for k in same} }")
    written = Path(path).stat().st_mtime
    out = {}
    for spec in specs:
        scorer = Path(spec.removeprefix("rliv:").split("@")[0]) / "scorer.pt"
        if spec in earlier["result"] and (not scorer.exists() or
                                          scorer.stat().st_mtime < written):
            out[spec] = earlier["result"][spec]
    print(f"reusing {len(out)} of {len(specs)} evaluations from {path}", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("world")
    p.add_argument("samples")
    p.add_argument("--out", required=True)
    p.add_argument("--variants", nargs="+", default=["full", "wo_mt", "wo_mt_sl"])
    p.add_argument("--train-seeds", nargs="+", type=int, default=list(range(10)))
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--updates-per-iteration", type=int, default=100)
    p.add_argument("--eval-seeds", type=int, default=5)
    p.add_argument("--users", type=int)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--best-value", nargs="*", default=[], metavar="VARIANT")
    p.add_argument("--train-only", action="store_true", help="train the missing runs, then stop")
    p.add_argument("--reuse-eval", metavar="JSON",
                   help="an earlier world_result.json (same world, users, rollout seeds): "
                        "policies evaluated there, whose scorers are older, are not rerun")
    args = p.parse_args()
    out = Path(args.out)
    runs = {v: [f"rliv:{out / f'{v}_s{s}'}" for s in args.train_seeds] for v in args.variants}
    for v in args.best_value:
        runs[f"{v}@best_value"] = [f"{spec}@best_value" for spec in runs[v]]
    seconds = {}
    for seed in args.train_seeds:  # seeds outside: a cut-short run has every variant
        for variant in args.variants:
            seconds[f"{variant}_s{seed}"] = train(args.samples, out / f"{variant}_s{seed}",
                                                  variant, seed, args)
    if args.train_only:
        return
    world = UAWorldConfig.from_dict(io.read_manifest(args.world)["world"])
    setup = WorldEval(world, seeds=tuple(range(args.eval_seeds)), users=args.users)
    specs = [*REFERENCE, *(s for specs in runs.values() for s in specs)]
    reused = earlier_results(args.reuse_eval, specs, args) if args.reuse_eval else {}
    began = time.perf_counter()
    result = evaluate_policies(setup, [s for s in specs if s not in reused],
                               workers=args.workers, progress=False)
    result = {s: reused[s] if s in reused else result[s] for s in specs}
    eval_s = time.perf_counter() - began
    table = render(result, runs, len(args.train_seeds), args.eval_seeds)
    header = (f"{setup.n_users} users, {world.days} days; {args.iterations} x "
              f"{args.updates_per_iteration} updates per run; evaluation {eval_s:.0f}s")
    print(header + "\n\n" + table)
    (out / "world_table.md").write_text(header + "\n\n" + table + "\n")
    (out / "world_result.json").write_text(json.dumps(
        {"args": vars(args), "train_seconds": seconds, "eval_seconds": eval_s,
         "runs": runs, "result": result}, indent=2))


if __name__ == "__main__":
    main()
