"""Score a live-stream allocation policy as SL-MGAC section 4.4 does, next to its true value.

* :func:`batch_from_table` / :func:`batch_from_observation`: live-sample rows, log rows or the
  world's observation dicts -> the tensor batch SL-MGAC's network and objective read
  (``objective.check_batch``); the activity group comes from ``live_watch_3w_s`` and the
  group edges of the training users when the rows do not carry it;
* :class:`NetworkPolicy`: any trained :class:`SLMGACNetwork` (SL-MGAC, an ablation or a
  baseline) as the world's :class:`~rliv_ray.data.live_world.LivePolicy`, with the
  epsilon-greedy rule of Eq. 16, so the same policy can be run on-policy *and* scored by NCIS;
* :func:`evaluate`: NCIS on the held-out users' logged trajectories (EQUATIONS.md 3), the
  true on-policy value of the same users, the injection ratio and the 20-minute
  allocation-ratio amplitude (EQUATIONS.md 1.19), in one :class:`EvalRow`.

Pure torch and NumPy, no Ray.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
import pyarrow as pa
import torch
from scipy import stats

from rliv_ray import schema as S
from rliv_ray.algorithms.sl_mgac import objective
from rliv_ray.algorithms.sl_mgac.network import SLMGACNetwork
from rliv_ray.data.live_config import LiveWorldConfig
from rliv_ray.data.live_metrics import allocation_ratio_amplitude, allocation_rewards
from rliv_ray.data.live_policies import observation_from_log
from rliv_ray.data.live_population import LivePopulation
from rliv_ray.data.live_samples import SessionClock, assign_groups, session_state
from rliv_ray.data.live_world import LivePolicy, simulate_live_users
from rliv_ray.data.ua_truth import discounted_returns
from rliv_ray.grouping import group_starts
from rliv_ray.ope.ncis import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_CAP,
    DEFAULT_KIND,
    NCISEstimate,
    evaluate_policy_ncis,
)

__all__ = ["EvalRow", "NetworkPolicy", "batch_from_observation", "batch_from_table", "evaluate",
           "mean_interval", "ncis_estimates", "observed_session_state", "true_value_runs"]

_FLOAT = (S.USER_FEATURES, S.LIVE_FEATURES, S.BEHAVIOR_PROB, S.LIVE_WATCH_S, S.VIDEO_WATCH_S,
          *S.SESSION_STATE_COLUMNS)
_BOOL = (S.DONE, S.NEXT_NEW_SESSION)
_IDS = (S.LIVE_HISTORY, S.VIDEO_HISTORY)  # kept int32: the embeddings hash them as int64
_ROW_COLUMNS = (*objective.STATE_COLUMNS, *S.SESSION_STATE_COLUMNS, S.ACTION, S.BEHAVIOR_PROB,
                *objective.OUTCOME_COLUMNS)
SESSION_REQUESTS_FEATURE = "log1p_session_requests"
"""The world's user feature that is 0 exactly on a session's first request: how a policy that
sees the world's observations tells that a request opens a session (:class:`SessionClock`)."""
TRUTH_STREAM = 0x7E57
"""The on-policy runs' random stream, apart from a generated log's. ``rliv ope-grade`` logs its
world on this stream too, so that its log and its truth share their random numbers."""
_TRUTH_STREAM = TRUTH_STREAM
TRUTH_REWARDS = ("expected", "realised")
CHUNK_ROWS = 8192
"""Rows per network call when a policy scores a whole log."""

Table = pa.Table | Mapping[str, np.ndarray]
ProbabilityFn = Callable[[SLMGACNetwork, dict[str, torch.Tensor]], torch.Tensor]


def _numpy(table: Table, name: str) -> np.ndarray:
    column = table[name]
    if isinstance(column, pa.ChunkedArray | pa.Array):
        if pa.types.is_fixed_size_list(column.type):
            return S.arrow_to_matrix(column, np.int32 if name.endswith(_IDS) else np.float32)
        return column.to_numpy()
    return np.asarray(column)


def _tensor(name: str, values: np.ndarray, device) -> torch.Tensor:
    base = name.removeprefix(S.NEXT_PREFIX)
    if base in _FLOAT:
        dtype = torch.float32
    elif base in _IDS:
        dtype = torch.int32
    elif name in _BOOL:
        dtype = torch.bool
    else:
        dtype = torch.int64
    values = np.ascontiguousarray(values)
    if not values.flags.writeable:  # Arrow-backed: torch needs its own copy
        values = values.copy()
    return torch.as_tensor(values, device=device).to(dtype)


def batch_from_table(table: Table, *, edges: np.ndarray | None,
                     device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """SL-MGAC's tensor batch from rows of live samples, a log or a world observation.

    Reads every column of ``objective.STATE_COLUMNS``, the session state (or computes it from
    log rows' ``session_end``, :func:`session_state`), the action, behaviour probability and
    outcomes, ``done``, ``next_new_session`` and the ``next_`` columns of
    :data:`~rliv_ray.schema.NEXT_STATE_COLUMNS` that ``table`` has (an Arrow table or a dict
    of NumPy arrays, same column names). Without a ``user_group`` column the group is
    :func:`assign_groups` of ``live_watch_3w_s`` with ``edges`` (those of the training users).
    Shapes: features (B, w) float32, histories (B, L) int32, ids, groups, actions and n (B,)
    int64, times, session state and probabilities (B,) float32, done flags (B,) bool.
    """
    names = table.column_names if isinstance(table, pa.Table) else list(table)
    batch: dict[str, torch.Tensor] = {}
    wanted = [*_ROW_COLUMNS, *_BOOL, *(S.next_column(c) for c in S.NEXT_STATE_COLUMNS)]
    for name in wanted:
        if name in names:
            batch[name] = _tensor(name, _numpy(table, name), device)
    session_known = {S.USER_ID, S.TS_MS, S.SESSION_END} <= set(names)
    if S.SESSION_INDEX not in batch and session_known:  # log rows: from their session ends
        user, ts = _numpy(table, S.USER_ID), _numpy(table, S.TS_MS)
        order = np.lexsort((ts, user))
        index, gap = session_state(user[order], ts[order], _numpy(table, S.SESSION_END)[order])
        for name, values in ((S.SESSION_INDEX, index), (S.REQUEST_GAP, gap)):
            column = np.empty_like(values)
            column[order] = values
            batch[name] = _tensor(name, column, device)
    if S.USER_GROUP not in batch:
        if S.LIVE_WATCH_3W_S not in names or edges is None:
            raise KeyError(f"rows need {S.USER_GROUP!r}, or {S.LIVE_WATCH_3W_S!r} and edges")
        group = assign_groups(_numpy(table, S.LIVE_WATCH_3W_S), edges)
        batch[S.USER_GROUP] = _tensor(S.USER_GROUP, group, device)
    missing = [c for c in objective.STATE_COLUMNS if c not in batch]
    if missing:
        raise KeyError(f"rows lack the state columns {missing}")
    return batch


def observed_session_state(obs: Mapping[str, np.ndarray],
                           clock: SessionClock) -> dict[str, np.ndarray]:
    """The session state (``SESSION_STATE_COLUMNS``) of observed requests: given in ``obs``, or
    tracked per user by ``clock`` across calls, a request opening a session where the world's
    ``log1p_session_requests`` feature is 0; empty when neither can be had."""
    if all(name in obs for name in S.SESSION_STATE_COLUMNS):
        return {name: obs[name] for name in S.SESSION_STATE_COLUMNS}
    from rliv_ray.data.live_world import USER_FEATURE_NAMES

    if (SESSION_REQUESTS_FEATURE not in USER_FEATURE_NAMES or S.TS_MS not in obs
            or S.USER_ID not in obs or S.USER_FEATURES not in obs):
        return {}
    column = USER_FEATURE_NAMES.index(SESSION_REQUESTS_FEATURE)
    new = np.asarray(obs[S.USER_FEATURES])[:, column] == 0
    index, gap = clock.observe(obs[S.USER_ID], obs[S.TS_MS], new)
    return {S.SESSION_INDEX: index, S.REQUEST_GAP: gap}


def batch_from_observation(obs: Mapping[str, np.ndarray], edges: np.ndarray,
                           device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The state columns of the world's on-policy observations (``LivePolicy`` input) as a
    batch; the group always comes from ``live_watch_3w_s`` and ``edges``, the session state
    from :func:`observed_session_state` (the observations taken as one run's requests)."""
    state = {name: obs[name] for name in objective.STATE_COLUMNS if name != S.USER_GROUP}
    state.update(observed_session_state(obs, SessionClock()))
    state[S.LIVE_WATCH_3W_S] = obs[S.LIVE_WATCH_3W_S]
    return batch_from_table(state, edges=edges, device=device)


class NetworkPolicy:
    """A trained SL-MGAC-shaped network as the world's ``inject_probability(obs)`` (Eq. 16).

        base(s)     = 1[p(s) > 1/2]  (``greedy``)   or   p(s)
        P(a=1 | s)  = (1 - epsilon) base(s) + epsilon / 2,    0 where no live stream is on air

    p(s) = ``probability(net, batch)``, the method's P(a = 1 | s) before exploration: the
    actor's pi_theta(1 | s) for SL-MGAC and BC (default ``objective.inject_probability``), a
    function of the critics for L2R and DQN (``baselines``). Greedy with epsilon = 0.2 is the
    serving rule of Eq. 16; the NCIS ratios use exactly these probabilities.
    """

    def __init__(self, net: SLMGACNetwork, edges: np.ndarray, *, epsilon: float = 0.0,
                 greedy: bool = True,
                 probability: ProbabilityFn = objective.inject_probability,
                 device: str | torch.device = "cpu", chunk_rows: int = CHUNK_ROWS):
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        self.net, self.edges = net, np.asarray(edges, dtype=np.float64)
        self.epsilon, self.greedy, self.probability = epsilon, greedy, probability
        self.device, self.chunk_rows = device, chunk_rows
        self.sessions = SessionClock()

    def reset_sessions(self) -> None:
        """Forget every user's session state (a new run of the world starts)."""
        self.sessions = SessionClock()

    @torch.no_grad()
    def method_probability(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """p(s) (B,) float64, the method's P(a = 1 | s) before the epsilon-greedy rule."""
        n = len(obs[S.LIVE_ID])
        out = np.zeros(n)
        if self.net.spec.session_state:
            obs = {**obs, **observed_session_state(obs, self.sessions)}
        for lo in range(0, n, self.chunk_rows):
            part = {k: v[lo:lo + self.chunk_rows] for k, v in obs.items()
                    if k in objective.STATE_COLUMNS or k in S.SESSION_STATE_COLUMNS
                    or k == S.LIVE_WATCH_3W_S}
            batch = batch_from_observation(part, self.edges, self.device)
            out[lo:lo + self.chunk_rows] = self.probability(self.net, batch).cpu().numpy()
        return out

    def inject_probability(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        p = self.method_probability(obs)
        base = (p > 0.5).astype(np.float64) if self.greedy else p
        mixed = (1.0 - self.epsilon) * base + 0.5 * self.epsilon
        return np.where(np.asarray(obs[S.LIVE_ID]) >= 0, mixed, 0.0)


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval of the mean of ``values``; nan bounds for < 2."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half


@dataclass(frozen=True)
class TruthRun:
    """One on-policy run of the held-out users."""

    user_return: np.ndarray  # (U',) return of each user with >= 1 request in this run
    injection_ratio: float  # share of all requests with a = 1
    injection_ratio_with_live: float  # ... of the requests with a live stream on air
    amplitude: float  # mean over 20-minute windows of max - min per-minute ratio


def true_value_runs(policy: LivePolicy, config: LiveWorldConfig, users: np.ndarray,
                    seeds: Sequence[int], *, beta: float, gamma: float = 1.0,
                    population: LivePopulation | None = None, window_minutes: int = 20,
                    truth_reward: str = "expected") -> list[TruthRun]:
    """Run ``users`` (indices of ``config``'s population) on-policy once per seed, with fresh
    dynamics drawn from ``(config.seed, seed)``; returns per-user (discounted) Eq. 5 returns.

    ``truth_reward="expected"`` (default) sums E[r_t | s_t, a_t] = a_t (E[T^l | s_t] - beta
    E[T^v / n | s_t]) from the world's latent expectations instead of the realised r_t: the
    same expected return (tower rule, conditional Monte Carlo) without the heavy-tailed
    watch-time noise, which dominates the realised one (``"realised"``)."""
    if truth_reward not in TRUTH_REWARDS:
        raise ValueError(f"truth_reward must be one of {TRUTH_REWARDS}, got {truth_reward!r}")
    pop = population if population is not None else LivePopulation.build(config)
    runs = []
    for seed in seeds:
        if hasattr(policy, "reset_sessions"):  # each run starts its users afresh
            policy.reset_sessions()
        rng = np.random.default_rng(np.random.SeedSequence([config.seed, _TRUTH_STREAM, seed]))
        cols = simulate_live_users(config, pop, users, policy, rng, light=True).columns
        order = np.lexsort((cols[S.USER_REQUEST_IDX], cols[S.USER_ID]))
        cols = {k: v[order] for k, v in cols.items()}
        if truth_reward == "expected":
            reward = cols[S.ACTION] * (cols[S.TRUE_EXPECTED_LIVE_WATCH_S]
                                       - beta * cols[S.TRUE_EXPECTED_VIDEO_WATCH_PER_VIDEO_S])
        else:
            reward = allocation_rewards(cols[S.ACTION], cols[S.LIVE_WATCH_S],
                                        cols[S.VIDEO_WATCH_S], cols[S.N_VIDEOS], beta)
        starts = group_starts(cols[S.USER_ID])
        action, has = cols[S.ACTION], cols[S.LIVE_ID] >= 0
        amplitudes = allocation_ratio_amplitude(cols[S.TS_MS], action, window_minutes)
        runs.append(TruthRun(
            user_return=discounted_returns(reward, starts, gamma)[starts],
            injection_ratio=float(action.mean()) if len(action) else 0.0,
            injection_ratio_with_live=float(action[has].mean()) if has.any() else 0.0,
            amplitude=float(amplitudes.mean()) if len(amplitudes) else 0.0))
    return runs


@dataclass(frozen=True)
class EvalRow:
    """One policy scored on the held-out users: NCIS (None if not asked for) and the truth."""

    ncis: NCISEstimate | None
    true_value: float  # mean over seeds of the mean per-user return of an on-policy run
    true_low: float  # 95% interval (see evaluate)
    true_high: float
    true_per_seed: tuple[float, ...]
    injection_ratio: float  # means over seeds
    injection_ratio_with_live: float
    amplitude: float
    users: int  # held-out users simulated
    seeds: tuple[int, ...]
    ncis_per_decision: NCISEstimate | None = None  # the per-decision kind, when asked for

    @property
    def ncis_value(self) -> float:
        return self.ncis.value if self.ncis is not None else math.nan

    @property
    def ess(self) -> float:
        return self.ncis.effective_sample_size if self.ncis is not None else math.nan

    @property
    def ncis_relative_error(self) -> float:
        """(J_NCIS - J_true) / |J_true| (nan without NCIS or with a zero truth)."""
        return self._relative_error(self.ncis)

    @property
    def per_decision_relative_error(self) -> float:
        """(J_NCIS-PD - J_true) / |J_true| (nan without the per-decision estimate)."""
        return self._relative_error(self.ncis_per_decision)

    def _relative_error(self, estimate: NCISEstimate | None) -> float:
        if estimate is None or self.true_value == 0:
            return math.nan
        return (estimate.value - self.true_value) / abs(self.true_value)

    @classmethod
    def from_dict(cls, data: Mapping) -> EvalRow:
        """The inverse of :meth:`to_dict`, JSON nulls read back as nan; other keys ignored."""
        def number(value):
            return math.nan if value is None else value

        def estimate(values: Mapping | None) -> NCISEstimate | None:
            return None if values is None else NCISEstimate(
                **{k: number(v) for k, v in values.items()})

        plain = {f.name: number(data[f.name]) for f in fields(cls)
                 if f.name not in ("ncis", "ncis_per_decision")}
        plain.update(true_per_seed=tuple(plain["true_per_seed"]), seeds=tuple(plain["seeds"]))
        return cls(ncis=estimate(data["ncis"]),
                   ncis_per_decision=estimate(data.get("ncis_per_decision")), **plain)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["ncis"] = None if self.ncis is None else asdict(self.ncis)
        out["ncis_per_decision"] = (None if self.ncis_per_decision is None
                                    else asdict(self.ncis_per_decision))
        out["ncis_relative_error"] = self.ncis_relative_error
        return out


def ncis_estimates(policy: LivePolicy, test_log: pa.Table, kinds: Sequence[str], *,
                   beta: float, cap: float | str = DEFAULT_CAP, gamma: float = 1.0,
                   n_bootstrap: int = DEFAULT_BOOTSTRAP,
                   level: float = 0.95) -> list[NCISEstimate]:
    """NCIS of ``policy`` on the held-out log, one estimate per kind, from one pass of the
    policy over the logged observations (no on-policy run: cheap enough for every report of
    a sweep's trial)."""
    if hasattr(policy, "reset_sessions"):
        policy.reset_sessions()
    p_inject = policy.inject_probability(observation_from_log(test_log))
    options = {"beta": beta, "cap": cap, "gamma": gamma, "n_bootstrap": n_bootstrap,
               "level": level}
    return [evaluate_policy_ncis(test_log, lambda _: p_inject, kind=kind, **options)
            for kind in kinds]


def evaluate(policy: LivePolicy, *, world_config: LiveWorldConfig, test_log: pa.Table | None,
             beta: float | None = None, seeds: Sequence[int] = (0,),
             cap: float | str = DEFAULT_CAP, gamma: float = 1.0, kind: str = DEFAULT_KIND,
             per_decision: bool = False, users: np.ndarray | None = None,
             population: LivePopulation | None = None,
             n_bootstrap: int = DEFAULT_BOOTSTRAP, window_minutes: int = 20,
             level: float = 0.95, truth_reward: str = "expected") -> EvalRow:
    """NCIS of ``policy`` on ``test_log`` and its true value on the same held-out users.

    NCIS (EQUATIONS.md 3, ``kind`` stepwise, trajectory or per_decision, cap ``cap``):
    ``policy.inject_probability`` on the observations rebuilt from the held-out log
    (``observation_from_log``); ``per_decision`` adds the per-decision estimate from the same
    probabilities. A policy that
    reads latent ``true_*`` keys (the oracle) cannot be scored: pass ``test_log=None`` and
    ``users`` for a truth-only row. J is the mean (``gamma``-discounted) Eq. 5 return per
    held-out user with ``beta`` (default ``world_config.beta``).

    Truth: the held-out users (default: the users of ``test_log``) of the *same* population
    (``world_config``: same users' latent traits, live streams, schedules), run on-policy once
    per seed with fresh dynamics (rewards: ``truth_reward``, see ``true_value_runs``), is what
    NCIS estimates (a counterfactual of the same trajectories), so the relative error measures
    the estimator and not the difference between populations. ``evaluate_policy`` is not used:
    it runs every user of the config and draws one dynamics stream per world seed. The true
    value is the mean per-user return over users with at least one request (NCIS's per-
    trajectory mean; users without planned sessions have none under any policy); its interval is
    Student-t over seeds, or with one seed the normal interval over users. The injection ratio
    and the mean 20-minute amplitude come from the same runs: with a few thousand users a minute
    holds tens of requests, so the amplitude is dominated by binomial noise; compare it between
    policies on equal users.
    """
    beta = world_config.beta if beta is None else beta
    if not seeds:
        raise ValueError("seeds must name at least one on-policy run")
    if users is None:
        if test_log is None:
            raise ValueError("give test_log or users")
        users = np.unique(_numpy(test_log, S.USER_ID))
    users = np.asarray(users, dtype=np.int64)
    estimate = per_decision_estimate = None
    if test_log is not None:
        kinds = (kind, "per_decision") if per_decision else (kind,)
        estimates = ncis_estimates(policy, test_log, kinds, beta=beta, cap=cap, gamma=gamma,
                                   n_bootstrap=n_bootstrap, level=level)
        estimate = estimates[0]
        per_decision_estimate = estimates[1] if per_decision else None
    runs = true_value_runs(policy, world_config, users, seeds, beta=beta, gamma=gamma,
                           population=population, window_minutes=window_minutes,
                           truth_reward=truth_reward)
    per_seed = [float(r.user_return.mean()) for r in runs]
    mean, low, high = mean_interval(per_seed, level)
    if len(runs) == 1:
        returns = runs[0].user_return
        half = stats.norm.ppf(0.5 + level / 2) * returns.std(ddof=1) / math.sqrt(len(returns))
        low, high = mean - half, mean + half
    return EvalRow(estimate, mean, float(low), float(high), tuple(per_seed),
                   float(np.mean([r.injection_ratio for r in runs])),
                   float(np.mean([r.injection_ratio_with_live for r in runs])),
                   float(np.mean([r.amplitude for r in runs])), len(users), tuple(seeds),
                   per_decision_estimate)
