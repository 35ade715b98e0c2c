"""RLIV-UA's losses as pure functions of tensors (rliv-ua.txt Eq. 9-15, EQUATIONS.md 2.1-2.2).

Shapes: B is the batch, A the action grid, K the number of Q networks per tower (2).
Every function is differentiable where the paper lets gradients flow and detaches where it
stops them; the RLlib learner only unpacks a batch, calls these and sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F


def clipped_double_q(q: torch.Tensor) -> torch.Tensor:
    """Q = min_k Q^k (Eq. 9): the elementwise minimum over the K critics, (K, ...) -> (...)."""
    return q.min(dim=0).values


def double_dqn_target(reward: torch.Tensor, next_q_online: torch.Tensor,
                      next_q_target: torch.Tensor, gamma: float,
                      not_done: torch.Tensor | None = None) -> torch.Tensor:
    """y = r + gamma * min_k Q'^k(s', a*) with a* = argmax_a min_k Q^k(s', a) (Eq. 11).

    ``next_q_online`` and ``next_q_target`` are (K, B, A): the online critics choose a*, the
    target critics evaluate it (Double DQN on clipped double Q, EQUATIONS 2.1(a)). The pair
    MDP is lifelong (2.1(k)), so ``not_done`` (B,) is optional. The result carries no gradient.
    """
    with torch.no_grad():
        best = clipped_double_q(next_q_online).argmax(dim=-1, keepdim=True)  # (B, 1)
        value = clipped_double_q(next_q_target).gather(-1, best).squeeze(-1)  # (B,)
        if not_done is not None:
            value = value * not_done
        return reward + gamma * value


@dataclass(frozen=True)
class TowerLoss:
    """One tower's loss terms (Eq. 14) and the Q values they were computed from."""

    reward: torch.Tensor  # MSE(R_hat(s, a), r)
    td: torch.Tensor  # sum_k MSE(Q^k(s, a), y)
    q: torch.Tensor  # (K, B) Q^k(s, a) as used in the TD term
    conservative: torch.Tensor | None = None  # cql_alpha * P (CQL baseline), None when off

    @property
    def total(self) -> torch.Tensor:
        total = self.reward + self.td
        return total if self.conservative is None else total + self.conservative


def reward_residual_loss(reward_hat: torch.Tensor, residual: torch.Tensor,
                         reward: torch.Tensor, target: torch.Tensor,
                         gamma: float) -> TowerLoss:
    """L_Q = MSE(R_hat, r) + sum_k MSE(sg(R_hat) + gamma * T_hat^k, y)      (Eq. 13-14).

    ``reward_hat`` (B,) is R_hat(s, a) of the logged action, ``residual`` (K, B) the T_hat^k
    of the K critics, ``reward`` (B,) the real label, ``target`` (B,) the TD target y. R_hat
    learns only from the reward (the TD term stops its gradient, EQUATIONS 2.1(b)).
    """
    q = reward_hat.detach().unsqueeze(0) + gamma * residual  # (K, B)
    td = sum(F.mse_loss(q_k, target) for q_k in q)
    return TowerLoss(F.mse_loss(reward_hat, reward), td, q)


def plain_q_loss(q: torch.Tensor, target: torch.Tensor) -> TowerLoss:
    """The w/o-SL ablation: sum_k MSE(Q^k(s, a), y) with no reward/residual split (Eq. 10)."""
    td = sum(F.mse_loss(q_k, target) for q_k in q)
    return TowerLoss(torch.zeros((), dtype=q.dtype), td, q)


def conservative_penalty(q_all: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """CQL(H) for discrete actions (Kumar et al. 2020, Eq. 4; EQUATIONS 2.1(o)):

        P = sum_k mean_b [ logsumexp_a Q^k(s_b, a) - Q^k(s_b, a_b) ]

    ``q_all`` (K, B, A) holds every critic's Q over the grid, ``actions`` (B,) the logged
    actions. Minimising P lowers the soft maximum over all actions and raises the logged
    action's Q, so actions the log never took are pushed down. Summed over critics like the
    TD term (one penalty per Q network); the learner adds ``cql_alpha * P``.
    """
    index = actions.view(1, -1, 1).expand(q_all.shape[0], -1, 1)  # (K, B, 1)
    logged = q_all.gather(-1, index).squeeze(-1)  # (K, B)
    return (torch.logsumexp(q_all, dim=-1) - logged).mean(dim=-1).sum()


def gift_assistance_loss(logit: torch.Tensor, gift: torch.Tensor) -> torch.Tensor:
    """L_A^g = BCE(sigmoid(f(h_u, h_a)), y_g) (Eq. 12), from logits for numerical safety."""
    return F.binary_cross_entropy_with_logits(logit, gift.to(logit.dtype))


def total_loss(towers: dict[str, TowerLoss],
               assistance: torch.Tensor | None = None) -> torch.Tensor:
    """L = sum_l L_Q^l + L_A^g (Eq. 15); ``assistance`` is None in the w/o-AL ablation."""
    loss = sum(t.total for t in towers.values())
    return loss if assistance is None else loss + assistance
