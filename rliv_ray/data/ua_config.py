"""Settings of the synthetic user-author world (every number of the world lives here)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from rliv_ray.actions import ActionGrid


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class UAWorldConfig:
    """A population of users and authors and the laws of their relationships.

    Every user keeps a *pool* of ``pool_size`` authors they can be recommended; each pool slot
    carries the pair's hidden relationship ``bond`` B in [0, 1) and its latent potential
    ``affinity`` alpha. At each request N candidates are drawn from the pool, the ranker scores
    them, the policy's weight reranks them by Eq. 1 and the top K are exposed. With
    z = q_item + k_affinity*alpha + k_bond*B (the user's interest in the exposed item):

        P(click)            = sigmoid(logit(click_rate) + z)
        P(eff. view | click) = sigmoid(logit(effective_view_given_click) + z)
        P(follow | ev)      = sigmoid(logit(follow_given_ev) + k_follow_bond*B), once per pair
        P(gift | ev)        = gifter_u * sigmoid(logit(gift_given_ev) + k_gift_bond*B
                                                   + k_gift_followed*followed)
        B <- B * exp(-gap / bond_decay_requests)                              (decay)
        B <- B + potential * (gain_exposure + sum_l gain_l * label_l) * (1 - B)  (deepening)
        potential = sigmoid(k_potential * (alpha - potential_threshold))

    so boosting a pair with latent potential costs a less relevant item now and pays with a
    deeper relationship later, while boosting a pair without potential only costs. The session
    ends after each request with P(quit) = sigmoid(logit(quit_rate) - k_quit_interest*z).
    """

    n_users: int = 2_000
    n_authors: int = 1_000
    days: int = 14
    seed: int = 0
    taste_dim: int = 8
    pool_size: int = 100
    """Authors a user can be recommended; per-pair state is kept for these slots only."""
    pool_refresh_prob: float = 0.01
    """Per request, the chance that the user's weakest pool slot gets a new author."""
    candidates_per_request: int = 10
    """N: candidates the ranker scores per request (the paper serves up to 300)."""
    exposures_per_request: int = 1
    """K: items exposed per request (the paper's per-request watch times suggest 1)."""
    sessions_per_day: float = 2.0
    """Mean sessions per user per day; users' activity is lognormal around it."""
    activity_sigma: float = 0.7
    max_session_requests: int = 200
    think_time_s: float = 3.0
    """Mean seconds between the end of one item and the next request."""

    click_rate: float = 0.004
    """Click probability of a neutral exposure (z = 0); realised ~3% (paper: click ~3%)."""
    effective_view_given_click: float = 0.15
    k_ev_interest: float = 0.5
    """How much interest z moves P(effective view | click)."""
    follow_given_ev: float = 0.12
    gift_given_ev: float = 0.01
    gifter_share: float = 0.08
    """Share of users who ever gift (others have gift probability 0)."""
    quit_rate: float = 0.07
    """Per-request session-quit probability at z = 0."""
    k_quit_interest: float = 0.4
    item_quality_sigma: float = 0.5
    affinity_sigma: float = 1.0
    k_affinity: float = 0.1
    k_bond: float = 4.0
    k_follow_bond: float = 2.0
    k_gift_bond: float = 2.0
    k_gift_followed: float = 1.5
    bond_decay_requests: float = 500.0
    """e-folding time of a relationship in the user's own requests without exposure."""
    k_potential: float = 4.0
    potential_threshold: float = 1.0
    gain_exposure: float = 0.05
    gain_click: float = 0.15
    gain_effective_view: float = 0.25
    gain_follow: float = 0.4
    gain_gift: float = 0.3
    ranker_noise: float = 0.5
    """Std of the base ranker's logit error (its score estimates immediate click odds)."""
    mean_duration_s: float = 30.0
    """Mean item duration; durations are 1 s + exponential."""
    watch_bias: float = -1.0
    watch_click_boost: float = 2.0
    """Watched share of an item = sigmoid(watch_bias + z + watch_click_boost * click)."""
    min_session_gap_s: float = 60.0
    """A user's next session starts at least this long after the previous one ended."""

    action_grid: ActionGrid = field(default_factory=ActionGrid)
    logging_epsilon: float = 0.3
    """Logging policy: default action with prob 1-eps, else a uniform draw from the grid."""
    logging_default_action: int = 0
    n_user_groups: int = 5
    """Activity groups (quantiles of sessions per day), 0 = least active."""
    sequence_length: int = 30
    """L: length of each user's truncated behaviour sequence of exposures; 30 makes ~46% of
    interactions stitchable under the defaults (the paper saw 47%)."""
    start_ms: int = 1_767_225_600_000  # 2026-01-01T00:00:00Z

    def __post_init__(self) -> None:
        for name in ("n_users", "n_authors", "days", "taste_dim", "pool_size",
                     "candidates_per_request", "exposures_per_request", "max_session_requests",
                     "n_user_groups", "sequence_length"):
            _check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("click_rate", "effective_view_given_click", "follow_given_ev",
                     "gift_given_ev", "quit_rate"):
            value = getattr(self, name)
            _check(0 < value < 1, f"{name} must be in (0, 1), got {value}")
        for name in ("gifter_share", "logging_epsilon", "pool_refresh_prob"):
            value = getattr(self, name)
            _check(0 <= value <= 1, f"{name} must be in [0, 1], got {value}")
        _check(self.pool_size <= self.n_authors,
               f"pool_size ({self.pool_size}) must be <= n_authors ({self.n_authors})")
        _check(self.candidates_per_request <= self.pool_size,
               f"candidates_per_request ({self.candidates_per_request}) must be <= pool_size "
               f"({self.pool_size})")
        _check(self.exposures_per_request <= self.candidates_per_request,
               f"exposures_per_request ({self.exposures_per_request}) must be <= "
               f"candidates_per_request ({self.candidates_per_request})")
        for name in ("sessions_per_day", "bond_decay_requests", "mean_duration_s"):
            value = getattr(self, name)
            _check(value > 0, f"{name} must be > 0, got {value}")
        _check(0 <= self.logging_default_action < self.action_grid.size,
               f"logging_default_action must index the action grid (size "
               f"{self.action_grid.size}), got {self.logging_default_action}")
        _check(self.n_users <= (1 << 24), f"n_users must be <= 2**24, got {self.n_users}")

    def to_dict(self) -> dict:
        """Plain-JSON form, for manifests and MLflow params."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> UAWorldConfig:
        data = dict(data)
        if isinstance(data.get("action_grid"), dict):
            data["action_grid"] = ActionGrid(**data["action_grid"])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown UAWorldConfig fields: {sorted(unknown)}")
        from rliv_ray.checks import check_dataclass_fields

        check_dataclass_fields(cls, data)
        return cls(**data)
