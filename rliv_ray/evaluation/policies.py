"""Any policy in the synthetic world, named by one string, so every policy meets the same users.

A *policy spec* is one of

    RankingModel | Greedy | Oracle | Logging      the world's reference policies (ua_policies)
    rliv:PATH             an exported RLIV-UA scorer (``OUT/scorer.pt`` of ``rliv train``, or
                          the OUT folder), greedy on its serving tower(s)
    torchscript:PATH      an external TorchScript model:  state (M, D) float32 -> (M, A) scores
    onnx:PATH             the same contract as an ONNX file (needs ``onnxruntime``)
    python:MODULE:FUNC    FUNC(user_id (M,), author_id (M,), state (M, D)) -> (M, A) scores

External models see the documented state layout (``rliv_ray.mdp.state``; the README lists the
D = 18 features of the synthetic world) and return one score per action of the world's grid.
A learned spec may end in ``@RULE``, how scores become actions:

    @argmax       (default; the paper, rliv-ua.txt line 247) each candidate gets the action of
                  highest score, a_i = argmax_a Q(i, a)
    @best_value   [I] (ours) the candidate of highest value V_i = max_a Q(i, a) in the request
                  gets the top weight and the others weight 0, as the world's Greedy and Oracle
                  policies do with their known values

With probability ``epsilon`` a candidate's action is uniform instead. Specs are strings so that
Ray workers can rebuild the policy themselves.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rliv_ray.actions import ActionGrid
from rliv_ray.data.ua_config import UAWorldConfig
from rliv_ray.data.ua_generate import logging_policy
from rliv_ray.data.ua_lever import reference_policies
from rliv_ray.data.ua_policies import Candidates, Policy
from rliv_ray.tensor_files import DataFileError

QFunction = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""(user_id (M,) int64, author_id (M,) int64, state (M, D) float32) -> (M, A) scores."""
REFERENCE = ("RankingModel", "Greedy", "Oracle", "Logging")
KINDS = ("rliv", "torchscript", "onnx", "python")
RULES = ("argmax", "best_value")
CHUNK_ROWS = 65_536
"""Candidates scored per forward call (bounds memory with many users x N candidates)."""


class PolicyError(ValueError):
    """A policy spec that cannot be built: unknown name, wrong model, wrong input width."""


class PolicyFileError(DataFileError, PolicyError):
    """A policy's file is not what rliv-ray wrote (crafted, corrupt, older): invalid data."""


@dataclass
class ScoringPolicy:
    """Actions from a score per (candidate, action) by ``rule`` (see the module docstring),
    epsilon-uniform per candidate (2.1(f))."""

    q: QFunction
    grid: ActionGrid
    epsilon: float = 0.0
    rule: str = "argmax"
    observes_state: bool = field(default=True, init=False)

    def act(self, cand: Candidates, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        a, n, d = cand.state.shape
        users = np.repeat(cand.user_id, n)
        authors, states = cand.author_id.reshape(-1), cand.state.reshape(a * n, d)
        scores = np.concatenate([
            self.q(users[i:i + CHUNK_ROWS], authors[i:i + CHUNK_ROWS], states[i:i + CHUNK_ROWS])
            for i in range(0, a * n, CHUNK_ROWS)]).reshape(a, n, -1)
        if self.rule == "argmax":
            greedy = scores.argmax(axis=2)
        else:  # best_value
            value = scores.max(axis=2)
            greedy = np.where(value == value.max(axis=1, keepdims=True), self.grid.size - 1, 0)
        if self.epsilon == 0.0:
            return greedy.astype(np.int16), np.ones((a, n), np.float32)
        explore = rng.random((a, n)) < self.epsilon
        actions = np.where(explore, rng.integers(0, self.grid.size, (a, n)), greedy)
        probs = self.epsilon / self.grid.size + (1 - self.epsilon) * (actions == greedy)
        return actions.astype(np.int16), probs.astype(np.float32)


def make_policy(spec: str, world: UAWorldConfig, state_dim: int, *,
                epsilon: float = 0.0) -> Policy:
    """The policy a spec names (see the module docstring); raises PolicyError with one line."""
    if spec in REFERENCE:
        if spec == "Logging":
            return logging_policy(world)
        return reference_policies(world)[spec]
    kind, sep, target = spec.partition(":")
    if not sep or kind not in KINDS or not target:
        raise PolicyError(f"unknown policy '{spec}': use one of {', '.join(REFERENCE)} or "
                          f"KIND:PATH[@RULE] with KIND in {KINDS}")
    rule = "argmax"
    if "@" in target:
        target, _, rule = target.rpartition("@")
        if rule not in RULES:
            raise PolicyError(f"{spec}: unknown rule '@{rule}'; use one of {RULES}")
    loaders = {"rliv": _rliv_q, "torchscript": _torchscript_q, "onnx": _onnx_q,
               "python": _python_q}
    q = loaders[kind](target, state_dim)
    _check_scores(spec, q, state_dim, world.action_grid.size)
    return ScoringPolicy(q, world.action_grid, epsilon, rule)


def _check_scores(spec: str, q: QFunction, state_dim: int, n_actions: int) -> None:
    """Probe with two zero states: the model must accept width D and return (2, A)."""
    try:
        out = np.asarray(q(np.zeros(2, np.int64), np.arange(2, dtype=np.int64),
                           np.zeros((2, state_dim), np.float32)))
    except PolicyError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure of a foreign model is its input's
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PolicyError(f"{spec}: the model does not take states of width {state_dim} "
                          f"(the world's state layout, see the README): {first}") from err
    if out.shape != (2, n_actions):
        raise PolicyError(f"{spec}: the model returns scores of shape {out.shape[1:]} per "
                          f"state; the world's action grid needs ({n_actions},)")


def _rliv_q(target: str, state_dim: int) -> QFunction:
    from rliv_ray.serving import read_meta

    path = Path(target)
    if path.is_dir():
        path = path / "scorer.pt"
    if not path.is_file():
        raise PolicyError(f"rliv:{target}: no exported RLIV-UA scorer there (rliv train "
                          "writes OUT/scorer.pt)")
    try:
        module, meta = read_meta(path)
    except DataFileError as err:
        raise PolicyFileError(f"rliv:{target}: not an exported RLIV-UA scorer "
                              f"({str(err).splitlines()[0]})") from err
    if meta["state_dim"] != state_dim:
        raise PolicyError(f"rliv:{target}: the scorer reads states of width "
                          f"{meta['state_dim']}, the world's are {state_dim}")
    if "serving_tower" not in meta:
        raise PolicyError(f"rliv:{target}: the scorer records no serving tower (export format "
                          "1); export it again with this version")
    index = torch.tensor([meta["towers"].index(meta["serving_tower"])])

    def q(user_id, author_id, state):
        with torch.inference_mode():
            out = module(torch.as_tensor(user_id, dtype=torch.int64),
                         torch.as_tensor(author_id, dtype=torch.int64),
                         torch.as_tensor(state, dtype=torch.float32), index)
        return out[0].numpy()

    return q


def _torchscript_q(target: str, state_dim: int) -> QFunction:
    try:
        module = torch.jit.load(target, map_location="cpu").eval()
    except (RuntimeError, ValueError, FileNotFoundError) as err:
        raise PolicyError(f"torchscript:{target}: cannot load a TorchScript model "
                          f"({str(err).strip().splitlines()[0]})") from err

    def q(user_id, author_id, state):
        with torch.inference_mode():
            return module(torch.as_tensor(state, dtype=torch.float32)).numpy()

    return q


def _onnx_q(target: str, state_dim: int) -> QFunction:
    try:
        import onnxruntime
    except ImportError as err:
        raise PolicyError("onnx policies need onnxruntime: pip install onnxruntime") from err
    try:
        session = onnxruntime.InferenceSession(target, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise PolicyError(f"onnx:{target}: cannot load ({str(err).splitlines()[0]})") from err
    name = session.get_inputs()[0].name

    def q(user_id, author_id, state):
        return session.run(None, {name: np.ascontiguousarray(state, np.float32)})[0]

    return q


def _python_q(target: str, state_dim: int) -> QFunction:
    module_name, _, func = target.rpartition(":")
    try:
        return getattr(importlib.import_module(module_name), func)
    except (ImportError, AttributeError, ValueError) as err:
        raise PolicyError(f"python:{target}: cannot import {func!r} from {module_name!r}") \
            from err
