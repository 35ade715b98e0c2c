"""How faithful a learned simulator is: does it rank policies as the ground-truth world does?

The paper's question for an offline simulator (rliv-ua.txt section 4.1.1) is whether
conclusions drawn in it hold in the real system. In the synthetic world both are measurable:
evaluate the same policies in both and compare their orders by Kendall's tau-b,

    tau_b = (C - D) / sqrt((C + D + T_x) (C + D + T_y))

over all pairs of policies, with C concordant pairs, D discordant ones and T_x, T_y the pairs
tied in only one of the two rankings. 1: the same order, -1: reversed, 0: unrelated.
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def kendall_tau(x: list[float], y: list[float]) -> float:
    """Kendall's tau-b of two equally long sequences (NaN when either is constant)."""
    if len(x) != len(y):
        raise ValueError(f"sequences differ in length: {len(x)} and {len(y)}")
    concordant = discordant = tied_x = tied_y = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            tied_x += 1
        elif dy == 0:
            tied_y += 1
        elif dx == dy:
            concordant += 1
        else:
            discordant += 1
    denominator = math.sqrt((concordant + discordant + tied_x)
                            * (concordant + discordant + tied_y))
    return (concordant - discordant) / denominator if denominator else float("nan")


def rank_agreement(world: dict[str, float], simulator: dict[str, float]) -> dict:
    """Kendall's tau between two evaluations of the same policies (label -> metric mean), with
    each side's order, best first."""
    labels = sorted(world)
    if sorted(simulator) != labels:
        raise ValueError(f"different policies: {sorted(world)} and {sorted(simulator)}")
    return {
        "tau": kendall_tau([world[k] for k in labels], [simulator[k] for k in labels]),
        "world_order": sorted(labels, key=lambda k: -world[k]),
        "simulator_order": sorted(labels, key=lambda k: -simulator[k]),
        "policies": len(labels),
    }
