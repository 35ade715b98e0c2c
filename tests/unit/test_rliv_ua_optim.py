"""Lazy Adam on RLIV-UA's id tables, the row-wise target update, and tables sized from data."""

import copy

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from rliv_ray import schema as S
from rliv_ray.algorithms.common.targets import RowwisePolyak, polyak_update
from rliv_ray.algorithms.rliv_ua.network import NetworkSpec, RLIVUANetwork, sized_id_buckets
from rliv_ray.algorithms.rliv_ua.objective import rliv_ua_loss
from rliv_ray.algorithms.rliv_ua.optim import IdTableTargets, make_optimizers
from rliv_ray.offline.shards import ShardInfo, distinct_ids
from tests.unit.test_rliv_ua_objective import make_batch

TAU = 0.05


def test_rowwise_polyak_equals_per_update_polyak_on_rows_that_change_rarely():
    torch.manual_seed(0)
    online = torch.randn(6, 3)
    dense_target = torch.randn(6, 3)
    lazy_target = dense_target.clone()
    lazy = RowwisePolyak(6, TAU)
    touched_per_update = [[0, 1], [1], [4], [1, 4], [], [0, 5], [2], [1]]
    for touched in touched_per_update:
        rows = torch.tensor(touched, dtype=torch.long)
        lazy.catch_up(online, lazy_target, rows)  # what the target forward reads is current
        torch.testing.assert_close(lazy_target[rows], dense_target[rows])
        online[rows] += torch.randn(len(touched), 3)  # the optimiser moves only these rows
        dense_target.lerp_(online, TAU)  # per-update Polyak over every row
        lazy.step(online, lazy_target, rows)
    assert not torch.allclose(lazy_target, dense_target)  # untouched rows still owe steps
    lazy.sync_all(online, lazy_target)
    torch.testing.assert_close(lazy_target, dense_target)


def test_rowwise_polyak_rejects_a_bad_tau():
    with pytest.raises(ValueError, match="tau must be in"):
        RowwisePolyak(3, 0.0)


def test_polyak_update_skips_the_named_entries():
    main, target = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    weight = target.weight.detach().clone()
    polyak_update(main, target, 1.0, skip=("weight",))
    assert torch.equal(target.weight, weight) and torch.equal(target.bias, main.bias)


def _train_lazily(steps: int = 12):
    """Bare updates as the learner does them, on batches that touch few id rows; returns the
    lazily updated target, the target per-update Polyak over every parameter holds, and the
    row-wise state. The rows each target forward reads are checked to be up to date."""
    torch.manual_seed(0)
    net = RLIVUANetwork(NetworkSpec(10, 8, n_actions=5, id_buckets=64))
    target, reference = copy.deepcopy(net), copy.deepcopy(net)
    optimizers = [o for o, _ in make_optimizers(net, "lazy_adam", lr=1e-2).values()]
    lazy = IdTableTargets(net, target, TAU)
    for step in range(steps):
        batch = make_batch(16, seed=step)
        batch[S.USER_ID] = batch[S.USER_ID] % 20
        lazy.catch_up(batch)
        for column, embedding in target.id_embeddings().items():
            rows = embedding.rows(batch[column])
            torch.testing.assert_close(embedding.table.weight[rows],
                                       reference.id_embeddings()[column].table.weight[rows])
        loss, _ = rliv_ua_loss(net, target, batch, gamma=0.9)
        for optimizer in optimizers:
            optimizer.zero_grad()
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
        polyak_update(net, reference, TAU)
        lazy.step()
    return target, reference, lazy


def test_lazy_adam_moves_only_the_rows_of_the_batch_ids():
    torch.manual_seed(0)
    net = RLIVUANetwork(NetworkSpec(10, 8, n_actions=5, id_buckets=64))
    before = net.user.table.weight.detach().clone()
    optimizers = [o for o, _ in make_optimizers(net, "lazy_adam", lr=1e-2).values()]
    batch = make_batch(8)
    loss, _ = rliv_ua_loss(net, copy.deepcopy(net), batch, gamma=0.9)
    loss.backward()
    assert net.user.table.weight.grad.is_sparse
    for optimizer in optimizers:
        optimizer.step()
    moved = (net.user.table.weight != before).any(dim=1)
    seen = torch.zeros(64, dtype=torch.bool)
    seen[net.user.rows(batch[S.USER_ID])] = True
    assert torch.equal(moved, seen)


def test_lazy_targets_equal_per_update_polyak_over_the_whole_network():
    target, reference, lazy = _train_lazily()
    assert not torch.allclose(target.user.table.weight, reference.user.table.weight)
    lazy.sync_all()
    for (name, value), expected in zip(target.state_dict().items(),
                                       reference.state_dict().values(), strict=True):
        torch.testing.assert_close(value, expected, msg=name)


def test_dense_adam_keeps_one_optimizer_over_every_parameter():
    net = RLIVUANetwork(NetworkSpec(10, 8, n_actions=5, id_buckets=64))
    optimizers = make_optimizers(net, "adam", lr=1e-3)
    (optimizer, params), = optimizers.values()
    assert len(params) == len(list(net.parameters())) and not net.user.table.sparse
    with pytest.raises(ValueError, match="id_optimizer must be one of"):
        make_optimizers(net, "sgd", lr=1e-3)


@pytest.mark.parametrize(("distinct", "rows_per_id", "cap", "expected"), [
    (1000, 16, 1 << 16, 16384), (1024, 16, 1 << 16, 16384), (1025, 16, 1 << 16, 32768),
    (100_000, 16, 1 << 16, 1 << 16), (0, 16, 1 << 16, 16), (1000, 0, 777, 777),
])
def test_id_tables_are_sized_from_the_data_up_to_the_cap(distinct, rows_per_id, cap, expected):
    assert sized_id_buckets(distinct, rows_per_id, cap) == expected


def test_distinct_ids_counts_across_shards(tmp_path):
    files = []
    for i, (users, authors) in enumerate([([1, 2, 2, 3], [9, 9, 8, 8]), ([3, 4], [7, 9])]):
        files.append(tmp_path / f"part-{i}.parquet")
        pq.write_table(pa.table({S.USER_ID: users, S.AUTHOR_ID: authors}), files[-1])
    info = ShardInfo(tuple(files), ("s",), "asa", (), 6)
    assert distinct_ids(info) == {S.USER_ID: 4, S.AUTHOR_ID: 3}
