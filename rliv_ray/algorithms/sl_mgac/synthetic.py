"""Small synthetic SL-MGAC batches (tensors in the sample layout) for tests and benchmarks.

:func:`random_batch` fills every column the objective reads with random but valid values;
:func:`threshold_batch` is a one-step world with a known optimum: injecting pays off exactly
when the first user feature is positive (the live stream is watched long, else briefly).
"""

from __future__ import annotations

import torch

from rliv_ray import schema as S
from rliv_ray.algorithms.sl_mgac.network import SLMGACSpec
from rliv_ray.algorithms.sl_mgac.objective import DONE


def _state(spec: SLMGACSpec, b: int, history: int, g: torch.Generator,
           no_live_share: float) -> dict[str, torch.Tensor]:
    live_id = torch.randint(0, 1000, (b,), generator=g)
    live_id[torch.rand(b, generator=g) < no_live_share] = -1
    histories = {}
    for column in (S.LIVE_HISTORY, S.VIDEO_HISTORY):
        ids = torch.randint(0, 10_000, (b, history), generator=g)
        length = torch.randint(0, history + 1, (b, 1), generator=g)  # some rows all padding
        histories[column] = torch.where(torch.arange(history) < length, ids, -1)
    return {S.USER_FEATURES: torch.randn(b, spec.user_dim, generator=g),
            S.LIVE_FEATURES: torch.randn(b, spec.live_dim, generator=g) * (live_id >= 0)[:, None],
            S.LIVE_ID: live_id, **histories,
            S.USER_GROUP: torch.randint(0, spec.groups, (b,), generator=g),
            S.SESSION_INDEX: torch.log1p(torch.randint(0, 20, (b,), generator=g).float()),
            S.REQUEST_GAP: torch.log1p(torch.rand(b, generator=g) * 3600)}


def _outcomes(state: dict[str, torch.Tensor], g: torch.Generator) -> dict[str, torch.Tensor]:
    b = state[S.LIVE_ID].shape[0]
    action = (torch.rand(b, generator=g) < 0.5).long() * (state[S.LIVE_ID] >= 0)
    n = torch.randint(1, 9, (b,), generator=g)
    live = action * torch.rand(b, generator=g) * 200 * (torch.rand(b, generator=g) < 0.8)
    video = n * torch.rand(b, generator=g) * 40
    return {S.ACTION: action, S.BEHAVIOR_PROB: torch.full((b,), 0.5), S.LIVE_WATCH_S: live,
            S.VIDEO_WATCH_S: video, S.N_VIDEOS: n}


def random_batch(spec: SLMGACSpec, b: int = 64, history: int = 8, seed: int = 0,
                 no_live_share: float = 0.1, done_share: float = 0.1) -> dict[str, torch.Tensor]:
    """A batch with every column of s_t (session state included), its outcomes, s_{t+1} and
    its outcomes, done and next_new_session."""
    g = torch.Generator().manual_seed(seed)
    batch: dict[str, torch.Tensor] = {}
    for prefix in ("", S.NEXT_PREFIX):
        state = _state(spec, b, history, g, no_live_share)
        for key, value in {**state, **_outcomes(state, g)}.items():
            batch[prefix + key] = value
    batch[DONE] = torch.rand(b, generator=g) < done_share
    batch[S.NEXT_NEW_SESSION] = torch.rand(b, generator=g) < 0.2
    return batch


def threshold_batch(spec: SLMGACSpec, b: int = 512, n_states: int = 32, seed: int = 0,
                    video_per_slot_s: float = 10.0,
                    good_live_s: tuple[float, float] = (40.0, 80.0),
                    bad_live_s: tuple[float, float] = (0.5, 3.0)) -> dict[str, torch.Tensor]:
    """A one-step world (done everywhere) over ``n_states`` distinct requests, each logged
    b / n_states times, half with each action (a live stream is always on air).

    With beta * T^v / n well below ``good_live_s`` and above ``bad_live_s``, injecting is good
    iff ``user_features[:, 0] > 0``: the optimum is known per state, and a policy cannot reach
    it by memorising single rows.
    """
    g = torch.Generator().manual_seed(seed)
    pool = _state(spec, n_states, 8, g, no_live_share=0.0)
    pool[S.USER_FEATURES][:, 0] = torch.where(torch.arange(n_states) % 2 == 0, 1.0, -1.0)
    if b % (2 * n_states):
        raise ValueError(f"b must be a multiple of 2 * n_states = {2 * n_states}, got {b}")
    row = torch.arange(b) % n_states
    batch = {key: value[row] for key, value in pool.items()}
    batch.update(_outcomes(batch, g))
    batch[S.ACTION] = (torch.arange(b) // n_states) % 2  # each state: half a = 0, half a = 1
    good = batch[S.USER_FEATURES][:, 0] > 0
    lo = torch.where(good, good_live_s[0], bad_live_s[0])
    hi = torch.where(good, good_live_s[1], bad_live_s[1])
    n = batch[S.N_VIDEOS]
    batch[S.LIVE_WATCH_S] = batch[S.ACTION] * (lo + (hi - lo) * torch.rand(b, generator=g))
    batch[S.VIDEO_WATCH_S] = n * video_per_slot_s * (0.9 + 0.2 * torch.rand(b, generator=g))
    for key in list(batch):
        batch[S.NEXT_PREFIX + key] = batch[key]  # never read: done everywhere
    batch[DONE] = torch.ones(b, dtype=torch.bool)
    batch[S.NEXT_NEW_SESSION] = torch.ones(b, dtype=torch.bool)
    return batch
