"""RLIV-UA's learner: the loss of :mod:`objective`; targets move after every update.

One Adam over the online network (embeddings, tower heads, gift assistance; Table 3 uses one
learning rate for critics and embeddings). Metrics are means over the iteration's updates.
The target network follows by Polyak averaging, p' <- tau * p + (1 - tau) * p', or, with
``target_update="hard"``, is copied every ``target_update_interval`` updates (EQUATIONS 2.1(c);
:class:`~rliv_ray.algorithms.common.offline.TargetUpdatingLearner`).
"""

from __future__ import annotations

from typing import Any

import torch

from rliv_ray.algorithms.common.offline import TargetUpdatingLearner
from rliv_ray.algorithms.rliv_ua.module import HEADS, NEXT_HEADS
from rliv_ray.algorithms.rliv_ua.objective import loss_from_heads


class RLIVUALearner(TargetUpdatingLearner):
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
