"""Response laws of the live-stream world at a match m (LiveWorldConfig's docstring): click,
live watch time, leaving; pure NumPy functions of the latent state."""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from rliv_ray.data.live_config import LiveWorldConfig


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def leave_probability(c: LiveWorldConfig, base_affinity: np.ndarray,
                      earlier_unwanted: np.ndarray) -> np.ndarray:
    """P(the user leaves for the rest of the horizon | an unwanted insert now), from the user's
    base affinity and the unwanted inserts earlier in the session; zeros when leave_rate = 0."""
    if c.leave_rate == 0:
        return np.zeros(len(base_affinity))
    return sigmoid(logit(c.leave_rate) + c.k_leave_repeat * earlier_unwanted
                   - c.k_leave_affinity * base_affinity)


def capped_lognormal_mean(mu, sigma, cap):
    """E[min(X, cap)] for log X ~ N(mu, sigma^2), elementwise."""
    log_cap = np.log(cap)
    body = np.exp(mu + sigma**2 / 2) * ndtr((log_cap - mu - sigma**2) / sigma)
    return body + cap * (1.0 - ndtr((log_cap - mu) / sigma))


def clicked_watch(c: LiveWorldConfig, m: np.ndarray, u_long: np.ndarray,
                  z: np.ndarray) -> np.ndarray:
    """T^l of clicked live streams: a lognormal mixture (short / long stays), capped; u_long
    uniform and z standard normal draws, one per stream."""
    long = u_long < sigmoid(c.live_long_bias + c.k_live_long * m)
    median = np.where(long, c.live_long_median_s, c.live_short_median_s)
    sigma = np.where(long, c.live_long_sigma, c.live_short_sigma)
    log_t = np.log(median) + c.k_live_duration * m + sigma * z
    return np.minimum(np.exp(log_t), c.live_watch_cap_s)


def expected_live_watch(c: LiveWorldConfig, m: np.ndarray) -> np.ndarray:
    """E[T^l | a = 1] at match m: P(click) times the capped mixture mean."""
    p_long = sigmoid(c.live_long_bias + c.k_live_long * m)
    shift = c.k_live_duration * m
    long = capped_lognormal_mean(np.log(c.live_long_median_s) + shift, c.live_long_sigma,
                                 c.live_watch_cap_s)
    short = capped_lognormal_mean(np.log(c.live_short_median_s) + shift, c.live_short_sigma,
                                  c.live_watch_cap_s)
    return sigmoid(c.live_click_bias + m) * (p_long * long + (1 - p_long) * short)
