"""RLIV-UA's sensitivity to gamma in the ground-truth world (paper Fig. 7).

    python benchmarks/gamma_sweep.py WORLD SAMPLES --out DIR \
        [--gammas 0 0.5 0.8 0.9 0.95] [--train-seeds 0 1 2] [--eval-seeds 4] [--users 200] \
        [--reuse DIR_OF_full_sSEED_RUNS]

Trains the full model at each gamma and training seed with ``rliv train rliv-ua --set
gamma=G`` (skipped when DIR/g{G}_s{SEED}/scorer.pt exists; ``--reuse`` takes gamma 0.9's runs
from an earlier ``benchmarks/rliv_ua_world.py`` directory instead of training them again, the
default gamma being 0.9), evaluates every scorer and the RankingModel in the world on the same
users and rollout seeds, and plots the paired margin over the RankingModel on session length and
watch time per session against gamma, with 95% intervals over training seeds (over rollout
seeds with one training seed) (DIR/gamma.png, DIR/gamma.md, DIR/gamma.json).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rliv_ray.data import io  # noqa: E402
from rliv_ray.data.ua_config import UAWorldConfig  # noqa: E402
from rliv_ray.evaluation.report import LABELS  # noqa: E402
from rliv_ray.evaluation.world import WorldEval, evaluate_policies  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from rliv_ua_world import paired_gain, pct, rollout_gain  # noqa: E402

METRICS = ("session_length", "watch_time_min")


def train(samples: str, out: Path, gamma: float, seed: int, iterations: int) -> None:
    if (out / "scorer.pt").exists():
        return
    cmd = [str(Path(sys.executable).parent / "rliv"), "train", "rliv-ua", samples, "--out",
           str(out), "--seed", str(seed), "--set", f"gamma={gamma}", "--iterations",
           str(iterations), "--updates-per-iteration", "100", "--checkpoint-every",
           str(iterations), "--overwrite", "--quiet"]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def margin(result: dict, specs: list[str], metric: str) -> dict:
    """Paired margin over the RankingModel: interval over training seeds (``paired_gain``), or
    with one training seed over rollout seeds, (m_s - m_RM,s) / mean_s m_RM,s."""
    if len(specs) > 1:
        return paired_gain(result, specs, ["RankingModel"] * len(specs), metric)
    return rollout_gain(result, specs[0], "RankingModel", metric)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("world")
    p.add_argument("samples")
    p.add_argument("--out", required=True)
    p.add_argument("--gammas", nargs="+", type=float, default=[0.0, 0.5, 0.8, 0.9, 0.95])
    p.add_argument("--train-seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--eval-seeds", type=int, default=4)
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--reuse", help="a rliv_ua_world.py directory whose full_sSEED runs are "
                   "gamma 0.9's")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = {}
    for seed in args.train_seeds:
        for gamma in args.gammas:
            run = out / f"g{gamma:g}_s{seed}"
            if args.reuse and gamma == 0.9:
                run = Path(args.reuse) / f"full_s{seed}"
            train(args.samples, run, gamma, seed, args.iterations)
            runs.setdefault(gamma, []).append(f"rliv:{run}")
    world = UAWorldConfig.from_dict(io.read_manifest(args.world)["world"])
    setup = WorldEval(world, seeds=tuple(range(args.eval_seeds)), users=args.users)
    specs = ["RankingModel", *(s for v in runs.values() for s in v)]
    result = evaluate_policies(setup, specs, progress=False)
    margins = {m: {g: margin(result, specs_g, m) for g, specs_g in runs.items()}
               for m in METRICS}
    over = (f"{len(args.train_seeds)} training seeds" if len(args.train_seeds) > 1 else
            "rollout seeds (one training seed: the interval omits training noise)")
    lines = [f"Full RLIV-UA at each gamma, paired margin over the RankingModel, 95% interval "
             f"over {over} ({args.eval_seeds} rollout seeds, {args.users} users).", "",
             "| gamma | " + " | ".join(LABELS[m] for m in METRICS)
             + " |", "|---|" + "---|" * len(METRICS)]
    for g in runs:
        lines.append(f"| {g:g} | " + " | ".join(pct(margins[m][g]) for m in METRICS) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    (out / "gamma.md").write_text(text)
    (out / "gamma.json").write_text(json.dumps({"args": vars(args), "runs": runs,
                                                "margins": margins}, indent=2))
    plot(margins, out / "gamma.png")


def plot(margins: dict, path: Path) -> None:
    fig, axes = plt.subplots(1, len(margins), figsize=(5 * len(margins), 3.5))
    for ax, (metric, by_gamma) in zip(axes, margins.items(), strict=True):
        gammas = list(by_gamma)
        mean = [100 * by_gamma[g]["mean"] for g in gammas]
        err = [[100 * (by_gamma[g]["mean"] - by_gamma[g]["low"]) for g in gammas],
               [100 * (by_gamma[g]["high"] - by_gamma[g]["mean"]) for g in gammas]]
        ax.errorbar(gammas, mean, yerr=err, marker="o", capsize=4)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel("gamma")
        ax.set_ylabel(f"{LABELS[metric]}: % over RankingModel")
    fig.suptitle("RLIV-UA vs gamma in the ground-truth world (paper Fig. 7)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
