"""The dynamics of the synthetic user-author world, vectorised over a batch of users.

:func:`simulate_users` runs a set of users through their whole horizon in lock step (one request
per active user per step) under any :class:`~rliv_ray.data.ua_policies.Policy`, and returns
every exposure as columns of NumPy arrays together with the ground truth the simulator knows.
The laws are documented on :class:`~rliv_ray.data.ua_config.UAWorldConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rliv_ray import schema as S
from rliv_ray.data.ua_config import UAWorldConfig
from rliv_ray.data.ua_policies import Candidates, Policy
from rliv_ray.data.ua_population import Population, pair_potential, session_starts
from rliv_ray.mdp.state import pair_gap_features

ITEM_BITS = 20  # item ids are (author_id << ITEM_BITS) | item index
# Pair counters kept per pool slot, in this order.
EXPOSURES, CLICKS, EVS, FOLLOWS, GIFTS = range(5)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


@dataclass
class _Pools:
    """Per-user pools of authors with the pairs' state: arrays of shape (U, P)."""

    author: np.ndarray
    affinity: np.ndarray
    bond: np.ndarray  # stored bond, valid at request index bond_req
    bond_req: np.ndarray
    followed: np.ndarray
    counts: np.ndarray  # (U, P, 5) int32
    first_ms: np.ndarray

    @classmethod
    def build(cls, config: UAWorldConfig, pop: Population, users: np.ndarray,
              rng: np.random.Generator) -> _Pools:
        n, p = len(users), config.pool_size
        author = pop.sample_authors(rng, n, p)
        return cls(
            author=author,
            affinity=pop.affinity(config, users[:, None], author, rng),
            bond=np.zeros((n, p), np.float32),
            bond_req=np.zeros((n, p), np.int64),
            followed=np.zeros((n, p), bool),
            counts=np.zeros((n, p, 5), np.int32),
            first_ms=np.zeros((n, p), np.int64),
        )

    def bond_now(self, rows: np.ndarray, slots: np.ndarray, req: np.ndarray,
                 decay: float) -> np.ndarray:
        age = req - self.bond_req[rows, slots]
        return self.bond[rows, slots] * np.exp(-age / decay).astype(np.float32)


@dataclass
class _Users:
    """Clocks and counters of the users being simulated: arrays of shape (U,)."""

    starts: np.ndarray
    offsets: np.ndarray
    session: np.ndarray  # index of the current session (global, into starts)
    clock_ms: np.ndarray
    request_idx: np.ndarray
    session_requests: np.ndarray
    follows: np.ndarray
    gifts: np.ndarray

    @classmethod
    def build(cls, config: UAWorldConfig, activity: np.ndarray,
              rng: np.random.Generator) -> _Users:
        starts, offsets = session_starts(config, activity, rng)
        n = len(activity)
        return cls(starts, offsets, offsets[:-1].copy(), starts[offsets[:-1]].copy(),
                   np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64),
                   np.zeros(n, np.int64))

    def active(self) -> np.ndarray:
        return np.flatnonzero(self.session < self.offsets[1:])


@dataclass
class SimulationResult:
    """Every exposure of a simulation as columns (log and truth), in time-step order."""

    columns: dict[str, np.ndarray]
    n_users: int

    @property
    def rows(self) -> int:
        return len(self.columns[S.REQUEST_ID])


def simulate_users(config: UAWorldConfig, pop: Population, users: np.ndarray, policy: Policy,
                   rng: np.random.Generator) -> SimulationResult:
    """Run ``users`` (global user indices) through their horizon under ``policy``."""
    users = np.asarray(users, dtype=np.int64)
    pools = _Pools.build(config, pop, users, rng)
    state = _Users.build(config, pop.user_activity[users], rng)
    chunks: list[dict[str, np.ndarray]] = []
    while len(act := state.active()):
        chunks.append(_step(config, pop, users, pools, state, act, policy, rng))
    columns = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]} if chunks else {}
    return SimulationResult(columns, len(users))


def _candidate_slots(rng: np.random.Generator, n_rows: int, pool: int, n: int) -> np.ndarray:
    """N distinct pool slots per row, (A, N)."""
    return np.argpartition(rng.random((n_rows, pool)), n - 1, axis=1)[:, :n]


@dataclass
class _Request:
    """The N candidates of each active user's request, before the policy acts: (A, N)."""

    slots: np.ndarray
    interest: np.ndarray
    probs: tuple[np.ndarray, ...]
    cand: Candidates


def _step(config, pop, users, pools: _Pools, st: _Users, act, policy, rng) -> dict:
    """One request for each active user: candidates, policy, exposure, feedback, updates."""
    c = config
    req = _candidates(c, pop, users, pools, st, act, rng,
                      observe=getattr(policy, "observes_state", False))
    actions, action_probs = policy.act(req.cand, rng)
    final = c.action_grid.final_score(req.cand.rank_score, actions)
    top = np.argsort(-final, axis=1, kind="stable")[:, :c.exposures_per_request]  # (A, K)

    def pick(x):
        return np.take_along_axis(x, top, axis=1).ravel()

    row_of = np.repeat(np.arange(len(act)), c.exposures_per_request)
    rows, slots = act[row_of], pick(req.slots)
    labels = draw_labels(rng, *(pick(p) for p in req.probs))
    interest = pick(req.interest)
    duration = (rng.exponential(c.mean_duration_s, len(rows)) + 1.0).astype(np.float32)
    watch_frac = _sigmoid(c.watch_bias + interest + c.watch_click_boost * labels[S.CLICK])
    ts = st.clock_ms[rows]
    author = pools.author[rows, slots]
    bond = pick(req.cand.bond)
    out = {
        S.REQUEST_ID: S.make_request_id(ts, users[rows]),
        S.USER_REQUEST_IDX: st.request_idx[rows],
        S.TS_MS: ts,
        S.USER_ID: users[rows],
        S.AUTHOR_ID: author,
        S.ITEM_ID: (author << ITEM_BITS) | rng.integers(0, 1 << ITEM_BITS, len(rows)),
        S.RANK_SCORE: pick(req.cand.rank_score),
        S.ACTION: pick(actions),
        S.ACTION_WEIGHT: c.action_grid.weight(pick(actions)),
        S.BEHAVIOR_PROB: pick(action_probs),
        **labels,
        S.WATCH_TIME_S: (duration * watch_frac).astype(np.float32),
        S.DURATION_S: duration,
        S.USER_GROUP: pop.user_group[users[rows]],
        S.USER_FEATURES: _user_features(pop, users[rows], st, rows),
        S.AUTHOR_FEATURES: pop.author_features[author],
        **_pair_features(pools, rows, slots, ts),
        S.TRUE_AFFINITY: pick(req.cand.affinity),
        S.TRUE_BOND_BEFORE: bond,
    }
    out[S.TRUE_BOND_AFTER] = _update_pairs(c, pools, rows, slots, st.request_idx[rows], ts,
                                            bond, labels)
    _advance_users(c, pop, users, pools, st, act, row_of, out[S.WATCH_TIME_S], interest, labels,
                   rng)
    return out


def _candidates(c: UAWorldConfig, pop: Population, users, pools: _Pools, st: _Users, act,
                rng, observe: bool = False) -> _Request:
    """Draw N candidates per active user; their latent state, true label odds, ranker score,
    and with ``observe`` the ids and states a learned policy reads."""
    rows = act[:, None]
    slots = _candidate_slots(rng, len(act), c.pool_size, c.candidates_per_request)
    bond = pools.bond_now(rows, slots, st.request_idx[act][:, None], c.bond_decay_requests)
    alpha = pools.affinity[rows, slots]
    counts = pools.counts[rows, slots]  # (A, N, 5)
    quality = c.item_quality_sigma * rng.standard_normal(slots.shape)
    interest = quality + c.k_affinity * alpha + c.k_bond * bond
    gifter = pop.user_gifter[users[act]][:, None]
    probs = _label_probabilities(c, interest, bond, pools.followed[rows, slots], gifter)
    noise = c.ranker_noise * rng.standard_normal(slots.shape)
    rank_score = _sigmoid(_logit(c.click_rate) + interest + noise).astype(np.float32)
    seen = {}
    if observe:
        seen = {"user_id": users[act], "author_id": pools.author[rows, slots],
                "state": _observed_states(pop, users, pools, st, act, slots)}
    cand = Candidates(rank_score, counts[..., EXPOSURES], counts[..., CLICKS],
                      counts[..., FOLLOWS], alpha, bond, *probs, **seen)
    return _Request(slots, interest, probs, cand)


def _observed_states(pop: Population, users, pools: _Pools, st: _Users, act,
                     slots) -> np.ndarray:
    """(A, N, D) states of the candidates as the log would record them if exposed now
    (rliv_ray.mdp.state layout: user | author | pair counts, days | log1p(Delta), first).

    Delta counts the user's requests since the pair's last exposure. An author that left the
    pool and came back reads as a first contact here, while the log would find its older rows.
    """
    a, n = slots.shape
    rows = act[:, None]
    user = _user_features(pop, users[act], st, act)  # (A, U)
    author = pop.author_features[pools.author[rows, slots]]  # (A, N, F)
    counts = pools.counts[rows, slots]  # (A, N, 5)
    seen = counts[..., EXPOSURES] > 0
    ts = st.clock_ms[act][:, None]
    days = np.where(seen, (ts - pools.first_ms[rows, slots]) / 86_400_000.0, 0.0)
    days = days.astype(np.float32)  # the log stores days as float32
    gap = np.where(seen, st.request_idx[act][:, None] - pools.bond_req[rows, slots], 0)
    parts = [np.broadcast_to(user[:, None, :], (a, n, user.shape[1])), author,
             pair_gap_features(counts, days, gap)]
    return np.concatenate([p.astype(np.float32) for p in parts], axis=2)


def _label_probabilities(c, interest, bond, followed, gifter):
    """True P(click), P(effective view), P(follow), P(gift) of exposing each candidate."""
    p_click = _sigmoid(_logit(c.click_rate) + interest)
    p_ev = p_click * _sigmoid(_logit(c.effective_view_given_click) + c.k_ev_interest * interest)
    p_follow = p_ev * ~followed * _sigmoid(_logit(c.follow_given_ev) + c.k_follow_bond * bond)
    p_gift = p_ev * gifter * _sigmoid(
        _logit(c.gift_given_ev) + c.k_gift_bond * bond + c.k_gift_followed * followed
    )
    return p_click, p_ev, p_follow, p_gift


def draw_labels(rng, p_click, p_ev, p_follow, p_gift) -> dict[str, np.ndarray]:
    """Nested labels: effective view needs a click, follow and gift need an effective view."""
    u = rng.random((4, len(p_click)))
    click = u[0] < p_click
    ev = click & (u[1] < p_ev / np.maximum(p_click, 1e-12))
    cond = np.maximum(p_ev, 1e-12)
    follow = ev & (u[2] < p_follow / cond)
    gift = ev & (u[3] < p_gift / cond)
    return {S.CLICK: click.astype(np.int8), S.EFFECTIVE_VIEW: ev.astype(np.int8),
            S.FOLLOW: follow.astype(np.int8), S.GIFT: gift.astype(np.int8)}


def _user_features(pop: Population, user_ids, st: _Users, rows) -> np.ndarray:
    dynamic = np.log1p(np.column_stack(
        [st.request_idx[rows], st.follows[rows], st.gifts[rows]]
    )).astype(np.float32)
    return np.concatenate([pop.user_static_features[user_ids], dynamic], axis=1)


def _pair_features(pools: _Pools, rows, slots, ts) -> dict[str, np.ndarray]:
    counts = pools.counts[rows, slots]
    first = pools.first_ms[rows, slots]
    days = np.where(counts[:, EXPOSURES] > 0, (ts - first) / 86_400_000.0, 0.0)
    names = (S.UA_EXPOSURE_COUNT, S.UA_CLICK_COUNT, S.UA_EFFECTIVE_VIEW_COUNT,
             S.UA_FOLLOW_COUNT, S.UA_GIFT_COUNT)
    out = {name: counts[:, i].copy() for i, name in enumerate(names)}
    out[S.UA_DAYS_SINCE_FIRST] = days.astype(np.float32)
    return out


def _update_pairs(c, pools: _Pools, rows, slots, req, ts, bond, labels) -> np.ndarray:
    """Count the exposure and deepen the relationship; returns the bond after it."""
    first_time = pools.counts[rows, slots, EXPOSURES] == 0
    pools.first_ms[rows[first_time], slots[first_time]] = ts[first_time]
    for i, name in ((CLICKS, S.CLICK), (EVS, S.EFFECTIVE_VIEW), (FOLLOWS, S.FOLLOW),
                    (GIFTS, S.GIFT)):
        pools.counts[rows, slots, i] += labels[name]
    pools.counts[rows, slots, EXPOSURES] += 1
    pools.followed[rows, slots] |= labels[S.FOLLOW].astype(bool)
    potential = pair_potential(pools.affinity[rows, slots], c.k_potential, c.potential_threshold)
    gain = (c.gain_exposure + c.gain_click * labels[S.CLICK]
            + c.gain_effective_view * labels[S.EFFECTIVE_VIEW]
            + c.gain_follow * labels[S.FOLLOW] + c.gain_gift * labels[S.GIFT])
    after = (bond + potential * gain * (1 - bond)).astype(np.float32)
    pools.bond[rows, slots] = after
    pools.bond_req[rows, slots] = req
    return after


def _advance_users(c, pop, users, pools, st: _Users, act, row_of, watch, interest, labels, rng):
    """Move clocks on, end sessions by the quit hazard, refresh pools."""
    n_act = len(act)
    spent_ms = np.bincount(row_of, weights=watch, minlength=n_act) * 1000.0
    think_ms = rng.exponential(c.think_time_s * 1000.0, n_act)
    st.clock_ms[act] += (spent_ms + think_ms).astype(np.int64) + 1
    st.request_idx[act] += 1
    st.session_requests[act] += 1
    st.follows[act] += np.bincount(row_of, weights=labels[S.FOLLOW], minlength=n_act).astype(
        np.int64)
    st.gifts[act] += np.bincount(row_of, weights=labels[S.GIFT], minlength=n_act).astype(np.int64)
    mean_interest = np.bincount(row_of, weights=interest, minlength=n_act) / np.bincount(
        row_of, minlength=n_act)
    p_quit = _sigmoid(_logit(c.quit_rate) - c.k_quit_interest * mean_interest)
    ends = (rng.random(n_act) < p_quit) | (st.session_requests[act] >= c.max_session_requests)
    ending = act[ends]
    st.session[ending] += 1
    st.session_requests[ending] = 0
    more = st.session[ending] < st.offsets[1:][ending]
    nxt = ending[more]
    st.clock_ms[nxt] = np.maximum(st.starts[st.session[nxt]],
                                  st.clock_ms[nxt] + int(c.min_session_gap_s * 1000))
    _refresh_pools(c, pop, users, pools, st, act, rng)


def _refresh_pools(c, pop: Population, users, pools: _Pools, st: _Users, act, rng) -> None:
    """With small probability, a user's weakest relationship slot gets a new author."""
    who = act[rng.random(len(act)) < c.pool_refresh_prob]
    if len(who) == 0:
        return
    bond = pools.bond_now(who[:, None], np.arange(c.pool_size)[None, :],
                          st.request_idx[who][:, None], c.bond_decay_requests)
    slot = np.argmin(bond, axis=1)
    new = pop.sample_authors(rng, len(who), 1)[:, 0]
    fresh = ~(pools.author[who] == new[:, None]).any(axis=1)
    who, slot, new = who[fresh], slot[fresh], new[fresh]
    pools.author[who, slot] = new
    pools.affinity[who, slot] = pop.affinity(c, users[who], new, rng)
    pools.bond[who, slot] = 0.0
    pools.followed[who, slot] = False
    pools.counts[who, slot] = 0
    pools.first_ms[who, slot] = 0
