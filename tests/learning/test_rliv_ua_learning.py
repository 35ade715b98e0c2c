"""RLIV-UA learns a world whose optimal weight is known (tests/sampleshards.py).

The best ranking weight is a*(x) = 4 for x > 0 and 1 otherwise; with gamma = 0.5 the true
values are Q*(s, a*) = 2 and Q*(s, a) = 1 for every other a. After 600 updates through the
whole RLlib path (reader, pre-learner, learner, per-update Polyak targets), the greedy action
of every tower must be a*(x) for every state, and each Q within 10% of Q*.
"""

import numpy as np
import pytest
import torch

from rliv_ray.algorithms.rliv_ua.train import TrainSettings, load_module, train_rliv_ua
from rliv_ray.train_loop import LoopSettings
from tests.sampleshards import N_ACTIONS, best_action, make_states, optimal_q, write_shards

pytestmark = [pytest.mark.ray, pytest.mark.slow]
GAMMA = 0.5
TOLERANCE = 0.10


def test_greedy_weight_and_q_values_match_the_optimum(tmp_path):
    shards = write_shards(tmp_path / "shards", rows=4096)
    settings = TrainSettings(
        loop=LoopSettings(iterations=12, checkpoint_every=12, progress=False),
        updates_per_iteration=50,
        training={"gamma": GAMMA, "tau": 0.1, "lr": 1e-2, "train_batch_size_per_learner": 256,
                  "id_buckets": 1024})
    report = train_rliv_ua(shards, tmp_path / "out", settings)
    net = load_module(report["checkpoint"]).net

    rng = np.random.default_rng(1)
    x = np.tile([1.0, -1.0], 50)
    with torch.no_grad():  # users and authors as in training (50 and 20 ids)
        q = net(torch.arange(100) % 50, torch.arange(100) % 20,
                torch.from_numpy(make_states(x, rng))).q(GAMMA).min(dim=1).values  # (T, B, A)
    best = torch.from_numpy(best_action(x))
    assert torch.equal(q.argmax(dim=-1), best.expand(q.shape[0], -1))

    q_best, q_other = optimal_q(GAMMA)
    chosen = q.gather(-1, best.view(1, -1, 1).expand(q.shape[0], -1, 1)).squeeze(-1)
    others = q[..., torch.arange(N_ACTIONS)[None, :] != best[:, None]]
    assert (chosen - q_best).abs().max() < TOLERANCE * q_best, chosen.mean()
    assert (others - q_other).abs().max() < TOLERANCE * q_other, others.mean()
