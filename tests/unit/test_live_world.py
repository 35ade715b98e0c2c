"""The synthetic live-stream allocation world: settings, laws, propensities, samples, metrics."""

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rliv_ray import schema as S
from rliv_ray.data import io
from rliv_ray.data.live_config import LiveWorldConfig
from rliv_ray.data.live_generate import generate_live_world, live_log_schema_for_world
from rliv_ray.data.live_metrics import (
    allocation_ratio_amplitude,
    allocation_rewards,
    evaluate_policy,
    injection_ratio_per_minute,
)
from rliv_ray.data.live_policies import (
    AlwaysPolicy,
    OraclePolicy,
    logging_policy,
    observation_from_log,
)
from rliv_ray.data.live_population import DAY_MS, HOUR_MS, LivePopulation
from rliv_ray.data.live_samples import assign_groups, group_edges, live_samples, user_watch_3w
from rliv_ray.data.live_validate import validate_live_log, validate_live_table
from rliv_ray.data.live_world import simulate_live_users
from rliv_ray.data.validate import LogValidationError

SMALL = LiveWorldConfig(n_users=200, days=2, seed=5)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("live") / "world"
    manifest = generate_live_world(out, SMALL, n_files=2, progress=False)
    return out, manifest, pq.read_table(out / io.LOG_DIR)


@pytest.fixture(scope="module")
def log(world):
    return world[2].to_pandas()


def _hour(ts_ms, config=SMALL):
    return (np.asarray(ts_ms) - config.start_ms) % DAY_MS // HOUR_MS


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("n_users", 0, "n_users must be >= 1, got 0"),
        ("quit_rate", 1.0, "quit_rate must be in \\(0, 1\\), got 1.0"),
        ("logging_epsilon", 0.0, "logging_epsilon must be in \\(0, 1\\]"),
        ("videos_min", 1, "videos_min must be >= 2"),
        ("request_hour_weights", (1.0,) * 23, "request_hour_weights must have 24 values"),
        ("affinity_shares", (0.5, 0.4, 0.2), "affinity_shares must be non-negative and sum to 1"),
        ("beta", -0.1, "beta must be >= 0, got -0.1"),
        ("potential_shares", (0.5, 0.5), "potential_shares must hold one share in \\[0, 1\\] per"),
    ],
)
def test_bad_settings_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(LiveWorldConfig(), **{field: value})


def test_config_round_trips_through_dict():
    config = LiveWorldConfig(affinity_shares=(0.5, 0.5), affinity_means=(-2.0, 0.0), beta=0.3,
                             potential_shares=(0.2, 0.0))  # one share per affinity component
    assert LiveWorldConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown LiveWorldConfig fields: \\['nope'\\]"):
        LiveWorldConfig.from_dict({"nope": 1})


def test_log_is_valid_bucketed_sorted_and_round_trips_its_schema(world):
    out, manifest, table = world
    report = validate_live_log(out)
    assert report.rows == manifest["rows"] == table.num_rows
    assert report.users == manifest["users"] == SMALL.n_users
    users_per_file = []
    for file in io.log_files(out):
        part = pq.read_table(file)
        expected = live_log_schema_for_world(SMALL)
        assert part.schema.names == expected.names and part.schema.metadata == expected.metadata
        assert [f.type for f in part.schema] == [f.type for f in expected]  # list child names
        assert not any(f.nullable for f in part.schema)  # may read back as "element"
        user, idx = part[S.USER_ID].to_numpy(), part[S.USER_REQUEST_IDX].to_numpy()
        assert np.all(np.lexsort((idx, user)) == np.arange(len(user)))  # user, then time
        users_per_file.append(set(user.tolist()))
    assert not users_per_file[0] & users_per_file[1]
    assert len(S.arrow_to_ids(table[S.LIVE_HISTORY])[0]) == S.HISTORY_LENGTH


def test_generation_is_deterministic_by_seed(world, tmp_path):
    out = world[0]
    again = generate_live_world(tmp_path / "again", SMALL, n_files=2, progress=False)
    for first, second in zip(io.log_files(out), io.log_files(tmp_path / "again"), strict=True):
        assert pq.read_table(first).equals(pq.read_table(second))
    other = generate_live_world(tmp_path / "other", dataclasses.replace(SMALL, seed=6),
                                n_files=2, progress=False)
    assert again["rows"] != other["rows"]


def test_requests_follow_the_day_cycle(log):
    hour = _hour(log[S.TS_MS])
    evening = np.isin(hour, [19, 20, 21, 22]).mean() / 4
    night = np.isin(hour, [2, 3, 4, 5]).mean() / 4
    assert evening > 3 * night


def test_no_live_on_air_forces_action_zero_with_propensity_one(log):
    none = log[S.LIVE_ID] == S.NO_LIVE
    hour = _hour(log[S.TS_MS])
    night, evening = np.isin(hour, [3, 4, 5, 6]), np.isin(hour, [19, 20, 21, 22])
    assert none[night].mean() > 0.5 > 0.2 > none[evening].mean()
    assert (log.loc[none, S.ACTION] == 0).all()
    assert (log.loc[none, S.BEHAVIOR_PROB] == 1.0).all()
    assert np.all(np.stack(log.loc[none, S.LIVE_FEATURES].to_numpy()) == 0)


def test_behavior_probabilities_are_inside_and_match_the_logging_policy(world):
    table = world[2]
    has = table[S.LIVE_ID].to_numpy() >= 0
    prob = table[S.BEHAVIOR_PROB].to_numpy()
    assert prob[has].min() > 0 and prob[has].max() < 1
    action = table[S.ACTION].to_numpy()
    p_inject = logging_policy(SMALL).inject_probability(observation_from_log(table))
    expected = np.where(has, np.where(action == 1, p_inject, 1 - p_inject), 1.0)
    np.testing.assert_allclose(prob, expected, atol=1e-6)
    assert 0.1 < action[has].mean() < 0.5


def test_live_watch_time_is_heavy_tailed(log):
    positive = log.loc[log[S.LIVE_WATCH_S] > 0, S.LIVE_WATCH_S].to_numpy()
    p50, p99 = np.quantile(positive, [0.5, 0.99])
    assert p99 / p50 > 15
    assert (positive <= 100).mean() > 0.6 and positive.max() > 1200
    assert (log.loc[log[S.ACTION] == 0, S.LIVE_WATCH_S] == 0).all()


def test_quit_hazard_is_higher_after_unwanted_inserts(log):
    unwanted = (log[S.ACTION] == 1) & (log[S.LIVE_CLICK] == 0)
    quiet = log[S.ACTION] == 0
    assert log.loc[unwanted, S.SESSION_END].mean() > 1.3 * log.loc[quiet, S.SESSION_END].mean()


def test_insert_replaces_a_video_slot(log):
    n = log[S.N_VIDEOS]
    assert n.min() >= 1
    assert n[log[S.ACTION] == 1].mean() < n[log[S.ACTION] == 0].mean() - 0.5


def test_histories_shift_by_what_the_request_added(world):
    table = world[2]
    samples = live_samples(table)
    keep = ~samples[S.DONE].to_numpy()  # rows with a next request within the session
    video, nxt = (S.arrow_to_ids(samples[c]) for c in (S.VIDEO_HISTORY,
                                                     S.next_column(S.VIDEO_HISTORY)))
    n = samples[S.N_VIDEOS].to_numpy()
    for i in np.flatnonzero(keep)[:200]:
        assert np.array_equal(nxt[i, n[i]:], video[i, :S.HISTORY_LENGTH - n[i]])
    live, nxt_live = (S.arrow_to_ids(samples[c]) for c in (S.LIVE_HISTORY,
                                                         S.next_column(S.LIVE_HISTORY)))
    click = samples[S.LIVE_CLICK].to_numpy() == 1
    rows = np.flatnonzero(keep & click)
    assert len(rows) > 0
    assert np.array_equal(nxt_live[rows, 0], samples[S.LIVE_ID].to_numpy()[rows])
    assert np.array_equal(nxt_live[rows, 1:], live[rows, :-1])
    assert (live[:, -1] == S.HISTORY_PAD).any()  # some users have fewer than 50 live streams


def test_three_week_watch_time_makes_groups_from_day_zero(log):
    first = log.groupby(S.USER_ID)[S.LIVE_WATCH_3W_S].first()
    assert 0.05 < (first == 0).mean() < 0.5
    assert first.max() > 100 * first[first > 0].min()


class _AffinityRecorder:
    """Injects with probability 1/2 and records the latent affinity the world hands it."""

    def __init__(self):
        self.seen: dict[tuple[int, int], float] = {}

    def inject_probability(self, obs):
        keys = zip(obs[S.USER_ID].tolist(), obs[S.USER_REQUEST_IDX].tolist(), strict=True)
        self.seen.update(zip(keys, obs[S.TRUE_LIVE_AFFINITY].tolist(), strict=True))
        return np.full(len(obs[S.USER_ID]), 0.5)


def test_live_experiences_move_the_latent_affinity():
    # the drift law alone: the hidden potential (tests/unit/test_live_check.py) is off
    config = LiveWorldConfig(n_users=100, days=1, seed=4, potential_gain=0.0)
    recorder = _AffinityRecorder()
    cols = simulate_live_users(config, LivePopulation.build(config), np.arange(100), recorder,
                               np.random.default_rng(0), light=True).columns
    user, idx = cols[S.USER_ID], cols[S.USER_REQUEST_IDX]
    pairs = list(zip(user.tolist(), idx.tolist(), strict=True))
    after = np.array([recorder.seen.get((u, i + 1), np.nan) for u, i in pairs])
    delta = after - np.array([recorder.seen[(u, i)] for u, i in pairs])  # nan: user's last
    good = (cols[S.LIVE_CLICK] == 1) & (cols[S.LIVE_WATCH_S] >= config.good_watch_s)
    unwanted = (cols[S.ACTION] == 1) & (cols[S.LIVE_CLICK] == 0)
    idle = cols[S.ACTION] == 0
    assert np.nanmedian(delta[good]) == pytest.approx(config.gain_good, abs=0.01)
    assert np.nanmedian(delta[unwanted]) == pytest.approx(-config.loss_unwanted, abs=0.005)
    assert np.nanmedian(delta[idle]) == pytest.approx(0.0, abs=0.005)


def test_unwanted_inserts_cost_future_requests():
    config = LiveWorldConfig(n_users=300, days=1, seed=1)
    never = evaluate_policy(config, AlwaysPolicy(0.0))
    always = evaluate_policy(config, AlwaysPolicy(1.0))
    assert never.mean_return == 0.0 and never.injection_ratio == 0.0
    assert always.injection_ratio_with_live == 1.0
    assert always.user_requests.mean() < 0.85 * never.user_requests.mean()


def test_oracle_beats_always_and_never_inject():
    # without the hidden potential: always-inject unlocks every user's potential at their first
    # click, which brings it within 2% of the immediate oracle's undiscounted return
    config = LiveWorldConfig(n_users=400, days=1, potential_gain=0.0)
    oracle, always = [], []
    for seed in range(3):
        value = evaluate_policy(config, OraclePolicy(config.beta), seed=seed)
        assert value.mean_return > 0  # never-inject earns exactly 0
        assert 0.1 < value.injection_ratio_with_live < 0.6
        oracle.append(value.mean_return)
        always.append(evaluate_policy(config, AlwaysPolicy(1.0), seed=seed).mean_return)
    assert np.mean(oracle) > 1.2 * np.mean(always)


def test_policy_value_adds_up():
    config = LiveWorldConfig(n_users=50, days=1, seed=2)
    value = evaluate_policy(config, logging_policy(config), gamma=0.0)
    assert value.user_return.shape == (50,) and value.user_requests.min() >= 1
    assert np.all(value.minute_ratio >= 0) and np.all(value.minute_ratio <= 1)
    assert np.all(np.diff(value.minute_ms) > 0)
    undiscounted = evaluate_policy(config, logging_policy(config), gamma=1.0)
    np.testing.assert_allclose(undiscounted.user_discounted_return, value.user_return)


def test_allocation_rewards_follow_eq5():
    r = allocation_rewards([1, 1, 0], [30.0, 0.0, 50.0], [60.0, 40.0, 60.0], [6, 4, 5], 0.5)
    np.testing.assert_allclose(r, [30 - 0.5 * 10, -0.5 * 10, 0.0])


def test_group_edges_and_assignment_by_hand():
    values = np.array([0, 0, 1, 2, 3, 4, 5, 6], dtype=float)
    edges = group_edges(values, 3)
    np.testing.assert_allclose(edges, [0.0, 3.5])
    assert assign_groups(values, edges).tolist() == [0, 0, 1, 1, 1, 2, 2, 2]
    assert assign_groups([3.5, 1e9, -1.0], edges).tolist() == [2, 2, 0]  # ties go up
    assert assign_groups(values, edges).dtype == np.int16


def test_group_count_larger_than_users_with_watch_time_is_an_error():
    with pytest.raises(ValueError, match=r"group count K=6 is larger than the number of users "
                                         r"with live watch time \(5\)"):
        group_edges(np.array([0, 0, 1, 2, 3, 4, 5.0]), 6)
    with pytest.raises(ValueError, match="K must be >= 2"):
        group_edges(np.array([1.0, 2.0]), 1)


def test_live_samples_link_each_row_to_the_users_next_request(world):
    table = world[2]
    edges = group_edges(user_watch_3w(table), 6)
    samples = live_samples(table, groups=6, edges=edges)
    assert samples.schema.equals(S.live_sample_schema(table.schema))
    assert samples.num_rows == table.num_rows
    user = samples[S.USER_ID].to_numpy()
    last = np.append(user[1:] != user[:-1], True)
    done = samples[S.DONE].to_numpy()
    np.testing.assert_array_equal(done, last)  # terminal="user_end": sessions do not end it
    group = samples[S.USER_GROUP].to_numpy()
    np.testing.assert_array_equal(group, assign_groups(samples[S.LIVE_WATCH_3W_S], edges))
    assert set(np.unique(group)) == set(range(6))
    inner = np.flatnonzero(~last)
    for name in S.NEXT_STATE_COLUMNS:
        now, nxt = samples[name], samples[S.next_column(name)]
        assert nxt.take(pa.array(inner)).equals(now.take(pa.array(inner + 1))), name
        assert nxt.take(pa.array(np.flatnonzero(last))).equals(
            now.take(pa.array(np.flatnonzero(last)))), name


def test_live_samples_reject_wrong_edges(world):
    with pytest.raises(ValueError, match="2 edges make 3 groups, not K=6"):
        live_samples(world[2], groups=6, edges=np.array([0.0, 10.0]))


def test_allocation_ratio_amplitude_by_hand():
    minute = 60_000
    ts = np.array([0, 1, minute, 2 * minute, 5 * minute]) + 1_700_000_000_000 // minute * minute
    actions = np.array([1, 0, 1, 0, 1])  # ratios: minute 0 -> 0.5, 1 -> 1, 2 -> 0, 5 -> 1
    minute_ms, ratio, counts = injection_ratio_per_minute(ts, actions)
    np.testing.assert_allclose(ratio, [0.5, 1.0, 0.0, 1.0])
    assert counts.tolist() == [2, 1, 1, 1]
    # windows of 2 minutes start at minutes 0..4: {0,1}, {1,2}, {2}, {} (dropped), {5}
    np.testing.assert_allclose(allocation_ratio_amplitude(ts, actions, 2), [0.5, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(allocation_ratio_amplitude(ts, actions, 20), [1.0])
    np.testing.assert_allclose(allocation_ratio_amplitude(ts, actions, 2, min_requests=2), [0.0])


def _corrupt(table: pa.Table, column: str, row: int, value) -> pa.Table:
    values = table[column].to_pylist()
    values[row] = value
    index = table.schema.get_field_index(column)
    return table.set_column(index, table.schema.field(column),
                            pa.array(values, table.schema.field(column).type))


@pytest.mark.parametrize(
    ("column", "pick", "value", "message"),
    [
        (S.VIDEO_WATCH_S, "any", float("nan"), "NaN value"),
        (S.ACTION, "live", 2, "action 2, expected 0 or 1"),
        (S.BEHAVIOR_PROB, "any", 0.0, "behavior_prob 0, expected in \\(0, 1\\]"),
        (S.LIVE_WATCH_S, "idle", 12.5, "live_watch_s 12.5 with action 0, expected 0"),
        (S.ACTION, "no_live", 1, "action 1 but no live stream on air"),
        (S.N_VIDEOS, "any", 0, "n_videos 0, expected >= 1"),
    ],
)
def test_validation_names_file_column_and_row(world, column, pick, value, message):
    table = world[2].slice(0, 2000)
    action, live = table[S.ACTION].to_numpy(), table[S.LIVE_ID].to_numpy()
    rows = {"any": np.arange(len(live)), "live": np.flatnonzero(live >= 0),
            "idle": np.flatnonzero(action == 0), "no_live": np.flatnonzero(live < 0)}[pick]
    row = int(rows[len(rows) // 2])
    bad = _corrupt(table, column, row, value)
    with pytest.raises(LogValidationError, match=message) as err:
        validate_live_table(bad, file="part-x.parquet")
    assert (err.value.file, err.value.column, err.value.row) == ("part-x.parquet", column, row)
    validate_live_table(table)  # the uncorrupted slice passes


def test_validation_reads_files_and_catches_a_missing_column(world, tmp_path):
    table = world[2].slice(0, 500)
    path = tmp_path / "bad.parquet"
    pq.write_table(table.drop_columns([S.SESSION_END]), path)
    with pytest.raises(LogValidationError, match="missing column") as err:
        validate_live_log(path)
    assert err.value.column == S.SESSION_END and err.value.file == str(path)
    pq.write_table(_corrupt(table, S.LIVE_CLICK, 7, 3), path)
    with pytest.raises(LogValidationError, match="live_click 3, expected 0 or 1"):
        validate_live_log(path)


def test_rliv_validate_accepts_a_live_log_and_reports_its_errors(world, tmp_path, capsys):
    from rliv_ray.cli import EXIT_INVALID, main

    out, _, table = world
    assert main(["validate", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.startswith(f"ok: {table.num_rows:,} rows, {SMALL.n_users}")
    bad = tmp_path / "bad.parquet"
    ids = table.column(S.USER_ID).to_numpy().copy()
    ids[3] = -1
    pq.write_table(table.set_column(table.schema.get_field_index(S.USER_ID), S.USER_ID,
                                    pa.array(ids, type=table.schema.field(S.USER_ID).type)), bad)
    assert main(["validate", str(bad), "--quiet"]) == EXIT_INVALID
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"column '{S.USER_ID}'" in err[0], err
