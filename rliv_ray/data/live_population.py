"""The static part of the synthetic live-stream world: users, live streams, videos, schedules.

Everything here is a deterministic function of ``(config, seed)`` and independent of which
users are simulated together, so buckets of users can be simulated separately (and in
parallel) and still form one consistent world.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

from rliv_ray.data.io import mix64
from rliv_ray.data.live_config import LiveWorldConfig

DAY_MS, HOUR_MS = 86_400_000, 3_600_000
VIDEO_DRAWS = 2  # popular videos drawn per feed slot; the user's taste picks one
POPULARITY_TABLE_SIZE = 1 << 20
"""Popularity draws read a table of this many quantiles (probabilities rounded to 2**-20)."""


def _rng(config: LiveWorldConfig, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([config.seed, *stream]))


def _zipf(rng: np.random.Generator, n: int, exponent: float) -> tuple[np.ndarray, np.ndarray]:
    """Zipf popularity over ids in random order: (probabilities (n,), quantile table)."""
    weights = rng.permutation(1.0 / np.arange(1, n + 1) ** exponent)
    cdf = np.cumsum(weights) / weights.sum()
    quantiles = (np.arange(POPULARITY_TABLE_SIZE) + 0.5) / POPULARITY_TABLE_SIZE
    table = np.minimum(np.searchsorted(cdf, quantiles, side="right"), n - 1)
    return weights / weights.sum(), table.astype(np.int32)


def draw_popular(table: np.ndarray, rng: np.random.Generator, shape) -> np.ndarray:
    """Ids drawn by popularity from a quantile table, int64 of ``shape``."""
    return table[rng.integers(0, len(table), shape)].astype(np.int64)


def popular_from_uniforms(table: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Ids drawn by popularity from a quantile table at uniforms ``u`` in (0, 1), int64."""
    return table[(u * len(table)).astype(np.int64)].astype(np.int64)


_DRAW_STRIDE = 256  # draws one purpose may take per request


class RequestDraws:
    """Counter-based random numbers of one step's requests (common random numbers).

    Draw j of purpose p for a user's request is a hash of (key, global user id, the user's
    request index, p, j), never the position of a shared stream: a user's draws at their t-th
    request are the same whichever policy runs and whichever other users are active, so paired
    differences between policies keep only the noise of the paths the policies take.
    """

    def __init__(self, key: int, users: np.ndarray, request_idx: np.ndarray):
        user_hash = mix64(np.asarray(users, np.int64), key)
        self._base = mix64(user_hash ^ np.asarray(request_idx, np.int64).view(np.uint64))

    def uniform(self, purpose: int, k: int | None = None) -> np.ndarray:
        """Uniforms in (0, 1): (A,) with ``k=None``, else (A, k)."""
        if purpose < 0 or (k or 1) > _DRAW_STRIDE:
            raise ValueError(f"purpose must be >= 0 and k <= {_DRAW_STRIDE}, got {purpose}, {k}")
        slot = np.uint64(purpose * _DRAW_STRIDE) + np.arange(k or 1, dtype=np.uint64)
        h = mix64(self._base[:, None] + slot)
        u = ((h >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
        return u[:, 0] if k is None else u

    def normal(self, purpose: int, k: int | None = None) -> np.ndarray:
        return ndtri(self.uniform(purpose, k))


@dataclass(frozen=True)
class LivePopulation:
    """Latent and observable traits of users, live streams and videos; a deterministic function
    of ``(config, seed)`` independent of which users are simulated together."""

    activity: np.ndarray  # (U,) mean sessions per day
    base_affinity: np.ndarray  # (U,) latent live affinity before any drift
    taste: np.ndarray  # (U, C) per-category tastes
    engagement: np.ndarray  # (U,) log-scale of the user's video watch times
    user_static: np.ndarray  # (U, 3) float32, the static user features
    live_category: np.ndarray  # (J,)
    live_quality: np.ndarray  # (J,)
    live_table: np.ndarray  # popularity quantile table of live ids
    live_start_h: np.ndarray  # (J,) hour of the day the daily broadcast starts
    live_hours: np.ndarray  # (J,) broadcast length in hours
    live_static: np.ndarray  # (J, 3) float32: log_popularity, quality_signal, category
    video_category: np.ndarray  # (V,)
    video_quality: np.ndarray  # (V,)
    video_table: np.ndarray  # popularity quantile table of video ids
    potential: np.ndarray  # (U,) latent affinity a first good live experience unlocks

    @classmethod
    def build(cls, c: LiveWorldConfig) -> LivePopulation:
        rng = _rng(c, 0)
        n_u, n_c, n_l = c.n_users, c.n_categories, c.n_live_streams
        activity = c.sessions_per_day * np.exp(
            c.activity_sigma * rng.standard_normal(n_u) - c.activity_sigma**2 / 2)
        component = rng.choice(len(c.affinity_shares), size=n_u, p=c.affinity_shares)
        affinity = (np.asarray(c.affinity_means)[component]
                    + c.affinity_sigma * rng.standard_normal(n_u))
        fan_signal = affinity + c.fan_signal_noise * rng.standard_normal(n_u)
        static = np.column_stack([np.log(activity), fan_signal, rng.gamma(2.0, 1.0, n_u)])
        taste = c.taste_sigma * rng.standard_normal((n_u, n_c))
        engagement = c.video_engagement_sigma * rng.standard_normal(n_u)

        popularity, live_table = _zipf(rng, n_l, c.live_popularity_exponent)
        live_category = rng.integers(0, n_c, n_l)
        live_quality = rng.standard_normal(n_l)
        hour_p = np.asarray(c.live_start_hour_weights, dtype=np.float64)
        start_h = rng.choice(24, size=n_l, p=hour_p / hour_p.sum()) + rng.random(n_l)
        hours = rng.uniform(c.live_min_hours, c.live_max_hours, n_l)
        live_static = np.column_stack([
            np.log(popularity * n_l),
            live_quality + c.quality_signal_noise * rng.standard_normal(n_l),
            live_category / max(n_c - 1, 1),
        ])
        _, video_table = _zipf(rng, c.n_videos, c.video_popularity_exponent)
        # a stream of its own, so a world without potential keeps its population
        has_potential = _rng(c, 1).random(n_u) < np.asarray(c.potential_shares)[component]
        return cls(activity, affinity, taste, engagement, static.astype(np.float32),
                   live_category, live_quality, live_table, start_h, hours,
                   live_static.astype(np.float32), rng.integers(0, n_c, c.n_videos),
                   rng.standard_normal(c.n_videos), video_table,
                   c.potential_gain * has_potential)

    def pick_videos(self, rng: np.random.Generator, users: np.ndarray, k: int) -> np.ndarray:
        """``k`` videos per user: each the user's favourite of VIDEO_DRAWS popular ones, (A, k)."""
        return self.videos_from_uniforms(users, rng.random((len(users), k, VIDEO_DRAWS)))

    def videos_from_uniforms(self, users: np.ndarray, u: np.ndarray) -> np.ndarray:
        """:meth:`pick_videos` at uniforms ``u`` of shape (A, k, VIDEO_DRAWS)."""
        draws = popular_from_uniforms(self.video_table, u)
        taste = self.taste[users[:, None, None], self.video_category[draws]]
        best = np.argmax(taste, axis=2)[..., None]
        return np.take_along_axis(draws, best, axis=2)[..., 0]


def session_starts(c: LiveWorldConfig, activity: np.ndarray,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Planned session starts of users as a ragged array (starts_ms, offsets), sorted per user;
    days uniform over the horizon, hours by ``request_hour_weights``; at least one per user."""
    counts = np.maximum(1, rng.poisson(activity * c.days))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    total = int(offsets[-1])
    hour_p = np.asarray(c.request_hour_weights, dtype=np.float64)
    day = rng.integers(0, c.days, total)
    hour = rng.choice(24, size=total, p=hour_p / hour_p.sum())
    starts = c.start_ms + day * DAY_MS + hour * HOUR_MS + rng.integers(0, HOUR_MS, total)
    owner = np.repeat(np.arange(len(counts)), counts)
    order = np.lexsort((starts, owner))
    return starts[order].astype(np.int64), offsets


