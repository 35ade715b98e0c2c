"""The OPE estimators on real logs with a known answer (issue 16, section 4).

Estimates the click rate of ZOZOTOWN's Bernoulli Thompson Sampling policy from the Open Bandit
Dataset's uniform-random log (campaign "all") with IPS, SNIPS, NCIS, DM, DR, SNDR and Switch-DR,
beside the BTS log's own mean click rate (rliv_ray/ope/obd_check.py has the definitions). Then
the reverse direction, the random policy's click rate from the BTS log, whose propensities are
the logging policy's own on every row, and how far the BTS log's propensities agree with the
simulated policy over the week. Needs `make obd` first.

    python benchmarks/obd_bts.py --markdown /tmp/obd_bts.md
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from rliv_ray.data.obd import load_log, load_prior
from rliv_ray.ope.obd_check import (
    OBDCheckConfig,
    bts_action_dist,
    comparison_table,
    estimate_all,
    on_policy,
    propensity_agreement,
    uniform_action_dist,
)

CAMPAIGN = "all"


def main() -> None:
    defaults = OBDCheckConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="extracted OBD folder (default: make obd's)")
    parser.add_argument("--n-sim", type=int, default=defaults.n_sim)
    parser.add_argument("--n-bootstrap", type=int, default=defaults.n_bootstrap)
    parser.add_argument("--prior-rows", type=float, default=defaults.prior_rows)
    parser.add_argument("--markdown", type=Path, default=None, help="also write the tables here")
    args = parser.parse_args()
    config = dataclasses.replace(defaults, n_sim=args.n_sim, n_bootstrap=args.n_bootstrap,
                                 prior_rows=args.prior_rows)
    start = time.perf_counter()
    random_log = load_log("random", CAMPAIGN, args.root)
    bts_log = load_log("bts", CAMPAIGN, args.root)
    bts = bts_action_dist(*load_prior(CAMPAIGN, args.root), n_sim=config.n_sim,
                          seed=config.sim_seed, chunk=config.sim_chunk)  # (A, L)
    uniform = uniform_action_dist(random_log.n_items)
    sections = [
        (f"BTS's click rate from the random log (campaign {CAMPAIGN}, {random_log.n:,} rows, "
         f"{random_log.click.sum():.0f} clicks); the answer: the BTS log's mean "
         f"({bts_log.n:,} rows, {bts_log.click.sum():.0f} clicks)",
         comparison_table(estimate_all(random_log, bts, config), on_policy(bts_log, config))),
        ("Reverse: the random policy's click rate from the BTS log; the answer: the random "
         "log's mean",
         comparison_table(estimate_all(bts_log, uniform, config),
                          on_policy(random_log, config))),
    ]
    agreement = propensity_agreement(bts_log, bts)
    windows = ["| hours after the first row | rows | correlation |", "| --- | --- | --- |"]
    windows += [f"| {lo:g}-{hi:g} | {n:,} | {r:.2f} |" for lo, hi, n, r in agreement]
    sections.append(("The BTS log's propensities against the simulated BTS (prior) "
                     "distribution, Pearson r per time window", "\n".join(windows)))
    settings = (f"n_sim {config.n_sim:,} (seed {config.sim_seed}), {config.n_bootstrap} "
                f"bootstrap resamples, reward model prior_rows {config.prior_rows:g} with "
                f"{config.folds}-fold cross-fitting, Switch-DR tau {config.switch_tau:g}, "
                f"NCIS cap {config.ncis_cap:g}")
    text = "\n\n".join(f"### {title}\n\n{table}" for title, table in sections)
    text += f"\n\n{settings}; {time.perf_counter() - start:.1f} s.\n"
    print(text)
    if args.markdown is not None:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
