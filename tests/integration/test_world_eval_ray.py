"""World evaluation on Ray tasks gives exactly the in-process numbers (same users, same seeds)."""

import pytest

from rliv_ray.data.ua_config import UAWorldConfig
from rliv_ray.evaluation.world import WorldEval, evaluate_policies

pytestmark = pytest.mark.ray


def test_ray_tasks_match_the_in_process_rollouts(local_ray):
    setup = WorldEval(UAWorldConfig(n_users=24, n_authors=200, days=2, seed=4), seeds=(0, 1),
                      buckets=3)
    specs = ["RankingModel", "Oracle"]
    in_process = evaluate_policies(setup, specs, workers=0, progress=False)
    on_ray = evaluate_policies(setup, specs, workers=2, progress=False)
    assert on_ray == in_process
    assert in_process["Oracle"]["ltv"] != in_process["RankingModel"]["ltv"]
