"""What our offline RLlib algorithms share: the training step and target updates.

* :class:`OnlineAndTarget` gives an RLModule its target network.
* :class:`OfflineAlgorithm` samples the offline data and updates the learners, as MARWIL does.
  It is checkpointed and restored in our own format
  (:mod:`rliv_ray.algorithms.common.checkpoint`), never through RLlib's pickles (whose
  ``restore_from_path`` also crashes for env-less algorithms in Ray 2.60).
* :class:`TargetUpdatingLearner` moves the target networks after *every* gradient update
  (RLlib's ``after_gradient_based_update`` runs once per ``train()`` call): Polyak with
  ``config.tau``, or a hard copy every ``config.target_update_interval`` updates. It stops
  training at the first update with a NaN or infinite loss term
  (:class:`~rliv_ray.train_loop.LossNotFinite`), and a resumed learner first moves its reader
  past the batches the checkpointed updates consumed (:meth:`resume_reader`), so that it goes
  on with the batch the uninterrupted run would have read next.

The reader (RLlib's ``OfflineData``) reads the shards in file order (the driver sets Ray Data's
``preserve_order``) without shuffling: every epoch is the same sequence of batches, the
learner's ``MiniBatchRayDataIterator`` carries on through it across ``train()`` calls, and the
k-th update reads batch ``k mod B`` of an epoch of ``B`` batches. So a learner in the driver
(``num_learners=0``) keeps the first epoch's batches, up to ``batch_cache_mb``, and replays them
in every later epoch (:class:`EpochReplay`) instead of reading them again through Ray Data.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
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

from rliv_ray.algorithms.common.driver import BATCH_CACHE_MB
from rliv_ray.algorithms.common.memory import reuse_freed_memory
from rliv_ray.algorithms.common.targets import polyak_update
from rliv_ray.train_loop import check_loss_terms

TARGET_UPDATES = "target_updates"
"""Learner-state key of the update counter behind the hard target copies."""
NO_MODULE_STATE = {"note": "the columnar pre-learner builds no module"}
"""Passed to ``OfflineData.sample`` so that it does not ship the module's weights (hundreds of
MB with large id tables) to the pre-learner, which never reads them."""


class ValidatedConfig(AlgorithmConfig):
    """An offline config whose ``validate`` also reports its own ``field_errors()``, and
    ``batch_cache_mb``: how large an epoch of batches a learner in the driver keeps and replays
    (:class:`EpochReplay`; 0: every epoch is read through Ray Data)."""

    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class)
        self.batch_cache_mb = BATCH_CACHE_MB

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
        self.reader_skip = 0
        """Batches to pass over when the reader is first opened (a resumed run)."""

    def resume_reader(self) -> int:
        """After a restore: the reader will first pass over the ``updates`` batches that the
        checkpointed run consumed. Returns that number."""
        self.reader_skip = self.updates
        return self.reader_skip

    def log_loss_terms(self, module_id, metrics: dict[str, float], config) -> None:
        """Log one update's loss terms (a mean over the iteration), first stopping training
        if one is NaN or infinite (:class:`~rliv_ray.train_loop.LossNotFinite`)."""
        check_loss_terms(metrics, self.updates + 1)
        self.metrics.log_dict(metrics, key=module_id,
                              window=config.dataset_num_iters_per_learner or 1)

    def _create_iterator_if_necessary(self, *, training_data: TrainingData, **kwargs):
        opening = bool(training_data.data_iterators) and self.iterator is None
        batches = super()._create_iterator_if_necessary(training_data=training_data, **kwargs)
        if opening and self.config.num_learners == 0 and self.config.batch_cache_mb > 0:
            EpochReplay.install(self.iterator, self.config.batch_cache_mb << 20)
        if opening and self.reader_skip:
            skip_batches(self.iterator, self.reader_skip, kwargs.get("minibatch_size"))
            self.reader_skip = 0
        return batches

    def get_state(self, *args, **kwargs):
        return {**super().get_state(*args, **kwargs), TARGET_UPDATES: self.updates}

    def set_state(self, state) -> None:
        super().set_state(state)
        if TARGET_UPDATES in state:
            self.updates = int(state[TARGET_UPDATES])
        _int_steps(self._named_optimizers.values())

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


def _int_steps(optimizers) -> None:
    """SparseAdam counts its steps in a Python int (bias corrections in double precision);
    RLlib restores every optimizer state entry as a tensor, whose float32 arithmetic would
    move a resumed run off the uninterrupted one in the last bits. The int is put back."""
    import torch

    for optimizer in optimizers:
        if isinstance(optimizer, torch.optim.SparseAdam):
            for state in optimizer.state.values():
                if isinstance(state.get("step"), torch.Tensor):
                    state["step"] = int(state["step"])


class EpochReplay:
    """The reader's batches: the first epoch read through Ray Data and kept, every later epoch
    replayed from memory, the same batches in the same order (every epoch is the same sequence,
    module docstring). An epoch larger than ``limit_bytes`` is not kept: every epoch is then
    read. Replaying saves Ray Data's per-batch work (slicing blocks, converting to tensors in a
    prefetch thread): RLIV-UA trains 1.15-1.19x faster on 2 cores (benchmarks/RESULTS.md)."""

    def __init__(self, read: Iterable[dict[str, Any]], limit_bytes: int):
        self.read, self.limit_bytes = read, limit_bytes
        self.epoch: list[dict[str, Any]] | None = None
        """The kept epoch, once one has been read whole within the limit."""

    @classmethod
    def install(cls, iterator, limit_bytes: int) -> None:
        """Put an EpochReplay under RLlib's ``MiniBatchRayDataIterator`` (just opened)."""
        if not hasattr(iterator, "_batched_iterable"):
            raise RuntimeError("this Ray version's MiniBatchRayDataIterator has no "
                               "_batched_iterable: set batch_cache_mb=0")
        iterator._batched_iterable = cls(iterator._batched_iterable, limit_bytes)
        iterator._epoch_iterator = iter(iterator._batched_iterable)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.epoch) if self.epoch is not None else self._reading()

    def _reading(self) -> Iterator[dict[str, Any]]:
        kept: list | None = []
        size = 0
        for batch in self.read:
            if kept is not None:
                size += sum(getattr(column, "nbytes", 0) for column in batch.values())
                if size <= self.limit_bytes:
                    kept.append(batch)
                else:
                    kept = None
            yield batch
        if kept:
            self.epoch = kept


def skip_batches(iterator, count: int, batch_size: int | None) -> None:
    """Move RLlib's ``MiniBatchRayDataIterator`` (just opened) on by ``count`` batches, as
    ``count`` updates would have: whole epochs are skipped without reading when the data is
    materialized (its row count is known), else by reading the first epoch through."""
    epoch = getattr(iterator, "_epoch_iterator", None)
    if epoch is None or not hasattr(iterator, "_batched_iterable"):
        raise RuntimeError("this Ray version's MiniBatchRayDataIterator has no _epoch_iterator: "
                           "the reader cannot be moved to where a resumed run goes on")
    rows = _materialized_rows(getattr(iterator, "_iterator", None))
    if rows and batch_size:
        count %= math.ceil(rows / batch_size)
    seen = 0
    while count > 0:
        try:
            next(iterator._epoch_iterator)
        except StopIteration:
            if seen == 0:
                return
            count %= seen  # ``seen`` batches made one epoch
            iterator._epoch_iterator = iter(iterator._batched_iterable)
            seen = 0
            continue
        seen += 1
        count -= 1


def _materialized_rows(data_iterator) -> int | None:
    """The rows of the materialized dataset behind a Ray Data iterator (known without reading
    it), or None."""
    from ray.data.dataset import MaterializedDataset

    dataset = getattr(data_iterator, "_base_dataset", None)
    return dataset.count() if isinstance(dataset, MaterializedDataset) else None
