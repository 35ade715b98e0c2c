"""The synthetic user-author world: settings, laws, logging propensities, ground truth."""

import dataclasses

import numpy as np
import pyarrow.parquet as pq
import pytest

from rliv_ray import schema as S
from rliv_ray.actions import ActionGrid
from rliv_ray.data import io
from rliv_ray.data.ua_config import UAWorldConfig
from rliv_ray.data.ua_generate import generate_ua_world
from rliv_ray.data.ua_truth import discounted_returns, next_in_group, pair_order
from rliv_ray.data.validate import validate_log
from rliv_ray.grouping import group_starts

SMALL = UAWorldConfig(n_users=100, n_authors=400, days=14, seed=3)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world") / "ua"
    manifest = generate_ua_world(out, SMALL, n_files=3, progress=False)
    log = pq.read_table(out / io.LOG_DIR).to_pandas()
    truth = pq.read_table(out / io.TRUTH_DIR).to_pandas()
    return out, manifest, log, truth


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("click_rate", 1.5, "click_rate must be in \\(0, 1\\), got 1.5"),
        ("n_users", 0, "n_users must be >= 1"),
        ("candidates_per_request", 500, "candidates_per_request \\(500\\) must be <= pool_size"),
        ("logging_default_action", 9, "logging_default_action must index the action grid"),
        ("logging_epsilon", -0.1, "logging_epsilon must be in \\[0, 1\\]"),
    ],
)
def test_bad_settings_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(UAWorldConfig(), **{field: value})


def test_config_round_trips_through_dict():
    config = UAWorldConfig(action_grid=ActionGrid(weights=(0.0, 0.5, 1.0), c=2.0))
    assert UAWorldConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown UAWorldConfig fields: \\['nope'\\]"):
        UAWorldConfig.from_dict({"nope": 1})


def test_log_is_valid_bucketed_and_deterministic(world, tmp_path):
    out, manifest, log, _ = world
    report = validate_log(out)
    assert report.rows == manifest["rows"] == len(log)
    files = io.log_files(out)
    users_per_file = [set(pq.read_table(f, columns=[S.USER_ID])[S.USER_ID].to_pylist())
                      for f in files]
    assert sum(len(u) for u in users_per_file) == len(set().union(*users_per_file))
    again = tmp_path / "again"
    generate_ua_world(again, SMALL, n_files=3, progress=False)
    for first, second in zip(files, io.log_files(again), strict=True):
        assert pq.read_table(first).equals(pq.read_table(second))


def test_label_rates_near_the_papers(world):
    _, _, log, _ = world
    rates = {label: log[label].mean() for label in S.LABELS}
    # Paper: click ~3%, effective view ~1%, follow ~0.2% (gift ~0.01% is too rare to pin here).
    assert 0.015 < rates[S.CLICK] < 0.06
    assert 0.005 < rates[S.EFFECTIVE_VIEW] < 0.025
    assert 0.0005 < rates[S.FOLLOW] < 0.006


def test_labels_are_nested_and_follow_happens_once_per_pair(world):
    _, _, log, _ = world
    assert (log[S.EFFECTIVE_VIEW] <= log[S.CLICK]).all()
    assert (log[S.FOLLOW] <= log[S.EFFECTIVE_VIEW]).all()
    assert (log[S.GIFT] <= log[S.EFFECTIVE_VIEW]).all()
    assert log.groupby([S.USER_ID, S.AUTHOR_ID])[S.FOLLOW].sum().max() <= 1


def test_behavior_prob_is_the_logging_policys(world):
    _, _, log, _ = world
    eps, size = SMALL.logging_epsilon, SMALL.action_grid.size
    default = log[S.ACTION] == SMALL.logging_default_action
    expected = np.where(default, 1 - eps + eps / size, eps / size)
    assert np.allclose(log[S.BEHAVIOR_PROB], expected)
    # A boosted candidate wins the exposure more often than an unboosted one: the weight
    # changes exposure, so the default action is rarer among exposures than among candidates.
    assert default.mean() < (1 - eps + eps / size) - 0.05
    assert np.allclose(log[S.ACTION_WEIGHT], np.asarray(SMALL.action_grid.weights)[log[S.ACTION]])


def test_pair_features_count_what_came_before(world):
    _, _, log, _ = world
    log = log.sort_values([S.USER_ID, S.AUTHOR_ID, S.USER_REQUEST_IDX], kind="stable")
    pair = log.groupby([S.USER_ID, S.AUTHOR_ID], sort=False)
    assert (log[S.UA_EXPOSURE_COUNT] == pair.cumcount()).all()
    for label, count in S.PAIR_COUNT_BY_LABEL.items():
        before = pair[label].cumsum() - log[label]
        assert (log[count] == before).all(), count
    first_ts = pair[S.TS_MS].transform("min")
    days = (log[S.TS_MS] - first_ts) / 86_400_000
    assert np.allclose(log[S.UA_DAYS_SINCE_FIRST], days, atol=1e-3)


def test_requests_are_ordered_per_user(world):
    _, _, log, _ = world
    for _, rows in log.groupby(S.USER_ID):
        assert (np.diff(rows[S.USER_REQUEST_IDX]) == 1).all()  # K = 1: one row per request
        assert (np.diff(rows[S.REQUEST_ID]) > 0).all()
        assert (np.diff(rows[S.TS_MS]) > 0).all()


def test_truth_is_row_aligned_and_knows_the_next_interaction(world):
    _, _, log, truth = world
    assert (truth[S.REQUEST_ID].to_numpy() == log[S.REQUEST_ID].to_numpy()).all()
    nxt = log.groupby([S.USER_ID, S.AUTHOR_ID])[S.USER_REQUEST_IDX].shift(-1).fillna(-1)
    assert (truth[S.TRUE_NEXT_USER_REQUEST_IDX].to_numpy() == nxt.to_numpy()).all()
    assert (truth[S.TRUE_BOND_AFTER] >= truth[S.TRUE_BOND_BEFORE]).all()


def test_exact_row_budget_keeps_whole_lives(tmp_path):
    manifest = generate_ua_world(tmp_path / "w", SMALL, rows=5_000, progress=False)
    assert manifest["rows"] == 5_000
    assert validate_log(tmp_path / "w").rows == 5_000
    log = pq.read_table(tmp_path / "w" / io.LOG_DIR).to_pandas()
    assert (log.groupby(S.USER_ID)[S.USER_REQUEST_IDX].min() == 0).all()


def brute_force_returns(rewards, groups, gamma):
    out = np.zeros(len(rewards))
    for i in range(len(rewards)):
        k, discount = i, 1.0
        while k < len(rewards) and groups[k] == groups[i]:
            out[i] += discount * rewards[k]
            discount *= gamma
            k += 1
    return out


@pytest.mark.parametrize("seed", range(4))
def test_discounted_returns_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    groups = np.sort(rng.integers(0, 8, 60))
    rewards = rng.integers(0, 2, 60).astype(float)
    got = discounted_returns(rewards, group_starts(groups), 0.9)
    assert np.allclose(got, brute_force_returns(rewards, groups, 0.9), atol=1e-9)


def test_next_in_group_and_pair_order():
    user = np.array([1, 0, 0, 0])
    author = np.array([2, 5, 3, 5])
    req = np.array([0, 4, 1, 0])
    order = pair_order(user, author, req)
    assert order.tolist() == [2, 3, 1, 0]
    starts = group_starts(user[order], author[order])
    assert starts.tolist() == [True, True, False, True]
    assert next_in_group(req[order], starts).tolist() == [-1, 4, -1, -1]
