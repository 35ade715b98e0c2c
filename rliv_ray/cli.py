"""The ``rliv`` command: one entry point, one subcommand per step of the pipeline.

    rliv generate OUT --rows 1000000        synthetic user-author world -> OUT/{log,truth}
    rliv convert-kuairand SRC OUT           KuaiRand CSV files -> OUT/log
    rliv validate LOGS                      schema, types, ranges, order; exit 1 on the first error
    rliv summary LOGS                       counts, label rates, stitchable share
    rliv check-world                        does the synthetic world reward long-term thinking?
    rliv build-samples LOGS OUT             stitching + ASA -> RL sample shards (local or Ray)
    rliv asa-report LOGS                    stitching rates, ASA vs rule (Table 4), epsilon
    rliv train rliv-ua SAMPLES --out DIR    RLIV-UA with RLlib: checkpoints, metrics, scorer.pt
    rliv rerank SCORER SAMPLES              one request through the exported scorer (no Ray)
    rliv evaluate WORLD --policy SPEC       policies in the ground-truth world: Tables 1 and 2
    rliv generate-live OUT                  synthetic live-stream allocation world -> OUT/log
    rliv build-live-samples LOGS OUT        4:1 user split, activity groups, SL-MGAC transitions
    rliv train sl-mgac SAMPLES --out DIR    SL-MGAC with RLlib: checkpoints, metrics, policy.pt
    rliv ui [--tracking-uri URI]            browse the MLflow store in the MLflow UI (127.0.0.1)
    rliv sweep CONFIG.yaml [--resume]       Ray Tune sweep (ASHA on an evaluation) + MLflow runs
    rliv ope LOGS --policy RUN              streamed off-policy estimates (IPS ... NCIS, DR)
    rliv ope-grade                          every estimator graded against the truth, both worlds
    rliv submit -- COMMAND ...              run an rliv command as a Ray Job on a cluster

Errors are one line on stderr and exit status 1 (invalid input data) or 2 (bad arguments,
settings, output folder or environment); nothing partial is ever written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rliv_ray import __version__
from rliv_ray.checks import (  # noqa: F401 - CLIError and the statuses are this module's API
    EXIT_INVALID,
    EXIT_USAGE,
    CLIError,
    Parser,
    integer,
)


def _parse_override(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    key, raw = text.split("=", 1)

    def finite_only(name: str):
        raise argparse.ArgumentTypeError(f"{key.strip()}: expected a finite value, got {name}")

    try:
        value = json.loads(raw, parse_constant=finite_only)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def world_config(args: argparse.Namespace, config_class):
    """A world config (UAWorldConfig, LiveWorldConfig) from --config, --set and the shortcut
    options --users, --days and --seed, validated; CLIError (exit 2) if not."""
    fields = {}
    if args.config:
        try:
            fields = json.loads(Path(args.config).read_text())
        except (OSError, ValueError) as err:
            raise CLIError(f"--config {args.config}: {err}") from err
        if not isinstance(fields, dict):
            raise CLIError(f"--config {args.config}: expected a JSON object of fields")
    fields.update(dict(args.set or []))
    for name, field in (("users", "n_users"), ("days", "days"), ("seed", "seed")):
        value = getattr(args, name)
        if value is not None:
            fields[field] = value
    try:
        return config_class.from_dict(fields)
    except (TypeError, ValueError) as err:
        raise CLIError(f"invalid world setting: {err}") from err


def _world_config(args: argparse.Namespace):
    from rliv_ray.data.ua_config import UAWorldConfig

    return world_config(args, UAWorldConfig)


def cmd_generate(args: argparse.Namespace) -> int:
    from rliv_ray.data.ua_generate import generate_ua_world

    config = _world_config(args)
    manifest = generate_ua_world(args.out, config, rows=args.rows, n_files=args.files,
                                 overwrite=args.overwrite, progress=not args.quiet)
    rates = ", ".join(f"{k} {100 * v:.3f}%" for k, v in manifest["label_rates"].items())
    print(f"wrote {manifest['rows']:,} rows of {manifest['users']:,} users to {args.out} "
          f"in {manifest['seconds']:.1f}s ({rates})")
    return 0


def cmd_convert_kuairand(args: argparse.Namespace) -> int:
    from rliv_ray.data.kuairand import convert_kuairand

    manifest = convert_kuairand(args.src, args.out, n_buckets=args.buckets,
                                chunk_rows=args.chunk_rows, include_random=args.include_random,
                                overwrite=args.overwrite, progress=not args.quiet)
    print(f"wrote {manifest['rows_written']:,} rows of {manifest['users']:,} users to {args.out} "
          f"(read {manifest['rows_read']:,}; dropped {manifest['duplicates_dropped']:,} "
          f"duplicates, {manifest['unknown_video_rows_dropped']:,} rows of unknown videos; "
          f"absent: {', '.join(manifest['absent_columns'])})")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from rliv_ray.data.live_validate import is_live_log, validate_live_log
    from rliv_ray.data.validate import validate_log

    report = (validate_live_log(args.path, progress=not args.quiet) if is_live_log(args.path)
              else validate_log(args.path, progress=not args.quiet))
    absent = ", ".join(report.absent_columns) or "none"
    print(f"ok: {report.rows:,} rows, {report.users:,} users in {report.files} files "
          f"(source {report.source}; absent columns: {absent})")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from rliv_ray.data import io
    from rliv_ray.data.summary import format_summary, summarize_log
    from rliv_ray.data.validate import validate_log
    from rliv_ray.mdp.stitching import StitchConfig
    from rliv_ray.tracking import tracking_run

    validate_log(args.path, progress=not args.quiet)  # values too: a summary of NaN helps nobody
    length = args.sequence_length
    if length is None:
        length = io.read_manifest(args.path).get("world", {}).get("sequence_length", 100)
    config = StitchConfig(sequence_length=length, content=args.content)
    summary = summarize_log(args.path, stitch_config=config, progress=not args.quiet)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    with tracking_run(args.tracking_uri, f"summary__{Path(args.path).name}") as tracker:
        tracker.log_params({"path": str(Path(args.path).resolve()), "sequence_length": length,
                            "sequence_content": args.content})
        tracker.log_metrics({"data": summary})
    return 0


def cmd_check_world(args: argparse.Namespace) -> int:
    from rliv_ray.data.ua_lever import compare_policies, format_comparison, separated

    config = _world_config(args)
    seeds = list(range(config.seed, config.seed + args.seeds))
    result = compare_policies(config, seeds)
    print(f"{config.n_users} users x {config.days} days, seeds {seeds}; "
          "margins are paired per seed, 95% intervals")
    print(format_comparison(result, "RankingModel"))
    print(format_comparison({k: result[k] for k in ("Greedy", "Oracle")}, "Greedy"))
    ok = separated(result, "Oracle", "Greedy") and separated(result, "Oracle", "RankingModel")
    print("long-term lever: " + ("yes, the oracle beats both myopic policies on LTV" if ok else
                                 "NOT SHOWN: the oracle does not clearly beat a myopic policy"))
    return 0 if ok else EXIT_INVALID


def _add_world_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--users", type=integer(1),
                   help="number of users (default 2000; ignored with --rows)")
    p.add_argument("--days", type=integer(1), help="days simulated per user (default 14)")
    p.add_argument("--seed", type=integer(0), help="random seed: same seed, same log (default 0)")
    p.add_argument("--config", help="JSON file of UAWorldConfig fields")
    p.add_argument("--set", action="append", type=_parse_override, metavar="FIELD=VALUE",
                   help="override one UAWorldConfig field, e.g. --set click_rate=0.005 "
                   "(repeatable; VALUE is JSON)")


def _sample_configs(args: argparse.Namespace, mode: str = "asa"):
    from rliv_ray.data import io
    from rliv_ray.mdp.asa import ASAConfig
    from rliv_ray.mdp.samples import SampleConfig
    from rliv_ray.mdp.stitching import StitchConfig

    length = args.sequence_length
    if length is None:
        length = io.read_manifest(args.logs).get("world", {}).get("sequence_length", 30)
    try:
        stitch = StitchConfig(sequence_length=length, content=args.content,
                              window_ms=args.window_ms)
        asa = ASAConfig(epochs=args.asa_epochs, targets=args.asa_targets,
                        max_train_tuples=args.max_train_tuples, seed=args.seed)
        return SampleConfig(stitch=stitch, mode=mode), asa
    except ValueError as err:
        raise CLIError(str(err)) from err


def _log_run(args, name: str, report: dict) -> None:
    from rliv_ray.data import uris
    from rliv_ray.tracking import tracking_run

    with tracking_run(args.tracking_uri, f"{name}__{uris.name(args.logs)}__{args.seed}") as tr:
        tr.log_params({"logs": uris.absolute(args.logs), "workers": report["workers"],
                       "sample_path": report["sample_path"], "sample": report["sample_config"],
                       "asa": report["asa_config"]})
        tr.log_metrics({"stitching": report["stitching"], "table4": report["table4"],
                        "epsilon": report["epsilon"], "time": report["seconds"]})


def _sample_path(args: argparse.Namespace):
    """Where the per-file work runs (``--workers``, ``--address``), announced in one line."""
    from rliv_ray.data import io
    from rliv_ray.mdp.pipeline import sample_path

    path = sample_path(args.workers, address=args.address, files=len(io.log_files(args.logs)))
    print(path.describe(), flush=True)
    return path


def cmd_build_samples(args: argparse.Namespace) -> int:
    from rliv_ray.mdp.pipeline import build_samples
    from rliv_ray.mdp.report import format_report

    mode = "no_asa" if args.no_asa else "hybrid" if args.hybrid else "asa"
    config, asa = _sample_configs(args, mode)
    report = build_samples(args.logs, args.out, config=config, asa_config=asa,
                           workers=_sample_path(args), address=args.address,
                           overwrite=args.overwrite, progress=not args.quiet)
    print(format_report(report))
    print(f"\nwrote {report['samples_written']:,} samples ({mode}) to {args.out}/samples in "
          f"{report['seconds']['total_s']:.1f}s")
    _log_run(args, "build-samples", report)
    return 0


def cmd_asa_report(args: argparse.Namespace) -> int:
    from rliv_ray.mdp.pipeline import asa_report
    from rliv_ray.mdp.report import format_report

    config, asa = _sample_configs(args)
    report = asa_report(args.logs, config=config, asa_config=asa, workers=_sample_path(args),
                        address=args.address, progress=not args.quiet)
    print(format_report(report))
    _log_run(args, "asa-report", report)
    return 0


def _workers(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        workers = int(text)
    except ValueError:
        workers = -1
    if workers < 0:
        raise argparse.ArgumentTypeError(f"expected 'auto' or an integer >= 0, got {text!r}")
    return workers


def _add_sample_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=_workers, default="auto", metavar="auto|N",
                   help="auto (default): Ray Data on a cluster (--address) or where this "
                   "machine and log allow 3+ tasks at once, else this process, which Ray "
                   "cannot beat there; N >= 1: Ray Data with N tasks at a time; 0: this "
                   "process, without Ray. Prints the choice")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--sequence-length", type=integer(1),
                   help="L of the truncated behaviour sequence "
                   "(default: the world's setting, else 30)")
    p.add_argument("--content", choices=["exposures", "engagements"], default="exposures",
                   help="what the sequence stores (default: every exposure)")
    p.add_argument("--window-ms", type=integer(0), default=2_000,
                   help="half-width of the stitching time window (default 2000)")
    p.add_argument("--asa-epochs", type=integer(1), default=10,
                   help="ASA training epochs (default 10)")
    p.add_argument("--asa-targets", choices=["pair_and_gap", "all_dynamic"],
                   default="pair_and_gap", help="what ASA predicts (default: the pair features "
                   "and the gap; all_dynamic adds user and author features)")
    p.add_argument("--max-train-tuples", type=integer(1), default=1_000_000,
                   help="stitched tuples sampled to train ASA (default 1,000,000)")
    p.add_argument("--seed", type=integer(0), default=0, help="seed of ASA and of the tuple sample")
    p.add_argument("--tracking-uri", help="log to MLflow at this URI (default: "
                   "$RLIV_TRACKING_URI, else none)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="rliv", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"rliv-ray {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, func, help_text):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        p.add_argument("--quiet", action="store_true", help="no progress display")
        return p

    p = add("generate", cmd_generate,
            "Simulate the synthetic user-author world under its logging policy and write a "
            "bucketed Parquet log (OUT/log), its ground truth (OUT/truth) and OUT/manifest.json.")
    p.add_argument("out", help="output dataset directory")
    p.add_argument("--rows", type=integer(1),
                   help="stop at exactly this many exposures (the number "
                   "of users is derived from a pilot run); default: every user's full horizon")
    p.add_argument("--files", type=integer(1), help="number of user buckets / Parquet files "
                   "(default: one per 500,000 rows)")
    _add_world_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")

    p = add("build-samples", cmd_build_samples,
            "Build RL sample shards (s, a, r_*, s_hat', stitched, s_true', gap, group) from a "
            "log: stitch each interaction to its pair's previous one in the truncated behaviour "
            "sequence, train ASA on the stitched tuples, predict s_hat' for every interaction. "
            "Writes OUT/samples, OUT/asa.pt and OUT/manifest.json.")
    p.add_argument("logs", help="log dataset directory, folder of Parquet files, or one file")
    p.add_argument("out", help="output directory")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--no-asa", action="store_true", help="the paper's w/o-ASA ablation: "
                      "only stitched interactions, with their true next states")
    mode.add_argument("--hybrid", action="store_true", help="true next state where stitched, "
                      "ASA's elsewhere (our extension)")
    _add_sample_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")

    p = add("asa-report", cmd_asa_report,
            "Stitching success rates, ASA vs the rule-based approximation on held-out users "
            "(paper Table 4: MSE and cosine-similarity loss) and the true approximation error "
            "epsilon for every interaction with a next one. Writes nothing.")
    p.add_argument("logs", help="log dataset directory, folder of Parquet files, or one file")
    _add_sample_options(p)

    p = add("check-world", cmd_check_world,
            "Check that the world has a long-term lever: simulate the RankingModel (constant "
            "weight), an immediate-reward-greedy policy and an oracle that knows the latent "
            "pair state, and compare long-term value per user with paired 95%% intervals over "
            "seeds. Exit 1 if the oracle does not clearly beat both.")
    p.add_argument("--seeds", type=integer(2), default=3, help="number of seeds (default 3)")
    _add_world_options(p)

    from rliv_ray.cli_models import add_model_parsers

    add_model_parsers(sub, _parse_override)
    from rliv_ray.cli_live import add_live_parsers

    add_live_parsers(add, _parse_override)
    from rliv_ray.cli_eval import add_eval_parsers

    add_eval_parsers(add, _parse_override)
    from rliv_ray.cli_ui import add_ui_parsers

    add_ui_parsers(add)
    from rliv_ray.cli_sweep import add_sweep_parsers

    add_sweep_parsers(add)
    from rliv_ray.cli_ope import add_ope_parser

    add_ope_parser(add)
    from rliv_ray.cli_grade import add_grade_parser

    add_grade_parser(add, _parse_override)

    from rliv_ray.cli_submit import add_submit_parsers

    add_submit_parsers(add)

    p = add("convert-kuairand", cmd_convert_kuairand,
            "Convert the published KuaiRand CSV files (Pure, 1K or 27K) into the log schema, "
            "streamed in chunks. KuaiRand has no gift label, no ranker score and no logging "
            "propensities: those columns are written entirely null and declared absent.")
    p.add_argument("src", help="folder with log_standard_*.csv, user_features_*.csv and "
                   "video_features_basic_*.csv")
    p.add_argument("out", help="output dataset directory")
    p.add_argument("--buckets", type=integer(1), default=16,
                   help="user buckets = output files; use "
                   "64+ for KuaiRand-27K so one bucket fits in memory (default 16)")
    p.add_argument("--chunk-rows", type=integer(1), default=1_000_000,
                   help="CSV rows read per chunk (default 1,000,000)")
    p.add_argument("--include-random", action="store_true",
                   help="also convert log_random_*.csv (randomly exposed videos)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")

    p = add("validate", cmd_validate,
            "Check an interaction or live-stream log's schema, dtypes, nulls, label values, "
            "probabilities and per-user order; print the first problem (file, column, row) "
            "and exit 1, or print 'ok'.")
    p.add_argument("path", help="dataset directory, folder of Parquet files, or one file")

    p = add("summary", cmd_summary,
            "Rows, users, authors, pairs, label rates, and the share of interactions whose "
            "pair's previous interaction is still in the user's truncated behaviour sequence.")
    p.add_argument("path", help="dataset directory, folder of Parquet files, or one file")
    p.add_argument("--sequence-length", type=integer(1), help="L, the behaviour sequence length "
                   "(default: the world's setting, else 100)")
    p.add_argument("--content", choices=["exposures", "engagements"], default="exposures",
                   help="what the sequence stores: every exposure, or only engagements")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--tracking-uri", help="log the summary to MLflow at this URI, e.g. "
                   "sqlite:////abs/path/mlflow.db (default: $RLIV_TRACKING_URI, else none)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``rliv ARGV``: the exit status. Every error is one line on stderr (:mod:`rliv_ray.checks`
    says which status it gets); arguments and the environment are checked before any work."""
    import os

    from rliv_ray.checks import DEBUG_ENV, EXIT_BUG, classify, interrupted, one_line, preflight
    from rliv_ray.interrupts import sigterm_as_interrupt

    args = build_parser().parse_args(argv)
    try:
        with sigterm_as_interrupt():  # SIGTERM cleans up as Ctrl-C does
            preflight(args)  # tracking URI, OUT's location, cluster address: before any work
            return args.func(args)
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: 130 or 143
        code, message = interrupted(err)
        print(f"rliv {args.command}: {message}", file=sys.stderr)
        return code
    except Exception as err:  # noqa: BLE001 - every error becomes one line
        known = classify(err)
        if known is None and os.environ.get(DEBUG_ENV):
            raise
        code, message = known or (EXIT_BUG, f"unexpected {type(err).__name__}: "
                                  f"{one_line(str(err), 300)} (a bug in rliv: rerun with "
                                  f"{DEBUG_ENV}=1 for the traceback, and report it)")
        print(f"rliv {args.command}: error: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    # Run the imported module's main: under ``python -m`` this file is ``__main__``, and the
    # sub-command modules' ``from rliv_ray.cli import CLIError`` is another class than ours.
    from rliv_ray.cli import main as package_main

    sys.exit(package_main())
