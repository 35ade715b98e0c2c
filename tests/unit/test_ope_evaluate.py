"""Batches from live rows, the network as a world policy, evaluate() and the Table 1-2 layout."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy import stats

from rliv_ray import schema as S
from rliv_ray.algorithms.sl_mgac.network import SLMGACNetwork, SLMGACSpec
from rliv_ray.algorithms.sl_mgac.objective import check_batch, greedy_inject_probability
from rliv_ray.data.live_config import LiveWorldConfig
from rliv_ray.data.live_generate import bucket_table, live_log_schema_for_world
from rliv_ray.data.live_metrics import allocation_rewards
from rliv_ray.data.live_policies import AlwaysPolicy, logging_policy, observation_from_log
from rliv_ray.data.live_population import LivePopulation
from rliv_ray.data.live_samples import group_edges, live_samples, user_watch_3w
from rliv_ray.data.live_world import simulate_live_users
from rliv_ray.ope.evaluate import (
    TRUTH_REWARDS,
    EvalRow,
    NetworkPolicy,
    batch_from_observation,
    batch_from_table,
    evaluate,
    mean_interval,
    true_value_runs,
)
from rliv_ray.ope.ncis import NCISEstimate
from rliv_ray.ope.split import split_table
from rliv_ray.ope.table import render_markdown, render_text, summarise, to_records

CONFIG = LiveWorldConfig(n_users=150, days=1, seed=3, history_length=16)
TINY = {"id_buckets": 64, "embedding_dim": 4, "attention_hidden": (4,), "shared_hidden": (16,),
        "actor_hidden": (8,), "rpn_hidden": (8,), "qrn_hidden": (8,)}


@pytest.fixture(scope="module")
def world():
    pop = LivePopulation.build(CONFIG)
    result = simulate_live_users(CONFIG, pop, np.arange(CONFIG.n_users), logging_policy(CONFIG),
                                 np.random.default_rng(0))
    log = bucket_table(result, live_log_schema_for_world(CONFIG))
    train, test = split_table(log)
    edges = group_edges(user_watch_3w(train), 6)
    return pop, train, test, edges


def tiny_net(batch, seed=0) -> SLMGACNetwork:
    torch.manual_seed(seed)
    spec = SLMGACSpec(user_dim=batch[S.USER_FEATURES].shape[1],
                      live_dim=batch[S.LIVE_FEATURES].shape[1], **TINY)
    return SLMGACNetwork(spec)


def test_batch_from_samples_has_every_column_the_objective_reads(world):
    _, train, _, edges = world
    samples = live_samples(train, groups=6, edges=edges)
    batch = batch_from_table(samples, edges=edges)
    b = samples.num_rows
    assert batch[S.USER_FEATURES].shape == (b, 9) and batch[S.USER_FEATURES].dtype == torch.float32
    assert batch[S.next_column(S.LIVE_HISTORY)].shape == (b, CONFIG.history_length)
    assert batch[S.LIVE_HISTORY].dtype == torch.int32
    assert batch[S.ACTION].dtype == torch.int64 and batch[S.DONE].dtype == torch.bool
    np.testing.assert_array_equal(batch[S.USER_GROUP].numpy(), samples[S.USER_GROUP].to_numpy())
    check_batch(batch, tiny_net(batch).spec)  # raises on a missing or misshapen column


def test_groups_route_by_three_week_watch_time_when_absent(world):
    _, train, _, edges = world
    samples = live_samples(train, groups=6, edges=edges)
    without = samples.drop_columns([S.USER_GROUP])
    regrouped = batch_from_table(without, edges=edges)[S.USER_GROUP]
    np.testing.assert_array_equal(regrouped.numpy(), samples[S.USER_GROUP].to_numpy())
    obs = {S.USER_FEATURES: np.zeros((4, 2), np.float32),
           S.LIVE_FEATURES: np.zeros((4, 3), np.float32), S.LIVE_ID: np.array([1, 2, -1, 4]),
           S.LIVE_HISTORY: np.full((4, 5), -1, np.int32),
           S.VIDEO_HISTORY: np.zeros((4, 5), np.int32),
           S.LIVE_WATCH_3W_S: np.array([0.0, 5.0, 10.0, 400.0], np.float32),
           S.TRUE_LIVE_AFFINITY: np.zeros(4)}
    batch = batch_from_observation(obs, np.array([0.0, 10.0, 50.0]))
    assert batch[S.USER_GROUP].tolist() == [0, 1, 2, 3]  # an edge value goes up
    assert S.TRUE_LIVE_AFFINITY not in batch and S.ACTION not in batch
    with pytest.raises(KeyError, match="user_group"):
        batch_from_table({k: v for k, v in obs.items() if k != S.LIVE_WATCH_3W_S}, edges=None)


def test_network_policy_mixes_epsilon_and_never_injects_without_a_live():
    obs = {S.LIVE_ID: np.array([5, 6, -1, 7])}
    fixed = torch.tensor([0.2, 0.7, 0.9, 0.6])

    def stub(policy):
        policy.method_probability = lambda _: fixed.double().numpy()
        return policy

    greedy = stub(NetworkPolicy(None, np.zeros(1), epsilon=0.2))
    np.testing.assert_allclose(greedy.inject_probability(obs), [0.1, 0.9, 0.0, 0.9])
    soft = stub(NetworkPolicy(None, np.zeros(1), epsilon=0.2, greedy=False))
    np.testing.assert_allclose(soft.inject_probability(obs), [0.26, 0.66, 0.0, 0.58])
    with pytest.raises(ValueError, match="epsilon"):
        NetworkPolicy(None, np.zeros(1), epsilon=1.5)


def test_network_policy_on_world_observations_matches_the_serving_rule(world):
    _, _, test, edges = world
    obs = observation_from_log(test)
    batch = batch_from_observation(obs, edges)
    net = tiny_net(batch)
    policy = NetworkPolicy(net, edges, epsilon=0.2, chunk_rows=50)  # several chunks
    expected = greedy_inject_probability(net, batch, 0.2).double().numpy()
    np.testing.assert_allclose(policy.inject_probability(obs), expected, atol=1e-6)
    assert (policy.inject_probability(obs)[obs[S.LIVE_ID] < 0] == 0).all()


def test_world_observations_give_the_log_session_state(world):
    """The policy's session state from the world's observations (the session-requests
    feature) equals the samples' one from the log's session ends (issue 13)."""
    _, _, test, edges = world
    from_obs = batch_from_observation(observation_from_log(test), edges)
    from_log = batch_from_table(test, edges=edges)  # log rows: from session_end
    for name in S.SESSION_STATE_COLUMNS:
        torch.testing.assert_close(from_obs[name], from_log[name])
    assert (from_log[S.SESSION_INDEX] > 0).any() and (from_log[S.REQUEST_GAP] > 0).any()


def test_network_policy_restarts_sessions_between_runs(world):
    _, _, test, edges = world
    obs = observation_from_log(test)
    net = tiny_net(batch_from_observation(obs, edges))
    policy = NetworkPolicy(net, edges)
    first = policy.method_probability(obs)
    np.testing.assert_allclose(policy.method_probability(obs), first)  # time went back
    policy.reset_sessions()
    np.testing.assert_allclose(policy.method_probability(obs), first)


def test_evaluate_never_inject_is_zero_everywhere(world):
    pop, _, test, _ = world
    row = evaluate(AlwaysPolicy(0.0), world_config=CONFIG, test_log=test, seeds=(0, 1),
                   population=pop, n_bootstrap=0)
    assert row.ncis.value == 0.0 and row.true_value == 0.0 and row.true_per_seed == (0.0, 0.0)
    assert row.injection_ratio == 0.0 and row.amplitude == 0.0
    assert row.users == len(np.unique(test[S.USER_ID].to_numpy())) and row.seeds == (0, 1)


def test_evaluate_always_inject_injects_every_live_and_is_deterministic(world):
    pop, _, test, _ = world
    kwargs = {"world_config": CONFIG, "test_log": test, "seeds": (4,), "population": pop,
              "n_bootstrap": 20}
    row = evaluate(AlwaysPolicy(1.0), **kwargs)
    assert row.injection_ratio_with_live == 1.0 and 0 < row.injection_ratio < 1
    assert row.true_low < row.true_value < row.true_high  # one seed: interval over users
    assert row.ncis.ci_low <= row.ncis.value <= row.ncis.ci_high
    assert evaluate(AlwaysPolicy(1.0), **kwargs).true_value == row.true_value


def test_ncis_of_the_logging_policy_is_the_on_log_mean(world):
    pop, _, test, _ = world
    row = evaluate(logging_policy(CONFIG), world_config=CONFIG, test_log=test, seeds=(0, 1, 2),
                   population=pop, n_bootstrap=0, per_decision=True)
    reward = allocation_rewards(test[S.ACTION].to_numpy(), test[S.LIVE_WATCH_S].to_numpy(),
                                test[S.VIDEO_WATCH_S].to_numpy(), test[S.N_VIDEOS].to_numpy(),
                                CONFIG.beta)
    _, user = np.unique(test[S.USER_ID].to_numpy(), return_inverse=True)
    on_log = np.bincount(user, weights=reward).mean()
    assert row.ncis.value == pytest.approx(on_log, rel=1e-4)
    assert row.ncis_per_decision.value == pytest.approx(on_log, rel=1e-4)
    assert row.ess == pytest.approx(test.num_rows, rel=1e-3)  # every step's weight ~1
    mean, low, high = mean_interval(row.true_per_seed)
    assert (row.true_value, row.true_low, row.true_high) == (mean, low, high)
    assert row.ncis_relative_error == pytest.approx((row.ncis.value - mean) / abs(mean))


def test_expected_reward_truth_has_the_realised_truths_mean_with_less_noise():
    config = dataclasses.replace(CONFIG, n_users=400)
    pop, users = LivePopulation.build(config), np.arange(config.n_users)
    per_seed = {
        kind: np.array([r.user_return.mean() for r in true_value_runs(
            AlwaysPolicy(1.0), config, users, range(6), beta=config.beta, population=pop,
            truth_reward=kind)])
        for kind in TRUTH_REWARDS}
    expected, realised = per_seed["expected"], per_seed["realised"]
    difference = stats.ttest_rel(expected, realised)  # same seeds: the same request streams
    assert difference.pvalue > 0.01
    assert expected.std(ddof=1) < realised.std(ddof=1)
    with pytest.raises(ValueError, match="truth_reward"):
        true_value_runs(AlwaysPolicy(1.0), config, users, [0], beta=0.5, truth_reward="mean")


def test_mean_interval_is_student_t():
    mean, low, high = mean_interval([1.0, 2.0, 6.0])
    half = stats.t.ppf(0.975, 2) * np.std([1.0, 2.0, 6.0], ddof=1) / math.sqrt(3)
    assert (mean, low, high) == pytest.approx((3.0, 3.0 - half, 3.0 + half))
    assert math.isnan(mean_interval([2.0])[1])


def _row(ncis: float | None, true: float) -> EvalRow:
    est = None if ncis is None else NCISEstimate(ncis, ncis - 1, ncis + 1, 10.0, 0.0, 50.0,
                                                 40.0, 100, "trajectory")
    return EvalRow(est, true, true - 2, true + 2, (true,), 0.25, 0.4, 0.125, 100, (0,))


def test_table_aggregates_seeds_and_renders_every_method():
    results = {"SL-MGAC": [_row(458.0, 450.0), _row(460.0, 452.0), _row(462.0, 454.0)],
               "L2R": [_row(413.49, 400.0)], "oracle": [_row(None, 500.0)]}
    rows = summarise(results)
    half = stats.t.ppf(0.975, 2) * 2.0 / math.sqrt(3)  # sd of (458, 460, 462) is 2
    assert (rows[0].ncis, rows[0].ncis_high) == pytest.approx((460.0, 460.0 + half))
    assert rows[0].relative_error == pytest.approx(np.mean([8 / 450, 8 / 452, 8 / 454]))
    assert (rows[1].ncis_low, rows[1].true_high) == (412.49, 402.0)  # one seed: its own
    assert math.isnan(rows[2].ncis) and rows[2].true == 500.0
    markdown = render_markdown(rows)
    assert markdown.count("\n") == 4 and "| L2R | 413.49 ± 1.00 | 400.00 ± 2.00 |" in markdown
    assert f"460.00 ± {half:.2f}" in markdown and "| oracle | - |" in markdown
    text = render_text(rows).splitlines()
    assert len({len(line) for line in text}) == 1 and "25.0%" in text[2]
    assert to_records(rows)[2]["ncis"] is None and to_records(rows)[1]["ess"] == 50.0
    with pytest.raises(ValueError, match="missing for some seeds"):
        summarise({"x": [_row(1.0, 1.0), _row(None, 1.0)]})


def test_table_pairs_the_true_gain_by_seed_and_shows_per_decision_ncis():
    pd_est = NCISEstimate(300.0, 290.0, 310.0, 10.0, 0.0, 60.0, 60.0, 100, "per_decision")
    ours = [dataclasses.replace(_row(1.0, t), ncis_per_decision=pd_est) for t in (450, 452, 454)]
    logging = [dataclasses.replace(_row(1.0, t), ncis_per_decision=pd_est)
               for t in (440, 441, 445)]
    rows = summarise({"logging": logging, "ours": ours}, reference="logging")
    half = stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)  # differences 10, 11, 9: sd 1
    assert (rows[1].gain, rows[1].gain_high) == pytest.approx((10.0, 10.0 + half))
    assert rows[0].gain == 0.0 and rows[1].ncis_pd == 300.0
    # (300 - t) / t per seed, averaged: the per-decision estimate's error against the truth
    assert rows[1].pd_relative_error == pytest.approx(
        sum((300 - t) / t for t in (450, 452, 454)) / 3)
    lines = [line.split(" | ") for line in render_markdown(rows, "logging").splitlines()]
    assert lines[3][lines[0].index("PD rel. err")] == "-33.6%"
    header = render_markdown(rows, "logging").splitlines()[0]
    assert header.startswith("| method | NCIS J | NCIS-PD J | true J | true - logging |")
    assert f"| 10.00 ± {half:.2f} |" in render_markdown(rows, "logging")
    with pytest.raises(ValueError, match="reference"):
        summarise({"ours": ours}, reference="nobody")


def test_eval_row_survives_a_json_round_trip(world):
    import json

    pop, _, test, _ = world
    row = evaluate(logging_policy(CONFIG), world_config=CONFIG, test_log=test, seeds=(0, 1),
                   population=pop, n_bootstrap=0, per_decision=True)
    text = json.dumps(row.to_dict(), default=float).replace("NaN", "null")  # strict JSON
    back = EvalRow.from_dict(json.loads(text))
    assert back.true_per_seed == row.true_per_seed and back.seeds == row.seeds
    assert back.ncis.value == row.ncis.value and math.isnan(back.ncis.ci_low)
    assert back.ncis_per_decision.kind == "per_decision"
    assert back.true_value == row.true_value and back.users == row.users
