"""Policies in the ground-truth world: rollouts over user buckets, paper metrics, paired margins.

Every policy meets the *same* users (the world's population, from its manifest) with common
random numbers: seed s and user bucket b start from the stream ``(world seed, EVAL_STREAM, s,
b)`` whatever the policy, so the paired difference between two policies on one seed cancels the
users' and the sessions' variance (the streams part ways once the policies' choices differ).
Buckets are independent (``ua_population``: the world is the same whatever the order users are
simulated in), so they run as parallel tasks through :mod:`rliv_ray.runner` (in this process,
on a local Ray, or on a cluster unchanged).

Per seed, the metrics of ``../shared/papers/rliv-ua.txt`` Appendix B.1 that the world can
measure, per user over the horizon unless said otherwise (the paper's Table 1 takes session length,
watch time, CTR and diversity; Table 2 UA count, gifted users, revenue and new fans):

    ltv              sum_l value_l * events_l, values 1, 1, 5, 20 (click, ev, follow, gift)
    session_length   requests per session (sessions split at 30 idle minutes)
    watch_time_min   minutes watched per session
    ctr              clicks / exposures
    diversity        distinct authors per session
    new_fans         follows
    ua_count         user-author pairs whose relationship depth B reached ``deep_bond``
                     (NaN in a learned simulator, which knows no B)
    gifted_users     share of users who gave at least one gift
    revenue          gifts
    requests         requests

App usage time and retention are not measured: in this world a user's sessions start at
times drawn before any policy acts, so only their length (above) depends on the policy.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import numpy as np
import torch

from rliv_ray import schema as S
from rliv_ray.data.io import user_bucket
from rliv_ray.data.ua_config import UAWorldConfig
from rliv_ray.data.ua_generate import log_schema_for_world
from rliv_ray.data.ua_lever import LTV_LABEL_VALUES, interval, session_numbers
from rliv_ray.data.ua_population import Population
from rliv_ray.data.ua_world import simulate_users
from rliv_ray.evaluation.learned_world import simulate_learned
from rliv_ray.evaluation.policies import PolicyError, make_policy
from rliv_ray.evaluation.sim_model import LearnedSimulator
from rliv_ray.mdp.state import StateLayout
from rliv_ray.runner import make_runner

EVAL_STREAM = 11
METRICS = ("ltv", "session_length", "watch_time_min", "ctr", "diversity", "new_fans",
           "ua_count", "gifted_users", "revenue", "requests")
DEEP_BOND = 0.5
"""Default relationship depth B from which a user-author pair counts as deep (UA count)."""


@dataclass(frozen=True)
class WorldEval:
    """What to evaluate: the world, its users, the seeds and how to run."""

    world: UAWorldConfig
    seeds: tuple[int, ...] = tuple(range(10))
    users: int | None = None
    """The first ``users`` users of the world's population (default: all of them)."""
    buckets: int = 4
    """User buckets per seed: the unit of parallel work."""
    epsilon: float = 0.0
    """Per-candidate exploration of learned policies (0: greedy)."""
    deep_bond: float = DEEP_BOND
    simulator: str | None = None
    """A learned simulator's directory (``rliv fit-simulator``): roll out there instead of the
    ground-truth world; ``world`` is then :func:`learned_world.world_config` of it."""

    def __post_init__(self) -> None:
        n = self.world.n_users
        if self.users is not None and not 1 <= self.users <= n:
            raise ValueError(f"users must be in [1, {n}] (the world's population), got "
                             f"{self.users}")
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        if self.buckets < 1:
            raise ValueError(f"buckets must be >= 1, got {self.buckets}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")
        if not 0.0 < self.deep_bond < 1.0:
            raise ValueError(f"deep_bond must be in (0, 1), got {self.deep_bond}")

    @property
    def n_users(self) -> int:
        return self.users or self.world.n_users


def state_dim(world: UAWorldConfig) -> int:
    """Width of the states the world shows learned policies (mdp/state.py layout)."""
    return StateLayout.from_schema(log_schema_for_world(world)).dim


def evaluate_policies(setup: WorldEval, specs: list[str], *, workers: int = 0,
                      address: str | None = None, progress: bool = True) -> dict[str, dict]:
    """For each policy spec and metric: per-seed values, mean and 95% interval over seeds.

    Every spec is built once here first, so a bad one fails before any rollout.
    """
    dim = state_dim(setup.world)
    for spec in specs:
        if setup.simulator and spec.partition("@")[0] == "Oracle":
            raise PolicyError("Oracle reads the world's latent state; a learned simulator has "
                              "none (use RankingModel, Greedy, Logging or a learned policy)")
        make_policy(spec, setup.world, dim, epsilon=setup.epsilon)
    items = [{"spec": spec, "seed": seed, "bucket": b} for spec in specs
             for seed in setup.seeds for b in range(setup.buckets)]
    runner = make_runner(workers, address=address, progress=progress)
    try:
        sums = runner.map(rollout_sums, items, "evaluate", setup=setup)
    finally:
        runner.close()
    out = {}
    for spec in specs:
        per_seed = []
        for seed in setup.seeds:
            parts = [s for s, item in zip(sums, items, strict=True)
                     if item["spec"] == spec and item["seed"] == seed]
            per_seed.append(finish(merge(parts), setup.n_users))
        out[spec] = {m: interval([r[m] for r in per_seed]) for m in METRICS}
    return out


def rollout_sums(spec: str, seed: int, bucket: int, setup: WorldEval) -> dict:
    """Simulate one bucket of users under one policy; additive sums of its metrics."""
    world = setup.world
    users = np.arange(setup.n_users)
    sim = load_simulator(setup.simulator) if setup.simulator else None
    ids = sim.replay.user_ids[users] if sim else users
    users = users[user_bucket(ids, setup.buckets) == bucket]
    policy = make_policy(spec, world, state_dim(world), epsilon=setup.epsilon)
    rng = np.random.default_rng(np.random.SeedSequence([world.seed, EVAL_STREAM, seed, bucket]))
    with one_torch_thread():  # a task is one core; more threads only contend
        if sim:
            cols = simulate_learned(sim, users, policy, rng, world.candidates_per_request,
                                    world.action_grid)
        else:
            cols = simulate_users(world, Population.build(world), users, policy, rng).columns
    return column_sums(cols, setup.deep_bond) if cols else merge([])


@functools.lru_cache(maxsize=2)
def load_simulator(path: str) -> LearnedSimulator:
    """A learned simulator, loaded once per process (every task of a worker reuses it)."""
    return LearnedSimulator.load(path)


@contextlib.contextmanager
def one_torch_thread():
    """Run torch on one thread inside the block (a model scores a few hundred rows per step,
    where a second thread costs more than it gives on a loaded machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def column_sums(cols: dict[str, np.ndarray], deep_bond: float) -> dict:
    """Additive totals of one rollout's exposures (merge, then :func:`finish`)."""
    user, author = cols[S.USER_ID], cols[S.AUTHOR_ID]
    order, session = session_numbers(cols)
    counts = {label: int(cols[label].sum()) for label in S.LABELS}
    if S.TRUE_BOND_AFTER in cols:
        deep = cols[S.TRUE_BOND_AFTER] >= deep_bond
        deep_pairs = len(np.unique(np.column_stack([user[deep], author[deep]]), axis=0))
    else:  # a learned simulator knows no relationship depth
        deep_pairs = float("nan")
    return {
        "exposures": len(user),
        "requests": len(np.unique(cols[S.REQUEST_ID])),
        "sessions": int(session[-1]),
        "session_authors": len(np.unique(np.column_stack([session, author[order]]), axis=0)),
        "watch_s": float(cols[S.WATCH_TIME_S].sum()),
        **counts,
        "ltv": sum(v * counts[label] for v, label in zip(LTV_LABEL_VALUES, S.LABELS,
                                                         strict=True)),
        "gifted_users": len(np.unique(user[cols[S.GIFT] > 0])),
        "deep_pairs": deep_pairs,
    }


def merge(parts: list[dict]) -> dict:
    keys = ("exposures", "requests", "sessions", "session_authors", "watch_s", *S.LABELS,
            "ltv", "gifted_users", "deep_pairs")
    return {k: sum(p[k] for p in parts) for k in keys}


def finish(total: dict, n_users: int) -> dict[str, float]:
    """Per-user and per-session metrics (the module docstring) from merged totals."""
    sessions = max(total["sessions"], 1)
    return {
        "ltv": total["ltv"] / n_users,
        "session_length": total["requests"] / sessions,
        "watch_time_min": total["watch_s"] / 60.0 / sessions,
        "ctr": total[S.CLICK] / max(total["exposures"], 1),
        "diversity": total["session_authors"] / sessions,
        "new_fans": total[S.FOLLOW] / n_users,
        "ua_count": total["deep_pairs"] / n_users,
        "gifted_users": total["gifted_users"] / n_users,
        "revenue": total[S.GIFT] / n_users,
        "requests": total["requests"] / n_users,
    }
