"""TD3 / TD3+BC as an RLlib ``Algorithm`` (the shared offline training step and restore)."""

from __future__ import annotations

from rliv_ray.algorithms.common.offline import OfflineAlgorithm
from rliv_ray.algorithms.td3.config import TD3Config


class TD3(OfflineAlgorithm):
    @classmethod
    def get_default_config(cls) -> TD3Config:
        return TD3Config()
