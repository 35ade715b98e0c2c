"""Stitching against a brute-force scan of each user's truncated sequence."""

import numpy as np
import pytest

from rliv_ray.mdp.stitching import (
    StitchConfig,
    history_bucket,
    previous_pair_row,
    stitch,
)


def random_log(seed: int, n_users: int = 4, n_requests: int = 40, n_authors: int = 6):
    """Rows sorted by (user, request); 1-2 exposures per request, some at the same time."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(n_users):
        ts = 1_000_000 * user
        for req in range(n_requests):
            ts += int(rng.integers(0, 3_000))  # gaps of 0-3 s: windows hold several events
            for _ in range(rng.integers(1, 3)):
                rows.append((user, rng.integers(0, n_authors), req, ts, rng.random() < 0.3))
    return tuple(np.array(col) for col in zip(*rows, strict=True))


def brute_force(user, author, req, ts, engaged, config):
    """The paper's procedure, one row at a time."""
    out = []
    for i in range(len(user)):
        earlier = [j for j in range(len(user)) if user[j] == user[i] and req[j] < req[i]]
        same_pair = [j for j in earlier if author[j] == author[i]]
        if not same_pair:
            out.append(-1)
            continue
        t_last = ts[max(same_pair, key=lambda j: (req[j], j))]
        stored = [j for j in earlier if config.content == "exposures" or engaged[j]]
        window = stored[-config.sequence_length:]
        hits = [j for j in window
                if author[j] == author[i] and abs(ts[j] - t_last) <= config.window_ms]
        out.append(min(hits, key=lambda j: (abs(ts[j] - t_last), -j)) if hits else -1)
    return np.array(out)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("content", ["exposures", "engagements"])
@pytest.mark.parametrize(("length", "window"), [(1, 0), (5, 2_000), (20, 500), (200, 10_000)])
def test_stitch_matches_brute_force(seed, content, length, window):
    user, author, req, ts, engaged = random_log(seed)
    config = StitchConfig(sequence_length=length, content=content, window_ms=window)
    expected = brute_force(user, author, req, ts, engaged, config)
    got = stitch(user, author, req, ts, engaged, config)
    assert np.array_equal(got, expected)
    assert (got >= 0).mean() == (expected >= 0).mean()


def test_exposure_sequence_finds_exactly_the_previous_interaction():
    user, author, req, ts, engaged = random_log(7)
    got = stitch(user, author, req, ts, engaged, StitchConfig(sequence_length=10**6))
    prev = previous_pair_row(user, author, req)
    # With an unbounded sequence of every exposure, stitching recovers each previous
    # interaction (or an exposure of the pair in the same earlier request).
    assert np.array_equal(got >= 0, prev >= 0)
    assert np.array_equal(req[got[got >= 0]], req[prev[prev >= 0]])


def test_pair_seen_twice_in_one_request():
    user = np.array([0, 0, 0])
    author = np.array([5, 5, 5])
    req = np.array([0, 1, 1])  # the pair is exposed twice in request 1
    ts = np.array([0, 10, 10])
    got = stitch(user, author, req, ts, np.ones(3, bool), StitchConfig(sequence_length=10))
    assert got.tolist() == [-1, 0, 0]  # neither is the other's predecessor
    assert previous_pair_row(user, author, req).tolist() == [-1, 0, 0]
    assert history_bucket(np.array([0, 1, 4, 5, 9])).tolist() == [0, 1, 1, 2, 2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"sequence_length": 0}, "sequence_length must be >= 1"),
     ({"content": "clicks"}, "content must be"),
     ({"window_ms": -1}, "window_ms must be >= 0")],
)
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StitchConfig(**kwargs)


def test_empty_input():
    empty = np.zeros(0, dtype=np.int64)
    assert stitch(empty, empty, empty, empty, empty.astype(bool), StitchConfig()).size == 0
