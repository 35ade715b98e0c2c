"""EpochReplay: the first epoch of batches is read and kept, later epochs are replayed from
memory, the same batches in the same order; an epoch over the limit, or one left half-read, is
not kept. (Replayed training equals reading every epoch through Ray Data:
tests/integration/test_rliv_ua_train.py::test_same_seed_same_parameters_and_resume_equals_one_run.)"""

import torch

from rliv_ray.algorithms.common.offline import EpochReplay

EPOCH_BYTES = 3 * (64 * 4 * 4 + 64 * 4)


class Reader:
    """An epoch of three batches (float32 obs, int32 actions); counts how often it is read."""

    def __init__(self):
        self.epochs = 0

    def __iter__(self):
        self.epochs += 1
        for i in range(3):
            yield {"obs": torch.full((64, 4), float(i)),
                   "actions": torch.full((64,), i, dtype=torch.int32)}


def test_later_epochs_replay_the_first_one():
    reader = Reader()
    replay = EpochReplay(reader, limit_bytes=EPOCH_BYTES)
    first = list(replay)
    assert replay.epoch is not None and len(replay.epoch) == 3
    for _ in range(2):
        again = list(replay)
        assert [b["actions"][0].item() for b in again] == [0, 1, 2]
        assert all(a is b for a, b in zip(first, again, strict=True))  # the batches themselves
    assert reader.epochs == 1


def test_an_epoch_over_the_limit_is_read_every_time():
    reader = Reader()
    replay = EpochReplay(reader, limit_bytes=EPOCH_BYTES - 1)
    for _ in range(3):
        assert [b["actions"][0].item() for b in replay] == [0, 1, 2]
    assert replay.epoch is None and reader.epochs == 3


def test_a_half_read_epoch_is_not_kept():
    reader = Reader()
    replay = EpochReplay(reader, limit_bytes=1 << 20)
    epoch = iter(replay)
    next(epoch)
    assert replay.epoch is None
    assert [b["actions"][0].item() for b in epoch] == [1, 2]  # the same pass goes on
    assert replay.epoch is not None and reader.epochs == 1
