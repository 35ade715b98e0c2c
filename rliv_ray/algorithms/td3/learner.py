"""TD3's learner: critic Adam at ``lr`` on the encoder and critics, actor Adam at ``actor_lr``;
the actor's loss and the Polyak target update come every ``policy_delay`` updates (TD3's
delayed policy updates). On other updates the actor has no gradient, so its Adam skips it."""

from __future__ import annotations

from typing import Any

import torch

from rliv_ray.algorithms.common.offline import TargetUpdatingLearner
from rliv_ray.algorithms.td3.objective import td3_loss


class TD3Learner(TargetUpdatingLearner):
    def build(self) -> None:
        super().build()
        self.loss_settings = self.config.loss_settings()

    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        net = self._module[module_id].unwrapped().net
        for name, params, lr in (("critic", net.critic_parameters(), config.lr),
                                 ("actor", net.actor_parameters(), config.actor_lr)):
            self.register_optimizer(module_id=module_id, optimizer_name=name,
                                    optimizer=torch.optim.Adam(params, lr=lr), params=params,
                                    lr_or_lr_schedule=lr)

    def actor_turn(self, config) -> bool:
        """Whether the update about to run (number ``updates + 1``) moves the actor."""
        return (self.updates + 1) % config.policy_delay == 0

    def compute_loss_for_module(self, *, module_id, config, batch: dict[str, Any],
                                fwd_out: dict[str, Any]) -> torch.Tensor:
        module = self._module[module_id].unwrapped()
        loss, metrics = td3_loss(module.net, module.target, batch, self.loss_settings,
                                 update_actor=self.actor_turn(config))
        self.log_loss_terms(module_id, metrics, config)
        return loss

    def update_targets(self, module_id: str, module, tau: float) -> None:
        """Only after an actor update (``updates`` already counts the one just done)."""
        config = self.config.get_config_for_module(module_id)
        if self.updates % config.policy_delay == 0:
            super().update_targets(module_id, module, tau)
