"""SL-MGAC as an RLlib ``Algorithm`` (the shared offline training step and restore)."""

from __future__ import annotations

from rliv_ray.algorithms.common.offline import OfflineAlgorithm
from rliv_ray.algorithms.sl_mgac.config import SLMGACConfig


class SLMGAC(OfflineAlgorithm):
    @classmethod
    def get_default_config(cls) -> SLMGACConfig:
        return SLMGACConfig()
