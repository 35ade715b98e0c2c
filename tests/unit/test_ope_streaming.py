"""The streaming OPE core (rliv_ray.ope.streaming): equal to the in-memory estimators on the
same rows, invariant to how the log is cut into blocks, and with a Poisson bootstrap that
depends only on the units' keys."""

import math

import numpy as np
import pytest

from rliv_ray.grouping import group_starts
from rliv_ray.ope import ncis_steps
from rliv_ray.ope.estimators import (
    direct_method,
    doubly_robust,
    ips,
    self_normalised_dr,
    snips,
    switch_dr,
)
from rliv_ray.ope.sequential import pdis
from rliv_ray.ope.streaming import (
    ESTIMATORS,
    StreamSettings,
    block_stats,
    finalize,
    merge,
    poisson_weights,
)
from tests.ope_worlds import softmax


def user_log(n_users=300, n_actions=3, seed=0, max_len=25):
    """Rows sorted by user then time; logging and target policies over n_actions."""
    rng = np.random.default_rng(seed)
    length = rng.integers(1, max_len, n_users)
    user = np.repeat(rng.permutation(10 * n_users)[:n_users] * 7 + 3, length)
    user = np.sort(user)  # sorted ids, each user one contiguous run
    n = len(user)
    behavior = softmax(rng.normal(size=(n, n_actions)))
    behavior = 0.8 * behavior + 0.2 / n_actions
    action = (rng.random((n, 1)) > np.cumsum(behavior, axis=1)[:, :-1]).sum(axis=1)
    target = softmax(rng.normal(size=(n, n_actions)) * 1.5)
    reward = rng.gamma(2.0, 1.0, n) * (action > 0)
    q_hat = rng.uniform(0, 3, (n, n_actions))
    return {"action": action, "behavior_prob": behavior[np.arange(n), action],
            "target_probs": target, "rewards": reward, "q_hat": q_hat, "user": user,
            "row_keys": np.arange(n) * 11 + 5}


LOG = user_log()


def stream(log, settings, cuts=()):
    """Merged stats of the log cut at the row indices ``cuts``."""
    bounds = [0, *cuts, len(log["action"])]
    total = None
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        part = {k: v[lo:hi] for k, v in log.items()}
        stats = block_stats(part["action"], part["behavior_prob"], part["target_probs"],
                            part["rewards"], row_keys=part["row_keys"], user=part["user"],
                            q_hat=part["q_hat"], settings=settings)
        total = stats if total is None else merge(total, stats)
    return total


def by_name(result):
    return {e.estimator: e for e in result.estimates}


def user_cuts(log, count):
    starts = np.flatnonzero(group_starts(log["user"]))[1:]
    return sorted(np.random.default_rng(1).choice(starts, count, replace=False))


def test_per_decision_estimators_equal_the_in_memory_ones():
    settings = StreamSettings(estimators=("ips", "snips", "dm", "dr", "sndr", "switch_dr"),
                              cap=3.0, tau=2.0, n_bootstrap=0)
    got = by_name(finalize(stream(LOG, settings), settings))
    bandit = (LOG["action"], LOG["behavior_prob"], LOG["target_probs"], LOG["rewards"])
    expected = {
        "ips": ips(*bandit, cap=3.0, n_bootstrap=0),
        "snips": snips(*bandit, cap=3.0, n_bootstrap=0),
        "dm": direct_method(LOG["target_probs"], LOG["q_hat"], n_bootstrap=0),
        "dr": doubly_robust(*bandit, LOG["q_hat"], cap=3.0, n_bootstrap=0),
        "sndr": self_normalised_dr(*bandit, LOG["q_hat"], n_bootstrap=0),
        "switch_dr": switch_dr(*bandit, LOG["q_hat"], tau=2.0, n_bootstrap=0)}
    for name, ref in expected.items():
        est = got[name]
        assert est.value == pytest.approx(ref.value, rel=1e-10), name
        assert est.effective_sample_size == pytest.approx(ref.effective_sample_size, rel=1e-10)
        assert (est.n, est.unit) == (ref.n, "rows")


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_per_trajectory_estimators_equal_the_in_memory_ones(gamma):
    settings = StreamSettings(estimators=("ncis", "ncis_trajectory", "ncis_per_decision",
                                          "pdis"), ncis_cap=5.0, gamma=gamma, n_bootstrap=0)
    got = by_name(finalize(stream(LOG, settings, user_cuts(LOG, 5)), settings))
    ratios = (LOG["target_probs"][np.arange(len(LOG["action"])), LOG["action"]]
              / LOG["behavior_prob"])
    starts = group_starts(LOG["user"])
    for kind, name in (("stepwise", "ncis"), ("trajectory", "ncis_trajectory"),
                       ("per_decision", "ncis_per_decision")):
        ref = ncis_steps(LOG["rewards"], ratios, starts, kind=kind, cap=5.0, gamma=gamma,
                         n_bootstrap=0)
        assert got[name].value == pytest.approx(ref.value, rel=1e-10), name
        assert got[name].effective_sample_size == pytest.approx(ref.effective_sample_size,
                                                                rel=1e-10), name
        assert (got[name].n, got[name].unit) == (ref.n_trajectories, "trajectories")
    ref = pdis(LOG["action"], LOG["behavior_prob"], LOG["target_probs"], LOG["rewards"],
               LOG["user"], gamma=gamma, n_bootstrap=0)
    assert got["pdis"].value == pytest.approx(ref.value, rel=1e-10)
    assert got["pdis"].effective_sample_size == pytest.approx(ref.effective_sample_size,
                                                              rel=1e-10)


def test_results_do_not_depend_on_the_block_boundaries():
    settings = StreamSettings(estimators=ESTIMATORS, ncis_cap=5.0, n_bootstrap=50, seed=3)
    whole = finalize(stream(LOG, settings), settings)
    split = finalize(stream(LOG, settings, user_cuts(LOG, 7)), settings)
    for a, b in zip(whole.estimates, split.estimates, strict=True):
        assert a.estimator == b.estimator
        for field in ("value", "ci_low", "ci_high", "effective_sample_size"):
            assert getattr(a, field) == pytest.approx(getattr(b, field), rel=1e-9, abs=1e-12)
        assert a.ci_low < a.value < a.ci_high, a.estimator
    rows_only = StreamSettings(estimators=("ips", "dr"), n_bootstrap=50)
    anywhere = [37, 38, 500, 1999]  # not at user boundaries: fine for per-row estimators
    a = finalize(stream(LOG, rows_only), rows_only).estimates
    b = finalize(stream(LOG, rows_only, anywhere), rows_only).estimates
    assert [x for e in a for x in (e.value, e.ci_low, e.ci_high)] == pytest.approx(
        [x for e in b for x in (e.value, e.ci_low, e.ci_high)], rel=1e-9)


def test_a_user_cut_across_blocks_is_refused_for_trajectory_estimators():
    settings = StreamSettings(estimators=("ncis",), n_bootstrap=0)
    log = {k: v[:40] for k, v in LOG.items()}
    log["user"] = np.array([1] * 10 + [2] * 10 + [1] * 20)
    with pytest.raises(ValueError, match="one contiguous run"):
        stream(log, settings)


def test_poisson_weights_are_keyed_and_poisson():
    keys = np.arange(200_000, dtype=np.int64)
    k = poisson_weights(keys, 8, seed=1)
    assert k.shape == (8, len(keys)) and k.dtype == np.uint8
    assert k.mean() == pytest.approx(1.0, abs=0.005)
    assert k.var() == pytest.approx(1.0, abs=0.01)
    assert (k == 0).mean() == pytest.approx(math.exp(-1), abs=0.003)
    np.testing.assert_array_equal(poisson_weights(keys[::-1], 8, 1), k[:, ::-1])
    np.testing.assert_array_equal(poisson_weights(keys[5:9], 8, 1), k[:, 5:9])
    assert not np.array_equal(poisson_weights(keys[:100], 8, 2), k[:, :100])
    assert abs(np.corrcoef(k[0], k[1])[0, 1]) < 0.01


def test_the_interval_matches_the_multinomial_bootstrap():
    log = user_log(n_users=600, n_actions=2, seed=4)
    settings = StreamSettings(estimators=("snips",), n_bootstrap=400)
    got = by_name(finalize(stream(log, settings), settings))["snips"]
    ref = snips(log["action"], log["behavior_prob"], log["target_probs"], log["rewards"],
                n_bootstrap=400)
    assert got.ci_high - got.ci_low == pytest.approx(ref.ci_high - ref.ci_low, rel=0.2)


def test_support_and_propensities_are_checked():
    settings = StreamSettings(estimators=("ips",), n_bootstrap=0)
    log = {k: v.copy() for k, v in LOG.items()}
    log["behavior_prob"][17] = 0.0
    with pytest.raises(ValueError, match="behavior_prob is 0 on 1 of"):
        stream(log, settings)
    log = {k: v.copy() for k, v in LOG.items()}
    log["action"] = np.where(log["action"] == 2, 1, log["action"])  # action 2 never logged
    with pytest.raises(ValueError, match="puts mass on action 2"):
        finalize(stream(log, settings, [100]), settings)


def test_model_estimators_are_skipped_without_a_model_and_settings_are_checked():
    settings = StreamSettings(estimators=("ips", "dr"), n_bootstrap=0)
    result = finalize(stream(LOG, settings), settings, has_model=False)
    assert [e.estimator for e in result.estimates] == ["ips"]
    assert result.skipped == {"dr": "no reward model"}
    with pytest.raises(ValueError, match="estimators must be some of"):
        StreamSettings(estimators=("wdr",))
    with pytest.raises(ValueError, match="ncis_cap must be a number > 0"):
        StreamSettings(ncis_cap=0)


def test_sums_travel_from_ray_tasks_as_plain_arrow_columns():
    """What a Ray Data task of `rliv ope` returns (rliv_ray.ope.scan): one row per sum, its key,
    shape and float64 values, never a pickle; merged key by key it gives the same estimates,
    and a file's error comes back as its one line."""
    import pyarrow as pa

    from rliv_ray.ope.scan import STATS_SCHEMA, error_table, stats_from_table, stats_table
    from rliv_ray.ope.targets import OPEInputError

    settings = StreamSettings(estimators=("ips", "dr", "ncis", "ncis_per_decision"),
                              n_bootstrap=20)
    halves = user_cuts(LOG, 1)[0]
    parts = [stream({k: v[lo:hi] for k, v in LOG.items()}, settings)
             for lo, hi in ((0, halves), (halves, len(LOG["action"])))]
    table = pa.concat_tables([stats_table(p) for p in parts])
    assert table.schema == STATS_SCHEMA
    assert {str(t) for t in table.schema.types} <= {"string", "list<item: int64>",
                                                    "list<item: double>"}
    total = None
    for piece in stats_from_table(table):
        assert len(piece) == 1
        total = piece if total is None else merge(total, piece)
    direct = by_name(finalize(merge(*parts), settings))
    for est in finalize(total, settings).estimates:
        assert est.value == pytest.approx(direct[est.estimator].value, rel=1e-12)
        assert est.ci_low == pytest.approx(direct[est.estimator].ci_low, rel=1e-12)
    with pytest.raises(OPEInputError, match="^f.parquet: no rows$"):
        list(stats_from_table(pa.concat_tables([table, error_table("f.parquet: no rows")])))
