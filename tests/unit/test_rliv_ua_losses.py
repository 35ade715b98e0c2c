"""RLIV-UA losses against hand-computed values (no Ray)."""

import numpy as np
import pytest
import torch

from rliv_ray.algorithms.rliv_ua.losses import (
    clipped_double_q,
    conservative_penalty,
    double_dqn_target,
    gift_assistance_loss,
    plain_q_loss,
    reward_residual_loss,
    total_loss,
)


def test_clipped_double_q_is_the_elementwise_minimum():
    q = torch.tensor([[1.0, 5.0], [3.0, 2.0]])  # (K=2, B=2)
    assert clipped_double_q(q).tolist() == [1.0, 2.0]


def test_double_dqn_target_by_hand():
    # One sample, A = 3 actions, K = 2 critics.
    online = torch.tensor([[[1.0, 4.0, 3.0]], [[2.0, 3.5, 5.0]]])  # min: [1, 3.5, 3] -> a* = 1
    target = torch.tensor([[[9.0, 0.6, 9.0]], [[9.0, 0.8, 9.0]]])  # min at a*=1: 0.6
    y = double_dqn_target(torch.tensor([1.0]), online, target, gamma=0.9)
    assert y.item() == pytest.approx(1.0 + 0.9 * 0.6)
    done = double_dqn_target(torch.tensor([1.0]), online, target, 0.9, torch.tensor([0.0]))
    assert done.item() == pytest.approx(1.0)


def test_double_dqn_target_carries_no_gradient():
    online = torch.randn(2, 4, 5, requires_grad=True)
    target = torch.randn(2, 4, 5, requires_grad=True)
    y = double_dqn_target(torch.zeros(4), online, target, 0.9)
    assert not y.requires_grad


def test_reward_residual_loss_values_and_stop_gradient():
    r_hat = torch.tensor([0.5, 0.0], requires_grad=True)
    residual = torch.tensor([[1.0, 2.0], [0.0, 1.0]], requires_grad=True)  # (K=2, B=2)
    reward = torch.tensor([1.0, 0.0])
    y = torch.tensor([1.4, 1.8])
    loss = reward_residual_loss(r_hat, residual, reward, y, gamma=0.9)
    q = np.array([[0.5 + 0.9, 0.0 + 1.8], [0.5 + 0.0, 0.0 + 0.9]])
    expected_td = sum(np.mean((q_k - y.numpy()) ** 2) for q_k in q)
    assert loss.reward.item() == pytest.approx(np.mean([0.25, 0.0]))
    assert loss.td.item() == pytest.approx(expected_td, rel=1e-6)
    np.testing.assert_allclose(loss.q.detach().numpy(), q, rtol=1e-6)
    # Eq. 14: R_hat gets no gradient from the TD term, only from MSE(R_hat, r).
    loss.td.backward()
    assert r_hat.grad is None or torch.all(r_hat.grad == 0)
    assert residual.grad is not None and torch.any(residual.grad != 0)
    r_hat.grad = None
    loss_r = reward_residual_loss(r_hat, residual.detach(), reward, y, 0.9).reward
    loss_r.backward()
    np.testing.assert_allclose(r_hat.grad.numpy(), [2 * (0.5 - 1.0) / 2, 0.0])


def test_plain_q_loss_is_the_w_o_sl_ablation():
    q = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    y = torch.tensor([1.0, 1.0])
    loss = plain_q_loss(q, y)
    assert loss.reward.item() == 0.0
    assert loss.td.item() == pytest.approx(0.5 + 0.5)


def test_gift_assistance_is_bce():
    logit = torch.tensor([0.0, 2.0])
    gift = torch.tensor([1, 0])
    p = 1 / (1 + np.exp(-2.0))
    expected = -(np.log(0.5) + np.log(1 - p)) / 2
    assert gift_assistance_loss(logit, gift).item() == pytest.approx(expected)


def test_total_loss_sums_towers_and_assistance():
    a = plain_q_loss(torch.tensor([[1.0]]), torch.tensor([0.0]))
    b = plain_q_loss(torch.tensor([[2.0]]), torch.tensor([0.0]))
    assert total_loss({"click": a, "follow": b}).item() == pytest.approx(5.0)
    assert total_loss({"click": a}, torch.tensor(0.5)).item() == pytest.approx(1.5)


def test_conservative_penalty_by_hand():
    # K = 2 critics, B = 2 rows, A = 3 actions; logged actions 0 and 2.
    q = torch.tensor([[[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]],
                      [[3.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    actions = torch.tensor([0, 2])
    lse = np.log(np.exp(q.numpy()).sum(axis=-1))  # (K, B)
    logged = np.array([[0.0, 1.0], [3.0, 0.0]])
    expected = (lse - logged).mean(axis=1).sum()  # mean over rows, sum over critics
    assert conservative_penalty(q, actions).item() == pytest.approx(expected, rel=1e-6)
    # Q equal over the grid: logsumexp - Q = log A per row, whatever the value
    flat = torch.full((1, 4, 5), 7.0)
    assert conservative_penalty(flat, torch.zeros(4, dtype=torch.long)).item() == \
        pytest.approx(np.log(5.0))


def test_conservative_penalty_pushes_unlogged_actions_down():
    """Gradient descent on the penalty lowers Q of every action the log did not take and
    raises the logged one: d P / d Q(s, a) = softmax(Q)(a) - 1[a = a_logged]."""
    q = torch.tensor([[[0.5, -1.0, 2.0, 0.0]]], requires_grad=True)  # (K=1, B=1, A=4)
    conservative_penalty(q, torch.tensor([1])).backward()
    grad = q.grad[0, 0].numpy()
    softmax = np.exp([0.5, -1.0, 2.0, 0.0]) / np.exp([0.5, -1.0, 2.0, 0.0]).sum()
    np.testing.assert_allclose(grad, softmax - np.eye(4)[1], rtol=1e-6)
    assert grad[1] < 0 and np.all(np.delete(grad, 1) > 0)  # a step -lr*grad: logged up, rest down
