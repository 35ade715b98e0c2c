"""TD3 / TD3+BC on the SCRI-MDP samples with a continuous ranking weight (Table 1 baselines).

    config = TD3Config().training(gap_index=16, **TD3_PRESETS["td3_bc"])

It reuses RLIV-UA's sample fields, reader and driver (subclassing :class:`RLIVUAConfig` for
that, not for its network): one tower, rewards as the DQN baseline (summed), the grid's ends
bound the weight. Defaults: TD3's policy delay 2 and smoothing noise 0.2 clipped at 0.5 (for
actions in [-1, 1]; here scaled by the grid's half-width), Table 3's actor lr 1e-4 (EQUATIONS
2.1(e)), TD3+BC's alpha 2.5.
"""

from __future__ import annotations

from typing import Any

from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from rliv_ray.algorithms.rliv_ua.config import RLIVUAConfig
from rliv_ray.algorithms.td3.objective import TD3Settings
from rliv_ray.schema import EFFECTIVE_VIEW

TD3_DEFAULTS: dict[str, Any] = {
    "actor_lr": 1e-4,  # Table 3, "actor lr" (2.1(e)); critics and encoder use lr
    "actor_hidden": (64, 64),  # as the critics (Table 3's hidden)
    "policy_delay": 2,  # TD3: actor and targets move every d critic updates
    "target_noise": 0.2,  # TD3: smoothing sigma, in half-widths of [w_min, w_max]
    "target_noise_clip": 0.5,  # TD3: smoothing clip c, in half-widths of [w_min, w_max]
    "bc_alpha": None,  # None: TD3's actor; a number: TD3+BC's alpha (2.5 in its paper)
}
_SCRI = {"towers": (EFFECTIVE_VIEW,), "n_critics": 2, "supervised_split": False,
         "gift_assist": False, "reward": "summed", "id_optimizer": "adam"}
TD3_PRESETS: dict[str, dict[str, Any]] = {
    "td3_bc": {**_SCRI, "bc_alpha": 2.5},  # Table 1's TD3 ([11] is TD3+BC, 2.1(o))
    "td3_ua": _SCRI,  # Table 1's TD3-UA: TD3 on the SCRI-MDP with a continuous weight
}
"""What ``rliv train rliv-ua --ablation NAME`` accepts besides the discrete presets."""


class TD3Config(RLIVUAConfig):
    FIELDS = (*RLIVUAConfig.FIELDS, *TD3_DEFAULTS)

    def __init__(self, algo_class=None):
        from rliv_ray.algorithms.td3.algorithm import TD3

        super().__init__(algo_class=algo_class or TD3)
        for name, value in {**_SCRI, **TD3_DEFAULTS}.items():
            setattr(self, name, value)

    def training(self, **kwargs) -> TD3Config:
        ours = {k: kwargs.pop(k) for k in list(kwargs) if k in TD3_DEFAULTS}
        super().training(**kwargs)
        for name, value in ours.items():
            setattr(self, name, tuple(value) if isinstance(value, list) else value)
        return self

    @property
    def half_width(self) -> float:
        return (self.action_weights[-1] - self.action_weights[0]) / 2.0

    def loss_settings(self) -> TD3Settings:
        return TD3Settings(self.gamma, self.target_noise * self.half_width,
                           self.target_noise_clip * self.half_width, self.bc_alpha)

    @property
    def _model_config_auto_includes(self) -> dict[str, Any]:
        names = ("gap_index", "towers", "n_critics", "hidden", "actor_hidden", "embedding_dim",
                 "id_buckets", "max_gap_bucket", "action_weights", "serving_tower")
        return {name: getattr(self, name) for name in names}

    def get_default_rl_module_spec(self) -> RLModuleSpec:
        from rliv_ray.algorithms.td3.module import TD3Module

        return RLModuleSpec(module_class=TD3Module)

    def get_default_learner_class(self):
        from rliv_ray.algorithms.td3.learner import TD3Learner

        return TD3Learner

    def field_errors(self) -> list[str]:
        errors = super().field_errors()
        if len(self.towers) != 1:
            errors.append(f"TD3 trains one tower, got towers {self.towers}")
        for name in ("supervised_split", "gift_assist"):
            if getattr(self, name):
                errors.append(f"{name} must be false for TD3 (RLIV-UA only)")
        if self.id_optimizer != "adam":
            errors.append(f"id_optimizer must be 'adam' for TD3, got '{self.id_optimizer}'")
        if self.num_learners > 1:
            errors.append(f"TD3 runs on one learner (num_learners <= 1), got {self.num_learners}")
        if self.policy_delay < 1:
            errors.append(f"policy_delay must be >= 1, got {self.policy_delay}")
        if not self.actor_lr > 0:
            errors.append(f"actor_lr must be > 0, got {self.actor_lr}")
        if not (self.target_noise >= 0 and self.target_noise_clip >= 0):
            errors.append(f"target_noise and target_noise_clip must be >= 0, got "
                          f"{self.target_noise}, {self.target_noise_clip}")
        if self.bc_alpha is not None and not self.bc_alpha > 0:
            errors.append(f"bc_alpha must be > 0 or null (plain TD3), got {self.bc_alpha}")
        if any(h < 1 for h in self.actor_hidden) or not self.actor_hidden:
            errors.append(f"actor_hidden sizes must be >= 1, got {self.actor_hidden}")
        return errors

    def export_module(self, module, path):
        """The actor as a serving file: -|w_a - mu(s)| over the grid (nearest grid weight)."""
        from rliv_ray.serving import export_scorer

        return export_scorer(module.net, path, gamma=self.gamma, grid=self.action_grid,
                             serving_tower=self.serving_tower, epsilon=self.epsilon,
                             scoring="nearest_weight")
