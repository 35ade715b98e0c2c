"""RLIV-UA as an RLlib ``Algorithm``: offline sampling and learner updates (as MARWIL does).

``restore_from_path`` skips the env-runner weight sync of ``Algorithm.restore_from_path``,
which crashes for env-less algorithms in Ray 2.60 (``../shared/RLLIB_NOTES.md``).
"""

from __future__ import annotations

from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.core.learner.training_data import TrainingData
from ray.rllib.utils.checkpoints import Checkpointable
from ray.rllib.utils.metrics import (
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    OFFLINE_SAMPLING_TIMER,
    TIMERS,
)

from rliv_ray.algorithms.rliv_ua.config import RLIVUAConfig

NO_MODULE_STATE = {"note": "the columnar pre-learner builds no module"}
"""Passed to ``OfflineData.sample`` so that it does not ship the module's weights (hundreds of
MB with large id tables) to the pre-learner, which never reads them."""


class RLIVUA(Algorithm):
    @classmethod
    def get_default_config(cls) -> RLIVUAConfig:
        return RLIVUAConfig()

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

    def restore_from_path(self, path, *args, **kwargs) -> None:
        Checkpointable.restore_from_path(self, path, *args, **kwargs)
