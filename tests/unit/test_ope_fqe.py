"""Fitted Q Evaluation (rliv_ray.ope.fqe): targets and loss against hand values, a known Q on a
tiny chain MDP, and coverage of the true value on the synthetic MDP of test_ope_sequential."""

import numpy as np
import pytest
import torch

from rliv_ray.ope.fqe import (
    FQEConfig,
    QNetwork,
    fit_q,
    fqe,
    fqe_loss,
    fqe_targets,
    policy_values,
    transitions,
)
from rliv_ray.ope.sequential import weighted_dr
from tests.ope_worlds import MDP, one_hot


def test_targets_loss_and_values_by_hand():
    q_next = torch.tensor([[1.0, 3.0], [2.0, 0.0]])
    probs = torch.tensor([[0.5, 0.5], [0.25, 0.75]])
    y = fqe_targets(q_next, probs, torch.tensor([1.0, -1.0]), torch.tensor([False, True]), 0.9)
    torch.testing.assert_close(y, torch.tensor([1.0 + 0.9 * 2.0, -1.0]))  # done: no bootstrap
    q = torch.tensor([[1.0, 2.0], [0.0, 5.0]])
    loss = fqe_loss(q, torch.tensor([1, 0]), torch.tensor([1.5, 1.0]))
    assert loss.item() == pytest.approx((0.5**2 + 1.0**2) / 2)
    torch.testing.assert_close(policy_values(q, probs), torch.tensor([1.5, 3.75]))


# --- chain: 0 - 1 - 2 - 3 - goal; right (1) moves on, left (0) back; reaching the goal pays 1 ---
N_CHAIN = 4
CHAIN_GAMMA = 0.9
P_RIGHT = 0.8  # the target


def _chain_q() -> np.ndarray:
    """Q^pi (S, 2) exactly: V = sum_a pi Q, Q(s, a) = r + gamma V(next)."""
    pi = np.array([1 - P_RIGHT, P_RIGHT])
    m = np.zeros((N_CHAIN, N_CHAIN))
    r = np.zeros(N_CHAIN)
    for s in range(N_CHAIN):
        m[s, max(s - 1, 0)] += pi[0] * CHAIN_GAMMA
        if s + 1 < N_CHAIN:
            m[s, s + 1] += pi[1] * CHAIN_GAMMA
        else:
            r[s] += pi[1]
    v = np.linalg.solve(np.eye(N_CHAIN) - m, r)
    left = CHAIN_GAMMA * v[np.maximum(np.arange(N_CHAIN) - 1, 0)]
    right = np.append(CHAIN_GAMMA * v[1:], 1.0)
    return np.stack([left, right], axis=1)


def _chain_log(n_episodes: int, max_steps: int, seed: int) -> dict:
    """Uniform-random logging from uniform start states; an episode cut at max_steps is not
    done (FQE bootstraps through its last next state)."""
    rng = np.random.default_rng(seed)
    rows = []
    for episode in range(n_episodes):
        s = int(rng.integers(0, N_CHAIN))
        for _ in range(max_steps):
            a = int(rng.integers(0, 2))
            nxt = s + 1 if a == 1 else max(s - 1, 0)
            done = nxt == N_CHAIN
            rows.append((episode, s, a, float(done), min(nxt, N_CHAIN - 1), done))
            if done:
                break
            s = nxt
    episode, s, a, r, nxt, done = (np.array(c) for c in zip(*rows, strict=True))
    return {"episode": episode, "s": s, "action": a, "reward": r, "next_s": nxt, "done": done}


@pytest.mark.parametrize("batch_size", [256, 4096])  # Adam on minibatches; L-BFGS on all rows
def test_fqe_recovers_the_chain_q(one_thread, batch_size):
    log = _chain_log(150, 12, seed=0)
    n = len(log["s"])
    pi = np.tile([1 - P_RIGHT, P_RIGHT], (n, 1))
    config = FQEConfig(gamma=CHAIN_GAMMA, hidden=(32,), iterations=45, steps_per_iteration=10,
                       lr=1e-2, batch_size=batch_size)
    result = fqe(one_hot(log["s"], N_CHAIN), log["action"], log["reward"],
                 one_hot(log["next_s"], N_CHAIN), log["done"], pi, pi, log["episode"],
                 config=config, n_bootstrap=0)
    q = result.q_values(np.eye(N_CHAIN))
    np.testing.assert_allclose(q, _chain_q(), atol=0.03)
    start_values = (_chain_q() @ [1 - P_RIGHT, P_RIGHT])[log["s"][np.r_[True, np.diff(
        log["episode"]) != 0]]]
    assert result.estimate.value == pytest.approx(start_values.mean(), abs=0.03)
    assert result.estimate.n == 150 and result.estimate.unit == "trajectories"


def _tabular_fqe(log: dict, policy: np.ndarray, gamma: float) -> np.ndarray:
    """The fixed point of FQE with a table per (s, a): Q = mean over the log's rows at (s, a)
    of r + gamma (1 - done) sum_a' pi(a'|s') Q(s', a')."""
    q = np.zeros_like(policy)
    counts = np.zeros_like(policy)
    np.add.at(counts, (log["s"], log["action"]), 1.0)
    for _ in range(200):
        y = log["reward"] + gamma * ~log["done"] * (policy * q)[log["next_s"]].sum(axis=1)
        total = np.zeros_like(policy)
        np.add.at(total, (log["s"], log["action"]), y)
        q = total / counts
    return q


def test_fqe_covers_the_true_value_and_feeds_wdr(one_thread):
    world = MDP.build(seed=2)
    logging = np.array([[0.5, 0.5], [0.7, 0.3], [0.4, 0.6]])
    log = world.log(logging, 300, seed=5)
    probs, next_probs = logging[log["s"]], logging[log["next_s"]]
    # ~850 rows <= batch_size: every iteration is an exact weighted regression (L-BFGS), so the
    # 10 refits are the bootstrap of tabular FQE (normal interval; 96% coverage over 100 logs).
    config = FQEConfig(gamma=world.gamma, hidden=(16,), iterations=12, steps_per_iteration=5,
                       batch_size=4096)
    result = fqe(one_hot(log["s"], 3), log["action"], log["reward"], one_hot(log["next_s"], 3),
                 log["done"], probs, next_probs, log["episode"], config=config, n_bootstrap=10)
    truth = world.value(logging)
    est = result.estimate
    assert est.covers(truth), (est.value, est.ci_low, est.ci_high, truth)
    # One-hot states: the fit must be the tabular FQE fixed point on this log.
    np.testing.assert_allclose(result.q_values(np.eye(3)), _tabular_fqe(log, logging,
                                                                        world.gamma), atol=0.01)
    q_hat = result.q_values(one_hot(log["s"], 3))  # FQE's Q as WDR's value model
    wdr = weighted_dr(log["action"], log["behavior_prob"], probs, log["reward"], log["episode"],
                      q_hat, gamma=world.gamma)
    assert wdr.covers(truth)


def test_fqe_rejects_bad_input_in_one_line():
    s = np.zeros((3, 2), dtype=np.float32)
    probs = np.tile([0.5, 0.5], (3, 1))
    args = (s, np.array([0, 1, 0]), np.zeros(3), s, np.zeros(3, dtype=bool), probs, probs)
    with pytest.raises(ValueError, match="one contiguous run each"):
        fqe(*args, np.array([1, 2, 1]))
    with pytest.raises(ValueError, match="the log holds action 2"):
        fqe(s, np.array([0, 2, 0]), *args[2:], np.zeros(3))
    never = np.tile([0.5, 0.5], (3, 1))
    with pytest.raises(ValueError, match="puts mass on action 1 .* never takes"):
        fqe(s, np.zeros(3, dtype=int), np.zeros(3), s, np.zeros(3, dtype=bool), never, never,
            np.zeros(3))
    with pytest.raises(ValueError, match="iterations must be >= 1"):
        FQEConfig(iterations=0)


def test_a_weighted_fit_is_the_fit_on_the_resample(one_thread):
    # A bootstrap refit weighs rows by their trajectory's multiplicity: with every row in one
    # batch that is exactly the loss of the resampled log (duplicated rows).
    log = _chain_log(6, 5, seed=1)
    n = len(log["s"])
    k = np.array([2.0, 0.0, 1.0, 3.0, 1.0, 0.0])[log["episode"]]
    pi = np.tile([1 - P_RIGHT, P_RIGHT], (n, 1))
    rows = np.repeat(np.arange(n), k.astype(int))
    data, _, _ = transitions(one_hot(log["s"], N_CHAIN), log["action"], log["reward"],
                             one_hot(log["next_s"], N_CHAIN), log["done"], pi, pi,
                             log["episode"])
    copied, _, _ = transitions(*(one_hot(log[c][rows], N_CHAIN) if c in ("s", "next_s")
                                 else log[c][rows] for c in ("s", "action", "reward", "next_s",
                                                             "done")),
                               pi[rows], pi[rows], log["episode"][rows])
    config = FQEConfig(gamma=CHAIN_GAMMA, hidden=(), iterations=5, steps_per_iteration=5,
                       batch_size=4096)
    torch.manual_seed(0)
    weighted = fit_q(data, config, QNetwork(N_CHAIN, 2, ()), k)
    torch.manual_seed(0)
    duplicated = fit_q(copied, config, QNetwork(N_CHAIN, 2, ()))
    eye = torch.eye(N_CHAIN)
    torch.testing.assert_close(weighted(eye), duplicated(eye), atol=1e-4, rtol=0)
