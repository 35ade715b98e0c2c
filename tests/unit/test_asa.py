"""ASA (RLIV-UA Eq. 6-7) and the rule-based baseline (Eq. 35) on a tiny synthetic world."""

import numpy as np
import pytest

from rliv_ray.mdp.asa import (
    ASAConfig,
    ASAPredictor,
    approximation_errors,
    rule_based_next_state,
    target_indices,
    validation_mask,
)
from rliv_ray.mdp.state import StateLayout

LAYOUT = StateLayout(user_names=("u0", "u1"), author_names=("a0",))  # dims: 2 + 1 + 6 + 2 = 11
N_ACTIONS = 5
FAST = ASAConfig(hidden_sizes=(32, 32), batch_size=64, epochs=20, learning_rate=3e-3)


def world(n: int, seed: int):
    """States, actions, rewards and true next states, where the truth is the rule (Eq. 35) except
    that days-since-first grows by 2 (a + 1) days and the next gap is 1 + 4a requests: both depend
    on the action, which the rule cannot express."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 200, n)
    user_feats = rng.normal(size=(200, 2))[users]
    exposures = rng.integers(0, 30, n)
    labels = np.stack([rng.binomial(exposures, p) for p in (0.5, 0.3, 0.1, 0.05)], axis=1)
    days = np.where(exposures == 0, 0.0, rng.uniform(0, 60, n))
    gap = np.where(exposures == 0, 0, rng.integers(1, 100, n))
    pair = np.log1p(np.column_stack([exposures, labels, days]))
    states = np.column_stack([user_feats, rng.normal(size=(n, 1)), pair, np.log1p(gap),
                              exposures == 0]).astype(np.float32)
    actions = rng.integers(0, N_ACTIONS, n)
    rewards = (rng.random((n, 4)) < [0.5, 0.3, 0.1, 0.05]).astype(np.float32)
    true_next = rule_based_next_state(states, actions, rewards, LAYOUT).astype(np.float64)
    true_next[:, LAYOUT.pair.stop - 1] = np.log1p(days + 2.0 * (actions + 1))
    true_next[:, LAYOUT.gap.start] = np.log1p(1.0 + 4.0 * actions)
    return users, states, actions, rewards, true_next.astype(np.float32)


@pytest.fixture(scope="module")
def data():
    return world(4000, seed=0)


@pytest.fixture(scope="module")
def trained(data):
    users, s, a, r, s_next = data
    val = validation_mask(users, FAST.validation_share, FAST.seed)
    model = ASAPredictor(LAYOUT, N_ACTIONS, FAST)
    info = model.fit(s[~val], a[~val], r[~val], s_next[~val])
    return model, info, val


def test_rule_based_hand_example():
    log1p = np.log1p
    # exposure 3, click 1, eff. view 0, follow 0, gift 0, 5 days, gap 2; then a first contact.
    states = np.array([[0.5, -1.0, 2.0, log1p(3), log1p(1), 0, 0, 0, log1p(5), log1p(2), 0],
                       [0.1, 0.2, 0.3, 0, 0, 0, 0, 0, 0, 0, 1]], dtype=np.float32)
    rewards = np.array([[1, 0, 1, 0], [0, 1, 0, 0]], dtype=np.float32)
    got = rule_based_next_state(states, np.array([4, 0]), rewards, LAYOUT)
    expected = np.array([[0.5, -1.0, 2.0, log1p(4), log1p(2), 0, log1p(1), 0, log1p(5),
                          log1p(2), 0],
                         [0.1, 0.2, 0.3, log1p(1), 0, log1p(1), 0, 0, 0, 0, 0]])
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"epochs": 0}, "epochs must be >= 1, got 0"),
    ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
    ({"max_train_tuples": -1}, "max_train_tuples must be >= 1, got -1"),
    ({"learning_rate": 0.0}, "learning_rate must be > 0, got 0.0"),
    ({"hidden_sizes": (64, 0)}, "hidden_sizes must all be >= 1, got (64, 0)"),
    ({"targets": "everything"}, "targets must be one of"),
    ({"validation_share": 1.0}, "validation_share must be in [0, 1), got 1.0"),
])
def test_config_validation_names_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[")):
        ASAConfig(**kwargs)


def test_target_indices():
    assert target_indices(LAYOUT, "pair_and_gap").tolist() == list(range(3, 11))
    assert target_indices(LAYOUT, "all_dynamic").tolist() == list(range(11))


def test_asa_beats_rule_on_held_out_users(trained, data):
    model, info, val = trained
    _, s, a, r, s_next = data
    assert info["tuples"] == int((~val).sum()) and info["epochs"] == FAST.epochs
    assert len(info["train_loss"]) == FAST.epochs
    assert info["train_loss"][-1] < 0.1 * info["train_loss"][0]
    pred = model.predict(s[val], a[val], r[val])
    assert pred.dtype == np.float32 and pred.shape == s[val].shape
    # Non-target dims (user, author features) are copied exactly.
    np.testing.assert_array_equal(pred[:, :3], s[val][:, :3])
    rule = rule_based_next_state(s[val], a[val], r[val], LAYOUT)
    scale = model.target_scale
    asa_err = approximation_errors(pred, s_next[val], LAYOUT, "pair_and_gap", scale)
    rule_err = approximation_errors(rule, s_next[val], LAYOUT, "pair_and_gap", scale)
    assert rule_err["mse"] > 0.5  # days and gap dims are far off under the rule
    assert asa_err["mse"] < 0.05 * rule_err["mse"]
    assert asa_err["eps_mean"] < 0.2 * rule_err["eps_mean"]
    assert asa_err["rows"] == int(val.sum())


def test_bytes_round_trip_predicts_identically(trained, data):
    model, _, _ = trained
    _, s, a, r, _ = data
    loaded = ASAPredictor.from_bytes(model.to_bytes())
    assert loaded.layout == LAYOUT and loaded.config == FAST and loaded.n_actions == N_ACTIONS
    np.testing.assert_array_equal(loaded.target_scale, model.target_scale)
    np.testing.assert_array_equal(loaded.predict(s, a, r, batch_size=777), model.predict(s, a, r))
    assert loaded.predict(s[:0], a[:0], r[:0]).shape == (0, LAYOUT.dim)


def test_same_seed_same_model_other_seed_differs(data):
    _, s, a, r, s_next = data
    config = ASAConfig(hidden_sizes=(16,), batch_size=256, epochs=2, targets="all_dynamic",
                       residual=False, max_train_tuples=1500, seed=3)
    preds = []
    for seed in (3, 3, 4):
        model = ASAPredictor(LAYOUT, N_ACTIONS, ASAConfig(**{**config.__dict__, "seed": seed}))
        info = model.fit(s, a, r, s_next)
        assert info["tuples"] == 1500
        preds.append(model.predict(s, a, r))
    np.testing.assert_array_equal(preds[0], preds[1])
    assert not np.array_equal(preds[0], preds[2])
    assert not np.array_equal(preds[0][:, :3], s[:, :3])  # all_dynamic predicts user dims too


def test_progress_prints_one_line_per_epoch(data, capsys):
    _, s, a, r, s_next = data
    ASAPredictor(LAYOUT, N_ACTIONS, ASAConfig(epochs=3)).fit(s, a, r, s_next, progress=True)
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [f"asa epoch {i}/3" for i in (1, 2, 3)]


def test_approximation_errors_against_numpy():
    rng = np.random.default_rng(1)
    pred, true = rng.normal(size=(7, 11)), rng.normal(size=(7, 11))
    true[2, 3:] = 0.0  # a zero true vector counts as cos = 0
    scale = rng.uniform(0.5, 2.0, 8)
    got = approximation_errors(pred, true, LAYOUT, "pair_and_gap", scale)
    p, t = pred[:, 3:] / scale, true[:, 3:] / scale
    err = np.sqrt(((p - t) ** 2).sum(axis=1))
    cos = np.array([p[i] @ t[i] / (np.linalg.norm(p[i]) * np.linalg.norm(t[i]))
                    if i != 2 else 0.0 for i in range(7)])
    assert got["mse"] == pytest.approx(((p - t) ** 2).mean())
    assert got["eps_max"] == pytest.approx(err.max())
    assert got["eps_mean"] == pytest.approx(err.mean())
    assert got["cosine_loss"] == pytest.approx((1 - cos).mean())
    assert got["rows"] == 7 and got["norm"] == "L2 over standardised target dims"
    unscaled = approximation_errors(pred, true, LAYOUT, "all_dynamic")
    assert unscaled["mse"] == pytest.approx(((pred - true) ** 2).mean())
    assert unscaled["norm"] == "L2 over raw target dims"


def test_validation_mask_keeps_users_whole_and_share():
    users = np.repeat(np.arange(-5_000, 15_000), 3)
    mask = validation_mask(users, 0.2, seed=7)
    per_user = mask.reshape(-1, 3)
    assert np.all(per_user == per_user[:, :1])
    assert abs(per_user[:, 0].mean() - 0.2) < 0.01
    order = np.random.default_rng(0).permutation(len(users))
    np.testing.assert_array_equal(validation_mask(users[order], 0.2, seed=7), mask[order])
    assert not np.array_equal(validation_mask(users, 0.2, seed=8), mask)
    assert not validation_mask(users, 0.0, 7).any() and validation_mask(users, 1.0, 7).all()


def test_bad_inputs_name_the_argument(data, trained):
    _, s, a, r, s_next = data
    model = trained[0]
    bad = s[:10].copy()
    bad[3, 4] = np.nan
    fresh = ASAPredictor(LAYOUT, N_ACTIONS, FAST)
    with pytest.raises(ValueError, match="states holds NaN"):
        fresh.fit(bad, a[:10], r[:10], s_next[:10])
    with pytest.raises(ValueError, match="next_states holds NaN"):
        fresh.fit(s[:10], a[:10], r[:10], bad)
    with pytest.raises(ValueError, match="actions must be an array of shape"):
        fresh.fit(s[:10], a[:9], r[:10], s_next[:10])
    with pytest.raises(ValueError, match="rewards must be an array of shape"):
        model.predict(s[:10], a[:10], r[:10, :3])
    with pytest.raises(ValueError, match="actions must be in"):
        model.predict(s[:10], a[:10] + N_ACTIONS, r[:10])
    with pytest.raises(ValueError, match="states is empty"):
        fresh.fit(s[:0], a[:0], r[:0], s_next[:0])
    with pytest.raises(ValueError, match="states must be an array of shape"):
        rule_based_next_state(s[:10, :5], a[:10], r[:10], LAYOUT)
    with pytest.raises(RuntimeError, match="not trained"):
        fresh.predict(s[:10], a[:10], r[:10])
