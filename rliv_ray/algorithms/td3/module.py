"""TD3's RLModule: a thin RLlib shell around :class:`TD3Network` and its target copy (made in
``setup``, as RLIV-UA's, so restored and pre-learner copies have it)."""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.torch import TorchRLModule

from rliv_ray.algorithms.common.offline import OnlineAndTarget
from rliv_ray.algorithms.td3.network import TD3Network, TD3Spec
from rliv_ray.algorithms.td3.objective import OBS, encode


def td3_spec(state_dim: int, model_config: dict[str, Any]) -> TD3Spec:
    c = model_config
    return TD3Spec(state_dim=state_dim, gap_index=c["gap_index"],
                   weights=tuple(c["action_weights"]), towers=tuple(c["towers"]),
                   n_critics=c["n_critics"], hidden=tuple(c["hidden"]),
                   actor_hidden=tuple(c["actor_hidden"]), embedding_dim=c["embedding_dim"],
                   id_buckets=c["id_buckets"], max_gap_bucket=c["max_gap_bucket"])


class TD3Module(OnlineAndTarget, TorchRLModule):
    def setup(self) -> None:
        self.spec = td3_spec(self.observation_space.shape[0], self.model_config)
        self.net = TD3Network(self.spec)
        if not self.inference_only:
            self.make_target_networks()

    def forward_target(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Nothing: the objective runs the target networks itself (TargetNetworkAPI needs it)."""
        return {}

    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        """Nothing: the learner's objective runs the networks (one learner, see the config)."""
        return {}

    def _forward_inference(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        """The grid weight nearest mu(s) and mu(s) itself."""
        with torch.no_grad():
            mu = self.net.actor(encode(self.net, batch, OBS))  # (B,)
        grid = torch.tensor(self.spec.weights, dtype=mu.dtype, device=mu.device)
        nearest = (grid.unsqueeze(0) - mu.unsqueeze(1)).abs().argmin(dim=1)
        return {Columns.ACTIONS: nearest, "weight": mu}

    def _forward_exploration(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return self._forward_inference(batch)
