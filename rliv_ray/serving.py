"""Serving RLIV-UA: pick each candidate's ranking weight and re-rank a request (plain torch).

For one request of user u with N <= 300 candidates (EQUATIONS.md 2.2, "Serving"):

    Q(i, a)  = sum_l omega_l * min_k Q_l^k(H_{u,i}, a)      chosen towers l, Eq. 9, 2.1(l)
    a_i      = argmax_a Q(i, a); with probability epsilon a_i ~ U(A)   per candidate, 2.1(f)
    final_i  = rank_score_i * (c + a_i * w) ** b                        Eq. 1
    expose the top-K candidates by final_i

By default a request is served as the model was trained to be: on its serving tower alone
(``RLIVUAConfig.serving_tower``; effective view offline, 2.1(h2)) with its exploration rate
(``RLIVUAConfig.epsilon``), both stored in the exported file. A :class:`ServingConfig` may name
other towers or a weighted mix of their Q (for example follow 0.5 + gift 0.5 for revenue, the
other reading of 2.1(l)) and another epsilon. Only the chosen towers' heads are evaluated: all
four towers cost about four times as much.

**Export format** (``FORMAT_VERSION`` 3): one file of tensors and JSON written by
:func:`export_scorer` (``torch.save`` of ``{"meta": JSON string, "state_dict": the network's
tensors}``) and read by :func:`read_meta` with ``torch.load(weights_only=True)``: reading it
never runs code from the file (:mod:`rliv_ray.tensor_files`). ``meta`` holds ``format_version``,
``scoring`` (``tower_q``: RLIV-UA's critics; ``nearest_weight``: the TD3 baselines' actor),
``spec`` (the network's fields), ``towers``, ``gamma``, ``state_dim``, ``n_actions``,
``action_grid`` (``weights``, ``c``, ``w``, ``b``), ``serving_tower`` (one of ``towers``) and
``epsilon`` (the default serving exploration). :func:`read_meta` rebuilds the network with
rliv_ray's own classes and returns a module with :class:`TowerQ`'s signature

    forward(user_id (N,) int64, author_id (N,) int64, state (N, state_dim) float32,
            tower_index (T',) int64) -> (T', N, A) float32:  min_k Q_l^k for the towers
            meta["towers"][tower_index], with gamma baked in

Versions 1 and 2 were TorchScript files: they are refused (TorchScript is code). To serve
without rliv_ray, :func:`rliv_ray.serving_torchscript.export_torchscript` writes the same module
as TorchScript, a deployment artefact that rliv-ray itself never reads back.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rliv_ray.actions import ActionGrid
from rliv_ray.algorithms.rliv_ua.losses import clipped_double_q
from rliv_ray.algorithms.rliv_ua.network import Heads, NetworkSpec, RLIVUANetwork
from rliv_ray.schema import LABELS
from rliv_ray.tensor_files import DataFileError, load_meta_file, save_tensors, to_json, why

FORMAT_VERSION = 3
"""Versions 1 and 2 were TorchScript files, which hold code: they are no longer read."""
SCORINGS = ("tower_q", "nearest_weight")


@dataclass(frozen=True, kw_only=True)
class ServingConfig:
    """How a request is scored; gamma and the action grid come with the model, and so do the
    serving tower and epsilon where this leaves them None (see :meth:`resolved`)."""

    top_k: int
    """How many candidates a request exposes (fewer when it has fewer)."""
    tower_weights: Mapping[str, float] | tuple[tuple[str, float], ...] | None = None
    """Towers whose min-over-critics Q picks the action, with their weights omega_l (2.1(l));
    stored as a tuple of (tower, weight) pairs. None: the model's serving tower alone."""
    epsilon: float | None = None
    """Per-candidate probability of a uniformly random action (2.1(f)). None: the model's."""
    max_candidates: int = 300
    """Largest number of candidates a request may carry."""

    def __post_init__(self) -> None:
        if self.epsilon is not None and not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")
        if self.max_candidates < 1:
            raise ValueError(f"max_candidates must be >= 1, got {self.max_candidates}")
        if not 1 <= self.top_k <= self.max_candidates:
            raise ValueError(f"top_k must be in [1, max_candidates={self.max_candidates}], "
                             f"got {self.top_k}")
        if self.tower_weights is None:
            return
        pairs = self.tower_weights
        pairs = tuple(pairs.items()) if isinstance(pairs, Mapping) else tuple(pairs)
        if not pairs or not all(isinstance(p, tuple | list) and len(p) == 2 for p in pairs):
            raise ValueError(f"tower_weights must be non-empty (tower, weight) pairs, "
                             f"got {self.tower_weights!r}")
        towers = tuple(str(t) for t, _ in pairs)
        unknown = [t for t in towers if t not in LABELS]
        if unknown:
            raise ValueError(f"tower_weights names unknown towers {unknown}; known: {LABELS}")
        if len(set(towers)) != len(towers):
            raise ValueError(f"tower_weights repeats a tower: {towers}")
        weights = tuple(float(w) for _, w in pairs)
        if not all(math.isfinite(w) and w > 0 for w in weights):
            raise ValueError(f"tower_weights must be finite and > 0, got {dict(pairs)}")
        object.__setattr__(self, "tower_weights", tuple(zip(towers, weights, strict=True)))

    def resolved(self, serving_tower: str | None, epsilon: float | None,
                 source: str = "the model") -> ServingConfig:
        """This config with the model's serving tower (weight 1) and epsilon where it leaves
        them None; raises if one is still unknown (a version 1 file records neither)."""
        towers = self.tower_weights
        if towers is None and serving_tower is None:
            raise ValueError(f"{source} records no serving tower (export format 1): name the "
                             "tower(s) to serve on")
        if self.epsilon is None and epsilon is None:
            raise ValueError(f"{source} records no serving epsilon (export format 1): name one")
        return replace(self, tower_weights=towers if towers is not None else {serving_tower: 1.0},
                       epsilon=self.epsilon if self.epsilon is not None else epsilon)

    @property
    def towers(self) -> tuple[str, ...]:
        return tuple(t for t, _ in self.tower_weights or ())

    @property
    def weights(self) -> tuple[float, ...]:
        return tuple(w for _, w in self.tower_weights or ())


@dataclass(frozen=True)
class Ranking:
    """The exposed candidates of one request, best first (K = min(top_k, N))."""

    indices: np.ndarray  # (K,) int64 positions in the request's candidate list
    actions: np.ndarray  # (K,) int64 action indices into the grid
    weights: np.ndarray  # (K,) float32 ranking weights a
    final_scores: np.ndarray  # (K,) float64 Eq. 1 scores, non-increasing
    explored: np.ndarray  # (K,) bool: the action was drawn uniformly, not greedy


class TowerQ(nn.Module):
    """min_k Q_l^k(H, .) of chosen towers, (T', N, A): the module :func:`export_scorer` traces.

    Evaluates only the heads of the towers in ``tower_index`` (positions in ``towers``) by
    selecting their slices of the batched head weights; otherwise the network's own forward.
    """

    def __init__(self, net: RLIVUANetwork, gamma: float, towers: tuple[str, ...]):
        super().__init__()
        spec = net.spec
        missing = [t for t in towers if t not in spec.towers]
        if not towers or missing or len(set(towers)) != len(towers):
            raise ValueError(f"towers must be distinct towers of the model {spec.towers}, got "
                             f"{towers} ({missing} unknown)")
        self.net, self.gamma, self.towers = net, float(gamma), tuple(towers)
        self.reward_heads = spec.reward_heads
        self.register_buffer("slot", torch.tensor([spec.towers.index(t) for t in towers]),
                             persistent=False)

    def forward(self, user_id: torch.Tensor, author_id: torch.Tensor, state: torch.Tensor,
                tower_index: torch.Tensor) -> torch.Tensor:
        h, _ = self.net.embed(user_id, author_id, state)
        out = self.net.tower_heads(h, self.slot.index_select(0, tower_index))  # (T', R+K, N, A)
        r = self.reward_heads
        q = Heads(out[:, :r] if r else None, out[:, r:], None).q(self.gamma)  # (T', K, N, A)
        return clipped_double_q(q.transpose(0, 1))  # (T', N, A)


class Scorer:
    """Scores and re-ranks one request's candidates with a Q module (see the module docstring).

    ``q_module(user_id (N,), author_id (N,), state (N, D), tower_index (T',)) -> (T', N, A)``
    gives min-over-critics Q of the towers ``towers[tower_index]``, as :class:`TowerQ` and the
    exported file do. ``config`` must name its towers and epsilon (:meth:`ServingConfig.resolved`
    fills them from the model). ``rng`` (a Generator or a seed) draws the exploration.
    """

    def __init__(self, q_module: nn.Module, *, towers: tuple[str, ...], state_dim: int,
                 grid: ActionGrid, config: ServingConfig,
                 rng: np.random.Generator | int | None = None):
        if config.tower_weights is None or config.epsilon is None:
            raise ValueError("config leaves tower_weights or epsilon to the model: pass "
                             "config.resolved(serving_tower, epsilon)")
        missing = [t for t in config.towers if t not in towers]
        if missing:
            raise ValueError(f"tower_weights names towers {missing} that the model lacks; "
                             f"it has {tuple(towers)}")
        self.q_module, self.towers, self.state_dim = q_module, tuple(towers), state_dim
        self.grid, self.config = grid, config
        self.rng = np.random.default_rng(rng)
        self._tower_index = torch.tensor([self.towers.index(t) for t in config.towers])
        self._mix = torch.tensor(config.weights, dtype=torch.float32)  # (T',)

    @classmethod
    def from_network(cls, net: RLIVUANetwork, *, gamma: float, grid: ActionGrid,
                     serving_tower: str, epsilon: float, config: ServingConfig,
                     rng: np.random.Generator | int | None = None) -> Scorer:
        """An in-memory scorer of a trained network (no export); ``serving_tower`` and
        ``epsilon`` are the model's, used where ``config`` leaves them None."""
        _check_model(net, gamma, grid)
        return cls(TowerQ(net, gamma, net.spec.towers), towers=net.spec.towers,
                   state_dim=net.spec.state_dim, grid=grid,
                   config=config.resolved(serving_tower, epsilon), rng=rng)

    def q_values(self, user_id: int, author_ids: np.ndarray, states: np.ndarray) -> np.ndarray:
        """sum_l omega_l * min_k Q_l^k(H_{u,i}, a) for every candidate and action, (N, A)."""
        user, authors, states_t = _request_tensors(user_id, author_ids, states,
                                                   self.state_dim, self.config.max_candidates)
        return self._mixed_q(user, authors, states_t).numpy()

    def rank(self, user_id: int, author_ids: np.ndarray, states: np.ndarray,
             rank_scores: np.ndarray) -> Ranking:
        """Greedy-or-explored action per candidate, Eq. 1 scores, the top-K best first."""
        user, authors, states_t = _request_tensors(user_id, author_ids, states,
                                                   self.state_dim, self.config.max_candidates)
        scores = np.asarray(rank_scores, dtype=np.float64)
        if scores.shape != (authors.shape[0],) or not np.isfinite(scores).all():
            raise ValueError(f"rank_scores must be ({authors.shape[0]},) finite values, got "
                             f"shape {scores.shape}")
        greedy = self._mixed_q(user, authors, states_t).argmax(dim=1).numpy()  # (N,)
        actions, explored = self._explore(greedy)
        final = self.grid.final_score(scores, actions)  # (N,)
        order = np.argsort(-final, kind="stable")[: self.config.top_k]
        return Ranking(order, actions[order], self.grid.weight(actions[order]), final[order],
                       explored[order])

    def _mixed_q(self, user: torch.Tensor, authors: torch.Tensor,
                 states: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            q = self.q_module(user, authors, states, self._tower_index)  # (T', N, A)
            if q.shape[-1] != self.grid.size:
                raise ValueError(f"the model scores {q.shape[-1]} actions but the grid has "
                                 f"{self.grid.size}")
            return torch.tensordot(self._mix, q, dims=1)  # (N, A)

    def _explore(self, greedy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each candidate's action: uniform over the grid with probability epsilon."""
        n = greedy.shape[0]
        if self.config.epsilon == 0.0:
            return greedy.astype(np.int64), np.zeros(n, dtype=bool)
        explored = self.rng.random(n) < self.config.epsilon
        uniform = self.rng.integers(self.grid.size, size=n)
        return np.where(explored, uniform, greedy).astype(np.int64), explored


def _request_tensors(user_id: int, author_ids: np.ndarray, states: np.ndarray, state_dim: int,
                     max_candidates: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validated (N,) user ids, (N,) author ids and (N, D) states of one request."""
    uid = np.asarray(user_id)
    if uid.ndim != 0 or uid.dtype.kind not in "iu":
        raise ValueError(f"user_id must be one integer (one request = one user), got {user_id!r}")
    authors = np.asarray(author_ids)
    n = authors.shape[0] if authors.ndim == 1 else -1
    if authors.dtype.kind not in "iu" or not 1 <= n <= max_candidates:
        raise ValueError(f"author_ids must be a 1-D integer array of 1 to max_candidates="
                         f"{max_candidates} ids, got shape {authors.shape} {authors.dtype}")
    feats = np.asarray(states, dtype=np.float32)
    if feats.shape != (n, state_dim):
        raise ValueError(f"states must have shape ({n}, {state_dim}), got {feats.shape}")
    if not np.isfinite(feats).all():
        raise ValueError("states must be finite (found NaN or inf)")
    return (torch.full((n,), int(uid), dtype=torch.int64),
            torch.from_numpy(np.ascontiguousarray(authors, dtype=np.int64)),
            torch.from_numpy(np.ascontiguousarray(feats)))


def _check_model(net: RLIVUANetwork, gamma: float, grid: ActionGrid) -> None:
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1), got {gamma}")
    if grid.size != net.spec.n_actions:
        raise ValueError(f"grid has {grid.size} actions but the network scores "
                         f"{net.spec.n_actions}")


def scoring_module(scoring: str, net: nn.Module, gamma: float,
                    towers: tuple[str, ...]) -> nn.Module:
    """The module that scores a request, ``(user_id, author_id, state, tower_index) ->
    (T', N, A)``: :class:`TowerQ` of RLIV-UA's critics, or the TD3 actor's nearest grid
    weight."""
    if scoring == "tower_q":
        return TowerQ(net, gamma, towers)
    if scoring == "nearest_weight":
        from rliv_ray.algorithms.td3.network import NearestWeightScore

        return NearestWeightScore(net)
    raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")


def _network(scoring: str, spec: dict) -> nn.Module:
    """An untrained network of the exported spec (lists back to the spec's tuples)."""
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()}
    if scoring == "nearest_weight":
        from rliv_ray.algorithms.td3.network import TD3Network, TD3Spec

        return TD3Network(TD3Spec(**fields))
    return RLIVUANetwork(NetworkSpec(**fields))


def check_export(net: nn.Module, *, gamma: float, grid: ActionGrid, serving_tower: str,
                 epsilon: float, towers: tuple[str, ...] | None) -> tuple[str, ...]:
    """The exported towers (default: all of the network's); ValueError naming a bad one."""
    _check_model(net, gamma, grid)
    towers = tuple(towers) if towers is not None else net.spec.towers
    if serving_tower not in towers:
        raise ValueError(f"serving_tower '{serving_tower}' is not among the exported towers "
                         f"{towers}")
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    return towers


def scorer_meta(net: nn.Module, *, gamma: float, grid: ActionGrid, serving_tower: str,
                epsilon: float, towers: tuple[str, ...], version: int) -> dict:
    return {"format_version": version, "towers": list(towers), "gamma": float(gamma),
            "state_dim": net.spec.state_dim, "n_actions": grid.size,
            "action_grid": {"weights": list(grid.weights), "c": grid.c, "w": grid.w,
                            "b": grid.b},
            "serving_tower": serving_tower, "epsilon": float(epsilon)}


def export_scorer(net: nn.Module, path: str | os.PathLike, *, gamma: float,
                  grid: ActionGrid, serving_tower: str, epsilon: float,
                  towers: tuple[str, ...] | None = None, scoring: str = "tower_q") -> Path:
    """Write ``net`` for serving the Q of ``towers`` (default: all), with the model's
    ``serving_tower`` and ``epsilon`` as the defaults of whoever serves it: one file of
    tensors and JSON (format 3, module docstring). ``scoring="nearest_weight"`` exports a
    TD3 network (:class:`~rliv_ray.algorithms.td3.network.NearestWeightScore` serves it)."""
    towers = check_export(net, gamma=gamma, grid=grid, serving_tower=serving_tower,
                          epsilon=epsilon, towers=towers)
    scoring_module(scoring, net, gamma, towers)  # its own checks of the towers
    meta = {**scorer_meta(net, gamma=gamma, grid=grid, serving_tower=serving_tower,
                          epsilon=epsilon, towers=towers, version=FORMAT_VERSION),
            "scoring": scoring, "spec": asdict(net.spec)}
    return save_tensors({"meta": to_json(meta), "state_dict": dict(net.state_dict())}, path)


def read_meta(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """The exported scoring module (eval mode, rebuilt from rliv_ray's classes) and its
    metadata; DataFileError (one line) for any other file, an older TorchScript one included."""
    what = "an RLIV-UA scorer exported by this version of rliv-ray"
    meta, state = load_meta_file(path, what, "export it again (`rliv train rliv-ua`)")
    if meta.get("format_version") != FORMAT_VERSION:
        kind = (" (an SL-MGAC policy of `rliv train sl-mgac`)" if "edges" in meta
                and "method" in meta else "")
        raise DataFileError(f"{path}: not {what}{kind}: format_version "
                            f"{meta.get('format_version')!r} is not {FORMAT_VERSION}; export it "
                            "again")
    try:
        net = _network(meta["scoring"], meta["spec"])
        net.load_state_dict(state)
        module = scoring_module(meta["scoring"], net, meta["gamma"], tuple(meta["towers"]))
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise DataFileError(f"{path}: not {what} ({why(err)}); export it again") from err
    return module.eval(), meta


def load_scorer(path: str | os.PathLike, config: ServingConfig, *,
                rng: np.random.Generator | int | None = None) -> Scorer:
    """A :class:`Scorer` over an exported file. Where ``config`` leaves the towers or epsilon
    None, the file's serving tower and epsilon serve."""
    module, meta = read_meta(path)
    grid = ActionGrid(**meta["action_grid"])
    config = config.resolved(meta.get("serving_tower"), meta.get("epsilon"), source=str(path))
    return Scorer(module, towers=tuple(meta["towers"]), state_dim=meta["state_dim"],
                  grid=grid, config=config, rng=rng)
