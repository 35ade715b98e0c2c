"""One RLIV-UA training objective on a batch of tensors (Algorithm 1, step 2; Eq. 9-15).

:func:`rliv_ua_loss` is what the RLlib learner's ``compute_loss_for_module`` will call: it reads
the columns the offline reader produces, runs the online and target networks, and sums the
per-tower losses and the gift assistance. Plain torch, so it is tested (and benchmarked as the
bare-torch baseline) without Ray.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from rliv_ray import schema as S
from rliv_ray.algorithms.rliv_ua.losses import (
    TowerLoss,
    conservative_penalty,
    double_dqn_target,
    gift_assistance_loss,
    plain_q_loss,
    reward_residual_loss,
    total_loss,
)
from rliv_ray.algorithms.rliv_ua.network import Heads, RLIVUANetwork

OBS, NEXT_OBS, ACTIONS = "obs", "new_obs", "actions"


def _taken(values: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """(..., B, A) -> (..., B): the value of the logged action."""
    index = actions.view(*([1] * (values.dim() - 2)), -1, 1).expand(*values.shape[:-1], 1)
    return values.gather(-1, index).squeeze(-1)


def forward_heads(net: RLIVUANetwork, batch: dict[str, torch.Tensor],
                  column: str = OBS) -> Heads:
    """The network's heads on the batch's states (``obs``) or next states (``new_obs``)."""
    return net(batch[S.USER_ID], batch[S.AUTHOR_ID], batch[column])


def rliv_ua_loss(net: RLIVUANetwork, target: RLIVUANetwork, batch: dict[str, torch.Tensor],
                 gamma: float, cql_alpha: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss L (Eq. 15) and its metrics, running both networks on the batch."""
    out = forward_heads(net, batch)
    with torch.no_grad():
        next_online = forward_heads(net, batch, NEXT_OBS)
        next_target = forward_heads(target, batch, NEXT_OBS)
    return loss_from_heads(out, next_online, next_target, batch, net.spec.towers, gamma,
                           cql_alpha)


def td_q_values(out: Heads, gamma: float) -> torch.Tensor:
    """Q^k over the whole grid as the TD term sees it, (T, K, B, A): sg(R_hat) + gamma * T_hat
    (R_hat learns from the reward alone, Eq. 14), or the heads themselves w/o SL."""
    if out.reward_hat is None:
        return out.residual
    return out.reward_hat.detach() + gamma * out.residual


def loss_from_heads(out: Heads, next_online: Heads, next_target: Heads,
                    batch: dict[str, torch.Tensor], labels: tuple[str, ...],
                    gamma: float, cql_alpha: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss L (Eq. 15) and its metrics: per tower the TD and reward losses, the mean and
    spread of Q(s, a) and the mean absolute TD error |Q - y|, plus the assistance loss.

    ``out`` are the online heads on s (with gradients), ``next_online`` and ``next_target``
    the online and target heads on s' (no gradients): the learner's forward pass computes the
    first two, so that multi-learner (DDP) training sees every online forward. ``cql_alpha``
    > 0 adds the CQL baseline's ``cql_alpha * conservative_penalty`` to every tower, on the Q
    values of :func:`td_q_values`.
    """
    next_q_online, next_q_target = next_online.q(gamma), next_target.q(gamma)  # (T, K, B, A)
    actions = batch[ACTIONS].long()
    towers: dict[str, TowerLoss] = {}
    targets: dict[str, torch.Tensor] = {}
    for t, label in enumerate(labels):
        reward = batch[S.reward_column(label)].float()
        y = targets[label] = double_dqn_target(reward, next_q_online[t], next_q_target[t], gamma)
        residual = _taken(out.residual[t], actions)  # (K, B)
        if out.reward_hat is None:
            towers[label] = plain_q_loss(residual, y)
        elif out.reward_hat.shape[1] == 1:  # one R_hat shared by the tower's critics
            towers[label] = reward_residual_loss(_taken(out.reward_hat[t, 0], actions),
                                                 residual, reward, y, gamma)
        else:  # one R_hat per critic: phi^k = {eta^k, xi^k}
            parts = [reward_residual_loss(_taken(out.reward_hat[t, k], actions),
                                          residual[k:k + 1], reward, y, gamma)
                     for k in range(residual.shape[0])]
            towers[label] = TowerLoss(sum(p.reward for p in parts), sum(p.td for p in parts),
                                      torch.cat([p.q for p in parts]))
        if cql_alpha > 0:
            penalty = cql_alpha * conservative_penalty(td_q_values(out, gamma)[t], actions)
            towers[label] = replace(towers[label], conservative=penalty)
    assist = None
    if out.gift_logit is not None:
        assist = gift_assistance_loss(out.gift_logit, batch[S.reward_column(S.GIFT)])
    loss = total_loss(towers, assist)
    names, values = ["loss/total"], [loss]
    for label, tower in towers.items():
        q = tower.q.detach()
        names += [f"loss/td/{label}", f"loss/reward/{label}", f"q/mean/{label}",
                  f"q/std/{label}", f"td/abs/{label}"]
        values += [tower.td, tower.reward, q.mean(), q.std(), (q - targets[label]).abs().mean()]
        if tower.conservative is not None:
            names.append(f"loss/cql/{label}")
            values.append(tower.conservative)
    if assist is not None:
        names.append("loss/assist")
        values.append(assist)
    metrics = dict(zip(names, torch.stack([v.detach().float() for v in values]).tolist(),
                       strict=True))
    return loss, metrics
