"""What a trial reports to Tune (an evaluation, never a training loss) and the truth after it.

SL-MGAC
    Each report: the off-policy estimates of the exported policy (Eq. 16 with ``epsilon``) on
    the held-out users of the trial's samples, one set of ``eval/<name>``, ``eval/<name>_lo``,
    ``eval/<name>_hi`` and ``eval/<name>_ess`` per estimator of ``evaluation.estimators``
    (:mod:`rliv_ray.ope.metrics`: ``rliv ope``'s streaming estimators and file reader);
    ``evaluation.metric`` names the one the scheduler optimises.
    After the sweep: ``truth/value``, the true on-policy value of the same held-out users in
    the synthetic world (``truth_seeds`` runs), with its interval and injection ratio. The
    scheduler never sees it.
RLIV-UA
    No off-policy estimator exists for RLIV-UA here, so each report carries the ground-truth
    world's value of the exported scorer (``rliv evaluate``'s metrics) on the first
    ``evaluation.users`` users with seeds 0..``seeds``-1, ``eval/<world_metric>`` the Tune
    metric. After the sweep, ``truth/value`` is the same metric on ``truth_users`` users
    (default: all) with other seeds (from :data:`TRUTH_SEED0`): its regret measures how much
    the cheap, noisy selection costs, not an estimator's bias.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from rliv_ray.sweep.config import SweepConfig

TRUTH_SEED0 = 1000
"""RLIV-UA truth rollouts use seeds from here, apart from the selection metric's."""


def report_metrics(config: SweepConfig, samples: str, world: str, policy: Path,
                   fields: dict | None = None) -> dict:
    """The evaluation one report of a trial carries (module docstring); ``fields``: the
    trial's training config fields (SL-MGAC's reward model reads ``reward_scale``)."""
    if config.algorithm == "sl-mgac":
        return _ope(config, samples, policy, fields or {})
    ev = config.evaluation
    values = _world_means(world, policy, users=ev.users, seeds=tuple(range(ev.seeds)))
    return {f"eval/{k}": v for k, v in values.items()}


def truth_metrics(config: SweepConfig, samples: str, world: str, policy: Path) -> dict:
    """The true value of an exported policy, measured once after the sweep."""
    ev = config.evaluation
    if config.algorithm == "sl-mgac":
        return _live_truth(config, samples, policy)
    seeds = tuple(range(TRUTH_SEED0, TRUTH_SEED0 + ev.truth_seeds))
    values = _world_means(world, policy, users=ev.truth_users, seeds=seeds)
    return {"truth/value": values[ev.world_metric],
            **{f"truth/{k}": v for k, v in values.items()}}


@functools.lru_cache(maxsize=4)
def _held_out(samples: str):
    """(world config, held-out log, population) of a build-live-samples output."""
    from rliv_ray.data.live_population import LivePopulation
    from rliv_ray.ope.runs import world_of

    world_config, test_log = world_of(samples)
    return world_config, test_log, LivePopulation.build(world_config)


def _network_policy(config: SweepConfig, policy: Path):
    from rliv_ray.algorithms.sl_mgac.baselines import method
    from rliv_ray.algorithms.sl_mgac.train import load_policy
    from rliv_ray.ope.evaluate import NetworkPolicy

    net, edges, name = load_policy(policy)
    return NetworkPolicy(net, edges, epsilon=config.evaluation.epsilon,
                         probability=method(name).probability)


@functools.lru_cache(maxsize=4)
def _beta(samples: str) -> float:
    """Eq. 5's cost weight of the world the samples' log came from."""
    from rliv_ray.data.io import read_manifest
    from rliv_ray.data.live_config import LiveWorldConfig

    world = read_manifest(samples).get("source", {}).get("world")
    if world is None:
        raise ValueError(f"{samples}: its manifest does not name the world it was generated "
                         "from (the off-policy rewards need its beta)")
    return LiveWorldConfig.from_dict(world).beta


def _ope(config: SweepConfig, samples: str, policy: Path, fields: dict) -> dict:
    from rliv_ray.algorithms.sl_mgac.config import SETTINGS_DEFAULTS
    from rliv_ray.ope.metrics import held_out_metrics, network_target

    ev = config.evaluation
    target = network_target(policy, epsilon=ev.epsilon, reward_scale=fields.get(
        "reward_scale", SETTINGS_DEFAULTS["reward_scale"]))
    metrics, _ = held_out_metrics(samples, target, ev.ope_settings(), beta=_beta(samples))
    return metrics


def _live_truth(config: SweepConfig, samples: str, policy: Path) -> dict:
    from rliv_ray.ope.evaluate import evaluate

    world_config, test_log, population = _held_out(samples)
    users = np.unique(test_log["user_id"].to_numpy())
    row = evaluate(_network_policy(config, policy), world_config=world_config, test_log=None,
                   users=users, seeds=tuple(range(config.evaluation.truth_seeds)),
                   population=population, n_bootstrap=0, gamma=config.evaluation.gamma)
    return {"truth/value": row.true_value, "truth/low": row.true_low,
            "truth/high": row.true_high, "truth/injection_ratio": row.injection_ratio}


def _world_means(world: str, scorer: Path, *, users: int | None,
                 seeds: tuple[int, ...]) -> dict[str, float]:
    """Mean over seeds of every ``rliv evaluate`` metric of the scorer in the world."""
    from rliv_ray.data import io
    from rliv_ray.data.ua_config import UAWorldConfig
    from rliv_ray.evaluation.world import WorldEval, evaluate_policies

    world_config = UAWorldConfig.from_dict(io.read_manifest(world)["world"])
    users = min(users, world_config.n_users) if users else None
    setup = WorldEval(world_config, seeds=seeds, users=users, buckets=1)
    spec = f"rliv:{scorer}"
    result = evaluate_policies(setup, [spec], workers=0, progress=False)[spec]
    return {metric: float(stats["mean"]) for metric, stats in result.items()}
