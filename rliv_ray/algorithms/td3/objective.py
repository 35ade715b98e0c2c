"""One TD3 / TD3+BC objective on a batch of tensors (plain torch, tested without Ray).

The logged continuous weight is the grid weight of the logged action (the samples store the
action index; ``weights[action]`` is the log's ``action_weight``). Per update:

    critic:  sum_k MSE(Q_k(s, w), y),  y = r + gamma * min_k Q'_k(s', w'),
             w' = clip(mu'(s') + clip(eps, -c, c), w_min, w_max), eps ~ N(0, sigma^2)
    actor (every ``policy_delay`` updates):  actor_loss(Q_1(s, mu(s))) with the critic frozen
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import functional_call

from rliv_ray import schema as S
from rliv_ray.algorithms.td3.losses import (
    actor_loss,
    critic_loss,
    smoothed_target_action,
    td3_target,
)
from rliv_ray.algorithms.td3.network import TD3Network

OBS, NEXT_OBS, ACTIONS = "obs", "new_obs", "actions"


@dataclass(frozen=True)
class TD3Settings:
    gamma: float
    target_noise: float
    """sigma of the target smoothing noise, in weight units."""
    target_noise_clip: float
    """c, in weight units."""
    bc_alpha: float | None
    """None: TD3's actor; a number: TD3+BC's alpha."""


def encode(net: TD3Network, batch: dict[str, torch.Tensor], column: str) -> torch.Tensor:
    return net.encode(batch[S.USER_ID], batch[S.AUTHOR_ID], batch[column])


def frozen_q1(net: TD3Network, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Q_1(s, w) (B,) through detached critic weights: the actor's gradient reaches w only."""
    params = {name: p.detach() for name, p in net.critics.named_parameters()}
    x = torch.cat([h, w.unsqueeze(1)], dim=1)
    return functional_call(net.critics, params, (x,))[0, :, 0]


def td3_loss(net: TD3Network, target: TD3Network, batch: dict[str, torch.Tensor],
             settings: TD3Settings, *, update_actor: bool,
             noise: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Critic loss (+ the actor's when ``update_actor``) and metrics. ``noise`` (B,) is the
    unclipped smoothing noise; None draws N(0, target_noise^2)."""
    spec = net.spec
    grid = torch.tensor(spec.weights, dtype=torch.float32, device=batch[OBS].device)
    logged = grid[batch[ACTIONS].long()]  # (B,)
    reward = batch[S.reward_column(spec.towers[0])].float()
    h = encode(net, batch, OBS)
    q = net.q(h, logged)  # (K, B)
    with torch.no_grad():
        h_next = encode(target, batch, NEXT_OBS)
        if noise is None:
            noise = torch.randn_like(reward) * settings.target_noise
        w_next = smoothed_target_action(target.actor(h_next), noise,
                                        settings.target_noise_clip, spec.low, spec.high)
        y = td3_target(reward, target.q(h_next, w_next), settings.gamma)
    critic = critic_loss(q, y)
    names, values = ["loss/critic", "q/mean", "td/abs"], [critic, q.mean(),
                                                           (q - y).abs().mean()]
    loss = critic
    if update_actor:
        mu = net.actor(h)
        actor = actor_loss(frozen_q1(net, h.detach(), mu), mu, logged, settings.bc_alpha)
        loss = loss + actor
        names += ["loss/actor", "actor/mean_weight", "actor/abs_gap_to_logged"]
        values += [actor, mu.mean(), (mu - logged).abs().mean()]
    metrics = dict(zip(names, torch.stack([v.detach().float() for v in values]).tolist(),
                       strict=True))
    metrics["loss/total"] = float(loss.detach())
    return loss, metrics
