"""The static part of the synthetic user-author world: who the users and authors are.

Everything here is a deterministic function of ``(config, seed)`` and independent of the order
in which users are simulated, so buckets of users can be simulated separately (and in parallel)
and still form one consistent world.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rliv_ray.data.ua_config import UAWorldConfig

USER_FEATURE_NAMES = (
    "log_sessions_per_day",
    "gifter_signal",
    "account_age_years",
    "log1p_requests_so_far",
    "log1p_follows_so_far",
    "log1p_gifts_so_far",
)
"""Observable user features: three static, then three that grow with the user's history."""
N_STATIC_USER_FEATURES = 3

AUTHOR_FEATURE_NAMES = ("log_popularity", "quality", "category", "is_live_streamer")

# Share of sessions starting in each hour of the day (UTC): quiet nights, an evening peak.
DIURNAL = np.array(
    [2, 1, 1, 1, 1, 1, 2, 4, 5, 5, 5, 5, 6, 5, 5, 5, 5, 6, 7, 9, 10, 10, 8, 4], dtype=np.float64
)
DIURNAL /= DIURNAL.sum()


def _rng(config: UAWorldConfig, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([config.seed, *stream]))


@dataclass(frozen=True)
class Population:
    """Latent and observable traits of every user and author."""

    user_taste: np.ndarray  # (n_users, d)
    user_activity: np.ndarray  # (n_users,) mean sessions per day
    user_gifter: np.ndarray  # (n_users,) bool: this user ever gifts
    user_static_features: np.ndarray  # (n_users, N_STATIC_USER_FEATURES) float32
    user_group: np.ndarray  # (n_users,) int16, activity quantile group
    author_taste: np.ndarray  # (n_authors, d)
    author_popularity: np.ndarray  # (n_authors,) sampling weights, sum 1
    author_features: np.ndarray  # (n_authors, len(AUTHOR_FEATURE_NAMES)) float32

    @classmethod
    def build(cls, config: UAWorldConfig) -> Population:
        rng = _rng(config, 0)
        n_u, n_a, d = config.n_users, config.n_authors, config.taste_dim
        user_taste = rng.standard_normal((n_u, d))
        activity = config.sessions_per_day * np.exp(
            config.activity_sigma * rng.standard_normal(n_u) - config.activity_sigma**2 / 2
        )
        gifter = rng.random(n_u) < config.gifter_share
        gifter_signal = gifter + 0.5 * rng.standard_normal(n_u)  # what a platform can observe
        age_years = rng.gamma(2.0, 1.0, n_u)
        static = np.column_stack([np.log(activity), gifter_signal, age_years]).astype(np.float32)
        ranks = np.argsort(np.argsort(activity))
        group = (ranks * config.n_user_groups // n_u).astype(np.int16)

        author_taste = rng.standard_normal((n_a, d))
        popularity = 1.0 / np.arange(1, n_a + 1) ** 0.8  # Zipf-like
        popularity = rng.permutation(popularity)
        popularity /= popularity.sum()
        quality = rng.standard_normal(n_a)
        category = np.argmax(author_taste, axis=1) / max(d - 1, 1)
        is_live = (rng.random(n_a) < 0.2).astype(np.float64)
        author_features = np.column_stack(
            [np.log(popularity * n_a), quality, category, is_live]
        ).astype(np.float32)
        return cls(user_taste, activity, gifter, static, group, author_taste, popularity,
                   author_features)

    def affinity(self, config: UAWorldConfig, users: np.ndarray, authors: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
        """Latent potential alpha of pairs: taste match plus a pair-specific draw, std ~sigma."""
        match = np.einsum("...d,...d->...", self.user_taste[users], self.author_taste[authors])
        match /= np.sqrt(config.taste_dim)
        noise = rng.standard_normal(match.shape)
        return (config.affinity_sigma * (0.8 * match + 0.6 * noise)).astype(np.float32)

    def sample_authors(self, rng: np.random.Generator, n_rows: int, k: int) -> np.ndarray:
        """``k`` distinct authors per row, drawn by popularity (Gumbel top-k), (n_rows, k)."""
        n_a = len(self.author_popularity)
        log_p = np.log(self.author_popularity)
        out = np.empty((n_rows, k), dtype=np.int64)
        chunk = max(1, 20_000_000 // n_a)
        for start in range(0, n_rows, chunk):
            rows = min(chunk, n_rows - start)
            keys = log_p - np.log(-np.log(rng.random((rows, n_a))))
            out[start:start + rows] = np.argpartition(-keys, k - 1, axis=1)[:, :k]
        return out


def pair_potential(affinity: np.ndarray, k_potential: float, threshold: float) -> np.ndarray:
    """How much a pair's bond can deepen per unit of gain: sigmoid(k * (alpha - threshold))."""
    return 1.0 / (1.0 + np.exp(-k_potential * (affinity - threshold)))


def session_starts(config: UAWorldConfig, activity: np.ndarray,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Session start times of users, as a ragged array: (starts_ms, offsets).

    User i's sessions are ``starts_ms[offsets[i]:offsets[i+1]]``, sorted; each user has at least
    one session. Days are uniform over the horizon, hours follow :data:`DIURNAL`.
    """
    counts = np.maximum(1, rng.poisson(activity * config.days))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    total = int(offsets[-1])
    day = rng.integers(0, config.days, total)
    hour = rng.choice(24, size=total, p=DIURNAL)
    ms_in_hour = rng.integers(0, 3_600_000, total)
    starts = config.start_ms + day * 86_400_000 + hour * 3_600_000 + ms_in_hour
    owner = np.repeat(np.arange(len(counts)), counts)
    order = np.lexsort((starts, owner))
    return starts[order].astype(np.int64), offsets
