"""RLIV-UA learns a world whose optimal weights are known, a different one per tower.

The world of tests/sampleshards.py (a user feature x in {-1, +1}, the pair's next state equals
its current one), with each tower's own reward: tower l pays v_l when the logged action is its
best weight b_l(x), else 0. The best weights differ between towers in both states and the v_l
differ, so a tower trained on another tower's label learns the wrong greedy weight and values.
With gamma = 0.5, Q*_l(s, b_l) = 2 v_l and Q*_l(s, a) = v_l for every other a. After 600
updates through the whole RLlib path (reader, pre-learner, learner, per-update Polyak targets),
the greedy action of every tower must be b_l(x) for every state, and each Q within 10% of Q*.

In-distribution, noise-free, all actions logged: a plain max target or a mean over the critics
has the same fixed point as clipped Double DQN, so this test cannot tell them apart;
tests/unit/test_rliv_ua_learner.py checks the learner's targets against NumPy instead.
"""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from rliv_ray import schema as S
from rliv_ray.algorithms.rliv_ua.train import TrainSettings, load_module, train_rliv_ua
from rliv_ray.train_loop import LoopSettings
from tests.sampleshards import make_states, sample_table

pytestmark = [pytest.mark.ray, pytest.mark.slow]
GAMMA = 0.5
TOLERANCE = 0.10
BEST = {S.CLICK: (4, 1), S.EFFECTIVE_VIEW: (0, 3), S.FOLLOW: (2, 4), S.GIFT: (1, 0)}
"""Per tower: its best weight for x > 0 and for x < 0."""
VALUE = {S.CLICK: 1.0, S.EFFECTIVE_VIEW: 0.5, S.FOLLOW: 1.5, S.GIFT: 2.0}
"""Per tower: the reward v_l of its best weight."""


def best_action(label: str, x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, *BEST[label])


def write_world(directory, rows: int = 4096, files: int = 2):
    """Sample shards of the world above, tower rewards replaced by their own."""
    (directory / "samples").mkdir(parents=True)
    for i in range(files):
        table = sample_table(rows // files, seed=i)
        x = S.arrow_to_matrix(table[S.STATE])[:, 0]
        action = table[S.ACTION].to_numpy()
        for label in S.LABELS:
            reward = np.where(action == best_action(label, x), VALUE[label], 0.0)
            index = table.schema.get_field_index(S.reward_column(label))
            table = table.set_column(index, table.schema.field(index),
                                     pa.array(reward, pa.float32()))
        pq.write_table(table, directory / "samples" / f"part-{i:05d}.parquet")
    return directory


def test_each_tower_learns_its_own_greedy_weight_and_q_values(tmp_path):
    shards = write_world(tmp_path / "shards")
    settings = TrainSettings(
        loop=LoopSettings(iterations=12, checkpoint_every=12, progress=False),
        updates_per_iteration=50,
        training={"gamma": GAMMA, "tau": 0.1, "lr": 1e-2, "train_batch_size_per_learner": 256,
                  "id_buckets": 1024})
    report = train_rliv_ua(shards, tmp_path / "out", settings)
    module = load_module(report["checkpoint"])
    assert module.spec.towers == S.LABELS

    rng = np.random.default_rng(1)
    x = np.tile([1.0, -1.0], 50)
    with torch.no_grad():  # users and authors as in training (50 and 20 ids)
        q = module.net(torch.arange(100) % 50, torch.arange(100) % 20,
                       torch.from_numpy(make_states(x, rng))).q(GAMMA).min(dim=1).values
    for t, label in enumerate(S.LABELS):  # q[t]: (B, A)
        best = torch.from_numpy(best_action(label, x))
        assert torch.equal(q[t].argmax(dim=-1), best), label
        chosen = q[t].gather(-1, best.unsqueeze(-1)).squeeze(-1)
        others = q[t][torch.arange(q.shape[-1])[None, :] != best[:, None]]
        q_best, q_other = VALUE[label] / (1 - GAMMA), VALUE[label] * GAMMA / (1 - GAMMA)
        assert (chosen - q_best).abs().max() < TOLERANCE * q_best, (label, chosen.mean())
        assert (others - q_other).abs().max() < TOLERANCE * q_other, (label, others.mean())
