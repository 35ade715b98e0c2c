"""What our offline RLlib algorithms share: the training step and target updates.

* :class:`OnlineAndTarget` gives an RLModule its target network.
* :class:`OfflineAlgorithm` samples the offline data and updates the learners, as MARWIL does.
  It is checkpointed and restored in our own format
  (:mod:`rliv_ray.algorithms.common.checkpoint`), never through RLlib's pickles (whose
  ``restore_from_path`` also crashes for env-less algorithms in Ray 2.60).
* :class:`TargetUpdatingLearner` moves the target networks after *every* gradient update
  (RLlib's ``after_gradient_based_update`` runs once per ``train()`` call): Polyak with
  ``config.tau``, or a hard copy every ``config.target_update_interval`` updates.
"""

from __future__ import annotations

from typing import Any

from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.core.learner.training_data import TrainingData
from ray.rllib.core.learner.utils import make_target_network
from ray.rllib.core.rl_module.apis import TargetNetworkAPI
from ray.rllib.utils.metrics import (
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    OFFLINE_SAMPLING_TIMER,
    TIMERS,
)

from rliv_ray.algorithms.common.memory import reuse_freed_memory
from rliv_ray.algorithms.common.targets import polyak_update

TARGET_UPDATES = "target_updates"
"""Learner-state key of the update counter behind the hard target copies."""
NO_MODULE_STATE = {"note": "the columnar pre-learner builds no module"}
"""Passed to ``OfflineData.sample`` so that it does not ship the module's weights (hundreds of
MB with large id tables) to the pre-learner, which never reads them."""


class ValidatedConfig(AlgorithmConfig):
    """An offline config whose ``validate`` also reports its own ``field_errors()``."""

    def field_errors(self) -> list[str]:
        return []

    def validate(self) -> None:
        super().validate()
        errors = self.field_errors()
        if errors:
            self._value_error("; ".join(errors))


class OnlineAndTarget(TargetNetworkAPI):
    """RLModule part: the online network ``self.net`` and its target ``self.target``, made in
    ``setup`` unless inference-only (so restored and pre-learner copies have it too)."""

    def make_target_networks(self) -> None:
        self.target = make_target_network(self.net)

    def get_target_network_pairs(self):
        return [(self.net, self.target)]


class OfflineAlgorithm(Algorithm):
    def training_step(self) -> None:
        """``dataset_num_iters_per_learner`` updates on batches from the offline reader."""
        config = self.config
        with self.metrics.log_time((TIMERS, OFFLINE_SAMPLING_TIMER)):
            iterators = self.offline_data.sample(
                num_samples=config.train_batch_size_per_learner,
                num_shards=config.num_learners, return_iterator=True,
                module_state=NO_MODULE_STATE)
            rows = config.train_batch_size_per_learner * max(1, config.num_learners)
            self.metrics.log_value(NUM_ENV_STEPS_SAMPLED_LIFETIME, rows, reduce="lifetime_sum")
        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            results = self.learner_group.update(
                training_data=TrainingData(data_iterators=iterators),
                minibatch_size=config.train_batch_size_per_learner,
                num_iters=config.dataset_num_iters_per_learner,
                timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME:
                           self.metrics.peek(NUM_ENV_STEPS_SAMPLED_LIFETIME)},
                **self.offline_data.iter_batches_kwargs)
            self.metrics.aggregate(results, key=LEARNER_RESULTS)


class TargetUpdatingLearner(TorchLearner):
    """A TorchLearner whose modules implement ``get_target_network_pairs``.

    ``updates`` counts gradient updates for the hard copies; it is part of the learner's state,
    so a resumed run copies at the same updates as one uninterrupted run.
    """

    def build(self) -> None:
        reuse_freed_memory()  # every update frees and reallocates the same activations
        super().build()
        self.updates = 0

    def get_state(self, *args, **kwargs):
        return {**super().get_state(*args, **kwargs), TARGET_UPDATES: self.updates}

    def set_state(self, state) -> None:
        super().set_state(state)
        if TARGET_UPDATES in state:
            self.updates = int(state[TARGET_UPDATES])

    def _update(self, batch: dict[str, Any], **kwargs):
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
            self.update_targets(module_id, module.unwrapped(), tau)
        return result

    def update_targets(self, module_id: str, module: OnlineAndTarget, tau: float) -> None:
        """Move the module's targets towards its online networks by ``tau`` (1 copies)."""
        for main_net, target_net in module.get_target_network_pairs():
            polyak_update(main_net, target_net, tau)
