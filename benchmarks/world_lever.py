"""Long-term lever of the synthetic UA world: oracle vs greedy vs RankingModel (Foundation issue).

Same as `rliv check-world`, at a larger scale; prints the tables for benchmarks/RESULTS.md.

    python benchmarks/world_lever.py --users 1000 --days 14 --seeds 5
"""

from __future__ import annotations

import argparse
import time

from rliv_ray.data.ua_config import UAWorldConfig
from rliv_ray.data.ua_lever import compare_policies, format_comparison, separated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    config = UAWorldConfig(n_users=args.users, days=args.days)
    started = time.perf_counter()
    result = compare_policies(config, list(range(args.seeds)))
    print(f"{args.users} users x {args.days} days, {args.seeds} seeds, "
          f"{time.perf_counter() - started:.0f}s")
    print(format_comparison(result, "RankingModel"))
    print(format_comparison({k: result[k] for k in ("Greedy", "Oracle")}, "Greedy"))
    for better, worse in (("Oracle", "Greedy"), ("Oracle", "RankingModel"),
                          ("Greedy", "RankingModel")):
        print(f"{better} > {worse} on LTV with non-overlapping 95% intervals: "
              f"{separated(result, better, worse)}")


if __name__ == "__main__":
    main()
