"""TD3 (Fujimoto et al. 2018) and TD3+BC (Fujimoto & Gu 2021) losses as pure functions.

Shapes: B is the batch, K the number of critics (2: clipped double Q). Actions are ranking
weights w, scalars in [w_min, w_max] of the action grid (EQUATIONS 2.1(f), (o)).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def smoothed_target_action(mu_next: torch.Tensor, noise: torch.Tensor, noise_clip: float,
                           low: float, high: float) -> torch.Tensor:
    """Target policy smoothing: w' = clip(mu'(s') + clip(noise, -c, c), w_min, w_max), (B,).

    ``noise`` (B,) is drawn by the caller (N(0, sigma^2)), so this stays deterministic."""
    return (mu_next + noise.clamp(-noise_clip, noise_clip)).clamp(low, high)


def td3_target(reward: torch.Tensor, next_q: torch.Tensor, gamma: float) -> torch.Tensor:
    """y = r + gamma * min_k Q'_k(s', w'), (B,) from ``next_q`` (K, B); no gradient."""
    with torch.no_grad():
        return reward + gamma * next_q.min(dim=0).values


def critic_loss(q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """sum_k MSE(Q_k(s, w_logged), y) over the K critics, ``q`` (K, B)."""
    return sum(F.mse_loss(q_k, target) for q_k in q)


def actor_loss(q_pi: torch.Tensor, mu: torch.Tensor, logged: torch.Tensor,
               bc_alpha: float | None) -> torch.Tensor:
    """The actor's loss from ``q_pi`` = Q_1(s, mu(s)) (B,), critic weights frozen:

        TD3     (bc_alpha None):  -mean_b Q_1(s, mu(s))
        TD3+BC  (bc_alpha = a):   -lambda * mean_b Q_1(s, mu(s)) + mean_b (mu(s) - w_logged)^2,
                                   lambda = a / mean_b |Q_1(s, mu(s))|  (no gradient)

    (Fujimoto & Gu 2021, Eq. 3-4, alpha = 2.5). ``mu`` and ``logged`` are (B,) weights.
    """
    if bc_alpha is None:
        return -q_pi.mean()
    lam = bc_alpha / q_pi.abs().mean().detach()
    return -lam * q_pi.mean() + F.mse_loss(mu, logged)
