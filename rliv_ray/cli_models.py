"""The model subcommands (kept apart from the data ones): training and serving.

    rliv train rliv-ua SAMPLES --out DIR [--iterations N] [--num-learners N] [--address ADDR]
                                         [--resume] [--set FIELD=VALUE ...] [--ablation NAME]
    rliv rerank SCORER SAMPLES [--user U] [--top-k K] [--tower T[=W] ...] [--epsilon E]
                                                         one request through the exported scorer
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from rliv_ray.algorithms.common.driver import BATCH_CACHE_MB
from rliv_ray.checks import PROBABILITY, integer, number

OPE_DEFAULT = ("ncis", "snips", "dr")
"""rliv_ray.ope.metrics's DEFAULT_RUN_ESTIMATORS (spelled out: that import takes ~1 s)."""
NCIS_KINDS = ("stepwise", "trajectory", "per_decision")
"""rliv_ray.ope.ncis's KINDS, its DEFAULT_KIND first (spelled out: that import takes ~1 s)."""


def add_model_parsers(sub, parse_override) -> None:
    train = sub.add_parser("train", help="Train an offline RL algorithm with RLlib.",
                           description="Train an offline RL algorithm with RLlib.")
    algorithms = train.add_subparsers(dest="algorithm", required=True, metavar="ALGORITHM")
    p = algorithms.add_parser(
        "rliv-ua", help="RLIV-UA on sample shards from `rliv build-samples`.",
        description="RLIV-UA (multi-task critics, reward/residual split, gift assistance) on "
        "the sample shards of `rliv build-samples`, with RLlib. Writes OUT/checkpoints (every "
        "--checkpoint-every iterations), OUT/metrics.jsonl, OUT/scorer.pt (serving without "
        "Ray) and OUT/train.json. A NaN loss stops training and keeps the last good checkpoint.")
    p.set_defaults(func=cmd_train, train=_train_rliv_ua)
    p.add_argument("samples", help="build-samples output directory, or a folder of shards")
    p.add_argument("--ablation", default="full", help="a paper variant: full, wo_mt, wo_sl, "
                   "wo_mt_sl, wo_al, wo_al_sl, wo_asa; or a baseline: dqn (Double DQN on the "
                   "summed reward, one critic), cql (dqn plus the CQL(H) penalty, cql_alpha 1), "
                   "td3_bc (TD3+BC, continuous weight), td3_ua (TD3, continuous weight) "
                   "(default full)")
    _add_train_options(p, parse_override, "RLIVUAConfig",
                       'gamma=0.8, lr=3e-4, towers=["follow","gift"]')

    p = algorithms.add_parser(
        "rliv-ua-online", help="RLIV-UA with the synthetic world in the loop (paper Table 1).",
        description="RLIV-UA trained in rounds with the ground-truth world in the loop: round 0 "
        "builds samples from WORLD's log and trains; each later round rolls the latest scorer "
        "out on --users-per-round users with --explore-epsilon exploration, appends the "
        "exposures to the log, rebuilds the samples (stitching + ASA) and trains --iterations "
        "more iterations from the last checkpoint. Writes OUT/log, OUT/samples, OUT/model "
        "(scorer.pt), OUT/rounds/RRR/scorer.pt and OUT/online.json (per-round rollout metrics).")
    p.set_defaults(func=cmd_train, train=_train_rliv_ua_online)
    p.add_argument("world", help="a `rliv generate` output (its log starts the loop)")
    p.add_argument("--ablation", default="full", help="as for `rliv train rliv-ua`")
    p.add_argument("--rounds", type=integer(0), default=3, help="rollout rounds after the initial "
                   "offline round (default 3)")
    p.add_argument("--users-per-round", type=integer(1), default=200, help="users rolled out per "
                   "round (default 200)")
    p.add_argument("--explore-epsilon", type=PROBABILITY, default=0.2, help="per-candidate "
                   "exploration of the rollouts (default 0.2)")
    _add_train_options(p, parse_override, "RLIVUAConfig", "gamma=0.8")

    p = algorithms.add_parser(
        "sl-mgac", help="SL-MGAC on the train shards of `rliv build-live-samples`.",
        description="SL-MGAC (multi-group heads, discretised watch-time rewards, supervised "
        "actor-critic) on the train shards of `rliv build-live-samples`, with RLlib. Writes "
        "OUT/checkpoints, OUT/metrics.jsonl, OUT/policy.pt (network + group edges) and "
        "OUT/train.json. A NaN loss stops training and keeps the last good checkpoint.")
    p.set_defaults(func=cmd_train, train=_train_sl_mgac)
    p.add_argument("samples", help="a build-live-samples output directory")
    p.add_argument("--method", "--variant", help="a row of the paper's "
                   "Tables 1-2: SL-MGAC, 'w/o MG', 'w/o MG&DD', 'w/o MG&DD&SL', 'w/o LN', "
                   "'w/o SG', 'w/o Q-norm', 'w/o Q-norm (Q attached)', SL-MGAC-0, "
                   "SL-MGAC-sep, SL-MGAC-vanilla, or a baseline with the same feature "
                   "extractor: L2R, DQN, 'Double DQN', BC, BCQ, SAC, TD3, TD3-BC, IQL (or "
                   "'L2R (SL-MGAC heads)' etc.) "
                   "(default SL-MGAC, or the resumed run's)")
    _add_train_options(p, parse_override, "SLMGACConfig",
                       "beta=0.3, groups=4, live_bins=[0,10,30,60,120,600,1200]")
    ope = p.add_mutually_exclusive_group()
    ope.add_argument("--ope", metavar="ESTIMATORS", help="off-policy estimates of the trained "
                     "policy (Eq. 16, epsilon 0.2) on the samples' held-out users (test/), "
                     "logged with the last iteration (metrics.jsonl, MLflow, train.json) as "
                     "eval/NAME, eval/NAME_lo, eval/NAME_hi, eval/NAME_ess: comma-separated "
                     f"names of `rliv ope` (default {','.join(OPE_DEFAULT)})")
    ope.add_argument("--no-ope", action="store_true", help="no off-policy estimates")
    p.add_argument("--ope-each-checkpoint", action="store_true", help="estimate at every "
                   "checkpoint, not only the last")
    p.add_argument("--ope-bootstrap", type=int, default=200, help="Poisson bootstrap "
                   "replicates of their 95%% intervals (default 200; 0: no interval)")

    p = sub.add_parser(
        "evaluate-ope", help="Score trained SL-MGAC runs by NCIS and by their true value.",
        description="SL-MGAC's Tables 1-2 on the held-out users of `rliv build-live-samples`: "
        "for every RUN (a `rliv train sl-mgac` output; runs of the same method are pooled "
        "over their seeds) the NCIS cumulative reward per user on the logged trajectories, "
        "the true on-policy value of the same users in the synthetic world (with a 95%% "
        "interval), NCIS's relative error, its effective sample size, the injection ratio and "
        "the mean 20-minute allocation-ratio amplitude. Adds the logging policy and the "
        "immediate-greedy oracle as reference rows.")
    p.set_defaults(func=cmd_evaluate_ope)
    p.add_argument("samples", help="a build-live-samples output (its test/ split is scored)")
    p.add_argument("runs", nargs="+", help="training output directories holding policy.pt")
    p.add_argument("--seeds", type=integer(1), default=3, help="on-policy runs per policy for the "
                   "true value (default 3)")
    p.add_argument("--epsilon", type=PROBABILITY, default=0.2, help="exploration of Eq. 16 "
                   "(default 0.2, the paper's)")
    p.add_argument("--cap", default="10", type=_cap, help="NCIS weight cap: a number, 'inf' or "
                   "'quantile:0.99' (default 10)")
    p.add_argument("--ncis-kind", default=NCIS_KINDS[0], choices=NCIS_KINDS,
                   help="NCIS weights: stepwise (each step's own ratio; default, accurate on "
                   "the synthetic world), trajectory (EQUATIONS.md 3's main form) or "
                   "per_decision")
    p.add_argument("--out", help="also write table.md and table.json to this directory")
    p.add_argument("--tracking-uri", help="log the table to MLflow at this URI")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser(
        "rerank", help="Re-rank one request with an exported scorer (no Ray).",
        description="Load OUT/scorer.pt of `rliv train rliv-ua` with plain torch and re-rank "
        "one request. Its candidates are the authors the user met in the first sample shard, "
        "each with the state and the logged rank_score of the user's latest row with that "
        "author. Picks each candidate's weight a, prints the top K by final = rank_score * "
        "(c + a*w)^b (Eq. 1) with the rank score beside it, and the request's latency. Needs "
        "shards whose log has rank scores (KuaiRand's has none).")
    p.set_defaults(func=cmd_rerank)
    p.add_argument("scorer", help="an exported scorer file (OUT/scorer.pt)")
    p.add_argument("samples", help="sample shards to take the request's candidates from")
    p.add_argument("--user", type=integer(0), help="user id (default: the user with most rows)")
    p.add_argument("--candidates", type=integer(1), default=300, help="at most this many (300)")
    p.add_argument("--top-k", type=integer(1), default=10)
    p.add_argument("--tower", action="append", metavar="TOWER[=WEIGHT]", type=_tower_weight,
                   help="tower(s) whose Q picks the weight, e.g. follow=0.5 --tower gift=0.5 "
                   "(default: the model's serving_tower)")
    p.add_argument("--epsilon", type=PROBABILITY, help="per-candidate exploration (default: the "
                   "model's epsilon)")


def _add_train_options(p, parse_override, config_name: str, examples: str) -> None:
    p.add_argument("--out", required=True, help="training output directory")
    p.add_argument("--iterations", type=integer(1), default=20,
                   help="RLlib iterations (default 20)")
    p.add_argument("--updates-per-iteration", type=integer(1), default=100,
                   help="gradient updates per iteration and learner (default 100)")
    p.add_argument("--checkpoint-every", type=integer(1), default=5,
                   help="iterations between checkpoints (default 5; the last is always saved)")
    p.add_argument("--num-learners", type=integer(0), default=0, help="0: learn in this process; "
                   "N >= 1: N remote learners (DDP when N > 1) (default 0)")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a "
                   "private local Ray)")
    p.add_argument("--set", action="append", type=parse_override, metavar="FIELD=VALUE",
                   help=f"a {config_name}.training() field (JSON value), e.g. {examples}; "
                   "repeatable")
    p.add_argument("--seed", type=integer(0), default=0)
    p.add_argument("--stream", action="store_true", help="stream shards from Parquet every "
                   "epoch instead of keeping them in Ray's object store (logs larger than RAM)")
    p.add_argument("--batch-cache-mb", type=integer(0), default=BATCH_CACHE_MB, metavar="MB",
                   help="with --num-learners 0, keep an epoch of training batches up to MB in "
                   "memory and replay it in later epochs, the same batches in the same order; 0: "
                   f"read every epoch through Ray Data (default {BATCH_CACHE_MB})")
    p.add_argument("--resume", action="store_true", help="continue from OUT's latest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start again, replacing OUT")
    p.add_argument("--tracking-uri", help="MLflow URI, e.g. sqlite:////abs/path/mlflow.db "
                   "(default: $RLIV_TRACKING_URI, else none)")
    p.add_argument("--quiet", action="store_true", help="no per-iteration lines")


def _rliv_ua_preset(name: str):
    """The training fields and config class of an ``--ablation`` name (variant or baseline)."""
    from rliv_ray.algorithms.rliv_ua.config import PRESETS, RLIVUAConfig
    from rliv_ray.algorithms.td3.config import TD3_PRESETS, TD3Config

    presets = {**PRESETS, **TD3_PRESETS}
    if name not in presets:
        raise ValueError(f"unknown ablation '{name}' (choose from {sorted(presets)})")
    return presets[name], TD3Config if name in TD3_PRESETS else RLIVUAConfig


def _train_rliv_ua(args: argparse.Namespace, settings_for):
    from rliv_ray.algorithms.rliv_ua.train import train_rliv_ua

    fields, config_class = _rliv_ua_preset(args.ablation)
    return train_rliv_ua(args.samples, args.out, settings_for(fields),
                         resume=args.resume, overwrite=args.overwrite,
                         tracking_uri=args.tracking_uri, config_class=config_class)


def _train_rliv_ua_online(args: argparse.Namespace, settings_for):
    from rliv_ray.algorithms.common.driver import check_training_fields
    from rliv_ray.algorithms.rliv_ua.online import OnlineSettings, train_online

    fields, config_class = _rliv_ua_preset(args.ablation)
    check_training_fields(config_class, {**fields, **dict(args.set or [])})  # before OUT
    online = OnlineSettings(rounds=args.rounds, users_per_round=args.users_per_round,
                            epsilon=args.explore_epsilon)
    record = train_online(args.world, args.out, settings_for(fields), online,
                          resume=args.resume, overwrite=args.overwrite,
                          tracking_uri=args.tracking_uri, config_class=config_class,
                          progress=(lambda _: None) if args.quiet else print)
    return json.loads((Path(args.out) / "model" / "train.json").read_text()) | {
        "rounds": record["rounds"]}


def _train_sl_mgac(args: argparse.Namespace, settings_for):
    from rliv_ray.algorithms.sl_mgac.config import method_fields
    from rliv_ray.algorithms.sl_mgac.train import train_sl_mgac

    preset = method_fields(args.method) if args.method else {}
    ope = None
    if not args.no_ope:
        from rliv_ray.ope.metrics import OPEMetricSettings, parse_estimators

        if args.ope_bootstrap < 0:
            raise ValueError(f"--ope-bootstrap must be >= 0, got {args.ope_bootstrap}")

        ope = OPEMetricSettings(estimators=parse_estimators(args.ope or OPE_DEFAULT, "--ope"),
                                bootstrap=args.ope_bootstrap)
    return train_sl_mgac(args.samples, args.out, settings_for(preset),
                         resume=args.resume, overwrite=args.overwrite,
                         tracking_uri=args.tracking_uri, ope=ope,
                         ope_each_checkpoint=args.ope_each_checkpoint)


def cmd_train(args: argparse.Namespace) -> int:
    from rliv_ray.algorithms.common.driver import TrainSettings
    from rliv_ray.train_loop import LoopSettings

    def settings_for(preset: dict) -> TrainSettings:
        return TrainSettings(
            loop=LoopSettings(iterations=args.iterations, checkpoint_every=args.checkpoint_every,
                              progress=not args.quiet),
            updates_per_iteration=args.updates_per_iteration, num_learners=args.num_learners,
            address=args.address, seed=args.seed, materialize=not args.stream,
            batch_cache_mb=args.batch_cache_mb,
            training={**preset, **dict(args.set or [])})

    try:
        report = args.train(args, settings_for)
    except KeyboardInterrupt as err:  # outside the iterations: say what OUT still holds
        from rliv_ray.interrupts import TrainingInterrupted

        if isinstance(err, TrainingInterrupted):
            raise
        raise _interrupted_outside_the_loop(args.out, err) from None
    metrics = report["metrics"]
    summary = {"iterations": report["iteration"], "updates": report["updates"],
               "loss": metrics.get("loss/total"), "checkpoint": report["checkpoint"],
               "export": report["export"]}
    if report.get("ope"):
        summary["ope"] = {k: v for k, v in report["ope"].items()  # the estimates themselves
                          if not k.endswith(("_lo", "_hi", "_ess"))}
    for name, why in (report.get("ope_skipped") or {}).items():
        print(f"note: {name} not estimated: {why}", file=sys.stderr)
    print(json.dumps(summary, indent=2))
    return 0


def _interrupted_outside_the_loop(out: str, err: KeyboardInterrupt):
    """The TrainingInterrupted of an interrupt before the iterations (reading the data,
    starting Ray): the checkpoint a resumed OUT still has, or none (a new run's OUT is removed:
    :func:`rliv_ray.algorithms.common.driver.training_out`)."""
    from rliv_ray.interrupts import TrainingInterrupted, signal_of
    from rliv_ray.train_loop import latest_checkpoint

    try:
        good = latest_checkpoint(out)
    except (OSError, ValueError):
        good = None
    return TrainingInterrupted(signal_of(err), good.checkpoint if good else None,
                               good.iteration if good else None)


def cmd_rerank(args: argparse.Namespace) -> int:
    from rliv_ray.checks import CLIError
    from rliv_ray.serving import ServingConfig, load_scorer

    towers = dict(args.tower) if args.tower else None
    try:
        config = ServingConfig(top_k=args.top_k, tower_weights=towers, epsilon=args.epsilon)
    except ValueError as err:
        raise CLIError(str(err)) from err
    scorer = load_scorer(args.scorer, config)
    user, authors, states, scores = _request_from_shards(args.samples, args.user,
                                                         args.candidates)
    ranking = scorer.rank(user, authors, states, scores)
    latency = [_timed(scorer.rank, user, authors, states, scores) for _ in range(200)]
    print(f"user {user}: {len(authors)} candidates, towers {dict(scorer.config.tower_weights)}, "
          f"epsilon {scorer.config.epsilon:g}, top {len(ranking.indices)}")
    print(f"{'rank':>4} {'author':>10} {'rank_score':>10} {'weight':>6} {'final':>8} explored")
    for rank, i in enumerate(ranking.indices):
        print(f"{rank + 1:>4} {authors[i]:>10} {scores[i]:>10.4f} {ranking.weights[rank]:>6.2f} "
              f"{ranking.final_scores[rank]:>8.4f} {'yes' if ranking.explored[rank] else 'no'}")
    greedy = np.bincount(scorer.q_values(user, authors, states).argmax(axis=1),
                         minlength=scorer.grid.size)
    print("greedy weight over all candidates: " + ", ".join(
        f"{w:g}: {n}" for w, n in zip(scorer.grid.weights, greedy, strict=True)))
    print(f"latency per request: p50 {np.percentile(latency, 50):.2f} ms, "
          f"p99 {np.percentile(latency, 99):.2f} ms (200 repeats)")
    return 0


def _request_from_shards(samples: str, user: int | None, candidates: int
                         ) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """One request from the first shard: (user, (N,) authors, (N, D) states, (N,) rank scores),
    one candidate per author the user met, with the state and logged rank score of the user's
    latest row with that author."""
    import pyarrow.parquet as pq

    from rliv_ray import schema as S
    from rliv_ray.offline.prelearner import ShardError
    from rliv_ray.offline.shards import shard_files

    file = shard_files(samples)[0]
    if S.RANK_SCORE not in pq.read_schema(file).names:
        raise ShardError(f"{file}: sample shard lacks column '{S.RANK_SCORE}' (rebuild it with "
                         "`rliv build-samples`)")
    table = pq.read_table(file, columns=[S.USER_ID, S.AUTHOR_ID, S.STATE, S.RANK_SCORE])
    users = table[S.USER_ID].to_numpy()
    if user is None:
        ids, counts = np.unique(users, return_counts=True)
        user = int(ids[counts.argmax()])
    rows = np.flatnonzero(users == user)
    if not len(rows):
        raise ValueError(f"user {user} has no rows in {samples}")
    authors = table[S.AUTHOR_ID].to_numpy()[rows]
    _, last = np.unique(authors[::-1], return_index=True)  # latest row per author
    keep = rows[::-1][last][:candidates]
    scores = table[S.RANK_SCORE].take(keep)
    if scores.null_count:
        raise ShardError(f"{file}: user {user} has no logged '{S.RANK_SCORE}' (its log, like "
                         "KuaiRand's, has no base ranker scores), so Eq. 1 cannot be applied")
    states = S.arrow_to_matrix(table[S.STATE].take(keep))
    return (user, table[S.AUTHOR_ID].to_numpy()[keep], states,
            scores.to_numpy().astype(np.float64))


def cmd_evaluate_ope(args: argparse.Namespace) -> int:
    from rliv_ray.ope.runs import evaluate_runs, write_table
    from rliv_ray.ope.table import render_text, to_records
    from rliv_ray.outdir import check_not_input
    from rliv_ray.tracking import tracking_run

    cap = args.cap if args.cap.startswith("quantile:") else float(args.cap)
    if args.out:
        check_not_input(args.out, [args.samples, *args.runs])
    rows = evaluate_runs(args.samples, args.runs, seeds=range(args.seeds),
                         epsilon=args.epsilon, cap=cap, kind=args.ncis_kind)
    print(render_text(rows))
    if args.out:
        write_table(rows, Path(args.out))
    with tracking_run(args.tracking_uri, f"evaluate-ope__{Path(args.samples).name}") as tracker:
        tracker.log_params({"samples": str(Path(args.samples).resolve()), "runs": args.runs,
                            "seeds": args.seeds, "epsilon": args.epsilon, "cap": args.cap,
                            "ncis_kind": args.ncis_kind})
        tracker.log_metrics({r["method"]: {k: v for k, v in r.items() if k != "method"}
                             for r in to_records(rows)})
    return 0


def _tower_weight(text: str) -> tuple[str, float]:
    name, _, weight = text.partition("=")
    return name, number(0.0)(weight) if weight else 1.0


def _cap(text: str) -> str:
    """evaluate-ope's --cap: a number > 0, 'inf' or 'quantile:Q' with Q in (0, 1]."""
    if text.startswith("quantile:"):
        number(0.0, 1.0, low_open=True)(text.split(":", 1)[1])
    else:
        number(0.0, low_open=True, allow_inf=True)(text)
    return text


def _timed(fn, *args) -> float:
    began = time.perf_counter()
    fn(*args)
    return 1000.0 * (time.perf_counter() - began)
