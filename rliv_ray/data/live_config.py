"""Settings of the synthetic live-stream allocation world (every number of the world lives here)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from rliv_ray import schema as S

# Relative request rate by hour of the day (the world's clock is local time): quiet nights,
# a lunch bump and an evening peak.
REQUEST_HOUR_WEIGHTS = (2, 1, 1, 1, 1, 1, 2, 4, 5, 5, 5, 5, 6, 5, 5, 5, 5, 6, 7, 9, 10, 10, 8, 4)
# Relative number of live streams going on air at each hour: streamers broadcast in the evening.
LIVE_START_HOUR_WEIGHTS = (1, 0.5, 0.3, 0.2, 0.2, 0.3, 0.5, 1, 1.5, 2, 2.5, 3, 3, 3, 3, 3,
                           3.5, 4, 5.5, 8, 10, 9, 6, 3)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class LiveWorldConfig:
    """Users scrolling a short-video feed; per request the system may inject one live stream.

    Per request the video recommender serves n0 = clip(videos_min + Poisson(videos_mean -
    videos_min), videos_min, videos_max) videos; the live recommender draws ``live_candidates``
    streams by popularity and proposes the best one *on air* (none on air: live_id = -1, and the
    action must be 0). Injecting (a = 1) replaces the last video slot, so n = n0 - a. With the
    user's latent live affinity alpha (base + unlocked potential + drift), category tastes
    tau_c and the hour h:

        m       = alpha + k_live_taste*tau_c(live) + k_live_quality*q(live) + mood(h)
        mood(h) = mood_amplitude * cos(2 pi (h - mood_peak_hour) / 24)
        P(click | a=1)    = sigmoid(live_click_bias + m)
        T^l | click       ~ lognormal mixture: long with P = sigmoid(live_long_bias +
                            k_live_long*m), median live_long_median_s, else live_short_median_s;
                            log-medians shifted by k_live_duration*m; capped at live_watch_cap_s
        T^l               = 0 without a click (and when a = 0)
        T_video_j         ~ lognormal(log video_median_s + engagement_u + k_video_taste*tau_c(j)
                            + k_video_quality*q_j, video_sigma), capped; T^v = sum of n videos
        P(quit after req) = sigmoid(logit(quit_rate) + k_quit_unwanted*[a=1, no click]
                                    + k_quit_fatigue*inserts_this_session)

    Long-term lever: a good live experience (click and T^l >= good_watch_s) adds ``gain_good``
    to the user's affinity drift, an unwanted insert (a = 1, no click) subtracts
    ``loss_unwanted``; the drift decays with half-life ``drift_half_life_days`` and is clipped
    to [-drift_max, drift_max]. The drift also moves the return rate: at a session end the user
    skips the next planned session with P = sigmoid(logit(skip_rate) - k_return*drift). So an
    insert that pays now can cost later (gamma > 0 matters). Leave law (off with
    ``leave_rate = 0``, the default): right after an unwanted insert the user leaves for the
    rest of the horizon with P = sigmoid(logit(leave_rate) + k_leave_repeat * (unwanted
    inserts earlier in the session) - k_leave_affinity * base affinity). Hidden potential (the
    lever of the defaults): a share ``potential_shares`` of each affinity component (averse,
    casual, fans) holds ``potential_gain`` of latent affinity that the user's first live click
    unlocks for good (alpha = base + unlocked potential + drift). Until then neither the
    immediate reward nor the 3-week watch time shows it, so an insert at a small loss now can
    pay within the next few requests for these users and only costs for the others. The
    reward is Eq. 5 of SL-MGAC, r = a * (T^l - beta * T^v / n) (EQUATIONS.md 1.5).

    The defaults were chosen from ``rliv check-live-world --users 3000 --seeds 5`` alone
    (gamma 0.9 per request, terminal at the user's last request; benchmarks/RESULTS.md): the
    long-horizon oracle beats the immediate oracle by +8.4 ± 1.9 (+6.3%) and the best
    threshold on the immediate reward (m = -5 s) by +5.6 ± 1.7 (+4.2%) per user. Without
    potential (``potential_gain = 0``) and with the leave law off the world has no lever
    (margin 0.00). Random draws are counter-based per (user, request index) (common random
    numbers: :class:`~rliv_ray.data.live_population.RequestDraws`).

    Live supply: each stream broadcasts daily from a start hour drawn from
    ``live_start_hour_weights`` for U(live_min_hours, live_max_hours) hours, so supply peaks in
    the evening and is near zero at night. The ``live_watch_3w_s`` of the 21 days before the
    log is warmed up from the latent affinity at ``warmup_inject_rate``.
    """

    n_users: int = 2_000
    days: int = 2
    seed: int = 0
    start_ms: int = 1_767_225_600_000  # 2026-01-01T00:00:00, read as local midnight
    history_length: int = S.HISTORY_LENGTH
    """Live and video ids kept in each user's behaviour history (SL-MGAC section 2: 50)."""
    n_categories: int = 8
    n_live_streams: int = 2_000
    n_videos: int = 100_000
    live_popularity_exponent: float = 0.9
    """Zipf exponent of live-stream popularity (candidate draws)."""
    video_popularity_exponent: float = 0.8

    # --- day cycle and sessions
    request_hour_weights: tuple[float, ...] = REQUEST_HOUR_WEIGHTS
    """Relative session-start rate per hour (24 values): the request rate's day cycle."""
    sessions_per_day: float = 2.0
    """Mean sessions per user per day; users' activity is lognormal around it."""
    activity_sigma: float = 0.6
    max_session_requests: int = 100
    think_time_s: float = 2.0
    """Mean seconds between the end of one request and the next."""
    min_session_gap_s: float = 60.0

    # --- live supply
    live_start_hour_weights: tuple[float, ...] = LIVE_START_HOUR_WEIGHTS
    """Relative number of streams starting their daily broadcast at each hour (24 values)."""
    live_min_hours: float = 1.0
    live_max_hours: float = 5.0
    """Each stream broadcasts daily for U(live_min_hours, live_max_hours) hours."""
    live_candidates: int = 8
    """Streams the live recommender draws per request; it proposes the best one on air."""
    live_ranker_noise: float = 0.5
    """Std of the live recommender's score error."""
    quality_signal_noise: float = 0.5
    """Std of the noise on the observable ``quality_signal`` live feature."""

    # --- users' latent live affinity: a mixture (live-averse, casual, fans)
    affinity_shares: tuple[float, ...] = (0.3, 0.45, 0.25)
    affinity_means: tuple[float, ...] = (-4.0, -0.8, 0.6)
    affinity_sigma: float = 0.5
    fan_signal_noise: float = 1.0
    """Std of the noise on the observable ``live_fan_signal`` user feature."""
    taste_sigma: float = 1.0
    """Std of users' per-category tastes (shared by live streams and videos)."""

    # --- live response
    live_click_bias: float = -1.5
    k_live_taste: float = 0.5
    k_live_quality: float = 0.5
    mood_amplitude: float = 0.4
    mood_peak_hour: float = 21.0
    live_long_bias: float = -2.0
    k_live_long: float = 0.6
    k_live_duration: float = 0.3
    live_short_median_s: float = 15.0
    live_short_sigma: float = 1.0
    live_long_median_s: float = 150.0
    live_long_sigma: float = 0.9
    live_watch_cap_s: float = 3_600.0

    # --- video response
    videos_min: int = 3
    videos_mean: float = 6.0
    videos_max: int = 12
    video_median_s: float = 7.0
    video_sigma: float = 0.9
    video_engagement_sigma: float = 0.4
    k_video_taste: float = 0.2
    k_video_quality: float = 0.3
    video_watch_cap_s: float = 600.0

    # --- session end and long-term effects
    quit_rate: float = 0.08
    """Per-request quit probability without inserts."""
    k_quit_unwanted: float = 0.5
    """Logit added to the quit hazard right after an unwanted insert."""
    k_quit_fatigue: float = 0.05
    """Logit added per live stream inserted earlier in the session."""
    good_watch_s: float = 30.0
    gain_good: float = 0.15
    loss_unwanted: float = 0.03
    drift_max: float = 1.5
    """The drift stays in [-drift_max, drift_max] (affinity cannot run away)."""
    drift_half_life_days: float = 7.0
    skip_rate: float = 0.1
    k_return: float = 2.0
    leave_rate: float = 0.0
    """P(the user leaves the app for the rest of the horizon) right after an unwanted insert,
    for a user of base affinity 0 with no earlier unwanted insert in the session (0: never)."""
    k_leave_repeat: float = 0.0
    """Logit added to the leave probability per earlier unwanted insert in the same session."""
    k_leave_affinity: float = 0.0
    """Logit subtracted per unit of the user's base live affinity: casual users leave more
    readily than fans."""
    potential_shares: tuple[float, ...] = (0.2, 0.5, 0.0)
    """Share of the users of each affinity component (averse, casual, fans) with a hidden
    potential: latent affinity their 3-week watch time does not show yet (zeros: none)."""
    potential_gain: float = 2.5
    """Affinity a user with potential gains for good at their first live click (0: off)."""

    # --- warm-up of the 3-week live watch time and the histories
    warmup_inject_rate: float = 0.15
    """Share of requests that got a live stream before the log starts (sets the 3-week watch)."""

    # --- reward and logging policy
    beta: float = 0.5
    """beta of Eq. 5, r = a * (T^l - beta * T^v / n); larger beta, fewer injections. 0.5 is
    lambda = 1 in Eq. 4 (beta = lambda / (1 + lambda)): with the defaults the immediate-greedy
    oracle injects ~40% of the requests that have a live stream on air (~25% of all requests;
    ~35% and ~22% without the hidden potential)."""
    logging_epsilon: float = 0.2
    """Logging policy: heuristic probability mixed with a fair coin, p = (1-eps) p_h + eps/2."""
    logging_noise: float = 0.5
    """Std of the logging heuristic's per-request logit noise (a hash of the request id)."""

    def __post_init__(self) -> None:
        for name in ("n_users", "days", "n_categories", "n_live_streams", "n_videos",
                     "max_session_requests", "live_candidates"):
            _check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        _check(self.n_users <= S.MAX_USER_ID + 1,
               f"n_users must be <= 2**{S.REQUEST_ID_USER_BITS}, got {self.n_users}")
        _check(self.n_videos < 2**31 and self.n_live_streams < 2**31,
               "n_videos and n_live_streams must fit in int32")
        self._check_distributions()
        self._check_requests()
        for name in ("quit_rate", "skip_rate", "warmup_inject_rate"):
            value = getattr(self, name)
            _check(0 < value < 1, f"{name} must be in (0, 1), got {value}")
        _check(0 <= self.leave_rate < 1, f"leave_rate must be in [0, 1), got {self.leave_rate}")
        _check(0 < self.logging_epsilon <= 1,
               f"logging_epsilon must be in (0, 1] (propensities must stay in (0, 1)), got "
               f"{self.logging_epsilon}")
        _check(self.beta >= 0, f"beta must be >= 0, got {self.beta}")
        for name in ("activity_sigma", "affinity_sigma", "fan_signal_noise", "taste_sigma",
                     "live_ranker_noise", "quality_signal_noise", "video_engagement_sigma",
                     "logging_noise", "k_quit_unwanted", "k_quit_fatigue", "gain_good",
                     "loss_unwanted", "k_return", "mood_amplitude", "drift_max",
                     "k_leave_repeat", "k_leave_affinity", "potential_gain"):
            value = getattr(self, name)
            _check(value >= 0, f"{name} must be >= 0, got {value}")

    def _check_distributions(self) -> None:
        for name in ("request_hour_weights", "live_start_hour_weights"):
            weights = getattr(self, name)
            _check(len(weights) == 24, f"{name} must have 24 values, got {len(weights)}")
            _check(min(weights) >= 0 and sum(weights) > 0,
                   f"{name} must be non-negative with a positive sum")
        _check(len(self.affinity_shares) == len(self.affinity_means) >= 1,
               f"affinity_shares and affinity_means must have the same length >= 1, got "
               f"{len(self.affinity_shares)} and {len(self.affinity_means)}")
        _check(min(self.affinity_shares) >= 0 and abs(sum(self.affinity_shares) - 1) < 1e-6,
               f"affinity_shares must be non-negative and sum to 1, got {self.affinity_shares}")
        _check(len(self.potential_shares) == len(self.affinity_shares)
               and all(0 <= x <= 1 for x in self.potential_shares),
               f"potential_shares must hold one share in [0, 1] per affinity component, got "
               f"{self.potential_shares}")
        for name in ("sessions_per_day", "think_time_s", "live_short_median_s",
                     "live_long_median_s", "live_watch_cap_s", "video_median_s",
                     "video_watch_cap_s", "live_short_sigma", "live_long_sigma", "video_sigma",
                     "drift_half_life_days", "good_watch_s"):
            value = getattr(self, name)
            _check(value > 0, f"{name} must be > 0, got {value}")
        _check(0 < self.live_min_hours <= self.live_max_hours <= 24,
               f"need 0 < live_min_hours <= live_max_hours <= 24, got {self.live_min_hours} "
               f"and {self.live_max_hours}")

    def _check_requests(self) -> None:
        _check(self.history_length >= 1,
               f"history_length must be >= 1, got {self.history_length}")
        _check(self.videos_min >= 2,
               f"videos_min must be >= 2 (an insert replaces one video), got {self.videos_min}")
        _check(self.videos_min <= self.videos_mean <= self.videos_max,
               f"need videos_min <= videos_mean <= videos_max, got {self.videos_min}, "
               f"{self.videos_mean}, {self.videos_max}")
        _check(self.videos_max <= self.history_length,
               f"videos_max ({self.videos_max}) must be <= history_length "
               f"({self.history_length})")
        _check(self.min_session_gap_s >= 0,
               f"min_session_gap_s must be >= 0, got {self.min_session_gap_s}")

    def to_dict(self) -> dict:
        """Plain-JSON form, for manifests and MLflow params."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> LiveWorldConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown LiveWorldConfig fields: {sorted(unknown)}")
        from rliv_ray.checks import check_dataclass_fields

        check_dataclass_fields(cls, data)
        tuples = {k: tuple(v) for k, v in data.items() if isinstance(v, list)}
        return cls(**{**data, **tuples})
