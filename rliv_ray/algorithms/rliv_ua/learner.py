"""RLIV-UA's learner: the loss of :mod:`objective`; targets move after every update.

The optimisers come from :func:`~rliv_ray.algorithms.rliv_ua.optim.make_optimizers` (lazy Adam
on the id tables by default; Table 3 uses one learning rate for critics and embeddings). The
target network follows by Polyak averaging, p' <- tau * p + (1 - tau) * p', or, with
``target_update="hard"``, is copied every ``target_update_interval`` updates (EQUATIONS 2.1(c);
:class:`~rliv_ray.algorithms.common.offline.TargetUpdatingLearner`); under lazy Adam the id
tables' targets follow row-wise (:class:`~rliv_ray.algorithms.rliv_ua.optim.IdTableTargets`):
a checkpoint's module has them brought fully up to date, and its state the lazy rows as they
were, which a resume restores (a resumed run is the uninterrupted one to the bit); with more
than one learner they take the full Polyak update. Metrics are means over the iteration's
updates.
"""

from __future__ import annotations

from typing import Any

import torch

from rliv_ray.algorithms.common.offline import TargetUpdatingLearner
from rliv_ray.algorithms.rliv_ua.module import HEADS, NEXT_HEADS, RLIVUAModule
from rliv_ray.algorithms.rliv_ua.objective import loss_from_heads
from rliv_ray.algorithms.rliv_ua.optim import IdTableTargets, make_optimizers

LAZY_TARGETS = "lazy_id_targets"
"""Learner-state key: per module, each id target table as it is and the steps its rows owe."""


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
        self.log_loss_terms(module_id, metrics, config)
        return loss

    def update_targets(self, module_id: str, module: RLIVUAModule, tau: float) -> None:
        if module_id in self.id_targets:
            self.id_targets[module_id].step()
        else:
            super().update_targets(module_id, module, tau)

    def get_state(self, *args, **kwargs):
        """The module with every target row brought up to date (checkpoints and exports hold
        per-update Polyak), and the lazy state itself under ``LAZY_TARGETS``, so that a
        resumed run goes on exactly as the uninterrupted one. Taking the state leaves the
        running learner as it was: checkpoints do not change what it learns."""
        lazy = {module_id: targets.snapshot() for module_id, targets in self.id_targets.items()}
        for targets in self.id_targets.values():
            targets.sync_all()
        try:
            state = super().get_state(*args, **kwargs)
        finally:
            for module_id, targets in self.id_targets.items():
                targets.restore(lazy[module_id])
        if lazy:
            state[LAZY_TARGETS] = lazy
        return state

    def set_state(self, state) -> None:
        super().set_state(state)
        lazy = state.get(LAZY_TARGETS, {})
        for module_id, targets in self.id_targets.items():
            if module_id in lazy:
                targets.restore(lazy[module_id])
            else:  # saved up to date, without the lazy state
                targets.reset()
