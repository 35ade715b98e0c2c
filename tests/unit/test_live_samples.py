"""SL-MGAC samples as the paper's MDP: terminal modes, session state, next_new_session (issue 13).

A hand-made log of two users: user 7 has two sessions (rows 0-1, then 2-3; the log ends mid-
session), user 3 has one request that ends its session.
"""

import numpy as np
import pyarrow as pa
import pytest

from rliv_ray import schema as S
from rliv_ray.data.live_samples import SessionClock, live_samples, session_state

USER = [7, 7, 7, 7, 3]
TS_S = [0, 10, 3610, 3640, 50]  # user 7: gaps 10 s, 3600 s (a new session), 30 s
SESSION_END = [False, True, False, False, True]


def hand_log() -> pa.Table:
    n, schema = len(USER), S.live_log_schema(["u0"], ["l0"], history_length=2)
    columns = {
        S.REQUEST_ID: np.arange(n), S.USER_REQUEST_IDX: [0, 1, 2, 3, 0],
        S.TS_MS: np.array(TS_S) * 1000, S.USER_ID: USER,
        S.USER_FEATURES: S.vectors_to_arrow(np.zeros((n, 1))),
        S.LIVE_ID: [1, 2, -1, 3, 4], S.LIVE_FEATURES: S.vectors_to_arrow(np.ones((n, 1))),
        S.LIVE_HISTORY: S.ids_to_arrow(np.full((n, 2), -1)),
        S.VIDEO_HISTORY: S.ids_to_arrow(np.full((n, 2), -1)),
        S.LIVE_WATCH_3W_S: [10.0, 10.0, 10.0, 10.0, 0.0], S.ACTION: [1, 0, 0, 1, 0],
        S.BEHAVIOR_PROB: [0.5] * n, S.LIVE_CLICK: [1, 0, 0, 0, 0],
        S.LIVE_WATCH_S: [30.0, 0, 0, 0, 0], S.VIDEO_WATCH_S: [20.0] * n, S.N_VIDEOS: [4] * n,
        S.SESSION_END: SESSION_END,
    }
    return pa.table({name: pa.array(columns[name], schema.field(name).type)
                     if not isinstance(columns[name], pa.Array) else columns[name]
                     for name in schema.names}, schema=schema)


def samples(terminal: str) -> dict[str, np.ndarray]:
    table = live_samples(hand_log(), groups=2, edges=np.array([0.0]), terminal=terminal)
    assert table.schema.equals(S.live_sample_schema(hand_log().schema))
    return {name: table[name].to_numpy() for name in
            (S.USER_ID, S.DONE, S.NEXT_NEW_SESSION, S.SESSION_INDEX, S.REQUEST_GAP,
             S.next_column(S.SESSION_INDEX), S.next_column(S.REQUEST_GAP))}


# rows come out sorted by user: user 3's row first, then user 7's four
@pytest.mark.parametrize(("terminal", "done"), [
    ("user_end", [True, False, False, False, True]),  # only each user's last request
    ("none", [False] * 5),  # never: the last row bootstraps from itself
    ("session", [True, False, True, False, True]),  # every session end, and the last row
])
def test_terminal_modes_set_done(terminal, done):
    s = samples(terminal)
    assert s[S.USER_ID].tolist() == [3, 7, 7, 7, 7]
    assert s[S.DONE].tolist() == done


def test_default_terminal_is_user_end():
    table = live_samples(hand_log(), groups=2, edges=np.array([0.0]))
    assert table[S.DONE].to_numpy().tolist() == samples("user_end")[S.DONE].tolist()


def test_next_new_session_marks_session_ends_and_last_rows():
    s = samples("none")
    # user 3: its only row ends a session; user 7: row 1 ends one, row 3 is the log's last
    assert s[S.NEXT_NEW_SESSION].tolist() == [True, False, True, False, True]


def test_session_index_and_gap_in_state_and_next_state():
    s = samples("user_end")
    np.testing.assert_allclose(np.expm1(s[S.SESSION_INDEX]), [0, 0, 0, 1, 1], atol=1e-5)
    np.testing.assert_allclose(np.expm1(s[S.REQUEST_GAP]), [0, 0, 10, 3600, 30], rtol=1e-5)
    # s_{t+1}: the next row's values; a user's last row repeats its own
    np.testing.assert_allclose(np.expm1(s[S.next_column(S.SESSION_INDEX)]), [0, 0, 1, 1, 1],
                               atol=1e-5)
    np.testing.assert_allclose(np.expm1(s[S.next_column(S.REQUEST_GAP)]),
                               [0, 10, 3600, 30, 30], rtol=1e-5)


def test_bad_terminal_is_named():
    with pytest.raises(ValueError, match="terminal must be one of .*got 'episode'"):
        live_samples(hand_log(), groups=2, edges=np.array([0.0]), terminal="episode")


def test_session_clock_equals_session_state_in_any_call_pattern():
    user, ts = np.array([3, 7, 7, 7, 7]), np.array([50, 0, 10, 3610, 3640]) * 1000
    end = np.array([True, False, True, False, False])
    index, gap = session_state(user, ts, end)
    new = np.concatenate([[False], end[:-1]]) & (user == np.roll(user, 1))  # opens a session
    shuffled = np.array([4, 0, 2, 1, 3])
    at_once = SessionClock().observe(user[shuffled], ts[shuffled], new[shuffled])
    for got, want in zip(at_once, (index, gap), strict=True):
        np.testing.assert_allclose(got, want[shuffled], rtol=1e-6)
    clock = SessionClock()
    one_by_one = [clock.observe(user[[i]], ts[[i]], new[[i]]) for i in range(len(user))]
    np.testing.assert_allclose([o[0][0] for o in one_by_one], index, rtol=1e-6)
    np.testing.assert_allclose([o[1][0] for o in one_by_one], gap, rtol=1e-6)


def test_session_clock_restarts_a_user_whose_time_goes_back():
    clock = SessionClock()
    clock.observe(np.array([1, 1]), np.array([0, 60_000]), np.array([False, True]))
    index, gap = clock.observe(np.array([1]), np.array([5_000]), np.array([True]))  # new run
    assert index.tolist() == [0.0] and gap.tolist() == [0.0]
