"""SL-MGAC's losses as pure functions of tensors (sl-mgac.txt Eq. 5, 7, 10-13, 15, 17).

Shapes: B is the batch, C the number of critics (2), A = 2 actions (0 = no live stream,
1 = inject), n the bins of one watch time. ``mask`` arguments are (B,) bool/float rows to keep
(rows where a term has no label, or where no live stream is on air so there is no decision);
a masked mean over zero rows is 0. The RLlib learner only unpacks a batch, calls these and sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

TARGET_MODES = ("max_min", "double_dqn", "logged_next", "vanilla")
ACTOR_LOSSES = ("awac_sampled", "soft_ce")
PLAIN_ACTOR_LOSSES = ("expected_q", "raw_q")
INJECT = 1


def huber(x: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
    """Huber_delta(x) = x^2 / 2 if |x| <= delta else delta * (|x| - delta / 2), elementwise."""
    a = x.abs()
    return torch.where(a <= delta, 0.5 * x * x, delta * (a - 0.5 * delta))


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of x (..., B) over the rows where ``mask`` (B,) is set, 0 when none is."""
    if mask is None:
        return x.mean(-1)
    m = mask.to(x.dtype)
    return (x * m).sum(-1) / m.sum().clamp(min=1.0)


def watch_time_reward(action: torch.Tensor, live_s: torch.Tensor, video_s: torch.Tensor,
                      n_videos: torch.Tensor, beta: float,
                      reward_scale: float = 1.0) -> torch.Tensor:
    """r = reward_scale * a * (T^l - beta * T^v / n)                          (Eq. 5, Eq. 10).

    With the real watch times it is the logged reward r_t; with the reconstructed T_hat^l,
    T_hat^v it is the RPN's R_psi(s, a). Broadcasts; n is clamped to >= 1 (a terminal row's
    next request may carry n = 0).
    """
    n = n_videos.to(live_s.dtype).clamp(min=1.0)
    return reward_scale * action.to(live_s.dtype) * (live_s - beta * video_s / n)


def with_reward_per_action(inject_reward: torch.Tensor) -> torch.Tensor:
    """(..., B) R(s, 1) -> (..., B, 2) [R(s, 0), R(s, 1)] with R(s, 0) = 0 (a multiplies)."""
    return torch.stack([torch.zeros_like(inject_reward), inject_reward], dim=-1)


def taken(values: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """(..., B, A) -> (..., B): the value of each row's action."""
    index = action.long().view(*([1] * (values.dim() - 2)), -1, 1)
    return values.gather(-1, index.expand(*values.shape[:-1], 1)).squeeze(-1)


def _mask_infeasible(q: torch.Tensor, feasible: torch.Tensor | None) -> torch.Tensor:
    """Q(s, 1) = -inf where no live stream is on air (a = 0 is always available)."""
    if feasible is None:
        return q
    blocked = torch.zeros_like(q, dtype=torch.bool)
    blocked[..., INJECT] = ~feasible.bool()
    return q.masked_fill(blocked, float("-inf"))


def next_state_value(next_q_target: torch.Tensor, mode: str = "max_min", *,
                     next_q_online: torch.Tensor | None = None,
                     next_action: torch.Tensor | None = None,
                     next_pi: torch.Tensor | None = None,
                     feasible: torch.Tensor | None = None) -> torch.Tensor:
    """V(s') of the TD target from the target critics' Q'_j(s', .), (C, B, A) -> (B,).

    ``max_min`` (Eq. 7): max_a' min_j Q'_j(s', a'). ``double_dqn``: the online critics'
    ``next_q_online`` (C, B, A) pick a* = argmax_a min_i Q_i(s', a), the targets evaluate
    min_j Q'_j(s', a*). ``logged_next``: min_j Q'_j(s', a_{t+1}) with ``next_action`` (B,).
    ``vanilla`` (Eq. 17): sum_a' pi(a'|s') min_j Q'_j(s', a') with ``next_pi`` (B, A).
    ``feasible`` (B,) bool: a live stream is on air at s' (else only a' = 0 is possible).
    The result carries no gradient.
    """
    with torch.no_grad():
        q = next_q_target.min(dim=0).values  # (B, A)
        if mode == "max_min":
            return _mask_infeasible(q, feasible).max(dim=-1).values
        if mode == "double_dqn":
            online = _mask_infeasible(next_q_online.min(dim=0).values, feasible)
            return taken(q, online.argmax(dim=-1))
        if mode == "logged_next":
            return taken(q, next_action)
        if mode == "vanilla":
            pi = next_pi
            if feasible is not None:  # all mass on a' = 0 where nothing is on air
                f = feasible.to(pi.dtype).unsqueeze(-1)
                pi = f * pi + (1 - f) * F.one_hot(torch.zeros_like(feasible, dtype=torch.long),
                                                  pi.shape[-1]).to(pi.dtype)
            return (pi * q).sum(-1)
        raise ValueError(f"target_mode must be one of {TARGET_MODES}, got {mode!r}")


def td_target(reward: torch.Tensor, next_value: torch.Tensor, gamma: float | torch.Tensor,
              done: torch.Tensor | None = None) -> torch.Tensor:
    """y = r + d * (1 - done) * V(s') (Eq. 7), d = ``gamma`` a float or a per-row (B,) discount;
    a terminal row's V(s') is ignored, even NaN."""
    with torch.no_grad():
        if done is not None:
            next_value = torch.where(done.bool(), torch.zeros_like(next_value), next_value)
        return reward + gamma * next_value


def critic_loss(q_taken: torch.Tensor, target: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
    """sum_i L_Q(phi_i) = sum_i E[Huber_delta(Q_i(s, a) - y)] (Eq. 7), q_taken (C, B)."""
    return huber(q_taken - target, delta).mean(-1).sum()


def rpn_proportion_loss(rho_hat: torch.Tensor, bins: torch.Tensor, rho: torch.Tensor,
                        mask: torch.Tensor | None = None, delta: float = 1.0) -> torch.Tensor:
    """One watch time's term of Eq. 11, summed over critics: sum_i E[Huber(<e, rho_hat_i> - rho)].

    ``rho_hat`` (C, B, n), ``bins`` the one-hot e (B, n) of the observed time, ``rho`` (B,) its
    proportion. ``mask`` (B,) drops rows whose bin has no width (zero bin) or no observation.
    """
    picked = (rho_hat * bins.to(rho_hat.dtype)).sum(-1)  # (C, B)
    return masked_mean(huber(picked - rho, delta), mask).sum()


def bin_classification_loss(logits: torch.Tensor, index: torch.Tensor,
                            mask: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of predicted bins (C, B, n) against the observed bin (B,), summed over C.

    Only with ``bin_source="predicted"`` (EQUATIONS 1.12's bin-probability head).
    """
    c, b, n = logits.shape
    ce = F.cross_entropy(logits.reshape(c * b, n), index.long().repeat(c),
                         reduction="none").view(c, b)
    return masked_mean(ce, mask).sum()


def direct_time_loss(scaled_hat: torch.Tensor, seconds: torch.Tensor,
                     mask: torch.Tensor | None = None, delta: float = 1.0,
                     scale: float = 1.0) -> torch.Tensor:
    """w/o DD: sum_i E[Huber_delta(u_i - scale * T)], the head's u_i (C, B) regressing the
    scaled watch time T (B,) (delta in the same, scaled, units)."""
    return masked_mean(huber(scaled_hat - scale * seconds, delta), mask).sum()


def normalised_q(q: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Q_tilde(s, a) = exp(Q(s, a) / T) / sum_a' exp(Q(s, a') / T) (Eq. 13), (B, A)."""
    return torch.softmax(q / temperature, dim=-1)


def soft_ce_actor_loss(log_pi: torch.Tensor, weights: torch.Tensor,
                       mask: torch.Tensor | None = None) -> torch.Tensor:
    """L_pi = -E_s sum_a w(s, a) log pi(a|s): cross-entropy to the critic's Q_tilde (Eq. 13)."""
    return -masked_mean((weights * log_pi).sum(-1), mask)


def awac_actor_loss(log_pi: torch.Tensor, weights: torch.Tensor, action: torch.Tensor,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
    """L_pi = -E_(s,a)~D [w(s, a) log pi(a|s)] at the logged action (Eq. 13, AWAC reading)."""
    return -masked_mean(taken(weights * log_pi, action), mask)


def expected_q_actor_loss(pi: torch.Tensor, q: torch.Tensor,
                          mask: torch.Tensor | None = None) -> torch.Tensor:
    """L_pi = -E_s sum_a pi(a|s) Q(s, a) (Eq. 12, the w/o Q-norm loss)."""
    return -masked_mean((pi * q).sum(-1), mask)


def actor_loss(logits: torch.Tensor, q: torch.Tensor, action: torch.Tensor, *,
               form: str = "awac_sampled", q_norm: bool = True, temperature: float = 1.0,
               plain: str = "expected_q", mask: torch.Tensor | None = None) -> torch.Tensor:
    """The actor loss of the chosen reading, logits and Q = min_i Q_i both (B, A).

    q_norm (Eq. 13): weights Q_tilde, ``form`` awac_sampled or soft_ce. Without Q-norm:
    ``plain="expected_q"`` is Eq. 12, ``plain="raw_q"`` is Eq. 13's ``form`` with raw Q.
    Whether Q carries gradient (SL-MGAC) or not (-sep) is the caller's choice.
    """
    if form not in ACTOR_LOSSES:
        raise ValueError(f"actor_loss must be one of {ACTOR_LOSSES}, got {form!r}")
    log_pi = torch.log_softmax(logits, dim=-1)
    if q_norm:
        weights = normalised_q(q, temperature)
    elif plain == "expected_q":
        return expected_q_actor_loss(log_pi.exp(), q, mask)
    elif plain == "raw_q":
        weights = q
    else:
        raise ValueError(f"plain_actor_loss must be one of {PLAIN_ACTOR_LOSSES}, got {plain!r}")
    if form == "soft_ce":
        return soft_ce_actor_loss(log_pi, weights, mask)
    return awac_actor_loss(log_pi, weights, action, mask)


# --- Table 1's offline-RL baselines (offline_baselines.py) -----------------------------------

def gumbel_noise(like: torch.Tensor) -> torch.Tensor:
    """g = -log E, E ~ Exp(1): standard Gumbel noise of ``like``'s shape (torch's global RNG)."""
    return -torch.empty_like(like).exponential_().log()


def straight_through_gumbel(logits: torch.Tensor, noise: torch.Tensor, temperature: float = 1.0,
                            feasible: torch.Tensor | None = None) -> torch.Tensor:
    """Straight-through Gumbel-softmax (Jang et al. 2017), (B, A) -> (B, A):

        forward  a = one_hot(argmax_a (l_a + g_a)),  backward d a / d l = d y / d l,
        y = softmax((l + g) / T).

    a = 0 (one_hot(0)) where not ``feasible``: a = 1 is never drawn without a live stream.
    """
    soft = torch.softmax((_mask_infeasible(logits, feasible) + noise) / temperature, dim=-1)
    hard = F.one_hot(soft.argmax(dim=-1), soft.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft


def soft_state_value(q: torch.Tensor, logits: torch.Tensor, alpha: float,
                     feasible: torch.Tensor | None = None) -> torch.Tensor:
    """V(s) = sum_a pi(a|s) (Q(s, a) - alpha log pi(a|s)) (B,), pi = softmax(logits) with all
    mass on a = 0 where not ``feasible`` (SAC-discrete's soft value, Christodoulou 2019)."""
    pi = torch.softmax(_mask_infeasible(logits, feasible), dim=-1)
    return (pi * q).sum(-1) - alpha * torch.special.xlogy(pi, pi).sum(-1)


def sac_actor_loss(logits: torch.Tensor, q: torch.Tensor, alpha: float,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """J_pi = E_s sum_a pi(a|s) (alpha log pi(a|s) - Q(s, a)) (Christodoulou 2019);
    pass Q detached (the critic does not learn from it)."""
    log_pi = torch.log_softmax(logits, dim=-1)
    return masked_mean((log_pi.exp() * (alpha * log_pi - q)).sum(-1), mask)


def bcq_allowed(logits: torch.Tensor, threshold: float,
                feasible: torch.Tensor | None = None) -> torch.Tensor:
    """(B, A) bool: G(a|s) / max_a' G(a'|s) > threshold, G = softmax(logits) (discrete BCQ,
    Fujimoto et al. 2019, "Benchmarking batch deep RL algorithms"); where not ``feasible``
    only a = 0 is allowed."""
    log_g = torch.log_softmax(logits, dim=-1)
    allowed = (log_g - log_g.max(dim=-1, keepdim=True).values).exp() > threshold
    if feasible is not None:
        f = feasible.bool()
        allowed = torch.stack([allowed[..., 0] | ~f, allowed[..., INJECT] & f], dim=-1)
    return allowed


def greedy_allowed(q: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """argmax over the allowed actions of Q (B, A) -> (B,) (BCQ's argmax)."""
    return q.masked_fill(~allowed, float("-inf")).argmax(dim=-1)


def expectile_loss(u: torch.Tensor, tau: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """L_2^tau = E[|tau - 1(u < 0)| u^2], u = Q(s, a) - V(s) (IQL, Kostrikov et al. 2022, Eq. 5)."""
    return masked_mean(torch.where(u < 0, 1.0 - tau, tau) * u * u, mask)


def awr_actor_loss(logits: torch.Tensor, action: torch.Tensor, advantage: torch.Tensor,
                   beta: float, max_weight: float,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """L_pi = -E[min(exp(beta A(s, a)), max_weight) log pi(a|s)] at the logged action, the
    advantage (B,) detached (IQL Eq. 7, advantage-weighted regression)."""
    weight = torch.exp(beta * advantage.detach()).clamp(max=max_weight)
    return -masked_mean(weight * taken(torch.log_softmax(logits, dim=-1), action), mask)


@dataclass(frozen=True)
class SLMGACLoss:
    """The terms of Eq. 15: L = L_Q(phi_1) + L_Q(phi_2) + L_RPN + L_pi."""

    critic: torch.Tensor  # sum over critics of the Huber TD loss
    rpn: torch.Tensor  # Eq. 11 (plus the bin cross-entropy or w/o DD's time loss), 0 w/o SL
    actor: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.critic + self.rpn + self.actor
