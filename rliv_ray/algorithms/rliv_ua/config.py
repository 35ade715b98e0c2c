"""RLIV-UA's RLlib configuration: every Table 3 default and every [I] choice as a field.

    config = (RLIVUAConfig()
              .environment(observation_space=Box(-inf, inf, (d,)), action_space=Discrete(5))
              .training(gap_index=16, towers=("click", "effective_view"), tau=0.005)
              .offline_data(input_=[...shard files...]))

Ablations of the paper (rliv-ua.txt Tables 1-2, EQUATIONS 2.1(n)) are named presets, see
:data:`ABLATIONS`: ``config.training(**ABLATIONS["wo_mt"])``. Gift assistance is decided after
the preset is merged (:func:`resolve_gift_assist`, which ``rliv train`` applies).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from rliv_ray.actions import ActionGrid
from rliv_ray.algorithms.common.offline import ValidatedConfig
from rliv_ray.algorithms.rliv_ua.network import NetworkSpec
from rliv_ray.algorithms.rliv_ua.optim import ID_OPTIMIZERS
from rliv_ray.schema import EFFECTIVE_VIEW, GIFT, LABELS

NETWORK_DEFAULTS: dict[str, Any] = {
    "gap_index": None,  # position of log1p(Delta) in the state, from the shards' metadata
    **{f.name: f.default for f in fields(NetworkSpec) if f.name not in ("state_dim", "n_actions",
                                                                         "gap_index")},
}
"""The network's fields and defaults (NetworkSpec: Table 3 sizes, ablation switches)."""
RLIV_DEFAULTS: dict[str, Any] = {
    "tau": 0.005,  # Table 3, Polyak rate
    "target_update": "polyak",  # EQUATIONS 2.1(c): "polyak" every update or "hard" copies
    "target_update_interval": 1000,  # updates between hard copies
    "id_optimizer": "lazy_adam",  # "lazy_adam": row-wise Adam on the id tables; "adam": dense
    "id_rows_per_id": 16,  # table rows per distinct id when sized from data (0: id_buckets)
    "next_state": "asa",  # "asa": every row with ASA's s'; "stitched": w/o ASA (2.1(j))
    "reward": "per_tower",  # "per_tower": tower l learns r_l (Eq. 2); "summed": r_1 + ... + r_4
    "action_weights": ActionGrid().weights,  # EQUATIONS 2.1(f) [I]
    "action_c": 1.0,
    "action_w": 1.0,
    "action_b": 1.0,
    "epsilon": 0.1,  # per-candidate exploration when serving (2.1(f) [I])
    "serving_tower": EFFECTIVE_VIEW,  # 2.1(h2): effective view offline, follow/gift online
    "cql_alpha": 0.0,  # weight of the CQL(H) penalty (the CQL baseline); 0: off
}
ABLATIONS: dict[str, dict[str, Any]] = {
    "full": {},
    "wo_mt": {"towers": (EFFECTIVE_VIEW,)},
    "wo_sl": {"supervised_split": False},
    "wo_mt_sl": {"towers": (EFFECTIVE_VIEW,), "supervised_split": False},
    "wo_al": {"gift_assist": False},
    "wo_al_sl": {"gift_assist": False, "supervised_split": False},
    "wo_asa": {"next_state": "stitched"},
}
_DQN = {"towers": (EFFECTIVE_VIEW,), "n_critics": 1, "supervised_split": False,
        "gift_assist": False, "reward": "summed"}
BASELINES: dict[str, dict[str, Any]] = {
    # Table 1's DQN (EQUATIONS 2.1(o): [40] is Double DQN): one network, one critic, no R/T
    # split, trained on the summed reward; its single tower is named effective_view only
    # because serving reads that tower.
    "dqn": _DQN,
    # Table 1's CQL (discrete; the one baseline trained purely from the log, 2.1(o)): the dqn
    # preset plus cql_alpha * CQL(H) (Kumar et al. 2020). alpha = 1.0 is our choice [I].
    "cql": {**_DQN, "cql_alpha": 1.0},
}
PRESETS: dict[str, dict[str, Any]] = {**ABLATIONS, **BASELINES}
"""What ``rliv train rliv-ua --ablation NAME`` accepts."""


def resolve_gift_assist(training: dict[str, Any], labels: tuple[str, ...]) -> bool:
    """Whether to train the gift assistance net (Eq. 12), decided once the ablation preset and
    the user's settings are merged into ``training``.

    Assistance serves the gift tower (rliv-ua.txt line 206) and is not used without gift labels
    (line 269): by default it is on only if the samples' ``labels`` and the towers
    (``training["towers"]``, default ``labels``) include the gift, so w/o MT and w/o MT&SL,
    which train the effective-view tower alone (EQUATIONS 2.1(n)), have none. An explicit
    ``gift_assist=True`` that cannot apply is an error.
    """
    towers = tuple(training.get("towers", labels))
    wanted = training.get("gift_assist")
    if wanted and GIFT not in labels:
        raise ValueError(f"gift_assist=True needs a gift label, but these samples have only "
                         f"{labels}")
    if wanted and GIFT not in towers:
        raise ValueError(f"gift_assist=True needs the gift tower, but towers are {towers}")
    return bool(wanted) if wanted is not None else GIFT in labels and GIFT in towers


class RLIVUAConfig(ValidatedConfig):
    """Offline RLIV-UA: Adam, gamma 0.9, tau 0.005, lr 1e-3, batch 1024 (Table 3)."""

    FIELDS: tuple[str, ...] = (*NETWORK_DEFAULTS, *RLIV_DEFAULTS)
    """The fields ``training()`` accepts beyond RLlib's, and ``train.json`` reports."""

    def __init__(self, algo_class=None):
        from rliv_ray.algorithms.rliv_ua.algorithm import RLIVUA

        super().__init__(algo_class=algo_class or RLIVUA)
        self._is_online = False  # no env: RLlib must not ask for one (RLLIB_NOTES)
        self.gamma = 0.9
        self.lr = 1e-3
        self.train_batch_size_per_learner = 1024
        self.materialize_mapped_data = False
        # RLlib checks every gradient tensor for NaN twice per update (a third of the update
        # time with large id tables). rliv train checks the loss instead and stops on NaN.
        self.torch_skip_nan_gradients = True
        for name, value in {**NETWORK_DEFAULTS, **RLIV_DEFAULTS}.items():
            setattr(self, name, value)

    def training(self, **kwargs) -> RLIVUAConfig:
        """RLlib's training settings plus the fields of NETWORK_DEFAULTS and RLIV_DEFAULTS."""
        ours = {k: kwargs.pop(k) for k in list(kwargs) if k in NETWORK_DEFAULTS or
                k in RLIV_DEFAULTS}
        super().training(**kwargs)
        for name, value in ours.items():
            setattr(self, name, tuple(value) if isinstance(value, list) else value)
        return self

    @property
    def action_grid(self) -> ActionGrid:
        return ActionGrid(tuple(self.action_weights), self.action_c, self.action_w,
                          self.action_b)

    @property
    def n_actions(self) -> int:
        """The pre-learner checks logged actions against this."""
        return len(self.action_weights)

    @property
    def _model_config_auto_includes(self) -> dict[str, Any]:
        """What the module reads: the network fields, gamma and the serving tower."""
        names = (*NETWORK_DEFAULTS, "gamma", "serving_tower")
        return {name: getattr(self, name) for name in names}

    def get_default_rl_module_spec(self) -> RLModuleSpec:
        from rliv_ray.algorithms.rliv_ua.module import RLIVUAModule

        return RLModuleSpec(module_class=RLIVUAModule)

    def get_default_learner_class(self):
        from rliv_ray.algorithms.rliv_ua.learner import RLIVUALearner

        return RLIVUALearner

    def export_module(self, module, path):
        """The trained module as a serving file (rliv_ray/serving.py), with this config's
        serving tower and epsilon as its serving defaults."""
        from rliv_ray.serving import export_scorer

        return export_scorer(module.net, path, gamma=self.gamma, grid=self.action_grid,
                             serving_tower=self.serving_tower, epsilon=self.epsilon)

    def field_errors(self) -> list[str]:
        """What is wrong with the RLIV-UA fields (empty when valid); plain, without Ray."""
        errors = []
        if self.gap_index is None:
            errors.append("gap_index is required: the position of log1p(Delta) in the state "
                          "(rliv train reads it from the shards' metadata)")
        if not self.towers or set(self.towers) - set(LABELS):
            errors.append(f"towers must be a non-empty subset of {LABELS}, got {self.towers}")
        if self.serving_tower not in self.towers:
            errors.append(f"serving_tower '{self.serving_tower}' is not among the towers "
                          f"{self.towers}")
        if not 0.0 < self.tau <= 1.0:
            errors.append(f"tau must be in (0, 1], got {self.tau}")
        if self.target_update not in ("polyak", "hard"):
            errors.append(f"target_update must be 'polyak' or 'hard', got "
                          f"'{self.target_update}'")
        if self.target_update_interval < 1:
            errors.append(f"target_update_interval must be >= 1, got "
                          f"{self.target_update_interval}")
        if self.id_optimizer not in ID_OPTIMIZERS:
            errors.append(f"id_optimizer must be one of {ID_OPTIMIZERS}, got "
                          f"'{self.id_optimizer}'")
        if self.id_rows_per_id < 0:
            errors.append(f"id_rows_per_id must be >= 0, got {self.id_rows_per_id}")
        if self.reward not in ("per_tower", "summed"):
            errors.append(f"reward must be 'per_tower' or 'summed', got '{self.reward}'")
        if self.next_state not in ("asa", "stitched"):
            errors.append(f"next_state must be 'asa' or 'stitched', got '{self.next_state}'")
        if not 0.0 <= self.gamma < 1.0:
            errors.append(f"gamma must be in [0, 1), got {self.gamma}")
        if not self.cql_alpha >= 0.0:
            errors.append(f"cql_alpha must be >= 0, got {self.cql_alpha}")
        if not 0.0 <= self.epsilon <= 1.0:
            errors.append(f"epsilon must be in [0, 1], got {self.epsilon}")
        if self.n_critics < 1 or any(h < 1 for h in self.hidden) or not self.hidden:
            errors.append(f"n_critics and hidden sizes must be >= 1, got {self.n_critics}, "
                          f"{self.hidden}")
        try:
            self.action_grid  # noqa: B018 - validates the grid and Eq. 1's constants
        except ValueError as exc:
            errors.append(f"action grid: {exc}")
        return errors
