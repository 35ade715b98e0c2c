"""Metrics of live-stream allocation (pure NumPy) and the on-policy truth of the synthetic world.

* :func:`allocation_rewards`: SL-MGAC Eq. 5, r = a * (T^l - beta * T^v / n);
* :func:`injection_ratio_per_minute` and :func:`allocation_ratio_amplitude`: the allocation
  ratio and its stability (EQUATIONS.md 1.19);
* :func:`evaluate_policy`: runs the world under any policy and returns its true value, the
  reference that off-policy estimates (NCIS) of the same policy are compared with.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from rliv_ray import schema as S
from rliv_ray.data.live_config import LiveWorldConfig
from rliv_ray.data.live_world import LivePolicy, LivePopulation, simulate_live_users
from rliv_ray.data.ua_truth import discounted_returns
from rliv_ray.grouping import group_starts

MINUTE_MS = 60_000
DEFAULT_GAMMA = 0.9  # SL-MGAC section 4.3
_EVAL_STREAM = 2


def allocation_rewards(action, live_watch_s, video_watch_s, n_videos, beta: float) -> np.ndarray:
    """r_t = a_t * (T^l_t - beta * T^v_t / n_t) per request (SL-MGAC Eq. 5), float64."""
    action = np.asarray(action, dtype=np.float64)
    per_video = np.asarray(video_watch_s, np.float64) / np.asarray(n_videos, np.float64)
    return action * (np.asarray(live_watch_s, np.float64) - beta * per_video)


def injection_ratio_per_minute(ts_ms, actions, *, min_requests: int = 1):
    """Share of requests with a = 1 in each whole minute that has at least ``min_requests``.

    Returns ``(minute_ms, ratio, requests)``: the start of each such minute (ms, ascending),
    the injection ratio in it, and its number of requests.
    """
    minute = np.asarray(ts_ms, dtype=np.int64) // MINUTE_MS
    keys, index, counts = np.unique(minute, return_inverse=True, return_counts=True)
    injected = np.bincount(index, weights=np.asarray(actions, np.float64), minlength=len(keys))
    keep = counts >= min_requests
    return keys[keep] * MINUTE_MS, injected[keep] / counts[keep], counts[keep]


def allocation_ratio_amplitude(ts_ms, actions, window_minutes: int = 20, *,
                               min_requests: int = 1) -> np.ndarray:
    """Amplitude of the allocation ratio in sliding windows (SL-MGAC section 4.8).

    Requests are binned into whole minutes (``ts_ms // 60000``); a minute's ratio is the share
    of its requests with a = 1 (minutes with fewer than ``min_requests`` requests have no
    ratio). A window starts at every whole minute m from the first minute with a ratio to
    ``last - window_minutes + 1`` (one window if the span is shorter) and covers the minutes
    [m, m + window_minutes); its amplitude is max - min of the ratios inside it. Windows
    without any ratio are dropped. Returns the amplitudes, one per window, in time order.
    """
    if window_minutes < 1:
        raise ValueError(f"window_minutes must be >= 1, got {window_minutes}")
    minute_ms, ratio, _ = injection_ratio_per_minute(ts_ms, actions, min_requests=min_requests)
    if len(ratio) == 0:
        return np.zeros(0)
    minute = minute_ms // MINUTE_MS
    span = int(minute[-1] - minute[0]) + 1
    lo = np.full(max(span, window_minutes), np.inf)
    hi = np.full(len(lo), -np.inf)
    lo[minute - minute[0]] = ratio
    hi[minute - minute[0]] = ratio
    top = sliding_window_view(hi, window_minutes).max(axis=1)
    bottom = sliding_window_view(lo, window_minutes).min(axis=1)
    seen = np.isfinite(top)
    return top[seen] - bottom[seen]


@dataclass(frozen=True)
class PolicyValue:
    """A policy's true value in the world, from an on-policy run."""

    user_return: np.ndarray  # (U,) sum of Eq. 5 rewards over each user's requests
    user_discounted_return: np.ndarray  # (U,) sum_t gamma^t r_t, t = the user's request index
    user_requests: np.ndarray  # (U,)
    user_usage_s: np.ndarray  # (U,) app usage: live plus video watch time
    injection_ratio: float  # share of all requests with a = 1
    injection_ratio_with_live: float  # ... of the requests with a live stream on air
    minute_ms: np.ndarray  # injection-ratio time series, per simulated minute
    minute_ratio: np.ndarray
    amplitudes: np.ndarray  # allocation_ratio_amplitude over 20-minute windows
    beta: float
    gamma: float

    @property
    def mean_return(self) -> float:
        return float(self.user_return.mean())

    @property
    def mean_discounted_return(self) -> float:
        return float(self.user_discounted_return.mean())


def policy_run(config: LiveWorldConfig, policy: LivePolicy, *, users: int | None = None,
               seed: int | None = None) -> tuple[LiveWorldConfig, dict[str, np.ndarray]]:
    """Run ``users`` fresh users (default ``config.n_users``) of the world with ``seed``
    (default ``config.seed``) under ``policy``: the world run and its light columns (latent
    expectations included), sorted by user, then request. The same (config, users, seed)
    gives every policy the same population and random stream (common random numbers)."""
    world = dataclasses.replace(config, n_users=users or config.n_users,
                                seed=config.seed if seed is None else seed)
    rng = np.random.default_rng(np.random.SeedSequence([world.seed, _EVAL_STREAM]))
    cols = simulate_live_users(world, LivePopulation.build(world), np.arange(world.n_users),
                               policy, rng, light=True).columns
    order = np.lexsort((cols[S.USER_REQUEST_IDX], cols[S.USER_ID]))
    return world, {k: v[order] for k, v in cols.items()}


def session_discounted_returns(reward: np.ndarray, session_end: np.ndarray,
                               starts: np.ndarray, gamma: float) -> np.ndarray:
    """Per user, sum_t gamma^k_t r_t with k_t the sessions the user ended before request t:
    gamma applies only on transitions into a new session (rows sorted by user, then request;
    ``starts`` flags each user's first row). Returns one value per user, in row order."""
    ended = np.asarray(session_end, dtype=np.int64)
    before = np.cumsum(ended) - ended  # session ends before each row, over all users
    first = np.flatnonzero(starts)
    owner = np.cumsum(starts) - 1
    k = before - before[first][owner]
    return np.bincount(owner, weights=reward * np.power(gamma, k), minlength=len(first))


def evaluate_policy(config: LiveWorldConfig, policy: LivePolicy, *, beta: float | None = None,
                    gamma: float = DEFAULT_GAMMA, users: int | None = None,
                    seed: int | None = None, window_minutes: int = 20) -> PolicyValue:
    """Run ``users`` fresh users (default ``config.n_users``) of the world with ``seed``
    (default ``config.seed``) under ``policy`` and measure its true value with ``beta``
    (default ``config.beta``)."""
    if not 0 <= gamma <= 1:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    world, cols = policy_run(config, policy, users=users, seed=seed)
    beta = world.beta if beta is None else beta
    reward = allocation_rewards(cols[S.ACTION], cols[S.LIVE_WATCH_S], cols[S.VIDEO_WATCH_S],
                                cols[S.N_VIDEOS], beta)
    user, n = cols[S.USER_ID], world.n_users
    starts = group_starts(user)
    discounted = discounted_returns(reward, starts, gamma)[starts]
    usage = cols[S.LIVE_WATCH_S].astype(np.float64) + cols[S.VIDEO_WATCH_S]
    action, has = cols[S.ACTION], cols[S.LIVE_ID] >= 0
    minute_ms, ratio, _ = injection_ratio_per_minute(cols[S.TS_MS], action)
    return PolicyValue(
        user_return=np.bincount(user, weights=reward, minlength=n),
        user_discounted_return=np.bincount(user[starts], weights=discounted, minlength=n),
        user_requests=np.bincount(user, minlength=n),
        user_usage_s=np.bincount(user, weights=usage, minlength=n),
        injection_ratio=float(action.mean()),
        injection_ratio_with_live=float(action[has].mean()) if has.any() else 0.0,
        minute_ms=minute_ms, minute_ratio=ratio,
        amplitudes=allocation_ratio_amplitude(cols[S.TS_MS], action, window_minutes),
        beta=beta, gamma=gamma,
    )
