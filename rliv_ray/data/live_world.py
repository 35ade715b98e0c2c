"""The synthetic live-stream allocation world, vectorised over a batch of users.

:func:`simulate_live_users` runs a set of users through their horizon in lock step (one feed
request per active user per step) under any :class:`LivePolicy` and returns every request as
columns of NumPy arrays. The laws are documented on
:class:`~rliv_ray.data.live_config.LiveWorldConfig`; who the users, live streams and videos are
is in :mod:`~rliv_ray.data.live_population`, the reference policies are in
:mod:`~rliv_ray.data.live_policies`. Four facts a reader of the log needs:

* when no live stream is on air for a request (low supply at night) it gets ``live_id = -1``,
  zero live features, and action 0 with propensity 1, whatever the policy says;
* the world's clock is local time, and ``live_watch_3w_s`` sums the user's live watch time over
  the last 21 calendar days including the current one, before the current request; the 21 days
  before the log starts are drawn from the user's latent affinity (warm-up), so activity groups
  are meaningful from day 0;
* histories hold the last ``history_length`` live streams the user clicked and videos the user
  was served, most recent first, padded with -1;
* every draw after the users' schedules and warm-up is counter-based per (user, request index)
  (:class:`~rliv_ray.data.live_population.RequestDraws`): two policies run with the same rng
  meet the same randomness at each user's t-th request (common random numbers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy.stats import poisson

from rliv_ray import schema as S
from rliv_ray.data.live_config import LiveWorldConfig
from rliv_ray.data.live_population import (
    DAY_MS,
    HOUR_MS,
    VIDEO_DRAWS,
    LivePopulation,
    RequestDraws,
    draw_popular,
    popular_from_uniforms,
    session_starts,
)
from rliv_ray.data.live_response import (
    capped_lognormal_mean,
    clicked_watch,
    expected_live_watch,
    leave_probability,
    logit,
    sigmoid,
)

WATCH_WINDOW_DAYS = 21  # the "past 3 weeks" of LIVE_WATCH_3W_S
WARMUP_LIVE_DRAWS = 4  # popular live streams drawn per warm-up click; the user's taste picks one
_NO_DAY = -(1 << 40)

USER_FEATURE_NAMES = (
    "log_sessions_per_day", "live_fan_signal", "account_age_years",
    "hour_sin", "hour_cos", "log1p_session_requests", "session_inserts",
    "session_unwanted_inserts", "log1p_live_clicks",
)
"""Observable user features: three static, the hour of the request, then session and history
counters the platform keeps."""
LIVE_FEATURE_NAMES = ("log_popularity", "quality_signal", "category", "hours_on_air",
                      "ranker_score")
"""Observable features of the candidate live stream (all zero when none is on air)."""


TRUE_CLICK_PROB = "true_click_prob"
"""Oracle-only observation key: P(click | inject) of the request's live stream."""
TRUE_LEAVE_PROB = "true_leave_prob"
"""Oracle-only observation key: P(the user leaves for good | this request's insert is unwanted)."""
TRUE_BASE_AFFINITY = "true_base_affinity"
"""Oracle-only observation key: the user's latent base live affinity (before any drift)."""
TRUE_POTENTIAL = "true_potential"
"""Oracle-only observation key: the user's hidden potential not yet unlocked."""

# purposes of the per-request draws (RequestDraws)
(_CANDIDATES, _RANKER, _N_VIDEOS, _VIDEOS, _ACTION, _CLICK, _LONG, _WATCH, _VIDEO_T, _LEAVE,
 _THINK, _QUIT, _SKIP) = range(13)


class LivePolicy(Protocol):
    def inject_probability(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """P(a = 1) for each of the B requests of ``obs`` (log column names, plus the latent
        ``S.TRUE_*`` keys that only oracles may read), shape (B,), values in [0, 1]."""
        ...


@dataclass
class _Users:
    """Clocks, counters, histories and the latent drift of the users simulated: arrays (U, ...)."""

    starts: np.ndarray
    offsets: np.ndarray
    session: np.ndarray
    clock: np.ndarray
    request_idx: np.ndarray
    session_requests: np.ndarray
    session_inserts: np.ndarray
    session_unwanted: np.ndarray
    live_clicks: np.ndarray
    drift: np.ndarray
    drift_ms: np.ndarray
    watch_sum: np.ndarray  # (U, WATCH_WINDOW_DAYS) live watch seconds per calendar day ...
    watch_day: np.ndarray  # ... and the day each slot holds
    live_hist: np.ndarray  # (U, L) ring buffers of ids, -1 = empty
    live_ptr: np.ndarray
    video_hist: np.ndarray
    video_ptr: np.ndarray
    potential: np.ndarray  # (U,) hidden potential not yet unlocked
    key: int  # of the per-request draws

    @classmethod
    def build(cls, c: LiveWorldConfig, pop: LivePopulation, users: np.ndarray,
              rng: np.random.Generator) -> _Users:
        starts, offsets = session_starts(c, pop.activity[users], rng)
        n, L = len(users), c.history_length
        first = starts[offsets[:-1]].copy()

        def zeros(dtype=np.int64):
            return np.zeros(n, dtype)

        st = cls(starts, offsets, offsets[:-1].copy(), first, zeros(), zeros(), zeros(),
                 zeros(), zeros(), zeros(np.float64), first.copy(),
                 np.zeros((n, WATCH_WINDOW_DAYS)), np.full((n, WATCH_WINDOW_DAYS), _NO_DAY),
                 np.full((n, L), S.HISTORY_PAD, np.int32), zeros(),
                 pop.pick_videos(rng, users, L).astype(np.int32), zeros(),
                 pop.potential[users].copy(), 0)
        _warm_up(c, pop, users, st, rng)
        st.key = int(rng.integers(0, 2**62))
        return st

    def active(self) -> np.ndarray:
        return np.flatnonzero(self.session < self.offsets[1:])

    def watch_3w(self, rows: np.ndarray, day: np.ndarray) -> np.ndarray:
        recent = self.watch_day[rows] > (day - WATCH_WINDOW_DAYS)[:, None]
        return (self.watch_sum[rows] * recent).sum(axis=1)

    def add_watch(self, rows: np.ndarray, day: np.ndarray, seconds: np.ndarray) -> None:
        slot = day % WATCH_WINDOW_DAYS
        stale = self.watch_day[rows, slot] != day
        self.watch_sum[rows[stale], slot[stale]] = 0.0
        self.watch_day[rows, slot] = day
        self.watch_sum[rows, slot] += seconds


def _ordered(hist: np.ndarray, ptr: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Ring buffers of ``rows`` as lists, most recent first, (A, L)."""
    L = hist.shape[1]
    index = (ptr[rows][:, None] - 1 - np.arange(L)) % L
    return hist[rows[:, None], index]


def _push(hist: np.ndarray, ptr: np.ndarray, rows: np.ndarray, items: np.ndarray,
          count: np.ndarray) -> None:
    """Append the first ``count[i]`` of ``items[i]`` (A, k) to row ``rows[i]``'s ring buffer."""
    L, k = hist.shape[1], items.shape[1]
    take = np.arange(k) < count[:, None]
    pos = (ptr[rows][:, None] + np.arange(k)) % L
    hist[np.broadcast_to(rows[:, None], take.shape)[take], pos[take]] = items[take]
    ptr[rows] = (ptr[rows] + count) % L


def _warm_up(c: LiveWorldConfig, pop: LivePopulation, users: np.ndarray, st: _Users,
             rng: np.random.Generator) -> None:
    """The 21 days before the log: live clicks drawn from the latent affinity at the historical
    injection rate fill the 3-week watch time and the live history."""
    p_click = sigmoid(c.live_click_bias + pop.base_affinity[users] + c.k_live_taste)
    requests = WATCH_WINDOW_DAYS * pop.activity[users] / c.quit_rate
    clicks = rng.poisson(requests * c.warmup_inject_rate * p_click)
    owner = np.repeat(np.arange(len(users)), clicks)
    day = rng.integers(-WATCH_WINDOW_DAYS, 0, len(owner))
    draws = draw_popular(pop.live_table, rng, (len(owner), WARMUP_LIVE_DRAWS))
    taste = pop.taste[users[owner][:, None], pop.live_category[draws]]
    live = draws[np.arange(len(owner)), np.argmax(taste, axis=1)]
    m = (pop.base_affinity[users[owner]] + c.k_live_taste * taste.max(axis=1)
         + c.k_live_quality * pop.live_quality[live])
    seconds = clicked_watch(c, m, rng.random(len(m)), rng.standard_normal(len(m)))
    past = np.arange(-WATCH_WINDOW_DAYS, 0)
    st.watch_day[:, past % WATCH_WINDOW_DAYS] = past
    np.add.at(st.watch_sum, (owner, day % WATCH_WINDOW_DAYS), seconds)
    order = np.lexsort((day, owner))
    owner, live = owner[order], live[order]
    L = c.history_length
    from_end = np.cumsum(clicks)[owner] - 1 - np.arange(len(owner))
    kept = np.minimum(clicks, L)
    keep = from_end < L
    st.live_hist[owner[keep], (kept[owner] - 1 - from_end)[keep]] = live[keep]
    st.live_ptr[:] = kept % L


@dataclass
class LiveSimulation:
    """Every request of a simulation as columns (log column names), in time-step order."""

    columns: dict[str, np.ndarray]
    n_users: int

    @property
    def rows(self) -> int:
        return len(self.columns.get(S.REQUEST_ID, ()))


def simulate_live_users(c: LiveWorldConfig, pop: LivePopulation, users: np.ndarray,
                        policy: LivePolicy, rng: np.random.Generator, *,
                        light: bool = False) -> LiveSimulation:
    """Run ``users`` (global user indices) through their horizon under ``policy``.

    ``light`` leaves the feature and history columns out of the result and adds the latent
    expected watch times (policy evaluation).
    """
    users = np.asarray(users, dtype=np.int64)
    st = _Users.build(c, pop, users, rng)
    chunks: list[dict[str, np.ndarray]] = []
    while len(act := st.active()):
        draws = RequestDraws(st.key, users[act], st.request_idx[act])
        chunks.append(_step(c, pop, users, st, act, policy, draws, light))
    columns = {}
    for key in list(chunks[0]) if chunks else ():  # column by column: frees the steps' parts
        columns[key] = np.concatenate([chunk.pop(key) for chunk in chunks])
    return LiveSimulation(columns, len(users))


@dataclass
class _Request:
    """What the recommenders propose for each active user's request, before the policy acts."""

    live: np.ndarray  # (A,) live id, -1 when none is on air
    live_features: np.ndarray  # (A, len(LIVE_FEATURE_NAMES)) float32
    match: np.ndarray  # (A,) m of the live response laws (0 without a live stream)
    n0: np.ndarray  # (A,) videos served without an insert
    videos: np.ndarray  # (A, k) video ids, k = max(n0)
    video_mu: np.ndarray  # (A, k) log-medians of the videos' watch times


def _propose(c: LiveWorldConfig, pop: LivePopulation, u: np.ndarray, hour: np.ndarray,
             alpha: np.ndarray, draws: RequestDraws) -> _Request:
    n = len(u)
    cand = popular_from_uniforms(pop.live_table, draws.uniform(_CANDIDATES, c.live_candidates))
    since = (hour[:, None] - pop.live_start_h[cand]) % 24  # hours since the broadcast started
    on_air = since < pop.live_hours[cand]
    taste = pop.taste[u[:, None], pop.live_category[cand]]
    score = (c.k_live_taste * taste + c.k_live_quality * pop.live_quality[cand]
             + c.live_ranker_noise * draws.normal(_RANKER, c.live_candidates))
    best = np.argmax(np.where(on_air, score, -np.inf), axis=1)
    has = on_air.any(axis=1)
    row = np.arange(n)
    live = np.where(has, cand[row, best], S.NO_LIVE)
    pick = np.where(has, live, 0)
    mood = c.mood_amplitude * np.cos(2 * np.pi * (hour - c.mood_peak_hour) / 24)
    match = (alpha + c.k_live_taste * taste[row, best]
             + c.k_live_quality * pop.live_quality[pick] + mood)
    features = np.column_stack([pop.live_static[pick], since[row, best], score[row, best]])
    features[~has] = 0.0

    extra_cdf = poisson.cdf(np.arange(c.videos_max), c.videos_mean - c.videos_min)
    extra = np.searchsorted(extra_cdf, draws.uniform(_N_VIDEOS))
    n0 = np.clip(c.videos_min + extra, c.videos_min, c.videos_max)
    k = int(n0.max())
    videos = pop.videos_from_uniforms(
        u, draws.uniform(_VIDEOS, k * VIDEO_DRAWS).reshape(n, k, VIDEO_DRAWS))
    video_mu = (np.log(c.video_median_s) + pop.engagement[u][:, None]
                + c.k_video_taste * pop.taste[u[:, None], pop.video_category[videos]]
                + c.k_video_quality * pop.video_quality[videos])
    return _Request(live, features.astype(np.float32), np.where(has, match, 0.0), n0, videos,
                    video_mu)


def _observation(c, pop, u, st: _Users, act, now, hour, req: _Request, alpha) -> dict:
    """The policy's view of the requests: log columns plus latent ``S.TRUE_*`` keys."""
    angle = 2 * np.pi * hour / 24
    dynamic = np.column_stack([np.sin(angle), np.cos(angle), np.log1p(st.session_requests[act]),
                               st.session_inserts[act], st.session_unwanted[act],
                               np.log1p(st.live_clicks[act])])
    slots = np.arange(req.videos.shape[1])
    kept = slots < (req.n0 - 1)[:, None]  # the videos left when a live stream is inserted
    per_video = capped_lognormal_mean(req.video_mu, c.video_sigma, c.video_watch_cap_s)
    has = req.live >= 0
    return {
        S.REQUEST_ID: S.make_request_id(now, u),
        S.USER_REQUEST_IDX: st.request_idx[act].copy(),
        S.TS_MS: now,
        S.USER_ID: u,
        S.USER_FEATURES: np.concatenate([pop.user_static[u], dynamic], axis=1).astype(np.float32),
        S.LIVE_ID: req.live,
        S.LIVE_FEATURES: req.live_features,
        S.LIVE_HISTORY: _ordered(st.live_hist, st.live_ptr, act),
        S.VIDEO_HISTORY: _ordered(st.video_hist, st.video_ptr, act),
        S.LIVE_WATCH_3W_S: st.watch_3w(act, (now - c.start_ms) // DAY_MS).astype(np.float32),
        S.TRUE_LIVE_AFFINITY: alpha,
        TRUE_BASE_AFFINITY: pop.base_affinity[u],
        TRUE_CLICK_PROB: np.where(has, sigmoid(c.live_click_bias + req.match), 0.0),
        TRUE_LEAVE_PROB: leave_probability(c, pop.base_affinity[u], st.session_unwanted[act]),
        TRUE_POTENTIAL: st.potential[act].copy(),
        S.TRUE_EXPECTED_LIVE_WATCH_S: np.where(has, expected_live_watch(c, req.match), 0.0),
        S.TRUE_EXPECTED_VIDEO_WATCH_PER_VIDEO_S: (per_video * kept).sum(1) / kept.sum(1),
    }


def _act(policy: LivePolicy, obs: dict, has: np.ndarray,
         draws: RequestDraws) -> tuple[np.ndarray, np.ndarray]:
    """Sample a ~ policy where a live stream is on air (else a = 0 with propensity 1)."""
    p = np.asarray(policy.inject_probability(obs), dtype=np.float64)
    if p.shape != has.shape or not np.all((p >= 0) & (p <= 1)):
        raise ValueError(f"{type(policy).__name__}.inject_probability must return {has.shape} "
                         f"probabilities in [0, 1], got shape {p.shape}")
    p = np.where(has, p, 0.0)
    action = draws.uniform(_ACTION) < p
    return action, np.where(action, p, 1.0 - p)


def _step(c: LiveWorldConfig, pop: LivePopulation, users, st: _Users, act, policy,
          draws: RequestDraws, light: bool) -> dict:
    """One request per active user: proposals, decision, responses, state updates."""
    u, now = users[act], st.clock[act].copy()
    hour = ((now - c.start_ms) % DAY_MS) / HOUR_MS
    st.drift[act] *= np.exp2(-(now - st.drift_ms[act]) / (c.drift_half_life_days * DAY_MS))
    st.drift_ms[act] = now
    alpha = pop.base_affinity[u] + (pop.potential[u] - st.potential[act]) + st.drift[act]
    req = _propose(c, pop, u, hour, alpha, draws)
    obs = _observation(c, pop, u, st, act, now, hour, req, alpha)
    action, prob = _act(policy, obs, req.live >= 0, draws)
    click = action & (draws.uniform(_CLICK) < sigmoid(c.live_click_bias + req.match))
    watch = clicked_watch(c, req.match, draws.uniform(_LONG), draws.normal(_WATCH))
    live_watch = np.where(click, watch, 0.0)
    n = req.n0 - action
    k = req.videos.shape[1]
    watched = np.arange(k) < n[:, None]
    video_t = np.exp(req.video_mu + c.video_sigma * draws.normal(_VIDEO_T, k))
    video_watch = (np.minimum(video_t, c.video_watch_cap_s) * watched).sum(axis=1)
    unwanted = action & ~click
    leave = unwanted & (draws.uniform(_LEAVE) < obs[TRUE_LEAVE_PROB])
    end = _update(c, st, act, now, req, n, click, unwanted, leave, live_watch, video_watch,
                  draws)
    out = {name: obs[name] for name in S.LIVE_LOG_COLUMNS if name in obs}
    if light:
        for name in (S.USER_FEATURES, S.LIVE_FEATURES, S.LIVE_HISTORY, S.VIDEO_HISTORY):
            del out[name]
        for name in (S.TRUE_EXPECTED_LIVE_WATCH_S, S.TRUE_EXPECTED_VIDEO_WATCH_PER_VIDEO_S):
            out[name] = obs[name]
    out.update({
        S.ACTION: action.astype(np.int8),
        S.BEHAVIOR_PROB: prob.astype(np.float32),
        S.LIVE_CLICK: click.astype(np.int8),
        S.LIVE_WATCH_S: live_watch.astype(np.float32),
        S.VIDEO_WATCH_S: video_watch.astype(np.float32),
        S.N_VIDEOS: n.astype(np.int16),
        S.SESSION_END: end,
    })
    return out


def _update(c: LiveWorldConfig, st: _Users, act, now, req: _Request, n, click, unwanted, leave,
            live_watch, video_watch, draws: RequestDraws) -> np.ndarray:
    """Histories, 3-week watch time, drift, counters, clocks and session ends (``leave``: the
    user's last request); returns the session-end flags."""
    _push(st.live_hist, st.live_ptr, act, req.live[:, None], click.astype(np.int64))
    _push(st.video_hist, st.video_ptr, act, req.videos, n)
    st.add_watch(act, (now - c.start_ms) // DAY_MS, live_watch)
    good = click & (live_watch >= c.good_watch_s)
    st.potential[act[click]] = 0.0  # unlocked by a first live click: alpha keeps it
    drift = st.drift[act] + c.gain_good * good - c.loss_unwanted * unwanted
    st.drift[act] = np.clip(drift, -c.drift_max, c.drift_max)
    p_quit = sigmoid(logit(c.quit_rate) + c.k_quit_unwanted * unwanted
                      + c.k_quit_fatigue * st.session_inserts[act])
    st.request_idx[act] += 1
    st.session_requests[act] += 1
    st.session_inserts[act] += n < req.n0  # an insert took a video slot
    st.session_unwanted[act] += unwanted
    st.live_clicks[act] += click
    think = -c.think_time_s * np.log(draws.uniform(_THINK))
    st.clock[act] += ((video_watch + live_watch + think) * 1000.0).astype(np.int64) + 1
    end = (draws.uniform(_QUIT) < p_quit) | (st.session_requests[act] >= c.max_session_requests)
    end |= leave
    ending = act[end]
    p_skip = sigmoid(logit(c.skip_rate) - c.k_return * st.drift[ending])
    st.session[ending] += 1 + (draws.uniform(_SKIP)[end] < p_skip)
    st.session[act[leave]] = st.offsets[1:][act[leave]]  # no further sessions
    for counter in (st.session_requests, st.session_inserts, st.session_unwanted):
        counter[ending] = 0
    nxt = ending[st.session[ending] < st.offsets[1:][ending]]
    st.clock[nxt] = np.maximum(st.starts[st.session[nxt]],
                               st.clock[nxt] + int(c.min_session_gap_s * 1000))
    return end
