"""How close NCIS comes to the true value of a policy in the live-stream world (issue 5, item 3).

For each seed it logs ``--users`` users x ``--days`` days under the logging policy, estimates
the mean per-user undiscounted return (SL-MGAC Eq. 5, default beta) of several target policies
with NCIS (trajectory, per-decision and step-wise kinds, several caps c), and compares each with the
policy's true value: an on-policy run of the same population (``evaluate_policy``, fresh
dynamics). The logging policy's row is the noise floor: its NCIS weights are all 1, so its
error is the sampling noise of one log against one on-policy run.

    python benchmarks/ncis_accuracy.py --users 5000 --days 2 --seeds 3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time

import numpy as np

from rliv_ray import schema as S
from rliv_ray.data.live_config import LiveWorldConfig
from rliv_ray.data.live_metrics import evaluate_policy
from rliv_ray.data.live_policies import AlwaysPolicy, OraclePolicy, logging_policy
from rliv_ray.data.live_world import LivePopulation, simulate_live_users
from rliv_ray.ope import DEFAULT_CAP, evaluate_policy_ncis

CAPS = (5.0, 10.0, 100.0, "quantile:0.99", math.inf)
BOOTSTRAP = 200  # resamples for the interval, at the default cap only
KINDS = ("trajectory", "per_decision", "stepwise")
ORACLE_EPSILON = 0.2  # SL-MGAC Eq. 16: online exploration 0.2
NEAR_LOGGING_MIX = 0.25  # share of the oracle in the "near logging" target


@dataclasses.dataclass(frozen=True)
class Mixture:
    """P(a = 1) = sum_k w_k P_k(a = 1): epsilon-greedy and blends of policies."""

    parts: tuple
    weights: tuple[float, ...]

    def inject_probability(self, obs):
        return sum(w * p.inject_probability(obs) for w, p in zip(self.weights, self.parts,
                                                                  strict=True))


class Recorder:
    """Acts as ``behaviour`` and records every target's P(a = 1) for the same requests (the
    oracle reads latent state that the log does not hold)."""

    def __init__(self, behaviour, targets: dict):
        self.behaviour, self.targets = behaviour, targets
        self.seen: dict[str, list[np.ndarray]] = {name: [] for name in targets}
        self.request_ids: list[np.ndarray] = []

    def inject_probability(self, obs):
        self.request_ids.append(obs[S.REQUEST_ID])
        for name, policy in self.targets.items():
            self.seen[name].append(np.asarray(policy.inject_probability(obs), np.float64))
        return self.behaviour.inject_probability(obs)


def targets(config: LiveWorldConfig) -> dict:
    oracle, log = OraclePolicy(config.beta), logging_policy(config)
    coin = AlwaysPolicy(0.5)
    return {
        "logging": log,
        "near-logging": Mixture((log, oracle), (1 - NEAR_LOGGING_MIX, NEAR_LOGGING_MIX)),
        "oracle-eps0.2": Mixture((oracle, coin), (1 - ORACLE_EPSILON, ORACLE_EPSILON)),
        "always-0.5": coin,
        "never": AlwaysPolicy(0.0),
        "always": AlwaysPolicy(1.0),
    }


def one_seed(config: LiveWorldConfig, seed: int) -> list[dict]:
    world = dataclasses.replace(config, seed=seed)
    policies = targets(world)
    recorder = Recorder(logging_policy(world), policies)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    cols = simulate_live_users(world, LivePopulation.build(world), np.arange(world.n_users),
                               recorder, rng, light=True).columns
    assert np.array_equal(np.concatenate(recorder.request_ids), cols[S.REQUEST_ID])
    rows = []
    for name, policy in policies.items():
        truth = evaluate_policy(world, policy, gamma=1.0)
        p_inject = np.concatenate(recorder.seen[name])
        for kind in KINDS:
            for cap in CAPS:
                est = evaluate_policy_ncis(cols, lambda _, p=p_inject: p, beta=world.beta,
                                           cap=cap, kind=kind,
                                           n_bootstrap=BOOTSTRAP if cap == DEFAULT_CAP else 0)
                covered = est.ci_low <= truth.mean_return <= est.ci_high
                rows.append({"seed": seed, "policy": name, "kind": kind, "cap": str(cap),
                             "truth": truth.mean_return, "ncis": est.value,
                             "truth_se": truth.user_return.std() / math.sqrt(world.n_users),
                             "ess": est.effective_sample_size,
                             "capped_share": est.capped_share,
                             "covered": covered if cap == DEFAULT_CAP else None})
    return rows


def table(rows: list[dict]) -> str:
    """Markdown, means over seeds: truth, NCIS, the relative error (NCIS - truth) / truth
    (signed mean, and mean of its absolute value; never: absolute errors, its truth is 0),
    ESS, capped share, and at the default cap how often the 95% bootstrap interval held the
    truth."""
    out = ["| policy | true J | kind | cap | NCIS J | rel. bias | mean abs rel. error | ESS | "
           "capped | truth in 95% CI |",
           "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    keys = dict.fromkeys((r["policy"], r["kind"], r["cap"]) for r in rows)
    for policy, kind, cap in keys:
        group = [r for r in rows if (r["policy"], r["kind"], r["cap"]) == (policy, kind, cap)]
        truth = np.mean([r["truth"] for r in group])
        errors = np.array([(r["ncis"] - r["truth"]) / (abs(r["truth"]) or 1.0) for r in group])
        fmt = "{:+.1%}" if truth else "{:+.2f}"
        covered = [r["covered"] for r in group if r["covered"] is not None]
        out.append(f"| {policy} | {truth:.1f} | {kind} | {cap} | "
                   f"{np.mean([r['ncis'] for r in group]):.1f} | {fmt.format(errors.mean())} | "
                   f"{fmt.format(np.abs(errors).mean()).lstrip('+')} | "
                   f"{np.mean([r['ess'] for r in group]):.0f} | "
                   f"{np.mean([r['capped_share'] for r in group]):.1%} | "
                   f"{f'{sum(covered)}/{len(covered)}' if covered else ''} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    config = LiveWorldConfig(n_users=args.users, days=args.days)
    started = time.perf_counter()
    rows = [row for seed in range(args.seeds) for row in one_seed(config, seed)]
    print(f"{args.users} users x {args.days} days x {args.seeds} seeds, beta={config.beta}, "
          f"undiscounted ({time.perf_counter() - started:.0f}s)")
    print(table(rows))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
