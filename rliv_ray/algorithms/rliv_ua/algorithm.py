"""RLIV-UA as an RLlib ``Algorithm`` (the shared offline training step and restore)."""

from __future__ import annotations

from rliv_ray.algorithms.common.offline import OfflineAlgorithm
from rliv_ray.algorithms.rliv_ua.config import RLIVUAConfig


class RLIVUA(OfflineAlgorithm):
    @classmethod
    def get_default_config(cls) -> RLIVUAConfig:
        return RLIVUAConfig()
