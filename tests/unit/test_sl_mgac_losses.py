"""SL-MGAC losses against hand-computed values (no Ray)."""

import math

import pytest
import torch

from rliv_ray.algorithms.sl_mgac.losses import (
    SLMGACLoss,
    actor_loss,
    bin_classification_loss,
    critic_loss,
    direct_time_loss,
    huber,
    next_state_value,
    normalised_q,
    rpn_proportion_loss,
    taken,
    td_target,
    watch_time_reward,
    with_reward_per_action,
)


@pytest.mark.parametrize(
    ("x", "delta", "expected"),
    [(0.5, 1.0, 0.125), (-1.0, 1.0, 0.5), (-2.0, 1.0, 1.5), (3.0, 1.0, 2.5),
     (-1.5, 2.0, 1.125), (3.0, 2.0, 4.0)],
)
def test_huber_on_both_sides_of_delta(x, delta, expected):
    assert huber(torch.tensor(x), delta).item() == pytest.approx(expected)


def test_watch_time_reward_by_hand():
    a = torch.tensor([1, 0, 1])
    live = torch.tensor([30.0, 30.0, 2.0])
    video = torch.tensor([60.0, 60.0, 40.0])
    n = torch.tensor([6, 6, 0])  # n = 0 (a terminal row's next request) counts as 1
    r = watch_time_reward(a, live, video, n, beta=0.5)
    assert r.tolist() == pytest.approx([30 - 0.5 * 10, 0.0, 2 - 0.5 * 40])
    assert watch_time_reward(a, live, video, n, 0.5, reward_scale=0.1)[0].item() == \
        pytest.approx(2.5)
    assert with_reward_per_action(torch.tensor([2.5])).tolist() == [[0.0, 2.5]]


# One next state, K = 2 target critics, A = 2: min_j Q'_j(s', .) = [1, 3].
Q_TARGET = torch.tensor([[[1.0, 4.0]], [[2.0, 3.0]]])
Q_ONLINE = torch.tensor([[[5.0, 0.0]], [[6.0, 1.0]]])  # min [5, 0]: the online pick is a* = 0


@pytest.mark.parametrize(
    ("mode", "kwargs", "value"),
    [("max_min", {}, 3.0),
     ("double_dqn", {"next_q_online": Q_ONLINE}, 1.0),
     ("logged_next", {"next_action": torch.tensor([1])}, 3.0),
     ("logged_next", {"next_action": torch.tensor([0])}, 1.0),
     ("vanilla", {"next_pi": torch.tensor([[0.25, 0.75]])}, 0.25 * 1 + 0.75 * 3)],
)
def test_target_modes_by_hand(mode, kwargs, value):
    assert next_state_value(Q_TARGET, mode, **kwargs).item() == pytest.approx(value)


@pytest.mark.parametrize(
    ("mode", "kwargs"),
    [("max_min", {}), ("double_dqn", {"next_q_online": -Q_ONLINE}),
     ("vanilla", {"next_pi": torch.tensor([[0.25, 0.75]])})],
)
def test_no_live_on_air_at_s_next_leaves_only_a_zero(mode, kwargs):
    v = next_state_value(Q_TARGET, mode, feasible=torch.tensor([False]), **kwargs)
    assert v.item() == pytest.approx(1.0)


def test_td_target_by_hand_and_terminal_rows():
    r, v = torch.tensor([1.0, 1.0, 2.0]), torch.tensor([3.0, 3.0, float("nan")])
    y = td_target(r, v, 0.9, done=torch.tensor([False, True, True]))
    assert y.tolist() == pytest.approx([1 + 0.9 * 3, 1.0, 2.0])  # NaN behind done is ignored


def test_target_carries_no_gradient():
    q = Q_TARGET.clone().requires_grad_()
    assert not td_target(torch.zeros(1), next_state_value(q), 0.9).requires_grad


def test_critic_loss_sums_critics_of_mean_huber():
    q = torch.tensor([[1.0, 4.0], [0.0, 2.0]])  # (C=2, B=2)
    y = torch.tensor([0.5, 1.0])
    # critic 1: huber(0.5) = 0.125, huber(3) = 2.5; critic 2: huber(-0.5), huber(1) = 0.5
    assert critic_loss(q, y).item() == pytest.approx((0.125 + 2.5) / 2 + (0.125 + 0.5) / 2)


def test_taken_picks_the_logged_action():
    values = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # (1, B=2, A=2)
    assert taken(values, torch.tensor([1, 0])).tolist() == [[2.0, 3.0]]


def test_rpn_proportion_loss_masks_rows_without_a_proportion():
    rho_hat = torch.tensor([[[0.9, 0.2, 0.7], [0.1, 0.6, 0.3], [0.5, 0.5, 0.5]]])  # (1, 3, 3)
    bins = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    rho = torch.tensor([0.4, 0.3, 0.0])
    mask = torch.tensor([True, True, False])  # row 3 sits in the zero bin
    # picked: 0.2 and 0.3 -> 0.5 * 0.2^2 and 0 over the two kept rows
    loss = rpn_proportion_loss(rho_hat, bins, rho, mask)
    assert loss.item() == pytest.approx(0.5 * 0.04 / 2)
    assert rpn_proportion_loss(rho_hat, bins, rho, torch.zeros(3, dtype=torch.bool)).item() == 0


def test_bin_classification_and_direct_time_losses():
    logits = torch.zeros(2, 3, 4)  # (C, B, n): uniform -> CE = ln 4 per critic
    assert bin_classification_loss(logits, torch.tensor([0, 1, 3])).item() == \
        pytest.approx(2 * math.log(4))
    seconds_hat = torch.tensor([[10.0, 0.5]])
    got = direct_time_loss(seconds_hat, torch.tensor([7.0, 0.0]))
    assert got.item() == pytest.approx((2.5 + 0.125) / 2)


# A 2-action example: pi = [1/4, 3/4], Q = [ln 2, 0] -> Q_tilde = [2/3, 1/3].
LOGITS = torch.tensor([[0.0, math.log(3.0)]])
Q = torch.tensor([[math.log(2.0), 0.0]])


def test_normalised_q_by_hand():
    assert normalised_q(Q).tolist()[0] == pytest.approx([2 / 3, 1 / 3])
    s = math.sqrt(2)
    assert normalised_q(Q, temperature=2.0).tolist()[0] == pytest.approx([s / (s + 1),
                                                                          1 / (s + 1)])


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [({"form": "soft_ce"}, -(2 / 3 * math.log(0.25) + 1 / 3 * math.log(0.75))),
     ({"form": "awac_sampled", "action": 0}, -(2 / 3) * math.log(0.25)),
     ({"form": "awac_sampled", "action": 1}, -(1 / 3) * math.log(0.75)),
     ({"q_norm": False}, -(0.25 * math.log(2.0))),  # Eq. 12: -sum_a pi Q
     ({"q_norm": False, "plain": "raw_q", "form": "soft_ce"},
      -(math.log(2.0) * math.log(0.25)))],
)
def test_actor_losses_on_a_two_action_example(kwargs, expected):
    action = torch.tensor([kwargs.pop("action", 0)])
    assert actor_loss(LOGITS, Q, action, **kwargs).item() == pytest.approx(expected)


def test_actor_loss_skips_masked_rows():
    logits = torch.cat([LOGITS, torch.tensor([[5.0, -5.0]])])
    q = torch.cat([Q, torch.tensor([[0.0, 100.0]])])
    got = actor_loss(logits, q, torch.zeros(2, dtype=torch.long), form="soft_ce",
                     mask=torch.tensor([True, False]))
    assert got.item() == pytest.approx(-(2 / 3 * math.log(0.25) + 1 / 3 * math.log(0.75)))


def test_actor_loss_gradient_reaches_q_unless_detached():
    q = Q.clone().requires_grad_()
    actor_loss(LOGITS, q, torch.tensor([0]), form="soft_ce").backward()
    assert q.grad is not None and q.grad.abs().sum() > 0


def test_bad_actor_loss_names_are_named():
    with pytest.raises(ValueError, match="actor_loss must be one of"):
        actor_loss(LOGITS, Q, torch.tensor([0]), form="ppo")
    with pytest.raises(ValueError, match="plain_actor_loss must be one of"):
        actor_loss(LOGITS, Q, torch.tensor([0]), q_norm=False, plain="x")
    with pytest.raises(ValueError, match="target_mode must be one of"):
        next_state_value(Q_TARGET, "sarsa")


def test_total_loss_is_the_unweighted_sum():
    parts = SLMGACLoss(torch.tensor(1.0), torch.tensor(0.25), torch.tensor(-0.5))
    assert parts.total.item() == pytest.approx(0.75)
