"""Adjacent State Approximation (ASA): predict a pair's next state from its current interaction.

    s_hat^{t+1} = f_theta(s^t, a^t, r^t)                                     (RLIV-UA Eq. 6)
    L_theta     = || f_theta(s^{T-1}, a^{T-1}, r^{T-1}) - s^T ||_2^2          (RLIV-UA Eq. 7)

f_theta is trained on stitched tuples only and then gives every interaction a next state
(EQUATIONS.md 2.1(j)). Which dims it predicts is a setting (2.1(g)): ``pair_and_gap`` predicts
the dense pair features f_ua and the gap part and copies the user and author features;
``all_dynamic`` predicts every dim. The baseline is the rule of Appendix D.1 (Eq. 35),
:func:`rule_based_next_state`. Errors are reported as in Theorem 3.1 (2.1(m)):
eps = max over tuples of ||s_hat - s||_2 on the standardised target dims.

Torch is imported here only; nothing changes torch's global thread settings.
"""

from __future__ import annotations

import io
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
from torch import nn

from rliv_ray import schema as S
from rliv_ray.data.io import mix64
from rliv_ray.mdp.state import EXPOSURE_SLOT, LABEL_SLOT, StateLayout
from rliv_ray.tensor_files import DataFileError, load_tensors, why

AsaTargets = Literal["pair_and_gap", "all_dynamic"]
STD_FLOOR = 1e-6
"""A std below this marks a constant dim; it is standardised with scale 1 instead."""
_FORMAT = 1


@dataclass(frozen=True)
class ASAConfig:
    """Settings of the state predictor f_theta (Eq. 6-7); defaults from RLIV-UA Table 3."""

    hidden_sizes: tuple[int, ...] = (64, 64)
    """Widths of the MLP's hidden ReLU layers."""
    learning_rate: float = 1e-3
    """Adam step size; ASA lr = critic lr (EQUATIONS.md 2.1(e))."""
    batch_size: int = 1024
    """Tuples per Adam step."""
    epochs: int = 10
    """Passes over the training tuples."""
    max_train_tuples: int = 1_000_000
    """Above this many tuples, train on a seeded uniform subsample of this size."""
    targets: AsaTargets = "pair_and_gap"
    """Which dims f_theta predicts (2.1(g)); the others are copied from s^t."""
    residual: bool = True
    """Predict the standardised difference s^{t+1} - s^t and add s^t back."""
    validation_share: float = 0.2
    """Share of users held out for evaluation (the paper's 8:2 split, Appendix D.2); callers
    pass it to :func:`validation_mask`."""
    seed: int = 0
    """Seeds the initial weights, the subsample and the batch order."""

    def __post_init__(self) -> None:
        sizes = tuple(int(h) for h in self.hidden_sizes)
        object.__setattr__(self, "hidden_sizes", sizes)
        if any(h < 1 for h in sizes):
            raise ValueError(f"hidden_sizes must all be >= 1, got {sizes}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        for name in ("batch_size", "epochs", "max_train_tuples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.targets not in get_args(AsaTargets):
            raise ValueError(f"targets must be one of {get_args(AsaTargets)}, got {self.targets!r}")
        if not 0.0 <= self.validation_share < 1.0:
            raise ValueError(f"validation_share must be in [0, 1), got {self.validation_share}")


def target_indices(layout: StateLayout, targets: AsaTargets) -> np.ndarray:
    """State dims f_theta predicts: pair + gap parts, or (``all_dynamic``) every dim."""
    if targets == "pair_and_gap":
        return np.arange(layout.pair.start, layout.gap.stop, dtype=np.int64)
    if targets == "all_dynamic":
        return np.arange(layout.dim, dtype=np.int64)
    raise ValueError(f"targets must be one of {get_args(AsaTargets)}, got {targets!r}")


def rule_based_next_state(states: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
                          layout: StateLayout) -> np.ndarray:
    """The rule-based approximation of Appendix D.1 (Eq. 35), in the state's log1p space:

        count'_c = log1p(expm1(count_c) + 1[r_c > 0])   for c in {click, eff. view, follow, gift}
        exposure' = log1p(expm1(exposure) + 1)            (the interaction itself happened)
        first_contact' = 0                                (s^{t+1} is never a first contact)

    Days since first contact, log1p(Delta), user and author features are copied; ``actions``
    play no part (the rule ignores them) and are taken only to share f_theta's signature.
    """
    _check(layout, None, states, actions, rewards)
    out = np.array(states, dtype=np.float64)
    pair = out[:, layout.pair]
    counts = np.expm1(pair)
    counts[:, EXPOSURE_SLOT] += 1.0
    for i, label in enumerate(S.LABELS):
        counts[:, LABEL_SLOT[label]] += rewards[:, i] > 0
    slots = [EXPOSURE_SLOT, *LABEL_SLOT.values()]
    pair[:, slots] = np.log1p(counts[:, slots])
    out[:, layout.pair] = pair
    out[:, layout.gap.stop - 1] = 0.0
    return out.astype(np.float32)


def approximation_errors(predicted: np.ndarray, true: np.ndarray, layout: StateLayout,
                         targets: AsaTargets, scale: np.ndarray | None = None) -> dict:
    """Errors of predicted next states on the target dims, each divided by ``scale``.

    With e_i = (s_hat_i - s_i) / scale on the target dims of row i (n rows, k dims):
    mse = sum_i ||e_i||^2 / (n k); eps_max / eps_mean = max / mean of ||e_i||_2 (Thm 3.1's eps);
    cosine_loss = mean_i [1 - <p_i, t_i> / ((||p_i|| + 1e-12)(||t_i|| + 1e-12))] with p, t the
    scaled predicted and true vectors, so a row where either is zero counts as cos = 0 (loss 1),
    even when both are zero.
    """
    idx = target_indices(layout, targets)
    for name, arr in (("predicted", predicted), ("true", true)):
        if np.ndim(arr) != 2 or np.shape(arr)[1] != layout.dim:
            raise ValueError(f"{name} must have shape (n, {layout.dim}), got {np.shape(arr)}")
    if len(predicted) != len(true) or len(true) == 0:
        raise ValueError(f"predicted and true must have the same, non-zero length, got "
                         f"{len(predicted)} and {len(true)}")
    s = np.ones(len(idx)) if scale is None else np.asarray(scale, dtype=np.float64)
    if s.shape != (len(idx),) or not np.all(s > 0):
        raise ValueError(f"scale must hold {len(idx)} positive values, got shape {s.shape}")
    p = np.asarray(predicted, np.float64)[:, idx] / s
    t = np.asarray(true, np.float64)[:, idx] / s
    norm = np.linalg.norm(p - t, axis=1)
    norms = (np.linalg.norm(p, axis=1) + 1e-12) * (np.linalg.norm(t, axis=1) + 1e-12)
    cos = (p * t).sum(1) / norms
    return {"mse": float(np.mean((p - t) ** 2)), "cosine_loss": float(np.mean(1.0 - cos)),
            "eps_max": float(norm.max()), "eps_mean": float(norm.mean()),
            "norm": f"L2 over {'raw' if scale is None else 'standardised'} target dims",
            "rows": len(p)}


def validation_mask(user_ids: np.ndarray, share: float, seed: int) -> np.ndarray:
    """True for rows of held-out users: mix64(user_id, seed + 1) / 2^64 < share.

    A user's rows all fall on one side, and the split does not depend on row order.
    """
    ids = np.asarray(user_ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"user_ids must be integers, got dtype {ids.dtype}")
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share}")
    z = mix64(ids, seed + 1)
    return (z >> np.uint64(11)).astype(np.float64) / 2.0**53 < share


class ASAPredictor:
    """f_theta of Eq. 6 as an MLP over x = [standardised s^t, onehot(a^t), r^t].

    It outputs the standardised target y = (s^{t+1} - s^t)[T] (residual) or s^{t+1}[T] on the
    target dims T; ``fit`` minimises Eq. 7 as the mean over dims of the squared error in those
    standardised units. Means and stds come from the training tuples (std < 1e-6: scale 1).
    """

    def __init__(self, layout: StateLayout, n_actions: int, config: ASAConfig = ASAConfig()):
        if n_actions < 1:
            raise ValueError(f"n_actions must be >= 1, got {n_actions}")
        self.layout, self.n_actions, self.config = layout, int(n_actions), config
        self.targets = target_indices(layout, config.targets)
        self._stats: dict[str, np.ndarray] | None = None
        self._net = self._build_net()

    def _build_net(self) -> nn.Sequential:
        sizes = (self.layout.dim + self.n_actions + len(S.LABELS), *self.config.hidden_sizes)
        layers: list[nn.Module] = []
        for d_in, d_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(d_in, d_out), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(sizes[-1], len(self.targets)))

    @property
    def target_scale(self) -> np.ndarray:
        """Per-target-dim std of the true next states in training (for approximation_errors)."""
        return self._fitted()["next_std"].copy()

    def fit(self, states: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
            next_states: np.ndarray, *, progress: bool = False) -> dict:
        """Train f_theta on stitched tuples (s^{T-1}, a^{T-1}, r^{T-1}, s^T) with Adam on Eq. 7.

        Starts from fresh weights (``torch.manual_seed(config.seed)``); the batch order comes from
        a seeded ``torch.Generator``. ``train_loss`` is the epoch's mean standardised MSE.
        """
        cfg, start = self.config, time.perf_counter()
        _check(self.layout, self.n_actions, states, actions, rewards, next_states,
               allow_empty=False)
        keep = _subsample(len(states), cfg.max_train_tuples, cfg.seed)
        s, a, r, s_next = states[keep], actions[keep], rewards[keep], next_states[keep]
        y_raw = self._raw_target(s, s_next)
        self._stats = {"state_mean": s.mean(0, dtype=np.float64), "state_std": _std(s),
                       "y_mean": y_raw.mean(0, dtype=np.float64), "y_std": _std(y_raw),
                       "next_std": _std(s_next[:, self.targets])}
        x = torch.from_numpy(self._inputs(s, a, r))  # (n, dim + n_actions + 4)
        y = torch.from_numpy(_standardise(y_raw, self._stats["y_mean"], self._stats["y_std"]))
        torch.manual_seed(cfg.seed)
        self._net = self._build_net()
        losses = self._train(x, y, progress)
        return {"train_loss": losses, "epochs": cfg.epochs, "tuples": len(x),
                "seconds": time.perf_counter() - start}

    def _train(self, x: torch.Tensor, y: torch.Tensor, progress: bool) -> list[float]:
        cfg = self.config
        opt = torch.optim.Adam(self._net.parameters(), lr=cfg.learning_rate)
        gen = torch.Generator().manual_seed(cfg.seed)
        self._net.train()
        losses, start = [], time.perf_counter()
        for epoch in range(cfg.epochs):
            total = 0.0
            for batch in torch.randperm(len(x), generator=gen).split(cfg.batch_size):
                loss = nn.functional.mse_loss(self._net(x[batch]), y[batch])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(batch)
            losses.append(total / len(x))
            if progress:
                print(f"asa epoch {epoch + 1}/{cfg.epochs}: train_loss {losses[-1]:.6f} "
                      f"({time.perf_counter() - start:.1f}s)", file=sys.stderr, flush=True)
        self._net.eval()
        return losses

    def predict(self, states: np.ndarray, actions: np.ndarray, rewards: np.ndarray, *,
                batch_size: int = 65536) -> np.ndarray:
        """Next states s_hat^{t+1} (n, dim) float32: target dims from f_theta, others copied
        (n = 0 gives an empty result)."""
        stats = self._fitted()
        _check(self.layout, self.n_actions, states, actions, rewards)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out = np.array(states, dtype=np.float32)
        self._net.eval()
        with torch.no_grad():
            for lo in range(0, len(states), batch_size):
                hi = lo + batch_size
                x = torch.from_numpy(self._inputs(states[lo:hi], actions[lo:hi], rewards[lo:hi]))
                y = self._net(x).numpy().astype(np.float64) * stats["y_std"] + stats["y_mean"]
                if self.config.residual:
                    y += states[lo:hi, self.targets]
                out[lo:hi, self.targets] = y
        return out

    def _raw_target(self, s: np.ndarray, s_next: np.ndarray) -> np.ndarray:
        y = s_next[:, self.targets].astype(np.float32)
        return y - s[:, self.targets] if self.config.residual else y

    def _inputs(self, s: np.ndarray, a: np.ndarray, r: np.ndarray) -> np.ndarray:
        stats = self._fitted()
        z = _standardise(s, stats["state_mean"], stats["state_std"])
        onehot = np.eye(self.n_actions, dtype=np.float32)[np.asarray(a, dtype=np.int64)]
        return np.concatenate([z, onehot, np.asarray(r, dtype=np.float32)], axis=1)

    def _fitted(self) -> dict[str, np.ndarray]:
        if self._stats is None:
            raise RuntimeError("ASAPredictor is not trained: call fit() or from_bytes() first")
        return self._stats

    def to_bytes(self) -> bytes:
        """Layout, n_actions, config, standardisation stats and weights (to ship to workers)."""
        stats = {k: torch.from_numpy(v) for k, v in self._fitted().items()}
        blob = {"format": _FORMAT, "user_names": list(self.layout.user_names),
                "author_names": list(self.layout.author_names), "n_actions": self.n_actions,
                "config": asdict(self.config), "stats": stats, "weights": self._net.state_dict()}
        buf = io.BytesIO()
        torch.save(blob, buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ASAPredictor:
        """The predictor that :meth:`to_bytes` wrote (``OUT/asa.pt`` of ``rliv build-samples``),
        read with ``weights_only=True``: DataFileError (one line) for anything else."""
        what = "an ASA model written by `rliv build-samples` of this version"
        blob = load_tensors(io.BytesIO(data), what, name="ASA model")
        found = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        if found != _FORMAT:
            raise DataFileError(f"ASA model: format {found!r} is not {_FORMAT}")
        try:
            layout = StateLayout(tuple(blob["user_names"]), tuple(blob["author_names"]))
            out = cls(layout, blob["n_actions"], ASAConfig(**blob["config"]))
            out._stats = {k: v.numpy() for k, v in blob["stats"].items()}
            out._net.load_state_dict(blob["weights"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
            raise DataFileError(f"ASA model: not {what} ({why(err)})") from err
        out._net.eval()
        return out

    @classmethod
    def load(cls, path: str | os.PathLike) -> ASAPredictor:
        """The predictor in a file (``OUT/asa.pt``); DataFileError naming the file if it is
        not one."""
        try:
            return cls.from_bytes(Path(path).read_bytes())
        except DataFileError as err:
            raise DataFileError(str(err).replace("ASA model", str(path), 1)) from err


def _std(x: np.ndarray) -> np.ndarray:
    std = x.std(0, dtype=np.float64)
    return np.where(std < STD_FLOOR, 1.0, std)


def _standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(x - mean) / std in float32 (no float64 copy of a large batch)."""
    return (x.astype(np.float32, copy=False) - mean.astype(np.float32)) / std.astype(np.float32)


def _subsample(n: int, limit: int, seed: int) -> slice | np.ndarray:
    """All rows (a slice: no copy) or a seeded uniform subsample of ``limit`` rows."""
    if n <= limit:
        return slice(None)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def _check(layout: StateLayout, n_actions: int | None, states, actions, rewards,
           next_states=None, *, allow_empty: bool = True) -> None:
    """Shapes, dtypes and finiteness of the arrays where they enter; names the bad argument."""
    arrays = {"states": (states, (layout.dim,)), "rewards": (rewards, (len(S.LABELS),)),
              "actions": (actions, ())}
    if next_states is not None:
        arrays["next_states"] = (next_states, (layout.dim,))
    n = len(states) if np.ndim(states) else 0
    if n == 0 and not allow_empty:
        raise ValueError("states is empty: need at least one tuple")
    for name, (arr, tail) in arrays.items():
        if not isinstance(arr, np.ndarray) or arr.shape != (n, *tail):
            raise ValueError(f"{name} must be an array of shape {(n, *tail)}, "
                             f"got {getattr(arr, 'shape', type(arr).__name__)}")
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"{name} must be real numbers, got dtype {arr.dtype}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} holds NaN or infinite values")
    if not np.issubdtype(actions.dtype, np.integer):
        raise ValueError(f"actions must be integers, got dtype {actions.dtype}")
    if n and n_actions is not None and (actions.min() < 0 or actions.max() >= n_actions):
        raise ValueError(f"actions must be in [0, {n_actions}), got [{actions.min()}, "
                         f"{actions.max()}]")
