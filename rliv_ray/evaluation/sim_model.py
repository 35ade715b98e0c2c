"""The learned user simulator's models, how they are fitted, and the file that holds them.

The paper (rliv-ua.txt section 4.1.1) trains a simulator on KuaiRand that, given a recommended
item, generates the immediate feedback and then decides by a probabilistic quitting mechanism
whether the user issues the next request (as KuaiSim does). Ours has three small MLPs over the
SCRI-MDP state s (``mdp/state.py``, normalised) and the ranker's logit rho:

    response(s, rho) -> logits of P(click), P(effective view), P(follow), P(gift)   (BCE each)
                        and the watch time E[T | s, rho, click] = w0 + click * w1      (MSE)
    quit(s, rho, labels, log1p(position in session)) -> P(session ends after it)   (BCE)
    ranker(s) -> E[rho | s]                                                            (MSE)

The ranker model gives unexposed candidates a score: rho = ranker(s) + e, e drawn from the
fitted residuals. Logged scores are those of *exposed* items, the winners of their request, so
e is biased upward: an effect shared by every policy the simulator compares. A log without
ranker scores (KuaiRand) gets rho = logit P(click | s) from the response model itself.

Models are fitted on the users a hash keeps (``holdout_share`` held out) and reported on the
held-out users: log loss against the base rate, AUC, predicted against observed rate.
Everything is saved as tensors (``models.pt``, loaded with ``weights_only=True``), arrays
(``replay.npz``, no pickles) and JSON (``simulator.json``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rliv_ray import schema as S
from rliv_ray.data.io import user_bucket
from rliv_ray.evaluation.sim_data import FitRows, LogFacts, Replay
from rliv_ray.mdp.state import StateLayout
from rliv_ray.tensor_files import DataFileError, load_tensors, why

FORMAT = 1
SIMULATOR_FILE = "simulator.json"
MAX_RESIDUALS = 100_000  # ranker residuals kept to draw candidates' scores from


@dataclass(frozen=True)
class SimulatorConfig:
    """How the simulator's models are fitted."""

    hidden: int = 64
    epochs: int = 5
    batch_size: int = 2048
    lr: float = 2e-3
    holdout_share: float = 0.2
    """Share of users (by hash) kept out of fitting to report the fit on."""
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("hidden", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.holdout_share < 1:
            raise ValueError(f"holdout_share must be in [0, 1), got {self.holdout_share}")


def _mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                         nn.ReLU(), nn.Linear(hidden, outputs))


class SimulatorNets(nn.Module):
    """Response, quit and ranker models over normalised states (module docstring)."""

    def __init__(self, state_dim: int, hidden: int):
        super().__init__()
        self.response = _mlp(state_dim + 1, hidden, len(S.LABELS) + 2)
        self.quit = _mlp(state_dim + 1 + len(S.LABELS) + 1, hidden, 1)
        self.ranker = _mlp(state_dim, hidden, 1)
        self.register_buffer("state_mean", torch.zeros(state_dim))
        self.register_buffer("state_std", torch.ones(state_dim))
        self.register_buffer("watch_scale", torch.ones(()))

    def norm(self, state: torch.Tensor) -> torch.Tensor:
        return (state - self.state_mean) / self.state_std

    def respond(self, s: torch.Tensor, rho: torch.Tensor):
        """Label logits (n, 4) and watch seconds without and with a click, (n,) each."""
        out = self.response(torch.cat([s, rho[:, None]], dim=1))
        w0 = out[:, 4] * self.watch_scale
        return out[:, :4], w0, w0 + out[:, 5] * self.watch_scale

    def quit_logit(self, s, rho, labels, session_pos) -> torch.Tensor:
        x = torch.cat([s, rho[:, None], labels, torch.log1p(session_pos)[:, None]], dim=1)
        return self.quit(x)[:, 0]


def losses(nets: SimulatorNets, batch: dict[str, torch.Tensor], present: torch.Tensor,
           has_rank: bool) -> dict[str, torch.Tensor]:
    """Per-model losses of one batch (the module docstring); ``present`` masks absent labels."""
    s = nets.norm(batch["state"])
    logits, w0, w1 = nets.respond(s, batch["rank_logit"])
    bce = nn.functional.binary_cross_entropy_with_logits(logits, batch["labels"],
                                                         reduction="none")
    click = batch["labels"][:, 0]
    watch = torch.where(click > 0, w1, w0)
    out = {
        "labels": (bce * present).sum(1).mean(),
        "watch": ((watch - batch["watch_s"]) / nets.watch_scale).pow(2).mean(),
        "quit": nn.functional.binary_cross_entropy_with_logits(
            nets.quit_logit(s, batch["rank_logit"], batch["labels"], batch["session_pos"]),
            batch["session_end"]),
    }
    if has_rank:
        out["ranker"] = (nets.ranker(s)[:, 0] - batch["rank_logit"]).pow(2).mean()
    return out


@dataclass
class LearnedSimulator:
    """Fitted models, the users they replay, and what the rollout needs to know of the log."""

    nets: SimulatorNets
    replay: Replay
    facts: LogFacts
    residuals: np.ndarray  # ranker residuals of the fitted rows (empty without scores)
    meta: dict  # state layout, world (if the log came from one), config, fit report

    def save(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": self.nets.state_dict(),
                    "residuals": torch.from_numpy(self.residuals)}, out / "models.pt")
        np.savez(out / "replay.npz", **self.replay.arrays())
        (out / SIMULATOR_FILE).write_text(json.dumps(
            {"format": FORMAT, "facts": asdict(self.facts), **self.meta}, indent=2))

    @classmethod
    def load(cls, path: str | Path) -> LearnedSimulator:
        """The simulator :meth:`save` wrote: JSON, tensors (``weights_only``) and arrays
        (``allow_pickle=False``); DataFileError (one line) for anything else."""
        path = Path(path)
        try:
            meta = json.loads((path / SIMULATOR_FILE).read_text())
        except ValueError as err:
            raise DataFileError(f"{path / SIMULATOR_FILE}: not JSON ({err})") from err
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise DataFileError(f"{path}: simulator format "
                             f"{meta.get('format') if isinstance(meta, dict) else None} is not "
                             f"{FORMAT}")
        blob = load_tensors(path / "models.pt", "a learned simulator's models")
        try:
            facts = meta.pop("facts")
            facts["present_labels"] = tuple(facts["present_labels"])
            nets = SimulatorNets(meta["state_dim"], meta["config"]["hidden"])
            nets.load_state_dict(blob["state_dict"])
            nets.eval()
            with np.load(path / "replay.npz", allow_pickle=False) as arrays:
                replay = Replay(**{k: arrays[k] for k in arrays.files})
            return cls(nets, replay, LogFacts(**facts), blob["residuals"].numpy(), meta)
        except (KeyError, TypeError, ValueError, RuntimeError, OSError) as err:
            raise DataFileError(f"{path}: not a simulator of `rliv fit-simulator` of this "
                                f"version ({why(err)}; fit it again)") from err


def is_simulator(path: str | Path) -> bool:
    return (Path(path) / SIMULATOR_FILE).is_file()


def fit(rows: FitRows, replay: Replay, facts: LogFacts, config: SimulatorConfig, meta: dict,
        progress=print) -> LearnedSimulator:
    """Fit the three models on the kept users; report the fit on the held-out ones."""
    torch.manual_seed(config.seed)
    held = (user_bucket(rows.user_id, 1000) < round(config.holdout_share * 1000))
    tensors = _tensors(rows)
    train = {k: v[torch.from_numpy(~held)] for k, v in tensors.items()}
    nets = SimulatorNets(rows.state.shape[1], config.hidden)
    nets.state_mean.copy_(train["state"].mean(0))
    nets.state_std.copy_(train["state"].std(0).clamp_min(1e-3))
    nets.watch_scale.fill_(max(facts.mean_watch_s, 1e-3))
    present = torch.tensor(facts.present_labels, dtype=torch.float32)
    optimizer = torch.optim.Adam(nets.parameters(), lr=config.lr)
    n = len(train["state"])
    generator = torch.Generator().manual_seed(config.seed)
    for epoch in range(config.epochs):
        totals: dict[str, float] = {}
        for idx in torch.randperm(n, generator=generator).split(config.batch_size):
            parts = losses(nets, {k: v[idx] for k, v in train.items()}, present,
                           facts.has_rank_score)
            optimizer.zero_grad()
            sum(parts.values()).backward()
            optimizer.step()
            for k, v in parts.items():
                totals[k] = totals.get(k, 0.0) + float(v.detach()) * len(idx) / n
        progress(f"epoch {epoch + 1}/{config.epochs}: "
                 + ", ".join(f"{k} {v:.4f}" for k, v in totals.items()))
    nets.eval()
    with torch.no_grad():
        sample = torch.randperm(n, generator=generator)[:MAX_RESIDUALS]
        residuals = (train["rank_logit"][sample]
                     - nets.ranker(nets.norm(train["state"][sample]))[:, 0]).numpy()
    test = {k: v[torch.from_numpy(held)] for k, v in tensors.items()}
    report = fit_report(nets, test, facts) if held.any() else {}
    meta = {**meta, "state_dim": rows.state.shape[1], "config": asdict(config),
            "fit_rows": int(n), "holdout_rows": int(held.sum()), "report": report}
    return LearnedSimulator(nets, replay, facts,
                            residuals if facts.has_rank_score else np.zeros(0, np.float32), meta)


def _tensors(rows: FitRows) -> dict[str, torch.Tensor]:
    return {"state": torch.from_numpy(rows.state),
            "rank_logit": torch.from_numpy(rows.rank_logit),
            "labels": torch.from_numpy(rows.labels),
            "watch_s": torch.from_numpy(rows.watch_s),
            "session_end": torch.from_numpy(rows.session_end),
            "session_pos": torch.from_numpy(rows.session_pos.astype(np.float32))}


@torch.no_grad()
def fit_report(nets: SimulatorNets, test: dict[str, torch.Tensor], facts: LogFacts) -> dict:
    """Held-out fit of each model: the number a user checks before trusting the simulator."""
    s = nets.norm(test["state"])
    logits, w0, w1 = nets.respond(s, test["rank_logit"])
    out = {}
    for i, label in enumerate(S.LABELS):
        if facts.present_labels[i]:
            out[label] = binary_fit(test["labels"][:, i].numpy(),
                                    torch.sigmoid(logits[:, i]).numpy())
    quit_p = torch.sigmoid(nets.quit_logit(s, test["rank_logit"], test["labels"],
                                           test["session_pos"]))
    out["session_end"] = binary_fit(test["session_end"].numpy(), quit_p.numpy())
    watch = torch.where(test["labels"][:, 0] > 0, w1, w0).numpy()
    out["watch_time_r2"] = r_squared(test["watch_s"].numpy(), watch)
    if facts.has_rank_score:
        out["ranker_r2"] = r_squared(test["rank_logit"].numpy(), nets.ranker(s)[:, 0].numpy())
    return out


def binary_fit(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Observed and predicted rate, log loss of the model and of the base rate, and AUC."""
    y = y.astype(np.float64)
    p = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
    rate = float(np.clip(y.mean(), 1e-7, 1 - 1e-7))

    def log_loss(q):
        return float(-(y * np.log(q) + (1 - y) * np.log(1 - q)).mean())

    return {"rate": float(y.mean()), "predicted": float(p.mean()), "log_loss": log_loss(p),
            "base_log_loss": log_loss(np.full_like(p, rate)), "auc": auc(y, p)}


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); NaN with one class."""
    pos = y > 0
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    values, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    mid_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based average rank of each value
    ranks = mid_rank[inverse]
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def r_squared(y: np.ndarray, pred: np.ndarray) -> float:
    y = y.astype(np.float64)
    total = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float(((y - pred) ** 2).sum()) / total if total > 0 else float("nan")


def fit_from_log(log: str | Path, config: SimulatorConfig, progress=print) -> LearnedSimulator:
    """Read a log (a ``rliv generate`` or ``rliv convert`` output, or Parquet files holding
    whole users) and fit a simulator on it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rliv_ray.data import io
    from rliv_ray.evaluation.sim_data import NEEDED, extract

    files = io.log_files(log)
    missing = [c for c in NEEDED if c not in pq.read_schema(files[0]).names]
    if missing:
        raise ValueError(f"not an interaction log: {files[0]} lacks columns {missing}")
    table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
    grid = json.loads((table.schema.metadata or {}).get(S.META_ACTION_GRID, b"[]"))
    if not grid:
        raise ValueError(f"{log}: the log's schema metadata has no action grid "
                         "(rliv.action_grid)")
    progress(f"{table.num_rows:,} rows from {len(files)} files")
    rows, replay, facts = extract(table)
    meta = {"log": str(Path(log).resolve()), "action_grid": grid,
            "state_names": StateLayout.from_schema(table.schema).names}
    world = io.read_manifest(log).get("world")
    if world is not None:
        meta["world"] = world
    return fit(rows, replay, facts, config, meta, progress)
