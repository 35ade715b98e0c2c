"""Policies in a learned simulator: the ground-truth world's request loop with fitted laws.

Each step every active user issues one request:

1. N candidates drawn without replacement from the authors the user met in the log (all of them
   when they met fewer), with their states in the ``mdp/state.py`` layout: the user's logged
   features at this request index (the last ones past the log's end), the author's features,
   and the pair's history as simulated so far (started from its first logged row);
2. ranker scores rho = ranker(s) + e (``sim_model``), the policy's actions, Eq. 1, the top K;
3. labels of the exposed items drawn from the response model, nested as in the world (an
   effective view needs a click, a follow or gift an effective view); the watch time is its
   expected value given the click;
4. the session ends with the quit model's probability (mean over the request's items) or at
   the longest session of the log. The next one starts at the user's next logged session start,
   or just over 30 minutes after this one ended if that is later, so the metrics split sessions
   where the simulator does. A user lives as many sessions as the log holds for them.

The simulator knows no latent state: ``Candidates.affinity`` and ``bond`` are NaN, and the
Oracle is refused (:mod:`rliv_ray.evaluation.world`). ``p_click`` .. ``p_gift`` are the
simulator's own probabilities, so Greedy is greedy on what the simulator believes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from rliv_ray import schema as S
from rliv_ray.actions import ActionGrid
from rliv_ray.data.ua_config import UAWorldConfig
from rliv_ray.data.ua_lever import SESSION_GAP_MS
from rliv_ray.data.ua_policies import Candidates, Policy
from rliv_ray.data.ua_world import draw_labels
from rliv_ray.evaluation.sim_model import LearnedSimulator
from rliv_ray.mdp.state import pair_gap_features

DAY_MS = 86_400_000.0


def world_config(sim: LearnedSimulator) -> UAWorldConfig:
    """The settings the evaluation reads for a simulator: the log's world if it came from one
    (N, the action grid, the logging policy), with the simulator's users and K."""
    facts = sim.facts
    if "world" in sim.meta:
        base = UAWorldConfig.from_dict(sim.meta["world"])
    else:
        base = UAWorldConfig(action_grid=ActionGrid(tuple(sim.meta["action_grid"])),
                             n_authors=max(len(sim.replay.author_ids), 100))
    return dataclasses.replace(base, n_users=sim.replay.n_users,
                               exposures_per_request=facts.exposures_per_request)


@dataclass
class _State:
    """Pools (U, P) and clocks (U,) of the simulated users."""

    author: np.ndarray
    author_row: np.ndarray  # row of each pool author in replay.author_features
    valid: np.ndarray
    counts: np.ndarray  # (U, P, 5) int64
    first_ms: np.ndarray
    last_req: np.ndarray
    session: np.ndarray  # next session pointer into replay.session_start_ms
    session_stop: np.ndarray
    clock_ms: np.ndarray
    request_idx: np.ndarray
    session_requests: np.ndarray

    @classmethod
    def build(cls, sim: LearnedSimulator, users: np.ndarray) -> _State:
        rp = sim.replay
        size = rp.pool_offsets[users + 1] - rp.pool_offsets[users]
        width = int(size.max())
        slot = np.arange(width)[None, :]
        valid = slot < size[:, None]
        start = rp.pool_offsets[users][:, None]
        idx = np.where(valid, start + slot, start)
        author = rp.pool_author[idx]
        counts = rp.pool_counts[idx].astype(np.int64)
        seen = counts[..., 0] > 0
        first_ms = np.where(seen, rp.pool_first_ms[idx] - rp.pool_days[idx] * DAY_MS, 0)
        start = rp.session_offsets[users]
        return cls(author, np.searchsorted(rp.author_ids, author), valid, counts,
                   first_ms.astype(np.int64), np.full(author.shape, -1, np.int64), start.copy(),
                   rp.session_offsets[users + 1].copy(), rp.session_start_ms[start].copy(),
                   np.zeros(len(users), np.int64), np.zeros(len(users), np.int64))

    def active(self) -> np.ndarray:
        return np.flatnonzero(self.session < self.session_stop)


@torch.no_grad()
def simulate_learned(sim: LearnedSimulator, users: np.ndarray, policy: Policy,
                     rng: np.random.Generator, candidates: int,
                     grid: ActionGrid) -> dict[str, np.ndarray]:
    """Run ``users`` (indices into the simulator's users) through their sessions."""
    users = np.asarray(users, np.int64)
    st = _State.build(sim, users)
    chunks = []
    while len(act := st.active()):
        chunks.append(_step(sim, users, st, act, policy, rng, candidates, grid))
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]} if chunks else {}


def _step(sim: LearnedSimulator, users, st: _State, act, policy, rng, n_cand, grid) -> dict:
    rp, facts = sim.replay, sim.facts
    n = min(n_cand, st.author.shape[1])
    rows = act[:, None]
    keys = np.where(st.valid[act], rng.random((len(act), st.author.shape[1])), 2.0)
    slots = np.argpartition(keys, n - 1, axis=1)[:, :n]  # (A, N)
    valid = st.valid[rows, slots]
    state = _states(rp, users, st, act, slots)
    a = len(act)
    resp = _Response.of(sim, state, valid, rng)
    probs, rank_score = resp.probs, resp.rank_score
    counts = st.counts[rows, slots]
    nan = np.full((a, n), np.nan)
    cand = Candidates(rank_score, counts[..., 0], counts[..., 1], counts[..., 3], nan, nan,
                      *np.moveaxis(probs, 2, 0), user_id=rp.user_ids[users[act]],
                      author_id=st.author[rows, slots], state=state)
    actions, _ = policy.act(cand, rng)
    final = np.where(valid, grid.final_score(rank_score, actions), -np.inf)
    k = min(facts.exposures_per_request, n)
    top = np.argsort(-final, axis=1, kind="stable")[:, :k]  # (A, K)
    flat = (np.arange(a)[:, None] * n + top).ravel()

    def pick(x):
        return np.take_along_axis(x, top, axis=1).ravel()

    row_of = np.repeat(np.arange(a), k)
    labels = draw_labels(rng, *(pick(probs[..., i]) for i in range(4)))
    click = torch.from_numpy(labels[S.CLICK].astype(bool))
    watch = torch.where(click, resp.watch_click[flat], resp.watch_no_click[flat])
    watch = watch.clamp_min(0).numpy()
    label_matrix = torch.from_numpy(np.column_stack([labels[c] for c in S.LABELS]).astype(
        np.float32))
    position = torch.from_numpy(st.session_requests[act][row_of].astype(np.float32))
    p_quit = torch.sigmoid(sim.nets.quit_logit(resp.s[flat], resp.rho[flat], label_matrix,
                                               position)).numpy()
    u_rows, u_slots = act[row_of], pick(slots)
    ts = st.clock_ms[u_rows]
    out = {
        S.REQUEST_ID: S.make_request_id(ts, rp.user_ids[users[u_rows]]),
        S.USER_REQUEST_IDX: st.request_idx[u_rows],
        S.TS_MS: ts,
        S.USER_ID: rp.user_ids[users[u_rows]],
        S.AUTHOR_ID: st.author[u_rows, u_slots],
        S.ACTION: pick(actions),
        **labels,
        S.WATCH_TIME_S: watch.astype(np.float32),
    }
    _update(st, u_rows, u_slots, ts, labels)
    _advance(sim, st, act, row_of, watch, p_quit, rng)
    return out


@dataclass
class _Response:
    """What the fitted models say about every candidate of the step: (A * N,) tensors, and the
    label probabilities (A, N, 4) and ranker scores (A, N) the policy sees (0 where invalid)."""

    s: torch.Tensor  # normalised states
    rho: torch.Tensor  # ranker logits
    watch_no_click: torch.Tensor
    watch_click: torch.Tensor
    probs: np.ndarray
    rank_score: np.ndarray

    @classmethod
    def of(cls, sim: LearnedSimulator, state: np.ndarray, valid: np.ndarray,
           rng: np.random.Generator) -> _Response:
        nets, facts = sim.nets, sim.facts
        a, n, d = state.shape
        s = nets.norm(torch.from_numpy(state.reshape(-1, d)))
        if facts.has_rank_score:
            noise = sim.residuals[rng.integers(0, len(sim.residuals), a * n)]
            rho = nets.ranker(s)[:, 0] + torch.from_numpy(noise)
        else:  # the response model's own click logit
            rho = nets.respond(s, torch.zeros(a * n))[0][:, 0]
        logits, w0, w1 = nets.respond(s, rho)
        probs = torch.sigmoid(logits).numpy().reshape(a, n, -1) * np.asarray(
            facts.present_labels)
        probs[..., 1] = np.minimum(probs[..., 1], probs[..., 0])  # effective view <= click
        probs[..., 2:] = np.minimum(probs[..., 2:], probs[..., 1:2])  # follow, gift <= eff. view
        probs *= valid[..., None]
        rank_score = np.where(valid, torch.sigmoid(rho).numpy().reshape(a, n), 0.0)
        return cls(s, rho, w0, w1, probs, rank_score)


def _states(rp, users, st: _State, act, slots) -> np.ndarray:
    """(A, N, D) candidate states in the log's layout."""
    rows = act[:, None]
    last = rp.request_offsets[users[act] + 1] - 1
    user = rp.user_features[np.minimum(rp.request_offsets[users[act]] + st.request_idx[act],
                                       last)]
    author = rp.author_features[st.author_row[rows, slots]]
    counts = st.counts[rows, slots]
    seen = counts[..., 0] > 0
    days = np.where(seen, (st.clock_ms[act][:, None] - st.first_ms[rows, slots]) / DAY_MS, 0.0)
    gap = np.where(seen, st.request_idx[act][:, None] - st.last_req[rows, slots], 0)
    a, n = slots.shape
    parts = [np.broadcast_to(user[:, None, :], (a, n, user.shape[1])), author,
             pair_gap_features(counts, days.astype(np.float32), gap)]
    return np.concatenate([p.astype(np.float32) for p in parts], axis=2)


def _update(st: _State, rows, slots, ts, labels) -> None:
    first = st.counts[rows, slots, 0] == 0
    st.first_ms[rows[first], slots[first]] = ts[first]
    st.counts[rows, slots, 0] += 1
    for i, label in enumerate(S.LABELS, start=1):
        st.counts[rows, slots, i] += labels[label]
    st.last_req[rows, slots] = st.request_idx[rows]


def _advance(sim: LearnedSimulator, st: _State, act, row_of, watch, p_quit, rng) -> None:
    n_act = len(act)
    per_request = np.bincount(row_of, minlength=n_act)
    spent_ms = np.bincount(row_of, weights=watch, minlength=n_act) * 1000.0
    st.clock_ms[act] += (spent_ms + sim.facts.think_ms).astype(np.int64) + 1
    st.request_idx[act] += 1
    st.session_requests[act] += 1
    quit_p = np.bincount(row_of, weights=p_quit, minlength=n_act) / per_request
    ends = ((rng.random(n_act) < quit_p)
            | (st.session_requests[act] >= sim.facts.max_session_requests))
    ending = act[ends]
    st.session[ending] += 1
    st.session_requests[ending] = 0
    nxt = ending[st.session[ending] < st.session_stop[ending]]
    st.clock_ms[nxt] = np.maximum(sim.replay.session_start_ms[st.session[nxt]],
                                  st.clock_ms[nxt] + SESSION_GAP_MS + 1)
