"""Stitchability against a brute-force scan of each user's truncated sequence."""

import numpy as np
import pytest

from rliv_ray.mdp.stitching import history_bucket, previous_pair_row, stitchable


def random_log(seed: int, n_users: int = 4, n_requests: int = 40, n_authors: int = 6):
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(n_users):
        for req in range(n_requests):
            for _ in range(rng.integers(1, 3)):  # 1-2 exposures per request
                rows.append((user, rng.integers(0, n_authors), req, rng.random() < 0.3))
    user, author, req, engaged = (np.array(col) for col in zip(*rows, strict=True))
    return user, author, req, engaged


def brute_force(user, author, req, engaged, length, content):
    prev_out, stitch_out = [], []
    for i in range(len(user)):
        earlier = [j for j in range(len(user)) if user[j] == user[i] and req[j] < req[i]]
        same_pair = [j for j in earlier if author[j] == author[i]]
        prev = max(same_pair, key=lambda j: (req[j], j)) if same_pair else -1
        stored = [j for j in earlier if content == "exposures" or engaged[j]]
        window = stored[-length:]
        prev_out.append(prev)
        stitch_out.append(prev >= 0 and prev in window)
    return np.array(prev_out), np.array(stitch_out)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("content", ["exposures", "engagements"])
@pytest.mark.parametrize("length", [1, 5, 20])
def test_stitchable_matches_brute_force(seed, content, length):
    user, author, req, engaged = random_log(seed)
    expected_prev, expected = brute_force(user, author, req, engaged, length, content)
    assert np.array_equal(previous_pair_row(user, author, req), expected_prev)
    got = stitchable(user, author, req, engaged, sequence_length=length, content=content)
    assert np.array_equal(got, expected)


def test_first_contact_is_never_stitchable_and_buckets():
    user = np.array([0, 0, 0])
    author = np.array([5, 5, 5])
    req = np.array([0, 1, 1])  # the pair is seen twice in request 1
    got = stitchable(user, author, req, np.ones(3, bool), sequence_length=10)
    assert got.tolist() == [False, True, True]
    assert previous_pair_row(user, author, req).tolist() == [-1, 0, 0]
    assert history_bucket(np.array([0, 1, 4, 5, 9])).tolist() == [0, 1, 1, 2, 2]


def test_bad_settings_are_named():
    one = np.zeros(1, int)
    with pytest.raises(ValueError, match="sequence_length"):
        stitchable(one, one, one, one, sequence_length=0)
    with pytest.raises(ValueError, match="content"):
        stitchable(one, one, one, one, sequence_length=3, content="clicks")
