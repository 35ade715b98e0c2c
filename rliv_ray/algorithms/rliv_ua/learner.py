"""RLIV-UA's learner: the loss of :mod:`objective` and the target updates, nothing else.

One Adam over the online network (embeddings, tower heads, gift assistance; Table 3 uses one
learning rate for critics and embeddings). Metrics are means over the iteration's updates.
After every update the target network moves by
Polyak averaging, p' <- tau * p + (1 - tau) * p', or, with ``target_update="hard"``, is copied
every ``target_update_interval`` updates (EQUATIONS 2.1(c)).
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.learner.torch.torch_learner import TorchLearner

from rliv_ray.algorithms.common.targets import polyak_update
from rliv_ray.algorithms.rliv_ua.module import HEADS, NEXT_HEADS
from rliv_ray.algorithms.rliv_ua.objective import loss_from_heads


class RLIVUALearner(TorchLearner):
    def build(self) -> None:
        super().build()
        self.updates = 0

    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        params = list(self._module[module_id].unwrapped().net.parameters())
        optimizer = torch.optim.Adam(params, foreach=True)
        self.register_optimizer(module_id=module_id, optimizer=optimizer, params=params,
                                lr_or_lr_schedule=config.lr)

    def compute_loss_for_module(self, *, module_id, config, batch: dict[str, Any],
                                fwd_out: dict[str, Any]) -> torch.Tensor:
        module = self._module[module_id].unwrapped()
        next_target = module.forward_target(batch)[NEXT_HEADS]
        loss, metrics = loss_from_heads(fwd_out[HEADS], fwd_out[NEXT_HEADS], next_target, batch,
                                        module.spec.towers, config.gamma)
        self.metrics.log_dict(metrics, key=module_id,
                              window=config.dataset_num_iters_per_learner or 1)
        return loss

    def _update(self, batch: dict[str, Any], **kwargs):
        """One gradient step, then the target update (RLlib's ``after_gradient_based_update``
        runs once per ``train()`` call, not once per update)."""
        result = super()._update(batch, **kwargs)
        self.updates += 1
        for module_id, module in self._module._rl_modules.items():
            config = self.config.get_config_for_module(module_id)
            if config.target_update == "polyak":
                tau = config.tau
            elif self.updates % config.target_update_interval == 0:
                tau = 1.0
            else:
                continue
            for main_net, target_net in module.unwrapped().get_target_network_pairs():
                polyak_update(main_net, target_net, tau)
        return result
