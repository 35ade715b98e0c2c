"""Table 1's offline-RL baselines on SL-MGAC's feature extractor (sl-mgac.txt 4.2.1).

Each is a pure loss ``(net, target, batch, settings, step=0) -> (loss, metrics)`` on the SL-MGAC
batch and a P(a = 1 | s) rule (before Eq. 16's epsilon-greedy); :mod:`baselines` registers them.
The network is :class:`SLMGACNetwork` with ``supervised_split=False`` (the QRN head outputs
Q), no group towers and no LayerNorm (the paper's fairness clause: the shared extractor plus the
method's own heads); the actor head is pi (or BCQ's G). r_t is Eq. 5 (``logged_reward``),
d_t = ``objective.transition_discount``, and every TD loss is the Huber loss with
``td_huber_delta`` (quadratic over every clipped reward: the MSE of the originals there).

    BCQ    (discrete; Fujimoto, Conti, Ghavamzadeh & Pineau 2019, "Benchmarking batch deep RL
           algorithms") one critic Q, G(a|s) = softmax(actor logits l):
           A(s) = {a : G(a|s) / max_a' G(a'|s) > bcq_threshold}
           y = r + d (1 - done) Q'(s', argmax_{a' in A(s')} Q(s', a'))
           L = Huber(Q(s, a) - y) - log G(a|s) + bcq_logit_reg * mean_a l_a^2
           inject iff argmax_{a in A(s)} Q(s, a) = 1
    SAC    (discrete; Christodoulou 2019) twin critics, fixed alpha = ``sac_alpha``:
           y = r + d (1 - done) sum_a' pi(a'|s') (min_j Q'_j(s', a') - alpha log pi(a'|s'))
           L = sum_i Huber(Q_i(s, a) - y) + E_s sum_a pi(a|s) (alpha log pi(a|s) - sg min_i Q_i)
           P(inject | s) = pi(1|s)
    TD3    (Fujimoto, van Hoof & Meger 2018) twin critics, deterministic actor a(s) = argmax l:
           a~(s) = straight-through Gumbel-softmax of l (Jang et al. 2017), forward one-hot
           y = r + d (1 - done) min_j Q'_j(s', a~'(s'))   a~' from the TARGET actor: the
                                                         Gumbel noise is the policy smoothing
           L = sum_i Huber(Q_i(s, a) - y) - E_s[a~(s) . sg Q_1(s, .)]   (actor every d-th step)
           inject iff l_1 > l_0
    TD3-BC (Fujimoto & Gu 2021) TD3 with the actor term
           -lambda E_s[a~(s) . sg Q_1(s, .)] - E[log pi(a|s)],  lambda = alpha / sg mean|Q_1(s, a~)|
    IQL    (Kostrikov, Nair & Levine 2022) twin critics, a value head V (``value_head``):
           L_V = E[L_2^tau(min_j Q'_j(s, a) - V(s))]                       (Eq. 5)
           L_Q = sum_i Huber(Q_i(s, a) - (r + d (1 - done) V(s')))          (Eq. 6)
           L_pi = -E[min(exp(beta (min_j Q'_j(s, a) - V(s))), w_max) log pi(a|s)]   (Eq. 7)
           P(inject | s) = pi(1|s)

Our choices. The actor (pi or G) sees sg(h) for SAC, TD3, TD3-BC and IQL (the critics train
the extractor, as in SL-MGAC); BCQ's G trains it too (``stop_gradient=False``: discrete BCQ
shares its torso between Q and G). Q in TD3's actor term is linear in the one-hot a~, so
detaching Q(s, .) gives the actor the gradient of Q(s, a~(s)) and the critics none. TD3's
delay reads ``step`` (updates made before this one: the RLlib learner's count, the benchmark's
step - 1); the actor learns when ``step % td3_policy_delay == 0`` and the target network moves
every update (Polyak, as for every method). SAC's alpha is fixed, not tuned. IQL's V(s') is the
online value head (as in IQL's code), so V needs no target. Rows without a live stream on air
have no decision: a = 1 is never allowed, drawn or served there, and the actor terms skip them.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from rliv_ray import schema as S
from rliv_ray.algorithms.sl_mgac import losses as L
from rliv_ray.algorithms.sl_mgac.baseline_common import (
    Batch,
    check_critic_only,
    feasible,
    logged_reward,
    policy_metrics,
)
from rliv_ray.algorithms.sl_mgac.network import SLMGACNetwork
from rliv_ray.algorithms.sl_mgac.objective import (
    DONE,
    SLMGACSettings,
    forward_state,
    transition_discount,
)

LossOut = tuple[torch.Tensor, dict[str, float]]


def _target(batch: Batch, settings: SLMGACSettings, net: SLMGACNetwork,
            v_next: torch.Tensor) -> torch.Tensor:
    """y = r + d (1 - done) V(s') (B,), no gradient."""
    return L.td_target(logged_reward(batch, net.spec, settings), v_next,
                       transition_discount(batch, settings), batch[DONE])


@torch.no_grad()
def _metrics(terms: dict[str, torch.Tensor], q: torch.Tensor, y: torch.Tensor,
             p_inject: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """``terms`` name -> loss term; q (C, B, 2) online Q; y (B,) its target; p (B,) P(inject)."""
    total = sum(terms.values())
    return {"loss/total": float(total), **{f"loss/{k}": v.item() for k, v in terms.items()},
            "q/mean": q.mean().item(), "q/target_mean": y.mean().item(),
            **policy_metrics(p_inject, mask)}


def _actions(batch: Batch) -> torch.Tensor:
    return batch[S.ACTION].long()


# --- BCQ --------------------------------------------------------------------------------------

def bcq_loss(net: SLMGACNetwork, target: SLMGACNetwork, batch: Batch,
             settings: SLMGACSettings, step: int = 0) -> LossOut:
    """Discrete BCQ: TD loss with the target's argmax over G's allowed actions + G's
    cross-entropy and logit penalty on the rows with a decision (module docstring)."""
    check_critic_only(net, "BCQ")
    a, mask, threshold = _actions(batch), feasible(batch), net.spec.bcq_threshold
    out = forward_state(net, batch)  # logits (B, 2) = G's, residual (C, B, 2)
    with torch.no_grad():
        nxt = forward_state(net, batch, True)
        allowed = L.bcq_allowed(nxt.logits, threshold, feasible(batch, True))
        a_next = L.greedy_allowed(nxt.residual.min(dim=0).values, allowed)  # (B,)
        q_next = forward_state(target, batch, True, actor=False).residual.min(dim=0).values
        y = _target(batch, settings, net, L.taken(q_next, a_next))
    critic = L.critic_loss(L.taken(out.residual, a), y, settings.td_huber_delta)
    ce = F.cross_entropy(out.logits, a, reduction="none")  # (B,)
    imitation = (L.masked_mean(ce, mask)
                 + settings.bcq_logit_reg * L.masked_mean(out.logits.pow(2).mean(-1), mask))
    with torch.no_grad():
        allowed = L.bcq_allowed(out.logits, threshold, mask)
        p = (L.greedy_allowed(out.residual.min(dim=0).values, allowed) == 1).float()
    return critic + imitation, _metrics({"critic": critic, "actor": imitation}, out.residual,
                                        y, p, mask)


@torch.no_grad()
def bcq_inject_probability(net: SLMGACNetwork, batch: Batch) -> torch.Tensor:
    """1 iff argmax_{a in A(s)} min_i Q_i(s, a) = 1, else 0 (B,); A(s) never holds a = 1 with
    no live on air."""
    out = forward_state(net, batch)
    allowed = L.bcq_allowed(out.logits, net.spec.bcq_threshold, feasible(batch))
    return (L.greedy_allowed(out.residual.min(dim=0).values, allowed) == 1).float()


# --- SAC (discrete) ---------------------------------------------------------------------------

def sac_loss(net: SLMGACNetwork, target: SLMGACNetwork, batch: Batch,
             settings: SLMGACSettings, step: int = 0) -> LossOut:
    """Discrete SAC: twin critics on the soft target + the soft actor loss (module docstring)."""
    check_critic_only(net, "SAC")
    a, mask, alpha = _actions(batch), feasible(batch), settings.sac_alpha
    out = forward_state(net, batch)
    with torch.no_grad():
        next_logits = forward_state(net, batch, True, critics=False).logits  # current pi
        q_next = forward_state(target, batch, True, actor=False).residual.min(dim=0).values
        y = _target(batch, settings, net,
                    L.soft_state_value(q_next, next_logits, alpha, feasible(batch, True)))
    critic = L.critic_loss(L.taken(out.residual, a), y, settings.td_huber_delta)
    actor = L.sac_actor_loss(out.logits, out.residual.min(dim=0).values.detach(), alpha, mask)
    p = torch.softmax(out.logits.detach(), dim=-1)[:, 1] * mask
    return critic + actor, _metrics({"critic": critic, "actor": actor}, out.residual, y, p, mask)


# --- TD3 and TD3-BC (straight-through Gumbel-softmax) -----------------------------------------

def _td3(net: SLMGACNetwork, target: SLMGACNetwork, batch: Batch, settings: SLMGACSettings,
         step: int, bc: bool) -> LossOut:
    """TD3 (``bc=False``) or TD3-BC: Gumbel noise is drawn at s' (target smoothing), then at s
    (the actor's sample), each (B, 2), from torch's global RNG."""
    check_critic_only(net, "TD3-BC" if bc else "TD3")
    a, mask, temperature = _actions(batch), feasible(batch), settings.gumbel_temperature
    actor_step = step % settings.td3_policy_delay == 0
    out = forward_state(net, batch)
    with torch.no_grad():
        nxt = forward_state(target, batch, True)
        a_next = L.straight_through_gumbel(nxt.logits, L.gumbel_noise(nxt.logits),
                                           temperature, feasible(batch, True))  # (B, 2)
        y = _target(batch, settings, net, (nxt.residual.min(dim=0).values * a_next).sum(-1))
    critic = L.critic_loss(L.taken(out.residual, a), y, settings.td_huber_delta)
    terms = {"critic": critic}
    if actor_step:
        a_pi = L.straight_through_gumbel(out.logits, L.gumbel_noise(out.logits), temperature,
                                         mask)
        q_pi = (a_pi * out.residual[0].detach()).sum(-1)  # Q_1(s, a~(s)) (B,)
        actor = -L.masked_mean(q_pi, mask)
        if bc:
            scale = L.masked_mean(q_pi.abs(), mask).detach()
            lam = settings.td3_bc_alpha / scale.clamp(min=torch.finfo(scale.dtype).tiny)
            ce = F.cross_entropy(out.logits, a, reduction="none")
            actor = lam * actor + L.masked_mean(ce, mask)
        terms["actor"] = actor
    p = ((out.logits[:, 1] > out.logits[:, 0]) & mask).float()
    return sum(terms.values()), _metrics(terms, out.residual, y, p, mask)


def td3_loss(net: SLMGACNetwork, target: SLMGACNetwork, batch: Batch,
             settings: SLMGACSettings, step: int = 0) -> LossOut:
    """TD3 with a straight-through Gumbel-softmax actor (module docstring)."""
    return _td3(net, target, batch, settings, step, bc=False)


def td3_bc_loss(net: SLMGACNetwork, target: SLMGACNetwork, batch: Batch,
                settings: SLMGACSettings, step: int = 0) -> LossOut:
    """TD3-BC: TD3's loss with lambda-scaled Q and the logged action's cross-entropy."""
    return _td3(net, target, batch, settings, step, bc=True)


@torch.no_grad()
def deterministic_inject_probability(net: SLMGACNetwork, batch: Batch) -> torch.Tensor:
    """TD3's deterministic actor: 1 iff l_1 > l_0 and a live stream is on air, else 0 (B,)."""
    logits = forward_state(net, batch, critics=False).logits
    return ((logits[:, 1] > logits[:, 0]) & feasible(batch)).float()


# --- IQL --------------------------------------------------------------------------------------

def iql_loss(net: SLMGACNetwork, target: SLMGACNetwork, batch: Batch,
             settings: SLMGACSettings, step: int = 0) -> LossOut:
    """IQL: expectile V, TD critics on V(s'), AWR actor on the logged action (module docstring)."""
    check_critic_only(net, "IQL")
    if not net.spec.value_head:
        raise ValueError("IQL reads V(s) from the value head: build the network with "
                         "value_head=True (method('IQL').configure does)")
    a, mask = _actions(batch), feasible(batch)
    out = forward_state(net, batch)  # logits, residual (C, B, 2), value (B,)
    with torch.no_grad():
        q_target = L.taken(forward_state(target, batch, actor=False).residual, a)
        q_target = q_target.min(dim=0).values  # (B,) min_j Q'_j(s, a)
        y = _target(batch, settings, net, forward_state(net, batch, True, actor=False).value)
    value = L.expectile_loss(q_target - out.value, settings.iql_expectile)
    critic = L.critic_loss(L.taken(out.residual, a), y, settings.td_huber_delta)
    actor = L.awr_actor_loss(out.logits, a, q_target - out.value, settings.iql_beta,
                             settings.iql_max_weight, mask)
    p = torch.softmax(out.logits.detach(), dim=-1)[:, 1] * mask
    terms = {"critic": critic, "value": value, "actor": actor}
    return sum(terms.values()), _metrics(terms, out.residual, y, p, mask)
