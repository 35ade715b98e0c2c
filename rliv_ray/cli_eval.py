"""``rliv evaluate``: policies in the ground-truth world or a learned simulator, the paper's
Tables 1 and 2; ``rliv fit-simulator``: the learned simulator.

    rliv evaluate WORLD_OR_SIM [--policy [LABEL=]SPEC ...] [--seeds 10] [--users N]
                  [--workers N] [--out DIR] [--tracking-uri URI]
    rliv fit-simulator LOG --out SIM [--epochs 5] [--hidden 64] [--seed 0]

WORLD is a ``rliv generate`` output: its manifest gives the world and its population (the same
users a trained policy learned from); SIM is a ``rliv fit-simulator`` output. SPEC is a policy
spec of :mod:`rliv_ray.evaluation.policies`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rliv_ray.checks import PROBABILITY, integer, number

DEFAULT_POLICIES = ("RankingModel", "Greedy", "Oracle")


def add_eval_parsers(add, parse_override) -> None:
    p = add("evaluate", cmd_evaluate,
            "Run policies in the ground-truth synthetic world on the same users with common "
            "random numbers, and print the paper's Table 1 (session length, watch time per "
            "session, CTR, diversity) and Table 2 (UA count, gifted users, revenue, new fans) "
            "with 95%% intervals over seeds and paired margins over a baseline.")
    p.add_argument("world", help="a `rliv generate` output directory (its manifest holds the "
                   "world), or a `rliv fit-simulator` output (a learned simulator)")
    p.add_argument("--policy", action="append", metavar="[LABEL=]SPEC",
                   help="RankingModel, Greedy, Oracle, Logging, rliv:OUT_OR_SCORER, "
                   "torchscript:FILE, onnx:FILE or python:MODULE:FUNC (repeatable; default: "
                   f"{', '.join(DEFAULT_POLICIES)})")
    p.add_argument("--baseline", default="RankingModel", help="the label margins are paired "
                   "against (default RankingModel)")
    p.add_argument("--seeds", type=integer(1), default=10, help="rollout seeds (default 10)")
    p.add_argument("--users", type=integer(1), help="evaluate the first N users of the world's "
                   "population (default: all)")
    p.add_argument("--buckets", type=integer(1), default=4,
                   help="user buckets per seed, the unit of "
                   "parallel work (default 4)")
    p.add_argument("--workers", type=integer(0), default=0,
                   help="parallel Ray tasks (default 0: in "
                   "this process); with --address, tasks run on that cluster")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS if set)")
    p.add_argument("--epsilon", type=PROBABILITY, default=0.0, help="per-candidate exploration of "
                   "learned policies (default 0: greedy)")
    p.add_argument("--set", action="append", type=parse_override, metavar="FIELD=VALUE",
                   help="override one world field for the evaluation, e.g. "
                   "--set candidates_per_request=100")
    p.add_argument("--out", help="write table.md, table.csv, metrics.png and result.json here")
    p.add_argument("--tracking-uri", help="log the tables to MLflow at this URI (default: "
                   "$RLIV_TRACKING_URI, else none)")

    p = add("fit-simulator", cmd_fit_simulator,
            "Fit a user simulator to any interaction log (synthetic or converted KuaiRand): "
            "response models for click, effective view, follow, gift and watch time, a quit "
            "model and a ranker model over the SCRI-MDP state; prints the held-out fit. "
            "Evaluate policies in it with `rliv evaluate SIM`.")
    p.add_argument("log", help="a `rliv generate`/`rliv convert` output or Parquet log files "
                   "holding whole users")
    p.add_argument("--out", required=True, help="directory for simulator.json, models.pt and "
                   "replay.npz")
    p.add_argument("--epochs", type=integer(1), default=5, help="passes over the log (default 5)")
    p.add_argument("--hidden", type=integer(1), default=64, help="hidden width of each model "
                   "(default 64)")
    p.add_argument("--holdout-share", type=number(0.0, 1.0, low_open=True, high_open=True),
                   default=0.2, help="share of users held out "
                   "to report the fit on (default 0.2)")
    p.add_argument("--seed", type=integer(0), default=0)
    p.add_argument("--overwrite", action="store_true")


def _policies(texts: list[str] | None) -> dict[str, str]:
    from rliv_ray.cli import CLIError

    out = {}
    for text in texts or DEFAULT_POLICIES:
        label, sep, spec = text.partition("=")
        label, spec = (label, spec) if sep else (text, text)
        if label in out:
            raise CLIError(f"--policy label '{label}' is given twice")
        out[label] = spec
    return out


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from rliv_ray.checks import EXIT_INVALID, EXIT_USAGE, CLIError, InvalidInput
    from rliv_ray.data import io
    from rliv_ray.data.ua_config import UAWorldConfig
    from rliv_ray.data.ua_lever import format_comparison
    from rliv_ray.evaluation.learned_world import world_config
    from rliv_ray.evaluation.policies import PolicyError
    from rliv_ray.evaluation.report import TABLE1, TABLE2, write_report
    from rliv_ray.evaluation.sim_model import is_simulator
    from rliv_ray.evaluation.world import WorldEval, evaluate_policies, load_simulator
    from rliv_ray.outdir import check_not_input
    from rliv_ray.tensor_files import DataFileError
    from rliv_ray.tracking import tracking_run

    policies = _policies(args.policy)
    if args.baseline not in policies:
        raise CLIError(f"--baseline '{args.baseline}' is not among the policies "
                       f"{list(policies)}")
    if not Path(args.world).is_dir():
        raise InvalidInput(f"{args.world}: no such directory")
    if args.out:
        check_not_input(args.out, [args.world])
    simulator = str(Path(args.world).resolve()) if is_simulator(args.world) else None
    world = (world_config(load_simulator(simulator)).to_dict() if simulator
             else io.read_manifest(args.world).get("world"))
    if world is None:
        raise CLIError(f"{args.world} is neither a synthetic user-author world (its manifest "
                       "has no 'world'; make one with `rliv generate`) nor a learned simulator "
                       "(`rliv fit-simulator`)")
    try:
        config = UAWorldConfig.from_dict({**world, **dict(args.set or [])})
        setup = WorldEval(config, seeds=tuple(range(args.seeds)), users=args.users,
                          buckets=args.buckets, epsilon=args.epsilon, simulator=simulator)
    except (TypeError, ValueError) as err:
        raise CLIError(f"invalid evaluation setting: {err}", EXIT_USAGE) from err
    began = time.perf_counter()
    try:
        by_spec = evaluate_policies(setup, list(dict.fromkeys(policies.values())),
                                    workers=args.workers, address=args.address,
                                    progress=not args.quiet)
    except PolicyError as err:  # a crafted or corrupt policy file is invalid data
        raise CLIError(str(err), EXIT_INVALID if isinstance(err, DataFileError)
                       else EXIT_USAGE) from err
    result = {label: by_spec[spec] for label, spec in policies.items()}
    seconds = time.perf_counter() - began
    where = f"learned simulator {args.world}" if simulator else f"world {args.world}"
    print(f"{where}: {setup.n_users} users x {config.days} days, "
          f"N = {config.candidates_per_request} "
          f"candidates, K = {config.exposures_per_request}; seeds 0..{args.seeds - 1}; "
          f"{seconds:.1f}s. Means, then margins paired per seed over {args.baseline} (95%)")
    print(format_comparison(result, args.baseline, TABLE1))
    print(format_comparison(result, args.baseline, TABLE2))
    title = f"{Path(args.world).name}: {setup.n_users} users, {args.seeds} seeds"
    params = {"world": str(Path(args.world).resolve()), "policies": policies,
              "seeds": args.seeds, "users": setup.n_users, "epsilon": args.epsilon,
              "overrides": dict(args.set or [])}
    with tracking_run(args.tracking_uri, f"evaluate__{Path(args.world).name}") as tracker:
        tracker.log_params(params)
        tracker.log_metrics({label: {m: s["mean"] for m, s in values.items()}
                             for label, values in result.items()})
        if args.out:
            out = Path(args.out)
            paths = write_report(result, out, baseline=args.baseline, title=title)
            (out / "result.json").write_text(json.dumps({**params, "seconds": seconds,
                                                         "result": result}, indent=2))
            for path in [*paths, out / "result.json"]:
                tracker.log_artifact(path)
            print(f"wrote {', '.join(p.name for p in paths)} and result.json to {out}")
    return 0


def cmd_fit_simulator(args: argparse.Namespace) -> int:
    from rliv_ray.checks import EXIT_USAGE, CLIError, InvalidInput
    from rliv_ray.data import io
    from rliv_ray.data.validate import LogValidationError, validate_log
    from rliv_ray.evaluation.sim_model import SimulatorConfig, fit_from_log
    from rliv_ray.evaluation.world import one_torch_thread

    try:
        config = SimulatorConfig(hidden=args.hidden, epochs=args.epochs,
                                 holdout_share=args.holdout_share, seed=args.seed)
    except ValueError as err:
        raise CLIError(f"invalid simulator setting: {err}", EXIT_USAGE) from err
    progress = (lambda _: None) if args.quiet else print
    began = time.perf_counter()
    try:
        validate_log(args.log)  # before OUT: fitting reads the whole log anyway
    except LogValidationError as err:
        raise InvalidInput(f"cannot fit a simulator to {args.log}: not an interaction log "
                           f"({err})") from err
    with io.atomic_output_dir(args.out, overwrite=args.overwrite, inputs=[args.log]) as out, \
            one_torch_thread():
        try:
            sim = fit_from_log(args.log, config, progress)
        except (FileNotFoundError, ValueError) as err:
            raise InvalidInput(f"cannot fit a simulator to {args.log}: {err}") from err
        sim.save(out)
    print(f"fitted on {sim.meta['fit_rows']:,} rows in {time.perf_counter() - began:.0f}s; "
          f"held-out fit on {sim.meta['holdout_rows']:,} rows:")
    print(format_fit(sim.meta["report"]))
    print(f"wrote {args.out}; evaluate policies in it with `rliv evaluate {args.out}`")
    return 0


def format_fit(report: dict) -> str:
    """The held-out fit as a small table: rate, predicted, log loss vs base rate, AUC."""
    lines = ["| model | observed | predicted | log loss | base rate's | AUC |",
             "|---|---|---|---|---|---|"]
    for name, fit in report.items():
        if isinstance(fit, dict):
            lines.append(f"| {name} | {fit['rate']:.4g} | {fit['predicted']:.4g} | "
                         f"{fit['log_loss']:.4f} | {fit['base_log_loss']:.4f} | "
                         f"{fit['auc']:.3f} |")
    lines += [f"{name}: {value:.3f}" for name, value in report.items()
              if not isinstance(value, dict)]
    return "\n".join(lines)
