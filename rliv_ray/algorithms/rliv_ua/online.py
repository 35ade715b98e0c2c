"""RLIV-UA with the simulator in the loop: the paper's Table 1 regime, same module and learner.

The paper trains its Table 1 methods on data "collected in real time" (rliv-ua.txt line 204,
``../shared/DESIGN.md`` "two training regimes"): the policy acts in the simulator with
epsilon-greedy exploration and learns from what it collected. Here, in rounds:

    round 0   build samples (stitching + ASA) from the world's own log and train
              ``iterations x updates_per_iteration`` updates, as ``rliv train rliv-ua`` does;
    round r   roll the latest scorer out in the world on ``users_per_round`` users, exploring
              with probability ``epsilon`` per candidate (the behaviour probabilities are
              logged), append those exposures to the log, rebuild the samples over the whole
              log, and train as many updates again, resuming from the last checkpoint.

Each round replays its users' lives from the start of the world's horizon (a new episode per
user), logged under fresh user ids ``user + r * n_users`` so that the sample pipeline sees
whole, non-overlapping lives; the user features are the real user's. The world is the
ground-truth synthetic world of a ``rliv generate`` output.

    OUT/log/                the initial log's files (links) and round-RRR.parquet per round
    OUT/samples/            the latest round's samples
    OUT/model/              the RLIV-UA run, continued each round (checkpoints, scorer.pt)
    OUT/rounds/RRR/scorer.pt  the policy after round r
    OUT/online.json         settings and per-round figures (rollout metrics, rows, loss);
                            ``resume`` continues after the last finished round
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from rliv_ray import schema as S
from rliv_ray.algorithms.common.driver import TrainSettings
from rliv_ray.algorithms.rliv_ua.config import RLIVUAConfig
from rliv_ray.algorithms.rliv_ua.train import REPORT_FILE, SCORER_FILE, train_rliv_ua
from rliv_ray.data import io
from rliv_ray.data.ua_config import UAWorldConfig
from rliv_ray.data.ua_generate import bucket_tables
from rliv_ray.data.ua_population import Population
from rliv_ray.data.ua_world import simulate_users
from rliv_ray.outdir import claimed_out

ONLINE_FILE = "online.json"
ONLINE_STREAM = 13  # random stream of the rollouts, apart from generation and evaluation


@dataclass(frozen=True)
class OnlineSettings:
    """The loop around the learner."""

    rounds: int = 3
    """Rounds of rollout + retraining after the initial offline round."""
    users_per_round: int = 200
    epsilon: float = 0.2
    """Per-candidate exploration of the rollouts (uniform over the action grid)."""

    def __post_init__(self) -> None:
        if self.rounds < 0:
            raise ValueError(f"rounds must be >= 0, got {self.rounds}")
        if self.users_per_round < 1:
            raise ValueError(f"users_per_round must be >= 1, got {self.users_per_round}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")


def world_of(path: str | Path) -> UAWorldConfig:
    world = io.read_manifest(path).get("world")
    if world is None:
        raise ValueError(f"{path} is not a synthetic user-author world (its manifest has no "
                         "'world'; make one with `rliv generate`)")
    return UAWorldConfig.from_dict(world)


def train_online(world_dir: str | Path, out: str | Path, settings: TrainSettings,
                 online: OnlineSettings, *, resume: bool = False, overwrite: bool = False,
                 tracking_uri: str | None = None, config_class: type = RLIVUAConfig,
                 progress=print) -> dict:
    """Run the rounds (module docstring); returns what OUT/online.json holds. ``config_class``
    is RLIVUAConfig or a baseline's config on the same samples (TD3Config)."""
    world, out = world_of(world_dir), Path(out)
    if world.n_users * (online.rounds + 1) > 1 << 24:
        raise ValueError(f"{online.rounds} rounds of {world.n_users} users exceed the 2**24 "
                         "user ids a request id holds")
    if online.users_per_round > world.n_users:
        raise ValueError(f"users_per_round ({online.users_per_round}) exceeds the world's "
                         f"{world.n_users} users")
    with claimed_out(out, resume=resume, overwrite=overwrite, what="rounds",
                     inputs=[world_dir]):
        return _rounds(world, world_dir, out, settings, online, resume=resume,
                       tracking_uri=tracking_uri, config_class=config_class, progress=progress)


def _rounds(world: UAWorldConfig, world_dir, out: Path, settings: TrainSettings,
            online: OnlineSettings, *, resume: bool, tracking_uri: str | None,
            config_class: type, progress) -> dict:
    record = _start(world_dir, out, online, resume=resume)
    per_round = settings.loop.iterations
    for r in range(len(record["rounds"]), online.rounds + 1):
        began = time.perf_counter()
        figures = _roll_out(world, out, r, online) if r else {}
        samples = _build_samples(world, out, settings.seed)
        report = train_rliv_ua(
            out / "samples", out / "model",
            dataclasses.replace(_keep_tables(out, settings) if r else settings,
                                loop=dataclasses.replace(settings.loop,
                                                         iterations=per_round * (r + 1))),
            resume=r > 0, overwrite=r == 0, tracking_uri=tracking_uri,
            config_class=config_class)
        kept = out / "rounds" / f"{r:03d}"
        kept.mkdir(parents=True, exist_ok=True)
        shutil.copy2(out / "model" / SCORER_FILE, kept / SCORER_FILE)
        figures.update(round=r, samples=samples, updates=report["updates"],
                       loss=report["metrics"].get("loss/total"),
                       seconds=round(time.perf_counter() - began, 1))
        record["rounds"].append(figures)
        (out / ONLINE_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")
        progress(_describe(figures))
    return record


def _keep_tables(out: Path, settings: TrainSettings) -> TrainSettings:
    """Later rounds keep round 0's id-table size: a checkpoint's tables cannot grow, and each
    round adds user ids (they hash into the same rows)."""
    config = json.loads((out / "model" / REPORT_FILE).read_text())["config"]
    return dataclasses.replace(settings, training={**settings.training, "id_rows_per_id": 0,
                                                   "id_buckets": config["id_buckets"]})


def _start(world_dir, out: Path, online: OnlineSettings, *, resume: bool) -> dict:
    """The record to continue, or a new one over the world's log (OUT is claimed and empty)."""
    file = out / ONLINE_FILE
    if resume:
        if not file.exists():
            raise FileNotFoundError(f"{out}: no {ONLINE_FILE} to resume from")
        record = json.loads(file.read_text())
        record["settings"] = dataclasses.asdict(online)
        return record
    (out / io.LOG_DIR).mkdir(parents=True)
    for i, path in enumerate(io.log_files(world_dir)):
        (out / io.LOG_DIR / f"initial-{i:04d}.parquet").symlink_to(path.resolve())
    return {"world": str(Path(world_dir).resolve()), "settings": dataclasses.asdict(online),
            "rounds": []}


def _roll_out(world: UAWorldConfig, out: Path, r: int, online: OnlineSettings) -> dict:
    """Round r's exposures under the latest scorer, appended to OUT/log; their metrics."""
    from rliv_ray.evaluation.policies import make_policy
    from rliv_ray.evaluation.world import (
        DEEP_BOND,
        column_sums,
        finish,
        one_torch_thread,
        state_dim,
    )

    rng = np.random.default_rng(np.random.SeedSequence([world.seed, ONLINE_STREAM, r]))
    users = np.sort(rng.choice(world.n_users, online.users_per_round, replace=False))
    policy = make_policy(f"rliv:{out / 'model' / SCORER_FILE}", world, state_dim(world),
                         epsilon=online.epsilon)
    with one_torch_thread():
        result = simulate_users(world, Population.build(world), users, policy, rng)
    metrics = finish(column_sums(result.columns, DEEP_BOND), len(users))
    cols = result.columns
    cols[S.USER_ID] = cols[S.USER_ID] + r * world.n_users
    cols[S.REQUEST_ID] = S.make_request_id(cols[S.TS_MS], cols[S.USER_ID])
    log, _ = bucket_tables(world, result, None)
    pq.write_table(log, out / io.LOG_DIR / f"round-{r:03d}.parquet")
    return {"rollout_rows": log.num_rows, "rollout_users": len(users),
            "rollout": {k: metrics[k] for k in ("ltv", "session_length", "watch_time_min",
                                                "ctr")}}


def _build_samples(world: UAWorldConfig, out: Path, seed: int) -> int:
    from rliv_ray.mdp.asa import ASAConfig
    from rliv_ray.mdp.pipeline import build_samples
    from rliv_ray.mdp.samples import SampleConfig
    from rliv_ray.mdp.stitching import StitchConfig

    report = build_samples(
        out / io.LOG_DIR, out / "samples",
        config=SampleConfig(stitch=StitchConfig(sequence_length=world.sequence_length)),
        asa_config=ASAConfig(seed=seed), workers=0, overwrite=True, progress=False)
    return int(report["samples_written"])


def _describe(figures: dict) -> str:
    text = (f"round {figures['round']}: {figures['samples']:,} samples, "
            f"{figures['updates']:,} updates in total, loss {figures['loss']:.4g}, "
            f"{figures['seconds']:.0f}s")
    if "rollout" in figures:
        m = figures["rollout"]
        text += (f"; rollout of {figures['rollout_users']} users (exploring): session length "
                 f"{m['session_length']:.2f}, watch {m['watch_time_min']:.3f} min/session, "
                 f"LTV {m['ltv']:.2f}/user")
    return text
