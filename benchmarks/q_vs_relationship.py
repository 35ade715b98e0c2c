"""Does a trained RLIV-UA's value grow as the user-author relationship deepens? (paper Fig. 9)

    python benchmarks/q_vs_relationship.py WORLD SCORER [SCORER ...] [--users 100] [--out F.png]

Runs the RankingModel in the world (so every scorer sees the same candidates), and for every
candidate of every request records the scorer's value V = max_a Q(s, a) on its serving tower
beside the pair's true relationship depth B (the world's latent bond) and its observed exposure
count. Prints mean V per bond bin with the Spearman correlation of V and B, and plots both
curves. Several scorers (training seeds) give one curve each.
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import stats

from rliv_ray.data import io
from rliv_ray.data.ua_config import UAWorldConfig
from rliv_ray.data.ua_policies import ConstantPolicy
from rliv_ray.data.ua_population import Population
from rliv_ray.data.ua_world import simulate_users
from rliv_ray.evaluation.policies import make_policy
from rliv_ray.evaluation.world import one_torch_thread, state_dim

BOND_BINS = np.array([0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0])


class Recorder(ConstantPolicy):
    """The RankingModel, keeping every candidate's state, ids and true bond."""

    observes_state = True

    def __init__(self):
        super().__init__(0)
        object.__setattr__(self, "seen", [])

    def act(self, cand, rng):
        a, n, d = cand.state.shape
        self.seen.append((np.repeat(cand.user_id, n), cand.author_id.ravel(),
                          cand.state.reshape(-1, d), cand.bond.ravel()))
        return super().act(cand, rng)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("world")
    p.add_argument("scorers", nargs="+", help="rliv train outputs or scorer.pt files")
    p.add_argument("--users", type=int, default=100)
    p.add_argument("--out", help="write the plot here (PNG)")
    args = p.parse_args()
    world = UAWorldConfig.from_dict(io.read_manifest(args.world)["world"])
    recorder = Recorder()
    simulate_users(world, Population.build(world), np.arange(args.users), recorder,
                   np.random.default_rng(0))
    users, authors, states, bond = (np.concatenate(x) for x in zip(*recorder.seen, strict=True))
    exposures = np.expm1(states[:, 10]).round()
    which = np.clip(np.digitize(bond, BOND_BINS) - 1, 0, len(BOND_BINS) - 2)
    print(f"{len(bond):,} candidates of {args.users} users; bins of true bond B")
    print(f"{'scorer':<40} {'spearman(V, B)':>15} " + " ".join(
        f"{lo:.2f}-{hi:.2f}".rjust(10) for lo, hi in zip(BOND_BINS, BOND_BINS[1:], strict=False)))
    curves = []
    for path in args.scorers:
        policy = make_policy(f"rliv:{path}", world, state_dim(world))
        with one_torch_thread():
            value = np.concatenate([policy.q(users[i:i + 65536], authors[i:i + 65536],
                                             states[i:i + 65536]).max(axis=1)
                                    for i in range(0, len(users), 65536)])
        rho = stats.spearmanr(value, bond).statistic
        means = [value[which == b].mean() if (which == b).any() else np.nan
                 for b in range(len(BOND_BINS) - 1)]
        by_count = [value[np.minimum(exposures, 20) == c].mean() for c in range(21)]
        curves.append((path, means, by_count))
        print(f"{path[-40:]:<40} {rho:>15.3f} " + " ".join(f"{m:10.4f}" for m in means))
    print("count per bin: " + " ".join(str(int((which == b).sum()))
                                       for b in range(len(BOND_BINS) - 1)))
    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
        centers = (BOND_BINS[1:] + BOND_BINS[:-1]) / 2
        for path, means, by_count in curves:
            left.plot(centers, means, marker="o", alpha=0.7, label=path[-24:])
            right.plot(range(21), by_count, marker=".", alpha=0.7)
        left.set(xlabel="true relationship depth B", ylabel="V = max_a Q(s, a)")
        right.set(xlabel="pair exposures so far (20 = 20+)", ylabel="V")
        left.legend(fontsize=6)
        fig.suptitle("RLIV-UA value vs the user-author relationship (paper Fig. 9)", fontsize=9)
        fig.tight_layout()
        fig.savefig(args.out, dpi=120)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
