"""The SL-MGAC variants of the paper's Tables 1-2 as changes to a spec and settings (1.19).

    spec, settings = variant("w/o MG&DD", SLMGACSpec(user_dim=8, live_dim=4), SLMGACSettings())
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from rliv_ray.algorithms.sl_mgac.network import SLMGACSpec
from rliv_ray.algorithms.sl_mgac.objective import SLMGACSettings

NO_MG = {"multi_group": False}
NO_MG_DD = {**NO_MG, "discretise": False}

VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "SL-MGAC": ({}, {}),
    "w/o MG": (NO_MG, {}),
    "w/o MG&DD": (NO_MG_DD, {}),
    "w/o MG&DD&SL": ({**NO_MG_DD, "supervised_split": False}, {}),
    "w/o LN": ({"layer_norm": False}, {}),
    "w/o SG": ({"stop_gradient": False}, {}),
    "w/o Q-norm": ({}, {"q_norm": False, "detach_q_in_actor": True}),
    "w/o Q-norm (Q attached)": ({}, {"q_norm": False}),
    "SL-MGAC-0": ({}, {"gamma": 0.0, "discount": "request"}),
    "SL-MGAC-sep": ({}, {"detach_q_in_actor": True}),
    "SL-MGAC-vanilla": ({}, {"target_mode": "vanilla"}),
}
"""name -> (spec changes, settings changes), Table 2 ablations and Table 1/3 variants.

w/o Q-norm detaches Q in its actor loss -E_s sum_a pi(a|s) Q(s, a): attached, that loss also
trains the critics to raise Q, and the Q blow-up it shows (about 1e5) is that artefact, not the
paper's claim (a large |Q| saturates the softmax policy). The attached form is kept as the extra
row ``w/o Q-norm (Q attached)``. w/o MG&DD's RPN regresses the scaled seconds inside Huber's
quadratic zone (``objective.rpn_loss``). SL-MGAC-0 discounts per request (gamma = 0 is myopic
whatever ``discount`` the other rows use)."""


def variant(name: str, spec: SLMGACSpec,
            settings: SLMGACSettings | None = None) -> tuple[SLMGACSpec, SLMGACSettings]:
    """``spec`` and ``settings`` with the changes of the named variant applied."""
    if name not in VARIANTS:
        raise ValueError(f"unknown SL-MGAC variant {name!r}; known: {sorted(VARIANTS)}")
    spec_changes, settings_changes = VARIANTS[name]
    return (replace(spec, **spec_changes),
            replace(settings or SLMGACSettings(), **settings_changes))
