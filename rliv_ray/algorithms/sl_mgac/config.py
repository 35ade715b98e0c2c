"""SL-MGAC's RLlib configuration: every field of the network spec and the loss settings.

    config = SLMGACConfig().training(groups=6, beta=0.5, live_bins=[0, 6, 15, 30, 60, 100,
                                                                     600, 1200])

The fields are those of :class:`~rliv_ray.algorithms.sl_mgac.network.SLMGACSpec` (without the
feature widths, which come from the data) and of
:class:`~rliv_ray.algorithms.sl_mgac.objective.SLMGACSettings`, with their defaults; bin
boundaries are plain lists. ``gamma``, ``lr``, ``tau`` and ``target_update`` are RLlib's own
fields with SL-MGAC's defaults. Rows of Tables 1-2 (variants and baselines):
``config.training(**method_fields(name))``.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from rliv_ray.algorithms.common.offline import ValidatedConfig
from rliv_ray.algorithms.sl_mgac.bins import WatchTimeBins
from rliv_ray.algorithms.sl_mgac.network import SLMGACSpec
from rliv_ray.algorithms.sl_mgac.objective import SLMGACSettings
from rliv_ray.algorithms.sl_mgac.variants import VARIANTS

_DATA_FIELDS = ("user_dim", "live_dim")
SPEC_DEFAULTS: dict[str, Any] = {
    f.name: (list(f.default.boundaries) if isinstance(f.default, WatchTimeBins) else f.default)
    for f in fields(SLMGACSpec) if f.name not in _DATA_FIELDS}
SETTINGS_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(SLMGACSettings)}
_BINS = ("live_bins", "video_bins")


def spec_from_fields(values: dict[str, Any]) -> SLMGACSpec:
    """The network spec from config fields (bin boundaries as lists)."""
    values = {k: v for k, v in values.items() if k in SPEC_DEFAULTS or k in _DATA_FIELDS}
    for name in _BINS:
        if name in values:
            values[name] = WatchTimeBins(tuple(values[name]))
    return SLMGACSpec(**values)


def method_fields(name: str) -> dict[str, Any]:
    """The config fields of a row of Tables 1-2: an SL-MGAC variant (``SL-MGAC``, ``w/o MG``,
    ..., ``SL-MGAC-0``) or a baseline sharing its feature extractor (``L2R``, ``DQN``,
    ``Double DQN``, ``BC``, ``BCQ``, ``SAC``, ``TD3``, ``TD3-BC``, ``IQL``; see :mod:`baselines`),
    as the fields that differ from the defaults plus ``method``."""
    from rliv_ray.algorithms.sl_mgac.baselines import method

    spec, settings = method(name).configure(SLMGACSpec(1, 1), SLMGACSettings())
    out = {f.name: getattr(spec, f.name) for f in fields(spec)
           if f.name not in _DATA_FIELDS and getattr(spec, f.name) != f.default}
    out.update({f.name: getattr(settings, f.name) for f in fields(settings)
                if getattr(settings, f.name) != f.default})
    return {**out, "method": name}


class SLMGACConfig(ValidatedConfig):
    """Offline SL-MGAC: Adam (ids 1e-5, rest 1e-3), batch 2048, gamma 0.9 (section 4.3)."""

    def __init__(self, algo_class=None):
        from rliv_ray.algorithms.sl_mgac.algorithm import SLMGAC

        super().__init__(algo_class=algo_class or SLMGAC)
        self._is_online = False  # no env: RLlib must not ask for one (RLLIB_NOTES)
        self.train_batch_size_per_learner = 2048
        self.materialize_mapped_data = False
        self.torch_skip_nan_gradients = True  # the training loop checks the loss instead
        self.user_dim = self.live_dim = None  # feature widths, from the samples' schema
        self.method = "SL-MGAC"  # or a baseline of baselines.BASELINES: its loss is used
        for name, value in {**SPEC_DEFAULTS, **SETTINGS_DEFAULTS}.items():
            setattr(self, name, value)

    def training(self, **kwargs) -> SLMGACConfig:
        """RLlib's training settings plus every SPEC_DEFAULTS and SETTINGS_DEFAULTS field."""
        ours = {k: kwargs.pop(k) for k in list(kwargs)
                if k in SPEC_DEFAULTS or k in SETTINGS_DEFAULTS or k in _DATA_FIELDS
                or k == "method"}
        super().training(**kwargs)
        for name, value in ours.items():
            if isinstance(value, WatchTimeBins):
                value = list(value.boundaries)
            setattr(self, name, tuple(value) if isinstance(value, list) and name not in _BINS
                    else value)
        return self

    @property
    def target_update_interval(self) -> int:
        """The shared learner's name for ``hard_update_every``."""
        return self.hard_update_every

    def network_spec(self) -> SLMGACSpec:
        return spec_from_fields(self._model_config_auto_includes)

    def loss_settings(self) -> SLMGACSettings:
        return replace(SLMGACSettings(), **{name: getattr(self, name)
                                            for name in SETTINGS_DEFAULTS})

    @property
    def _model_config_auto_includes(self) -> dict[str, Any]:
        """What the module reads: the spec fields, the feature widths and the target mode."""
        return {name: getattr(self, name)
                for name in (*_DATA_FIELDS, *SPEC_DEFAULTS, "target_mode", "method")}

    def get_default_rl_module_spec(self) -> RLModuleSpec:
        from rliv_ray.algorithms.sl_mgac.module import SLMGACModule

        return RLModuleSpec(module_class=SLMGACModule)

    def get_default_learner_class(self):
        from rliv_ray.algorithms.sl_mgac.learner import SLMGACLearner

        return SLMGACLearner

    def field_errors(self) -> list[str]:
        """What is wrong with the SL-MGAC fields (empty when valid); plain, without Ray."""
        if self.user_dim is None or self.live_dim is None:
            return ["user_dim and live_dim are required (rliv train reads them from the "
                    "samples' schema)"]
        from rliv_ray.algorithms.sl_mgac.baselines import BASELINES

        errors = []
        if self.method not in BASELINES and self.method not in VARIANTS:
            errors.append(f"method must be SL-MGAC, one of its variants {sorted(VARIANTS)} or "
                          f"a baseline {sorted(BASELINES)}, got {self.method!r}")
        if self.method in BASELINES and self.num_learners > 1:
            errors.append(f"the {self.method} baseline trains with num_learners 0 or 1 (its "
                          "loss runs the network outside RLlib's DDP wrapper)")
        for build in (self.network_spec, self.loss_settings):
            try:
                build()
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        return errors
