"""Fitted Q Evaluation (Le, Voloshin & Yue 2019, Alg. 3), torch, generic discrete actions.

From logged transitions (s, a, r, s', done) and the target's distribution pi(. | s') at the
next state, FQE iterates a regression k = 1 .. K with the previous fit frozen:

    y_i     = r_i + gamma (1 - done_i) sum_a' pi(a' | s'_i) Q_{k-1}(s'_i, a')       (target)
    Q_k     = argmin_Q  sum_i c_i (Q(s_i, a_i) - y_i)^2 / sum_i c_i                 (regression)
    V^(pi)  = sum_i k_i sum_a pi(a | s_{i,0}) Q_K(s_{i,0}, a) / sum_i k_i          (start states)

(c_i = 1 on the data as drawn; a bootstrap refit puts its multiplicities on whole trajectories).
FQE never uses propensities: it assumes the Bellman equation of pi holds on the logged states
(Markov state), that Q's class can represent it, and that the log covers the actions pi takes
(:func:`rliv_ray.ope.support.check_support` runs on the actions; without coverage Q is
extrapolated). A non-terminal last step (a trajectory cut by the end of the log) is
bootstrapped through Q, so FQE values the infinite horizon where the importance-sampling
estimators value the logged one. On RLIV-UA's exposure-selected rows FQE regresses on what was
exposed: its Q is right for exposed (s, a), but it averages Q over pi(a'|s'), while which
candidate (and so which s, a) is exposed depends on the policy. Like DM it is then biased even
for the logging policy (:mod:`rliv_ray.ope.estimators`).

The network is any module mapping states (B, d) to Q-values (B, A); the default is the
project's :class:`~rliv_ray.algorithms.common.blocks.BatchedMLP` with one head. Its interval
refits FQE ``n_bootstrap`` times on trajectory resamples (expensive: keep it small) and takes
the normal-approximation interval of the refits (:func:`rliv_ray.ope.common.normal_interval`:
percentiles of a few draws are just the extremes); it covers sampling error, not the bias of
the function class. Logs no larger than ``batch_size`` are fitted on every row at each step by
L-BFGS (the exact weighted loss of the resample); larger ones by Adam on weighted draws.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rliv_ray.algorithms.common.blocks import BatchedMLP
from rliv_ray.grouping import group_starts
from rliv_ray.ope.common import (
    DEFAULT_LEVEL,
    OPEEstimate,
    bootstrap_values,
    check_options,
    normal_interval,
)
from rliv_ray.ope.support import check_action_space, check_rewards, check_support

__all__ = ["DEFAULT_REFITS", "FQEConfig", "FQEResult", "QNetwork", "Transitions", "fit_q",
           "fqe", "fqe_loss", "fqe_targets", "policy_values", "transitions"]

DEFAULT_REFITS = 20
"""Bootstrap refits for FQE's interval: each is a whole FQE fit, so far fewer than the 200
resamples of the closed-form estimators (a rough 95% interval; raise it for a report)."""


@dataclass(frozen=True)
class FQEConfig:
    """FQE's settings; defaults sized for the small state vectors of the tests and SL-MGAC."""

    gamma: float = 0.99
    """Discount of the value being estimated."""
    hidden: tuple[int, ...] = (64, 64)
    """Hidden widths of the default Q network (empty: linear in the state features)."""
    iterations: int = 100
    """K, fitted-Q iterations; the target is frozen within one (Le et al. 2019, Alg. 3)."""
    steps_per_iteration: int = 50
    """Adam steps per iteration."""
    batch_size: int = 256
    """Rows per step, drawn with replacement in proportion to the row weights; at least the
    number of rows: every step on all rows, weighted (exact, for small logs)."""
    lr: float = 1e-3
    """Adam learning rate."""
    seed: int = 0
    """Initialisation and minibatch seed (refit b uses seed + 1 + b)."""

    def __post_init__(self):
        if not 0 <= self.gamma <= 1:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        for name in ("iterations", "steps_per_iteration", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if any(width < 1 for width in self.hidden):
            raise ValueError(f"hidden widths must be >= 1, got {self.hidden}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


class QNetwork(nn.Module):
    """Q(s, .) (B, d) -> (B, A): one head of the project's :class:`BatchedMLP`."""

    def __init__(self, state_dim: int, n_actions: int, hidden: tuple[int, ...]):
        super().__init__()
        self.mlp = BatchedMLP(1, state_dim, hidden, n_actions)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.mlp(states)[0]


def fqe_targets(q_next: torch.Tensor, next_target_probs: torch.Tensor, rewards: torch.Tensor,
                done: torch.Tensor, gamma: float) -> torch.Tensor:
    """y = r + gamma (1 - done) sum_a' pi(a'|s') Q(s', a'): (B, A), (B, A), (B,), (B,) -> (B,)."""
    return rewards + gamma * (~done).to(rewards.dtype) * (next_target_probs * q_next).sum(-1)


def fqe_loss(q: torch.Tensor, action: torch.Tensor, y: torch.Tensor,
             weights: torch.Tensor | None = None) -> torch.Tensor:
    """sum c (Q(s, a) - y)^2 / sum c (c = 1 without ``weights``): q (B, A), action (B,) int64,
    y (B,), weights (B,) -> scalar."""
    squared = (q.gather(1, action.unsqueeze(1)).squeeze(1) - y).square()
    return squared.mean() if weights is None else (weights * squared).sum() / weights.sum()


def policy_values(q: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """V(s) = sum_a pi(a|s) Q(s, a): (B, A), (B, A) -> (B,)."""
    return (target_probs * q).sum(-1)


@dataclass(frozen=True)
class Transitions:
    """FQE's tensors, validated (:func:`transitions`)."""

    states: torch.Tensor  # (n, d)
    action: torch.Tensor  # (n,) int64
    rewards: torch.Tensor  # (n,)
    next_states: torch.Tensor  # (n, d)
    done: torch.Tensor  # (n,) bool
    next_target_probs: torch.Tensor  # (n, A)


def fit_q(data: Transitions, config: FQEConfig, network: nn.Module,
          row_weights: np.ndarray | None = None, seed: int | None = None) -> nn.Module:
    """Run FQE's K iterations on ``network`` in place (rows drawn in proportion to
    ``row_weights``, uniformly without) and return it."""
    n = len(data.action)
    weights = torch.ones(n) if row_weights is None else torch.as_tensor(row_weights,
                                                                        dtype=torch.float32)
    if config.batch_size >= n:
        return _fit_full_batch(data, config, network, weights)
    generator = torch.Generator().manual_seed(config.seed if seed is None else seed)
    optimiser = torch.optim.Adam(network.parameters(), lr=config.lr)
    for _ in range(config.iterations):
        y = _frozen_targets(data, config, network)
        for _ in range(config.steps_per_iteration):
            rows = torch.multinomial(weights, config.batch_size, replacement=True,
                                     generator=generator)
            loss = fqe_loss(network(data.states[rows]), data.action[rows], y[rows])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    return network


def _frozen_targets(data: Transitions, config: FQEConfig, network: nn.Module) -> torch.Tensor:
    """FQE's regression targets y (n,) from the current fit, held fixed for one iteration."""
    frozen = copy.deepcopy(network).requires_grad_(False)
    with torch.no_grad():
        return fqe_targets(frozen(data.next_states), data.next_target_probs, data.rewards,
                           data.done, config.gamma)


def _fit_full_batch(data: Transitions, config: FQEConfig, network: nn.Module,
                    weights: torch.Tensor) -> nn.Module:
    """Each iteration's regression on every row, weighted, by L-BFGS (``steps_per_iteration``
    evaluations): the exact loss of the (re)sample, solved far more closely than by Adam
    steps of the same cost."""
    for _ in range(config.iterations):
        y = _frozen_targets(data, config, network)
        optimiser = torch.optim.LBFGS(network.parameters(), lr=1.0,
                                      max_iter=config.steps_per_iteration,
                                      line_search_fn="strong_wolfe")  # fresh: a new objective

        def closure(y=y, optimiser=optimiser) -> torch.Tensor:
            optimiser.zero_grad(set_to_none=True)
            loss = fqe_loss(network(data.states), data.action, y, weights)
            loss.backward()
            return loss

        optimiser.step(closure)
    return network


@dataclass(frozen=True)
class FQEResult:
    """FQE's value estimate and the fitted Q on all the data (``q_network(states)`` -> (B, A):
    the ``q_hat`` of the DR estimators)."""

    estimate: OPEEstimate
    q_network: nn.Module

    def q_values(self, states) -> np.ndarray:
        """Q(s, .) (n, A) float64 for states (n, d)."""
        with torch.no_grad():
            return self.q_network(torch.as_tensor(np.asarray(states), dtype=torch.float32)
                                  ).double().numpy()


def _states(name: str, values, n: int) -> torch.Tensor:
    array = np.asarray(values, dtype=np.float32)
    if array.ndim != 2 or len(array) != n:
        raise ValueError(f"{name} must be (n, state_dim) with n = {n}, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite")
    return torch.from_numpy(array)


def transitions(states, action, rewards, next_states, done, target_probs, next_target_probs,
                trajectory) -> tuple[Transitions, np.ndarray, np.ndarray]:
    """(tensors, target_probs (n, A) float64, starts (n,) bool) after every check: one action
    space, distributions, actions covered by the log, trajectories in contiguous runs."""
    action, target = check_action_space(action, target_probs)
    _, next_target = check_action_space(action, next_target_probs)
    done = np.asarray(done, dtype=bool)
    if done.shape != action.shape:
        raise ValueError(f"done has shape {done.shape}, expected {action.shape}")
    check_support(action, target)
    check_support(action, next_target[~done])  # where Q(s', .) is read
    n = len(action)
    trajectory = np.asarray(trajectory)
    starts = group_starts(trajectory) if trajectory.shape == (n,) else None
    if starts is None or starts.sum() != len(np.unique(trajectory)):
        raise ValueError("trajectory must be (n,) ids forming one contiguous run each (rows "
                         "sorted by trajectory, then time)")
    data = Transitions(_states("states", states, n), torch.from_numpy(action),
                       torch.from_numpy(check_rewards(rewards, n).astype(np.float32)),
                       _states("next_states", next_states, n), torch.from_numpy(done),
                       torch.from_numpy(next_target.astype(np.float32)))
    return data, target, starts


def fqe(states, action, rewards, next_states, done, target_probs, next_target_probs,
        trajectory, *, config: FQEConfig | None = None,
        network_fn: Callable[[int, int], nn.Module] | None = None,
        n_bootstrap: int = DEFAULT_REFITS, seed: int = 0,
        level: float = DEFAULT_LEVEL) -> FQEResult:
    """FQE's V(pi) per trajectory (module docstring), rows sorted by trajectory then time.

    ``states``/``next_states`` (n, d), ``action`` (n,), ``rewards`` (n,), ``done`` (n,) bool
    (True: s' is terminal), ``target_probs``/``next_target_probs`` (n, A) pi(. | s) and
    pi(. | s') (any distribution where done), ``trajectory`` (n,) ids in contiguous runs; the
    value is averaged over each trajectory's first state. ``network_fn(state_dim, n_actions)``
    builds a fresh Q network (default :class:`QNetwork` with ``config.hidden``).
    """
    config = config or FQEConfig()
    check_options(n_bootstrap, level)
    data, target, starts = transitions(states, action, rewards, next_states, done,
                                       target_probs, next_target_probs, trajectory)
    make = network_fn or (lambda d, a: QNetwork(d, a, config.hidden))

    def build(init_seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):  # leaves the caller's global stream alone
            torch.manual_seed(init_seed)
            return make(data.states.shape[1], target.shape[1])

    first, traj = np.flatnonzero(starts), np.cumsum(starts) - 1  # (N,), (n,)
    first_states = data.states[first]
    first_probs = torch.from_numpy(target[first].astype(np.float32))
    refits = iter(range(n_bootstrap))

    def fitted_value(network: nn.Module, k: np.ndarray) -> float:
        with torch.no_grad():
            v = policy_values(network(first_states), first_probs).double().numpy()  # (N,)
        return float(k @ v / k.sum())

    def refit(k: np.ndarray) -> float:
        refit_seed = config.seed + 1 + next(refits)
        return fitted_value(fit_q(data, config, build(refit_seed), k[traj], seed=refit_seed), k)

    network = fit_q(data, config, build(config.seed))
    n_traj = len(first)
    value = fitted_value(network, np.ones(n_traj))
    draws = bootstrap_values(refit, n_traj, n_bootstrap, seed) if n_bootstrap else np.array([])
    low, high = normal_interval(value, draws, level)
    return FQEResult(OPEEstimate("fqe", value, low, high, float(n_traj), n_traj,
                                 "trajectories", level), network)
