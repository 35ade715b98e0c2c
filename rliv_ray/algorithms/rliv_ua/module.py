"""RLIV-UA's RLModule: a thin RLlib shell around :class:`RLIVUANetwork` and its target copy.

The target network is made in ``setup`` (not in the learner's ``build``, as RLlib's DQN does),
so every copy of the module, including the pre-learner's and a restored checkpoint's, has it
(``../shared/RLLIB_NOTES.md``).
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.torch import TorchRLModule

from rliv_ray.algorithms.common.offline import OnlineAndTarget
from rliv_ray.algorithms.rliv_ua.losses import clipped_double_q
from rliv_ray.algorithms.rliv_ua.network import NetworkSpec, RLIVUANetwork
from rliv_ray.algorithms.rliv_ua.objective import NEXT_OBS, forward_heads

HEADS, NEXT_HEADS = "heads", "next_heads"


def network_spec(state_dim: int, n_actions: int, model_config: dict[str, Any]) -> NetworkSpec:
    """The NetworkSpec for the module's spaces and the config's network fields."""
    fields = {k: v for k, v in model_config.items() if k in NetworkSpec.__dataclass_fields__}
    for name in ("towers", "hidden"):
        if name in fields:
            fields[name] = tuple(fields[name])
    return NetworkSpec(state_dim=state_dim, n_actions=n_actions, **fields)


class RLIVUAModule(OnlineAndTarget, TorchRLModule):
    """Online network ``net`` and, unless inference-only, its target ``target``."""

    def setup(self) -> None:
        self.spec = network_spec(self.observation_space.shape[0], self.action_space.n,
                                 self.model_config)
        self.net = RLIVUANetwork(self.spec)
        if not self.inference_only:
            self.make_target_networks()

    def forward_target(self, batch: dict[str, Any]) -> dict[str, Any]:
        with torch.no_grad():
            return {NEXT_HEADS: forward_heads(self.target, batch, NEXT_OBS)}

    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        heads = forward_heads(self.net, batch)
        with torch.no_grad():
            next_heads = forward_heads(self.net, batch, NEXT_OBS)
        return {HEADS: heads, NEXT_HEADS: next_heads}

    def _forward_inference(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        """Greedy action of one tower: argmax_a min_k Q^k (serving without exploration)."""
        tower = self.spec.towers.index(self.model_config["serving_tower"])
        q = clipped_double_q(forward_heads(self.net, batch).q(self.model_config["gamma"])[tower])
        return {Columns.ACTIONS: q.argmax(dim=-1), "q": q}

    def _forward_exploration(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return self._forward_inference(batch)
