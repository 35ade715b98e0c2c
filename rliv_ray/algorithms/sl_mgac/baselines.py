"""Table 1 baselines that share SL-MGAC's feature extractor (sl-mgac.txt 4.2.1 and line 166).

Every method is an :class:`SLMGACNetwork` (same embeddings, target attention and shared
MLP [256, 128]: the shared feature extractor of line 166) with some heads switched off; L2R and
DQN put a plain MLP head on it (no group towers, no LayerNorm: those are SL-MGAC's own, MG-SD
and its LN ablation; the ``(SL-MGAC heads)`` rows keep them), and each method has a
pure loss ``(net, target, batch, settings, step=0) -> (loss, metrics)`` on the SL-MGAC batch, and a
rule for P(a = 1 | s) before the epsilon-greedy of Eq. 16 (``ope.evaluate.NetworkPolicy``):

    L2R  (Chen & Zhou 2020)  Q_i(s, a) regresses the logged reward, gamma = 0, no bootstrap:
                             L = sum_i E[Huber(Q_i(s_t, a_t) - r_t)];  inject iff Q(s,1) > Q(s,0)
    DQN  (Mnih et al. 2015)  one critic and its target network:
                             y = r_t + gamma (1 - done) max_a' Q'(s_{t+1}, a')   (Eq. 7, C = 1)
                             L = E[Huber(Q(s_t, a_t) - y)];  inject iff Q(s,1) > Q(s,0)
                             ("Double DQN": the online critic picks a', the target evaluates it)
    BC                       the actor alone, cross-entropy on the logged action:
                             L = -E[log pi(a_t | s_t)];  inject iff pi(1|s) > 1/2
    BCQ, SAC, TD3, TD3-BC, IQL   the offline-RL rows, in :mod:`offline_baselines`

r_t is Eq. 5 with the settings' ``beta`` and ``reward_scale`` (watch times clipped to the bins
as in SL-MGAC). The critics are the QRN head with ``supervised_split=False`` (it outputs Q, no
RPN); BC has no critic, so its actor trains the extractor (``stop_gradient=False``). Rows
without a live stream on air have no decision: Q(s, 1) is infeasible in the target, BC skips
them, and the policy never injects there. :func:`method` also maps every SL-MGAC variant of
``variants.VARIANTS`` to the same :class:`Method` shape, so one training loop runs them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.nn import functional as F

from rliv_ray import schema as S
from rliv_ray.algorithms.sl_mgac import losses as L
from rliv_ray.algorithms.sl_mgac import objective
from rliv_ray.algorithms.sl_mgac import offline_baselines as O
from rliv_ray.algorithms.sl_mgac.baseline_common import (
    Batch,
    check_critic_only,
    feasible,
    logged_reward,
    policy_metrics,
    q_metrics,
)
from rliv_ray.algorithms.sl_mgac.network import SLMGACNetwork, SLMGACSpec
from rliv_ray.algorithms.sl_mgac.objective import DONE, SLMGACSettings, forward_state
from rliv_ray.algorithms.sl_mgac.variants import VARIANTS

__all__ = ["BASELINES", "Method", "bc_loss", "dqn_loss", "l2r_loss", "logged_reward", "method",
           "q_inject_probability"]

LossFn = Callable[..., tuple[torch.Tensor, dict[str, float]]]
"""``loss(net, target, batch, settings, step=0) -> (loss, metrics)``: ``step`` counts the updates
made before this one (only TD3's delayed actor reads it)."""
ProbabilityFn = Callable[[SLMGACNetwork, Batch], torch.Tensor]
Q_TARGET_MODES = ("max_min", "double_dqn")


def l2r_loss(net: SLMGACNetwork, target: SLMGACNetwork | None, batch: Batch,
             settings: SLMGACSettings, step: int = 0) -> tuple[torch.Tensor, dict[str, float]]:
    """L2R: sum_i E[Huber_delta(Q_i(s_t, a_t) - r_t)], supervised (gamma = 0); ``target``
    is not used."""
    check_critic_only(net, "L2R")
    q = forward_state(net, batch, actor=False).residual  # (C, B, 2)
    r = logged_reward(batch, net.spec, settings)  # (B,)
    loss = L.critic_loss(L.taken(q, batch[S.ACTION]), r, settings.td_huber_delta)
    return loss, q_metrics(loss, q, r, feasible(batch))


def dqn_loss(net: SLMGACNetwork, target: SLMGACNetwork, batch: Batch,
             settings: SLMGACSettings, step: int = 0) -> tuple[torch.Tensor, dict[str, float]]:
    """DQN: E[Huber_delta(Q(s_t, a_t) - y_t)], y_t = r_t + d_t (1 - done) V'(s_{t+1}) with
    V' = max_a' Q' (``target_mode="max_min"``) or Double DQN (``"double_dqn"``)."""
    check_critic_only(net, "DQN")
    if settings.target_mode not in Q_TARGET_MODES:
        raise ValueError(f"DQN's target_mode must be one of {Q_TARGET_MODES}, got "
                         f"{settings.target_mode!r}")
    q = forward_state(net, batch, actor=False).residual  # (C, B, 2)
    with torch.no_grad():
        next_target = forward_state(target, batch, True, actor=False)
        next_online = (forward_state(net, batch, True, actor=False)
                       if settings.target_mode == "double_dqn" else None)
        v_next = objective.next_value(next_target, next_online, net.spec, settings, batch)
        y = L.td_target(logged_reward(batch, net.spec, settings), v_next,
                        objective.transition_discount(batch, settings), batch[DONE])
    loss = L.critic_loss(L.taken(q, batch[S.ACTION]), y, settings.td_huber_delta)
    return loss, q_metrics(loss, q, y, feasible(batch))


def bc_loss(net: SLMGACNetwork, target: SLMGACNetwork | None, batch: Batch,
            settings: SLMGACSettings, step: int = 0) -> tuple[torch.Tensor, dict[str, float]]:
    """BC: -E[log pi(a_t | s_t)] over rows with a live stream on air; ``target`` unused."""
    logits = forward_state(net, batch, critics=False).logits  # (B, 2)
    mask = feasible(batch)
    ce = F.cross_entropy(logits, batch[S.ACTION].long(), reduction="none")  # (B,)
    loss = L.masked_mean(ce, mask)
    metrics = {"loss/total": loss.item(), "loss/actor": loss.item(),
               **policy_metrics(torch.softmax(logits.detach(), dim=-1)[:, 1], mask)}
    return loss, metrics


@torch.no_grad()
def q_inject_probability(net: SLMGACNetwork, batch: Batch) -> torch.Tensor:
    """sigmoid(Q(s, 1) - Q(s, 0)) (B,) with Q = min_i Q_i: above 1/2 iff injecting is greedy
    on Q (a Boltzmann probability at temperature 1 of the scaled Q); 0 with no live."""
    q = forward_state(net, batch, actor=False).residual.min(dim=0).values  # (B, 2)
    p = torch.sigmoid(q[:, 1] - q[:, 0])
    return torch.where(feasible(batch), p, torch.zeros_like(p))


@dataclass(frozen=True)
class Method:
    """A row of Tables 1-2: network and settings changes, its loss and its P(a = 1 | s)."""

    name: str
    loss: LossFn
    probability: ProbabilityFn
    spec_changes: dict[str, Any]
    settings_changes: dict[str, Any]
    uses_target: bool
    """The loss reads a target network (update it with ``objective.update_target``)."""

    def configure(self, spec: SLMGACSpec,
                  settings: SLMGACSettings | None = None) -> tuple[SLMGACSpec, SLMGACSettings]:
        """``spec`` and ``settings`` with this method's changes applied."""
        return (replace(spec, **self.spec_changes),
                replace(settings or SLMGACSettings(), **self.settings_changes))


_SLMGAC_HEADS = {"supervised_split": False, "n_critics": 1}
_OWN_HEADS = {**_SLMGAC_HEADS, "multi_group": False, "layer_norm": False}
SLMGAC_HEADS_SUFFIX = " (SL-MGAC heads)"


def _q_baselines(heads: dict[str, Any], suffix: str = "") -> dict[str, Method]:
    rows = (("L2R", l2r_loss, {"gamma": 0.0}, False),
            ("DQN", dqn_loss, {"target_mode": "max_min"}, True),
            ("Double DQN", dqn_loss, {"target_mode": "double_dqn"}, True))
    return {name + suffix: Method(name + suffix, loss, q_inject_probability, heads, changes,
                                  target) for name, loss, changes, target in rows}


def _offline_rl_baselines() -> dict[str, Method]:
    rows = (("BCQ", O.bcq_loss, O.bcq_inject_probability, {"stop_gradient": False}),
            ("SAC", O.sac_loss, objective.inject_probability, {"n_critics": 2}),
            ("TD3", O.td3_loss, O.deterministic_inject_probability, {"n_critics": 2}),
            ("TD3-BC", O.td3_bc_loss, O.deterministic_inject_probability, {"n_critics": 2}),
            ("IQL", O.iql_loss, objective.inject_probability,
             {"n_critics": 2, "value_head": True}))
    return {name: Method(name, loss, probability, {**_OWN_HEADS, **changes}, {}, True)
            for name, loss, probability, changes in rows}


BASELINES: dict[str, Method] = {
    **_q_baselines(_OWN_HEADS),
    "BC": Method("BC", bc_loss, objective.inject_probability,
                 {"supervised_split": False, "stop_gradient": False}, {}, False),
    **_offline_rl_baselines(),
    **_q_baselines(_SLMGAC_HEADS, SLMGAC_HEADS_SUFFIX),
}
"""The baselines by name. L2R, DQN and Double DQN share SL-MGAC's feature extractor (paper
line 166) and put their own head on it, one plain MLP (``qrn_hidden``) without group towers or
LayerNorm, as the paper's fairness clause says; their ``(SL-MGAC heads)`` rows keep SL-MGAC's
group towers and LayerNorm (the form before issue 13). BC. BCQ (one critic), SAC, TD3, TD3-BC
and IQL (twin critics; IQL adds a value head) take the same own heads
(:mod:`offline_baselines`)."""


def method(name: str) -> Method:
    """A baseline of :data:`BASELINES` or an SL-MGAC variant of ``variants.VARIANTS``."""
    if name in BASELINES:
        return BASELINES[name]
    if name in VARIANTS:
        spec_changes, settings_changes = VARIANTS[name]
        return Method(name, objective.sl_mgac_loss, objective.inject_probability, spec_changes,
                      settings_changes, True)
    raise ValueError(f"unknown method {name!r}; known: {sorted(BASELINES) + sorted(VARIANTS)}")
