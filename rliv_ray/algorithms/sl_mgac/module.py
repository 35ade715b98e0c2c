"""SL-MGAC's RLModule: a thin RLlib shell around :class:`SLMGACNetwork` and its target copy
(made in ``setup``, so restored and pre-learner copies have it too)."""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.torch import TorchRLModule

from rliv_ray.algorithms.common.offline import OnlineAndTarget
from rliv_ray.algorithms.sl_mgac.baselines import BASELINES, method
from rliv_ray.algorithms.sl_mgac.config import spec_from_fields
from rliv_ray.algorithms.sl_mgac.network import SLMGACNetwork
from rliv_ray.algorithms.sl_mgac.objective import forward_state

OUT, NEXT_ONLINE, NEXT_TARGET = "out", "next_online", "next_target"
NEEDS_NEXT_ONLINE = {"vanilla": {"actor": True, "critics": False},
                     "double_dqn": {"actor": False, "critics": True}}
"""Target modes that read the online network on s_{t+1}, and which of its parts."""


def inject_probability_of(name: str):
    """P(a = 1 | s) of a method of Tables 1-2: the actor's, or sigmoid(Q(s,1) - Q(s,0))."""
    return method(name).probability


class SLMGACModule(OnlineAndTarget, TorchRLModule):
    def setup(self) -> None:
        self.spec = spec_from_fields(self.model_config)
        self.net = SLMGACNetwork(self.spec)
        if not self.inference_only:
            self.make_target_networks()

    def forward_target(self, batch: dict[str, Any]) -> dict[str, Any]:
        with torch.no_grad():
            return {NEXT_TARGET: forward_state(self.target, batch, True, actor=False)}

    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        """The online network on s_t (with gradients) and, if the target needs it, on
        s_{t+1} (without), so that multi-learner (DDP) training sees every online forward."""
        if self.model_config["method"] in BASELINES:  # their losses run the network themselves
            return {}
        target_mode = self.model_config["target_mode"]
        out = {OUT: forward_state(self.net, batch), NEXT_ONLINE: None}
        if target_mode in NEEDS_NEXT_ONLINE:
            with torch.no_grad():
                out[NEXT_ONLINE] = forward_state(self.net, batch, True,
                                                 **NEEDS_NEXT_ONLINE[target_mode])
        return out

    def _forward_inference(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        """The greedy action and P(inject) (the actor's, or a Q baseline's); never injects
        without a live stream on air."""
        p = inject_probability_of(self.model_config["method"])(self.net, batch)
        return {Columns.ACTIONS: (p > 0.5).long(), "inject_probability": p}

    def _forward_exploration(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return self._forward_inference(batch)
