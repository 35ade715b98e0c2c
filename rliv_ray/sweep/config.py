"""A sweep definition (``tune/*.yaml``) as a frozen dataclass that validates itself.

    name: sl_mgac_small            # default: the file's stem
    algorithm: sl-mgac             # or rliv-ua
    data:
      generate: {users: 400, days: 1, seed: 0, set: {}}   # a fresh world, or
      # path: demo_out/live                               # an existing generate(-live) output
      samples: {groups: 4}         # sample-builder settings shared by every trial
    training: {iterations: 4, updates_per_iteration: 10, eval_every: 1, seed: 0,
               set: {train_batch_size_per_learner: 256}}  # fixed config fields
    bins: {paper: [0, 6, 15, 30, 60, 100, 600, 1200]}     # named boundary vectors (SL-MGAC)
    search:                        # name: {grid|choice: [...]} or {uniform|loguniform: [lo, hi]}
      gamma: {grid: [0.0, 0.9]}
      groups: {grid: [2, 4]}
    num_samples: 1
    scheduler: {type: asha, grace_period: 1, reduction_factor: 2}
    evaluation: {estimators: [ncis, snips, dr], metric: eval/ncis, epsilon: 0.2, cap: 10,
                 bootstrap: 200, truth_seeds: 1}
    resources: {ray_cpus: 4, cpus_per_trial: 1, max_concurrent_trials: 1}

Every error is a ``ValueError`` of one line that names the field. Pure Python: no Ray, no torch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ALGORITHMS = ("rliv-ua", "sl-mgac")
KINDS = ("grid", "choice", "uniform", "loguniform")
DISCRETE = ("grid", "choice")
SWEEPABLE = {
    "sl-mgac": ("gamma", "groups", "live_bins", "video_bins", "lr", "embedding_lr", "tau",
                "reward_scale", "actor_weight"),
    "rliv-ua": ("gamma", "lr", "tau", "sequence_length"),
}
"""Hyperparameters a search may name, per algorithm."""
DATA_PARAMS = {"sl-mgac": ("groups",), "rliv-ua": ("sequence_length",)}
"""Settings that change the samples (``rliv build-live-samples --groups``, ``rliv
build-samples --sequence-length``): trials that share them share one sample build. SL-MGAC's
bin boundaries are read by the network at training time, so they do not change the samples."""
BIN_PARAMS = ("live_bins", "video_bins")
SAMPLE_KEYS = {
    "sl-mgac": ("groups", "test_share", "seed", "terminal"),
    "rliv-ua": ("sequence_length", "content", "window_ms", "asa_epochs", "max_train_tuples",
                "seed", "mode"),
}
DEFAULT_ESTIMATORS = ("ncis", "snips", "dr")
"""SL-MGAC: what each report carries unless ``evaluation.estimators`` says otherwise."""
WORLD_METRICS = ("ltv", "session_length", "watch_time_min", "ctr", "diversity", "new_fans",
                 "ua_count", "gifted_users", "revenue")
"""Metrics of ``rliv evaluate`` an RLIV-UA sweep can select on (higher is better)."""
SCHEDULERS = ("asha", "fifo")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _fail(message: str) -> None:
    raise ValueError(message)


def _check_value(name: str, value: Any, bins: dict[str, tuple[float, ...]]) -> None:
    """One value of hyperparameter ``name``; ValueError naming it if out of range."""
    if name in BIN_PARAMS:
        if value not in bins:
            _fail(f"search.{name}: {value!r} is not a bin vector named under 'bins' "
                  f"(named: {sorted(bins) or 'none'})")
        return
    if name in ("groups", "sequence_length"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            _fail(f"{name} must be an integer >= 1, got {value!r}")
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        _fail(f"{name} must be a number, got {value!r}")
    ok = {"gamma": 0 <= value < 1, "tau": 0 < value <= 1, "actor_weight": value >= 0}.get(
        name, value > 0)
    if not ok:
        rule = {"gamma": "in [0, 1)", "tau": "in (0, 1]", "actor_weight": ">= 0"}.get(name, "> 0")
        _fail(f"{name} must be {rule}, got {value!r}")


def check_bins(name: str, values: Any) -> tuple[float, ...]:
    """A watch-time boundary vector: >= 2 numbers from 0, strictly increasing (seconds)."""
    if not isinstance(values, list | tuple) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        _fail(f"bins.{name} must be a list of numbers, got {values!r}")
    b = tuple(float(v) for v in values)
    if len(b) < 2:
        _fail(f"bins.{name} needs at least 2 boundaries, got {list(values)}")
    if b[0] != 0:
        _fail(f"bins.{name} must start at 0, got {list(values)}")
    if any(hi <= lo for lo, hi in zip(b, b[1:], strict=False)):
        _fail(f"bins.{name} must increase strictly, got {list(values)}")
    return b


@dataclass(frozen=True)
class SearchDim:
    """One hyperparameter: ``grid``/``choice`` over ``values``, or ``uniform``/``loguniform``
    between ``values = (low, high)``."""

    name: str
    kind: str
    values: tuple

    @property
    def discrete(self) -> bool:
        return self.kind in DISCRETE


def parse_dim(name: str, spec: Any, algorithm: str,
              bins: dict[str, tuple[float, ...]]) -> SearchDim:
    if name not in SWEEPABLE[algorithm]:
        _fail(f"search: unknown hyperparameter {name!r} for {algorithm} (sweepable: "
              f"{', '.join(SWEEPABLE[algorithm])})")
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
        _fail(f"search.{name} must be one of {{grid: [...]}}, {{choice: [...]}}, "
              f"{{uniform: [low, high]}}, {{loguniform: [low, high]}}; got {spec!r}")
    kind, values = next(iter(spec.items()))
    if not isinstance(values, list) or not values:
        _fail(f"search.{name}.{kind} must be a non-empty list, got {values!r}")
    if kind not in DISCRETE:
        if name in DATA_PARAMS[algorithm] or name in BIN_PARAMS:
            _fail(f"search.{name} takes grid or choice (it picks among builds or named "
                  f"vectors), not {kind}")
        if len(values) != 2 or not values[0] < values[1]:
            _fail(f"search.{name}.{kind} must be [low, high] with low < high, got {values}")
    for value in values:
        _check_value(name, value, bins)
    return SearchDim(name, kind, tuple(values))


@dataclass(frozen=True)
class DataSource:
    path: str | None = None
    """An existing ``rliv generate-live`` (SL-MGAC) or ``rliv generate`` (RLIV-UA) output."""
    generate: dict[str, Any] = field(default_factory=dict)
    """World settings when ``path`` is None: ``users``, ``days``, ``seed`` and ``set`` (fields
    of LiveWorldConfig / UAWorldConfig). Generated once per sweep directory."""
    samples: dict[str, Any] = field(default_factory=dict)
    """Sample-builder settings of every trial (:data:`SAMPLE_KEYS`)."""


@dataclass(frozen=True)
class Training:
    iterations: int = 4
    """RLlib iterations per trial."""
    updates_per_iteration: int = 10
    eval_every: int = 1
    """Evaluate and report to Tune every this many iterations (and after the last)."""
    seed: int = 0
    fields: dict[str, Any] = field(default_factory=dict)
    """Fixed config fields of every trial (``--set`` of ``rliv train``)."""

    def __post_init__(self) -> None:
        if not isinstance(self.fields, dict):
            _fail(f"training.set must be a mapping of config fields, got {self.fields!r}")
        for name in ("iterations", "updates_per_iteration", "eval_every", "seed"):
            _integer(getattr(self, name), f"training.{name}")
        for name in ("iterations", "updates_per_iteration", "eval_every"):
            if getattr(self, name) < 1:
                _fail(f"training.{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class Scheduler:
    type: str = "asha"
    """``asha`` (early stopping on the evaluation metric) or ``fifo`` (every trial runs out)."""
    grace_period: int = 1
    """Reports (evaluations) before ASHA may stop a trial."""
    reduction_factor: int = 2

    def __post_init__(self) -> None:
        if self.type not in SCHEDULERS:
            _fail(f"scheduler.type must be one of {SCHEDULERS}, got {self.type!r}")
        if self.grace_period < 1 or self.reduction_factor < 2:
            _fail(f"scheduler needs grace_period >= 1 and reduction_factor >= 2, got "
                  f"{self.grace_period}, {self.reduction_factor}")


@dataclass(frozen=True)
class Evaluation:
    estimators: tuple[str, ...] | None = None
    """SL-MGAC: the off-policy estimators every report carries (``rliv ope``'s names; default
    :data:`DEFAULT_ESTIMATORS`), each as ``eval/<name>``, ``_lo``, ``_hi`` and ``_ess``
    (:mod:`rliv_ray.ope.metrics`)."""
    metric: str | None = None
    """The Tune metric the scheduler optimises (higher is better). SL-MGAC: ``eval/<name>`` of
    one of the estimators, or ``eval/<name>_lo`` (the low end of its interval: pessimistic
    selection); default: the first estimator's. RLIV-UA: ``eval/<world metric>``; default
    ``eval/<world_metric>``."""
    epsilon: float = 0.2
    """SL-MGAC: exploration of Eq. 16 in the target's probabilities and the on-policy runs."""
    cap: float = 10.0
    """SL-MGAC: the weight cap of the NCIS kinds."""
    clip: float | None = None
    """SL-MGAC: the weight clip of ips, snips and dr (default none)."""
    tau: float = 10.0
    """SL-MGAC: Switch-DR's threshold."""
    bootstrap: int = 200
    """SL-MGAC: Poisson bootstrap replicates of the intervals (0: none, no ``_lo``/``_hi``)."""
    gamma: float = 1.0
    """SL-MGAC: J (the per-user estimators and the truth) discounted by gamma per request;
    1 = undiscounted. Set it to the trained objective's gamma to select under the objective
    ``rliv check-live-world`` checks."""
    users: int = 50
    """RLIV-UA: users of the world rollouts that trials report (the selection metric)."""
    seeds: int = 1
    """RLIV-UA: rollout seeds of the selection metric."""
    world_metric: str = "ltv"
    """RLIV-UA: the ``rliv evaluate`` metric of the truth (and the default Tune metric)."""
    truth_seeds: int = 1
    """On-policy seeds of the true value computed after the sweep (apart from the metric)."""
    truth_users: int | None = None
    """RLIV-UA: users of the truth rollouts (default: the whole world)."""

    def __post_init__(self) -> None:
        if not 0 <= self.epsilon <= 1:
            _fail(f"evaluation.epsilon must be in [0, 1], got {self.epsilon}")
        if not 0 < self.gamma <= 1:
            _fail(f"evaluation.gamma must be in (0, 1], got {self.gamma}")
        for name in ("cap", "tau") + (("clip",) if self.clip is not None else ()):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                _fail(f"evaluation.{name} must be a number > 0, got {value!r}")
        if self.world_metric not in WORLD_METRICS:
            _fail(f"evaluation.world_metric must be one of {WORLD_METRICS}, got "
                  f"{self.world_metric!r}")
        _integer(self.bootstrap, "evaluation.bootstrap")
        if self.bootstrap < 0:
            _fail(f"evaluation.bootstrap must be >= 0, got {self.bootstrap}")
        for name in ("users", "seeds", "truth_seeds", "truth_users"):
            value = getattr(self, name)
            if value is not None and value < 1:
                _fail(f"evaluation.{name} must be >= 1, got {value}")
        if self.metric is not None and not isinstance(self.metric, str):
            _fail(f"evaluation.metric must be a metric name such as eval/ncis, got "
                  f"{self.metric!r}")
        if self.estimators is not None:
            from rliv_ray.ope.metrics import parse_estimators

            names = self.estimators
            if not isinstance(names, list | tuple | str):
                _fail(f"evaluation.estimators must be a list of estimator names, got {names!r}")
            object.__setattr__(self, "estimators",
                               parse_estimators(names, "evaluation.estimators"))

    def ope_settings(self):
        """SL-MGAC's :class:`~rliv_ray.ope.metrics.OPEMetricSettings` of every report."""
        from rliv_ray.ope.metrics import OPEMetricSettings

        return OPEMetricSettings(estimators=self.estimators or DEFAULT_ESTIMATORS,
                                 epsilon=self.epsilon, ncis_cap=self.cap,
                                 clip=math.inf if self.clip is None else self.clip,
                                 tau=self.tau, gamma=self.gamma, bootstrap=self.bootstrap)


@dataclass(frozen=True)
class Resources:
    ray_cpus: int = 4
    """Logical CPUs of the local Ray this command starts (ignored on a cluster)."""
    cpus_per_trial: float = 1.0
    """CPUs a trial's process reserves (its learner); its Ray Data reader and pre-learner
    actor take :data:`DATA_CPUS` more outside it."""
    max_concurrent_trials: int = 1

    def __post_init__(self) -> None:
        if self.ray_cpus < 1 or self.cpus_per_trial <= 0 or self.max_concurrent_trials < 1:
            _fail("resources need ray_cpus >= 1, cpus_per_trial > 0 and "
                  "max_concurrent_trials >= 1")

    def check_fits(self) -> None:
        """Refuse budgets that leave a trial's data pipeline waiting for CPUs forever (on a
        local Ray; a cluster's CPUs are its own)."""
        need = self.max_concurrent_trials * (self.cpus_per_trial + DATA_CPUS)
        if need > self.ray_cpus:
            _fail(f"resources: {self.max_concurrent_trials} trials at once need "
                  f"{need:g} logical CPUs ({self.cpus_per_trial:g} per trial + {DATA_CPUS} "
                  f"for its data pipeline) but ray_cpus is {self.ray_cpus}: raise ray_cpus "
                  "or lower max_concurrent_trials (a shortfall hangs silently)")


DATA_CPUS = 2
"""Logical CPUs a training trial's Ray Data pipeline needs beside the trial (reader, Parquet
listing and the pre-learner actor): measured here, 1 free CPU hangs and 3 do not."""


@dataclass(frozen=True)
class SweepConfig:
    name: str
    algorithm: str
    data: DataSource
    training: Training = field(default_factory=Training)
    search: tuple[SearchDim, ...] = ()
    bins: dict[str, tuple[float, ...]] = field(default_factory=dict)
    num_samples: int = 1
    """Samples of the search space (each grid point is repeated this many times)."""
    scheduler: Scheduler = field(default_factory=Scheduler)
    evaluation: Evaluation = field(default_factory=Evaluation)
    resources: Resources = field(default_factory=Resources)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            _fail(f"name must hold only letters, digits, '_', '.' and '-', got {self.name!r}")
        if self.algorithm not in ALGORITHMS:
            _fail(f"algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        if self.num_samples < 1:
            _fail(f"num_samples must be >= 1, got {self.num_samples}")
        both = sorted({d.name for d in self.search} & set(self.training.fields))
        if both:
            _fail(f"{', '.join(both)}: both searched and fixed in training.set")
        data_fixed = sorted(set(DATA_PARAMS[self.algorithm]) & set(self.training.fields))
        if data_fixed:
            _fail(f"{', '.join(data_fixed)} changes the samples: set it under data.samples")
        users = self.data.generate.get("users")
        if users is not None and self.algorithm == "sl-mgac":
            check_groups(self, users)
        self._check_metric()

    def _check_metric(self) -> None:
        ev = self.evaluation
        if self.algorithm == "rliv-ua":
            if ev.estimators is not None:
                _fail("evaluation.estimators: RLIV-UA has no off-policy estimator on its logs "
                      "(its logged actions are exposure-selected, tune/README.md); its trials "
                      "report the world's true value: choose it with evaluation.metric "
                      f"eval/<one of {', '.join(WORLD_METRICS)}>")
            if ev.metric is not None and (not ev.metric.startswith("eval/")
                                          or ev.metric[len("eval/"):] not in WORLD_METRICS):
                _fail(f"evaluation.metric must be eval/<one of {', '.join(WORLD_METRICS)}> for "
                      f"RLIV-UA (the world's value of the scorer), got {ev.metric!r}")
            return
        if ev.metric is not None:
            from rliv_ray.ope.metrics import check_metric

            check_metric(ev.metric, self.estimators, bootstrap=ev.bootstrap,
                         what="evaluation.metric")

    @property
    def estimators(self) -> tuple[str, ...]:
        """SL-MGAC: the estimators each report carries (none for RLIV-UA)."""
        if self.algorithm != "sl-mgac":
            return ()
        return self.evaluation.estimators or DEFAULT_ESTIMATORS

    @property
    def metric(self) -> str:
        """The Tune metric: an evaluation result (higher is better), never a training loss."""
        if self.evaluation.metric is not None:
            return self.evaluation.metric
        if self.algorithm == "sl-mgac":
            return f"eval/{self.estimators[0]}"
        return f"eval/{self.evaluation.world_metric}"

    def values_of(self, name: str) -> tuple:
        """Every value a discrete setting takes: the searched ones, else the fixed one."""
        for dim in self.search:
            if dim.name == name:
                return dim.values
        return (self.data.samples[name],) if name in self.data.samples else ()


def check_groups(config: SweepConfig, users: int) -> None:
    """The group count K may not exceed the world's users."""
    for k in config.values_of("groups") or (6,):
        if k > users:
            _fail(f"groups K={k} is larger than the {users} users of the world")


def _mapping(data: Any, name: str) -> dict:
    if data is None:
        return {}
    if not isinstance(data, dict):
        _fail(f"{name} must be a mapping, got {data!r}")
    return data


def _section(data: Any, name: str, known: tuple[str, ...]) -> dict:
    data = _mapping(data, name)
    unknown = sorted(set(data) - set(known))
    if unknown:
        _fail(f"{name}: unknown key {unknown[0]!r} (known: {', '.join(known)})")
    return data


def _evaluation(data: Any) -> Evaluation:
    section = _mapping(data, "evaluation")
    if "ncis_kind" in section:
        _fail("evaluation.ncis_kind is gone: name the NCIS kinds among evaluation.estimators "
              "(ncis: step-wise, ncis_trajectory, ncis_per_decision) and the one to select "
              "on as evaluation.metric (eval/ncis, ...)")
    return _dataclass_section(Evaluation, section, "evaluation")


def _dataclass_section(cls, data: Any, name: str, renames: dict[str, str] | None = None):
    renames = renames or {}
    known = tuple(renames.get(f, f) for f in cls.__dataclass_fields__)
    values = _section(data, name, known)
    inverse = {v: k for k, v in renames.items()}
    try:
        return cls(**{inverse.get(k, k): v for k, v in values.items()})
    except TypeError as err:
        raise ValueError(f"{name}: {err}") from err


def parse_sweep(data: Any, default_name: str = "sweep") -> SweepConfig:
    """A :class:`SweepConfig` from the YAML's mapping; ValueError (one line) if invalid."""
    top = _section(data, "sweep config", ("name", "algorithm", "data", "training", "bins",
                                          "search", "num_samples", "scheduler", "evaluation",
                                          "resources"))
    algorithm = top.get("algorithm")
    if algorithm not in ALGORITHMS:
        _fail(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    bins = {str(k): check_bins(str(k), v) for k, v in _mapping(top.get("bins"), "bins").items()}
    search = tuple(parse_dim(str(k), v, algorithm, bins)
                   for k, v in _mapping(top.get("search"), "search").items())
    return SweepConfig(
        name=str(top.get("name", default_name)), algorithm=algorithm,
        data=_data_source(top.get("data"), algorithm, bins),
        training=_dataclass_section(Training, top.get("training"), "training",
                                    {"fields": "set"}),
        search=search, bins=bins, num_samples=_integer(top.get("num_samples", 1), "num_samples"),
        scheduler=_dataclass_section(Scheduler, top.get("scheduler"), "scheduler"),
        evaluation=_evaluation(top.get("evaluation")),
        resources=_dataclass_section(Resources, top.get("resources"), "resources"))


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(f"{name} must be an integer, got {value!r}")
    return value


def _data_source(data: Any, algorithm: str, bins: dict) -> DataSource:
    section = _section(data, "data", ("path", "generate", "samples"))
    if ("path" in section) == ("generate" in section):
        _fail("data needs exactly one of 'path' (an existing world) and 'generate'")
    generate = _section(section.get("generate"), "data.generate", ("users", "days", "seed", "set"))
    if "users" in generate:
        _integer(generate["users"], "data.generate.users")
        if generate["users"] < 1:
            _fail(f"data.generate.users must be >= 1, got {generate['users']}")
    samples = dict(_section(section.get("samples"), "data.samples", SAMPLE_KEYS[algorithm]))
    for name in DATA_PARAMS[algorithm]:
        if name in samples:
            _check_value(name, samples[name], bins)
    return DataSource(path=section.get("path"), generate=dict(generate), samples=samples)


def load_sweep(path: str | Path) -> SweepConfig:
    """Read and validate a sweep YAML file."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise FileNotFoundError(f"{path}: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from err
    try:
        return parse_sweep(data, default_name=path.stem)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
