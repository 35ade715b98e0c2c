"""RLIV-UA's learner: the loss of :mod:`objective`; targets move after every update.

The optimisers come from :func:`~rliv_ray.algorithms.rliv_ua.optim.make_optimizers` (lazy Adam
on the id tables by default; Table 3 uses one learning rate for critics and embeddings). The
target network follows by Polyak averaging, p' <- tau * p + (1 - tau) * p', or, with
``target_update="hard"``, is copied every ``target_update_interval`` updates (EQUATIONS 2.1(c);
:class:`~rliv_ray.algorithms.common.offline.TargetUpdatingLearner`); under lazy Adam the id
tables' targets follow row-wise (:class:`~rliv_ray.algorithms.rliv_ua.optim.IdTableTargets`)
and are brought fully up to date before every checkpoint; with more than one learner they take
the full Polyak update. Metrics are means over the
iteration's updates.
"""

from __future__ import annotations

from typing import Any

import torch

from rliv_ray.algorithms.common.offline import TargetUpdatingLearner
from rliv_ray.algorithms.rliv_ua.module import HEADS, NEXT_HEADS, RLIVUAModule
from rliv_ray.algorithms.rliv_ua.objective import loss_from_heads
from rliv_ray.algorithms.rliv_ua.optim import IdTableTargets, make_optimizers


class RLIVUALearner(TargetUpdatingLearner):
    def build(self) -> None:
        self.id_targets: dict[str, IdTableTargets] = {}
        """Per module: the row-wise target update of its id tables (lazy Adam + Polyak)."""
        super().build()

    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        module = self._module[module_id].unwrapped()
        optimizers = make_optimizers(module.net, config.id_optimizer, config.lr)
        for name, (optimizer, params) in optimizers.items():
            self.register_optimizer(module_id=module_id, optimizer_name=name,
                                    optimizer=optimizer, params=params,
                                    lr_or_lr_schedule=config.lr)
        # With several (DDP) learners the optimiser moves the rows of every learner's batch,
        # not only this one's: the row-wise target update would miss some, so they Polyak all.
        if (config.id_optimizer == "lazy_adam" and config.target_update == "polyak"
                and config.num_learners <= 1):
            self.id_targets[module_id] = IdTableTargets(module.net, module.target, config.tau)

    def compute_loss_for_module(self, *, module_id, config, batch: dict[str, Any],
                                fwd_out: dict[str, Any]) -> torch.Tensor:
        module = self._module[module_id].unwrapped()
        if module_id in self.id_targets:
            self.id_targets[module_id].catch_up(batch)
        next_target = module.forward_target(batch)[NEXT_HEADS]
        loss, metrics = loss_from_heads(fwd_out[HEADS], fwd_out[NEXT_HEADS], next_target, batch,
                                        module.spec.towers, config.gamma, config.cql_alpha)
        self.metrics.log_dict(metrics, key=module_id,
                              window=config.dataset_num_iters_per_learner or 1)
        return loss

    def update_targets(self, module_id: str, module: RLIVUAModule, tau: float) -> None:
        if module_id in self.id_targets:
            self.id_targets[module_id].step()
        else:
            super().update_targets(module_id, module, tau)

    def get_state(self, *args, **kwargs):
        """Every target row brought up to date first: checkpoints hold per-update Polyak."""
        for targets in self.id_targets.values():
            targets.sync_all()
        return super().get_state(*args, **kwargs)

    def set_state(self, state) -> None:
        super().set_state(state)
        for targets in self.id_targets.values():  # saved up to date (get_state)
            targets.reset()
