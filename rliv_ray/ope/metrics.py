"""Off-policy estimates as the metrics of a training run or a sweep's trial (issue 16, part 5).

A trained SL-MGAC policy is scored on the held-out users of its samples (``SAMPLES/test``, the
users ``rliv build-live-samples`` kept out of training) by the streaming estimators of
:mod:`rliv_ray.ope.streaming`, through the same file reader as ``rliv ope``
(:func:`rliv_ray.ope.scan.file_stats`): the formulas are those of ``estimators.py``,
``ncis.py`` and ``sequential.py``, nothing is re-implemented here. Each estimator ``NAME``
gives four metrics:

    eval/NAME        the estimate (per request for ips, snips, dm, dr, sndr, switch_dr; per
                     user, the cumulative reward, for ncis, ncis_trajectory,
                     ncis_per_decision, pdis)
    eval/NAME_lo     the 2.5% end of its 95% Poisson-bootstrap interval (nan with bootstrap 0)
    eval/NAME_hi     the 97.5% end
    eval/NAME_ess    Kish's effective sample size of the weights it uses (n for dm)

An estimator that cannot run on this policy (dm and the DR family without a reward model:
``targets.reward_model_note``; every weight 0) reports nan for all four, and nan is never
logged to MLflow. The target policy is the network with Eq. 16's epsilon-greedy rule, as
``rliv ope`` and ``rliv evaluate-ope`` score it.

The registry a run may choose from is :data:`ESTIMATORS` (those that stream). WPDIS, the
sequential DR family, MAGIC and FQE need the whole log in memory and FQE a fit per
evaluation: they are ``rliv ope-grade``'s, not a per-checkpoint metric.

RLIV-UA has no off-policy estimator on its logs here: its scorer picks a ranking weight per
exposed candidate of a user-author log, whose logged actions are selection-biased relative to
``behavior_prob`` (``estimators.py``), so per-row IPS-type estimates are biased for every
target but the logging policy. Its runs and sweeps report the ground-truth world's value
instead (``rliv evaluate``, ``rliv_ray.sweep.evaluate``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rliv_ray.ope.common import DEFAULT_BOOTSTRAP, OPEEstimate
from rliv_ray.ope.streaming import ESTIMATORS, MODEL_ESTIMATORS

__all__ = ["DEFAULT_RUN_ESTIMATORS", "ESTIMATORS", "MODEL_ESTIMATORS", "PREFIX", "SUFFIXES",
           "OPEMetricSettings", "check_metric", "held_out_files", "held_out_metrics",
           "metric_keys", "network_target", "ope_metrics", "parse_estimators"]

DEFAULT_RUN_ESTIMATORS = ("ncis", "snips", "dr")
"""What ``rliv train sl-mgac`` logs by default: step-wise NCIS (SL-MGAC's own, per user),
SNIPS and DR (per request; DR with the policy's reward model)."""
PREFIX = "eval/"
SUFFIXES = ("", "_lo", "_hi", "_ess")
SELECTABLE = ("", "_lo")
"""A sweep may select on an estimate or on the low end of its interval (pessimistic)."""
NOT_STREAMED = ("wpdis", "wdr", "weighted_dr", "magic", "fqe", "dr_steps")


def parse_estimators(value: str | Iterable[str], what: str = "estimators") -> tuple[str, ...]:
    """A list of estimator names (or one comma-separated string) checked against
    :data:`ESTIMATORS`; ValueError of one line naming ``what``."""
    names = [n.strip() for n in value.split(",")] if isinstance(value, str) else list(value)
    if not all(isinstance(n, str) for n in names):
        raise ValueError(f"{what} must be estimator names, got {value!r}")
    names = [n for n in names if n]
    if not names:
        raise ValueError(f"{what}: name at least one of {', '.join(ESTIMATORS)}")
    for name in names:
        if name in NOT_STREAMED:
            raise ValueError(f"{what}: {name!r} needs the whole log in memory (and FQE a fit "
                             "per evaluation), so it is not a run metric; use `rliv ope-grade`."
                             f" Choose from {', '.join(ESTIMATORS)}")
        if name not in ESTIMATORS:
            raise ValueError(f"{what}: unknown estimator {name!r} (choose from "
                             f"{', '.join(ESTIMATORS)})")
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"{what}: {duplicated[0]!r} is named twice")
    return tuple(names)


def metric_keys(estimators: Sequence[str], prefix: str = PREFIX) -> list[str]:
    """Every metric the estimators report, in order."""
    return [f"{prefix}{name}{suffix}" for name in estimators for suffix in SUFFIXES]


def check_metric(metric: str, estimators: Sequence[str], *, bootstrap: int,
                 what: str = "metric") -> str:
    """``eval/NAME`` or ``eval/NAME_lo`` with NAME among ``estimators``; ValueError (one line)
    otherwise."""
    for name in estimators:
        for suffix in SELECTABLE:
            if metric == f"{PREFIX}{name}{suffix}":
                if suffix and bootstrap == 0:
                    raise ValueError(f"{what} {metric} is the low end of an interval, but "
                                     "bootstrap is 0 (no interval)")
                return metric
    stem = metric.removeprefix(PREFIX).removesuffix("_lo")
    if metric.startswith(PREFIX) and stem in ESTIMATORS:
        raise ValueError(f"{what} {metric}: {stem} is not among the estimators "
                         f"{list(estimators)}; add it there")
    choices = ", ".join(f"{PREFIX}{n}" for n in estimators)
    raise ValueError(f"{what} must be one of {choices} (or one of them + '_lo', the low end of "
                     f"its interval), got {metric!r}")


def ope_metrics(estimates: Sequence[OPEEstimate], estimators: Sequence[str],
                prefix: str = PREFIX) -> dict[str, float]:
    """The four metrics of every name in ``estimators`` (module docstring): from its estimate
    in ``estimates``, nan when it has none (skipped). Pure."""
    by_name = {e.estimator: e for e in estimates}
    out = {}
    for name in estimators:
        e = by_name.get(name)
        values = ((math.nan,) * 4 if e is None else
                  (e.value, e.ci_low, e.ci_high, e.effective_sample_size))
        out.update({f"{prefix}{name}{suffix}": float(v)
                    for suffix, v in zip(SUFFIXES, values, strict=True)})
    return out


@dataclass(frozen=True)
class OPEMetricSettings:
    """Which estimators a run reports and how (the defaults of ``rliv ope``)."""

    estimators: tuple[str, ...] = DEFAULT_RUN_ESTIMATORS
    epsilon: float = 0.2
    """Eq. 16's exploration of the target (0.2: the paper's serving rule)."""
    ncis_cap: float = 10.0
    """c of the NCIS kinds."""
    clip: float = math.inf
    """Weight clip of ips, snips and dr (inf: none)."""
    tau: float = 10.0
    """Switch-DR's threshold."""
    gamma: float = 1.0
    """Discount per request of the per-user estimators (1: cumulative reward)."""
    bootstrap: int = DEFAULT_BOOTSTRAP
    """Poisson bootstrap replicates of the intervals (0: none, nan ends)."""
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "estimators", parse_estimators(self.estimators))
        if not 0 <= self.epsilon <= 1:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")
        self.stream_settings()  # the rest is checked there

    def stream_settings(self):
        from rliv_ray.ope.streaming import StreamSettings

        return StreamSettings(estimators=self.estimators, cap=self.clip,
                              ncis_cap=self.ncis_cap, tau=self.tau, gamma=self.gamma,
                              n_bootstrap=self.bootstrap, seed=self.seed)


def network_target(policy_file: str | Path, *, epsilon: float, reward_scale: float | None):
    """A policy.pt of ``rliv train sl-mgac`` as ``rliv ope``'s target (greedy, Eq. 16)."""
    from rliv_ray.algorithms.sl_mgac.train import load_policy
    from rliv_ray.ope.targets import NetworkTarget

    return NetworkTarget(load_policy(policy_file), epsilon=epsilon, greedy=True,
                         label=str(policy_file), reward_scale=reward_scale)


def held_out_files(samples: str | Path) -> list[Path]:
    """The held-out users' log files of a ``rliv build-live-samples`` output."""
    from rliv_ray.ope.scan import TEST_DIR

    files = sorted((Path(samples) / TEST_DIR).glob("*.parquet"))
    if not files:
        raise ValueError(f"{samples}: no held-out users ({TEST_DIR}/*.parquet) to score")
    return files


def held_out_metrics(samples: str | Path, target, settings: OPEMetricSettings, *,
                     beta: float) -> tuple[dict[str, float], dict[str, str]]:
    """(metrics, skipped: estimator -> why) of ``target`` on the samples' held-out users, read
    file by file in blocks of whole users (memory does not grow with them)."""
    from rliv_ray.ope.scan import file_stats
    from rliv_ray.ope.streaming import finalize, merge

    stream = settings.stream_settings()
    total = None
    for path in held_out_files(samples):
        stats = file_stats(path, None, stream, beta=beta, target=target)
        total = stats if total is None else merge(total, stats)
    result = finalize(total, stream, has_model=target.reward_note is None)
    skipped = {name: (target.reward_note or why) if why == "no reward model" else why
               for name, why in result.skipped.items()}
    return ope_metrics(result.estimates, settings.estimators), skipped
