"""What every Table 1 baseline's loss reads from an SL-MGAC batch: the logged reward, which rows
have a decision, and the metrics they log (shared by :mod:`baselines` and
:mod:`offline_baselines`, which registers nothing itself)."""

from __future__ import annotations

import torch

from rliv_ray import schema as S
from rliv_ray.algorithms.sl_mgac import losses as L
from rliv_ray.algorithms.sl_mgac.network import SLMGACNetwork, SLMGACSpec
from rliv_ray.algorithms.sl_mgac.objective import SLMGACSettings

Batch = dict[str, torch.Tensor]


def logged_reward(batch: Batch, spec: SLMGACSpec, settings: SLMGACSettings) -> torch.Tensor:
    """r_t = scale * a_t (T^l_t - beta T^v_t / n_t) (B,), times clipped as SL-MGAC's r_t."""
    live = batch[S.LIVE_WATCH_S].float()
    video = batch[S.VIDEO_WATCH_S].float()
    n = batch[S.N_VIDEOS].float().clamp(min=1.0)
    if settings.clip_watch_time:
        live = spec.live_bins.clip(live)
        video = (spec.video_bins.clip(video / n) * n if spec.video_time == "per_video"
                 else spec.video_bins.clip(video))
    return L.watch_time_reward(batch[S.ACTION], live, video, n, settings.beta,
                               settings.reward_scale)


def feasible(batch: Batch, next_state: bool = False) -> torch.Tensor:
    """(B,) bool: a live stream is on air at s_t (or s_{t+1}), so a = 1 is possible there."""
    return batch[S.next_column(S.LIVE_ID) if next_state else S.LIVE_ID] >= 0


def check_critic_only(net: SLMGACNetwork, name: str) -> None:
    if net.spec.supervised_split:
        raise ValueError(f"{name} reads Q from the QRN head: build the network with "
                         f"supervised_split=False (method({name!r}).configure does)")


@torch.no_grad()
def q_metrics(loss: torch.Tensor, q: torch.Tensor, y: torch.Tensor,
              mask: torch.Tensor) -> dict[str, float]:
    """q (C, B, 2) online Q, y (B,) regression target; the greedy rate over ``mask`` rows."""
    q_min = q.min(dim=0).values
    greedy = (q_min[:, 1] > q_min[:, 0]).float()
    return {"loss/total": loss.item(), "loss/critic": loss.item(), "q/mean": q.mean().item(),
            "q/target_mean": y.mean().item(),
            "pi/greedy_inject_rate": L.masked_mean(greedy, mask.float()).item()}


@torch.no_grad()
def policy_metrics(p_inject: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """The policy's mean P(a = 1 | s) (B,) and its greedy inject rate over ``mask`` rows."""
    f = mask.float()
    return {"pi/inject_mean": L.masked_mean(p_inject, f).item(),
            "pi/greedy_inject_rate": L.masked_mean((p_inject > 0.5).float(), f).item()}
