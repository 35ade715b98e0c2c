"""Speed and memory of the live-stream world's log generation, and the true values of the
reference policies (issue 5, item 1).

Generates about ``--rows`` requests with :func:`generate_live_world` in this process (peak RSS
from ``getrusage(RUSAGE_SELF)``, Python included), then runs never / always / logging /
immediate-greedy oracle (and the oracle with a few safety margins) on-policy with the default
beta, over ``--seeds`` fresh populations of ``--eval-users`` users, and prints per-user returns
with 95% t-intervals over seeds.

    python benchmarks/live_world.py --rows 1000000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import stats

from rliv_ray.data.live_config import LiveWorldConfig
from rliv_ray.data.live_generate import generate_live_world
from rliv_ray.data.live_metrics import evaluate_policy
from rliv_ray.data.live_policies import AlwaysPolicy, OraclePolicy, logging_policy

ORACLE_MARGINS_S = (10.0, 20.0)
PILOT_USERS = 1_000


def generate(rows: int, workdir: Path, config: LiveWorldConfig) -> dict:
    pilot = evaluate_policy(config, logging_policy(config), users=PILOT_USERS, seed=10_000)
    per_user = pilot.user_requests.mean()
    config = dataclasses.replace(config, n_users=max(1, round(rows / per_user)))
    out = workdir / "live"
    started = time.perf_counter()
    manifest = generate_live_world(out, config, progress=False)
    seconds = time.perf_counter() - started
    size_mb = sum(p.stat().st_size for p in out.rglob("*.parquet")) / 2**20
    shutil.rmtree(out)
    return {"rows": manifest["rows"], "users": manifest["users"], "files": manifest["files"],
            "seconds": round(seconds, 1), "rows_per_s": round(manifest["rows"] / seconds),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "parquet_mb": round(size_mb), "logging_injection_share":
                round(manifest["injection_share"], 4),
            "live_supply_share": round(manifest["live_supply_share"], 4)}


def interval(values: list[float]) -> tuple[float, float]:
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, float("nan")
    half = stats.t.ppf(0.975, len(values) - 1) * stats.sem(values)
    return mean, float(half)


def summary(runs: list, oracle_returns: list[float] | None) -> dict:
    """Means over seeds (95% half-widths) of one policy's :class:`PolicyValue` runs."""
    returns = [r.mean_return for r in runs]
    ret, ret_ci = interval(returns)
    diff, diff_ci = interval(list(np.subtract(returns, oracle_returns or returns)))
    disc, disc_ci = interval([r.mean_discounted_return for r in runs])
    return {
        "return": round(ret, 1), "return_ci95": round(ret_ci, 1),
        "minus_oracle": round(diff, 1), "minus_oracle_ci95": round(diff_ci, 1),
        "discounted_return": round(disc, 2), "discounted_ci95": round(disc_ci, 2),
        "injection_share": round(np.mean([r.injection_ratio for r in runs]), 4),
        "injection_share_with_live": round(np.mean([r.injection_ratio_with_live for r in runs]),
                                           4),
        "requests_per_user": round(np.mean([r.user_requests.mean() for r in runs]), 1),
        "usage_min_per_user": round(np.mean([r.user_usage_s.mean() / 60 for r in runs]), 1),
        "mean_amplitude_20min": round(np.mean([r.amplitudes.mean() for r in runs]), 4),
    }


def policy_values(config: LiveWorldConfig, users: int, seeds: list[int]) -> dict:
    """True values of the reference policies; differences to the oracle are paired by seed."""
    policies = {"oracle": OraclePolicy(config.beta), "never": AlwaysPolicy(0.0),
                "always": AlwaysPolicy(1.0), "logging": logging_policy(config)}
    policies.update({f"oracle+{m:g}s": OraclePolicy(config.beta, m) for m in ORACLE_MARGINS_S})
    out, oracle = {}, None
    for name, policy in policies.items():
        runs = [evaluate_policy(config, policy, users=users, seed=s) for s in seeds]
        oracle = oracle or [r.mean_return for r in runs]
        out[name] = summary(runs, oracle)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--eval-users", type=int, default=5_000)
    parser.add_argument("--seeds", type=int, default=5, help="0: generation only")
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args()
    config = LiveWorldConfig()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="rliv-bench-"))
    gen = generate(args.rows, workdir, config)
    print(json.dumps(gen))
    print(f"{gen['rows']:,} rows in {gen['seconds']}s = {gen['rows_per_s']:,} rows/s, peak RSS "
          f"{gen['peak_rss_mb']:,} MB, {gen['parquet_mb']} MB of Parquet; logging policy "
          f"injects {gen['logging_injection_share']:.1%} of requests "
          f"(a live stream is on air for {gen['live_supply_share']:.1%})")
    if args.seeds < 1:
        return
    started = time.perf_counter()
    values = policy_values(config, args.eval_users, list(range(args.seeds)))
    print(f"true values, beta={config.beta}, gamma=0.9, {args.eval_users} users x "
          f"{config.days} days x {args.seeds} seeds ({time.perf_counter() - started:.0f}s):")
    for name, v in values.items():
        print(f"  {name:12s} return/user {v['return']:7.1f} +- {v['return_ci95']:5.1f}  "
              f"discounted {v['discounted_return']:6.2f} +- {v['discounted_ci95']:5.2f}  "
              f"inject {v['injection_share']:.1%} ({v['injection_share_with_live']:.1%} of "
              f"requests with a live)  requests/user {v['requests_per_user']:5.1f}  usage "
              f"{v['usage_min_per_user']:5.1f} min  amplitude {v['mean_amplitude_20min']:.3f}  "
              f"minus oracle (paired by seed) {v['minus_oracle']:6.1f} +- "
              f"{v['minus_oracle_ci95']:.1f}")
    print(json.dumps(values))


if __name__ == "__main__":
    main()
