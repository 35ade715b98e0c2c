"""``rliv ope``: off-policy estimates of one policy on a live-stream allocation log, streamed.

    rliv ope LOGS --policy RUN_OR_SPEC [--estimators ips,snips,ncis,dm,dr] [--epsilon 0.2]
             [--beta B] [--cap C] [--ncis-cap 10] [--tau 10] [--gamma 1] [--bootstrap 200]
             [--workers auto|N] [--address ADDR] [--out DIR] [--tracking-uri URI]

LOGS is a `rliv generate-live` output, a folder of its Parquet files, or a `rliv
build-live-samples` output (its held-out users). The log is read file by file in blocks of
whole users and reduced to sums (``rliv_ray.ope.streaming``), so memory does not grow with it.
Invalid data (a missing or zero propensity, a policy over another action space, a log of
another world) ends with one line and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from rliv_ray.checks import POSITIVE, PROBABILITY, integer, number

UNITS = {"rows": "per request", "trajectories": "per user"}
ESTIMATORS = ("ips", "snips", "dm", "dr", "sndr", "switch_dr", "ncis", "ncis_trajectory",
              "ncis_per_decision", "pdis")
DEFAULT_ESTIMATORS = ("ips", "snips", "ncis", "dm", "dr")
DEFAULT_TAU = 10.0
"""rliv_ray.ope.streaming's, spelled out: importing it (rliv_ray.ope) takes ~1 s, too much for
building the parser; tests/unit/test_cli_ope.py checks that they agree."""


def add_ope_parser(add) -> None:
    """Register ``rliv ope`` with ``add(name, func, help_text)`` (``cli.build_parser``)."""
    from rliv_ray.cli import _workers

    p = add("ope", cmd_ope,
            "Off-policy estimates of one policy's value on a live-stream allocation log "
            "(SL-MGAC's inject decision per request), streamed: each file is read in blocks of "
            "whole users and reduced to sums, so memory does not grow with the log. Prints "
            "each estimate with a 95%% Poisson-bootstrap interval, its effective sample size "
            "and n.")
    p.add_argument("logs", help="a `rliv generate-live` output, a folder of its Parquet files, "
                   "or a `rliv build-live-samples` output (its held-out users in test/)")
    p.add_argument("--policy", required=True, metavar="SPEC",
                   help="a `rliv train sl-mgac` run (or its policy.pt, or one of its "
                   "checkpoints), torchscript:FILE, onnx:FILE or python:MODULE:FUNC (runs "
                   "that code)")
    p.add_argument("--estimators", default=",".join(DEFAULT_ESTIMATORS),
                   help=f"comma-separated, of {', '.join(ESTIMATORS)} (default "
                   f"{','.join(DEFAULT_ESTIMATORS)}); the ncis and pdis kinds are per user")
    p.add_argument("--epsilon", type=PROBABILITY, default=0.2, help="trained policies: Eq. 16's "
                   "exploration (default 0.2, the paper's)")
    p.add_argument("--stochastic", action="store_true", help="trained policies: act with the "
                   "method's own P(inject) instead of greedily (Eq. 16)")
    p.add_argument("--beta", type=number(0.0),
                   help="the reward's cost weight (Eq. 5) (default: the "
                   "log's world's, from its manifest)")
    p.add_argument("--cap", type=number(0.0, low_open=True, allow_inf=True), default=math.inf,
                   help="weight clip of ips, snips and "
                   "dr (default inf: none)")
    p.add_argument("--ncis-cap", type=number(0.0, low_open=True, allow_inf=True), default=10.0,
                   help="cap of the ncis kinds "
                   "(default 10)")
    p.add_argument("--tau", type=POSITIVE, default=DEFAULT_TAU, help="switch_dr's threshold "
                   f"(default {DEFAULT_TAU:g})")
    p.add_argument("--gamma", type=number(0.0, 1.0), default=1.0, help="discount of the per-user "
                   "estimators (default 1: cumulative reward)")
    p.add_argument("--bootstrap", type=integer(0), default=200, help="Poisson bootstrap replicates "
                   "(default 200; 0: no interval)")
    p.add_argument("--seed", type=integer(0), default=0, help="seed of the bootstrap (default 0)")
    p.add_argument("--workers", type=_workers, default="auto", metavar="auto|N",
                   help="auto (default): Ray Data on a cluster (--address) or where this "
                   "machine and log allow 3+ tasks at once, else this process; N >= 1: Ray Data "
                   "with N tasks (one per file) at a time; 0: this process, without Ray")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--batch-rows", type=integer(1), default=65_536, help="rows read at a time "
                   "(default 65536)")
    p.add_argument("--out", help="also write ope.json and ope.md to this directory")
    p.add_argument("--tracking-uri", help="log the estimates to MLflow at this URI (default: "
                   "$RLIV_TRACKING_URI, else none)")


def _settings(args: argparse.Namespace):
    from rliv_ray.cli import CLIError
    from rliv_ray.ope.streaming import StreamSettings
    from rliv_ray.ope.targets import TargetSpec

    names = tuple(e.strip() for e in args.estimators.split(",") if e.strip())
    try:
        settings = StreamSettings(estimators=names, cap=args.cap, ncis_cap=args.ncis_cap,
                                  tau=args.tau, gamma=args.gamma, n_bootstrap=args.bootstrap,
                                  seed=args.seed)
        target = TargetSpec(args.policy, epsilon=args.epsilon, greedy=not args.stochastic)
    except ValueError as err:
        raise CLIError(str(err)) from err
    if args.batch_rows < 1:
        raise CLIError(f"--batch-rows must be >= 1, got {args.batch_rows}")
    return settings, target


def _beta(args: argparse.Namespace) -> float:
    from rliv_ray.cli import CLIError
    from rliv_ray.data import io

    if args.beta is not None:
        return args.beta
    manifest = io.read_manifest(args.logs) if Path(args.logs).is_dir() else {}
    source = manifest.get("source")  # build-live-samples: the log's manifest
    world = manifest.get("world") or (source.get("world") if isinstance(source, dict)
                                      else None) or {}
    if "beta" not in world:
        raise CLIError("give --beta (Eq. 5's cost weight): the log's manifest does not name "
                       "its world")
    return float(world["beta"])


def cmd_ope(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from rliv_ray.cli import EXIT_INVALID, CLIError
    from rliv_ray.mdp.pipeline import sample_path
    from rliv_ray.ope.scan import check_schema, ope_files, scan
    from rliv_ray.ope.streaming import finalize
    from rliv_ray.ope.targets import OPEInputError, load_target

    settings, spec = _settings(args)
    files, what = ope_files(args.logs)
    began = time.perf_counter()
    try:
        check_schema(files[0], pq.read_schema(files[0]))  # another world: say so first
        beta = _beta(args)
        target = load_target(spec)
        path = sample_path(args.workers, address=args.address, files=len(files))
        where = (f"Ray Data, {path.workers} tasks at a time" if path.workers
                 else "in this process")
        stats = scan(files, spec, settings, beta=beta, workers=path.workers,
                     address=args.address, progress=not args.quiet, batch_rows=args.batch_rows)
        result = finalize(stats, settings, has_model=target.reward_note is None)
    except OPEInputError as err:
        raise CLIError(str(err), EXIT_INVALID) from err
    except ValueError as err:  # the support check over the whole log
        raise CLIError(str(err), EXIT_INVALID) from err
    seconds = time.perf_counter() - began
    report = {"logs": str(Path(args.logs).resolve()), "what": what, "files": len(files),
              "policy": target.label, "beta": beta, "rows": result.n_rows,
              "users": int(stats["users"][0]), "users_mid_history": int(stats["mid_history"][0]),
              "engine": where, "seconds": round(seconds, 2),
              "settings": _plain_settings(settings), "estimates": _records(result),
              "skipped": _skip_lines(result, target), "capped_share": result.capped_share}
    print(_headline(report))
    print(format_table(report["estimates"]))
    for name, line in report["skipped"].items():
        print(f"{name}: not estimated: {line}")
    if report["users_mid_history"]:
        print(f"note: {report['users_mid_history']:,} users start at {'user_request_idx'} > 0 "
              "in their file: their earlier requests (elsewhere, or before the log) are not "
              "seen, and their session state counts from their first row here")
    _write(args, report)
    return 0


def _plain_settings(settings) -> dict:
    from dataclasses import asdict

    return {k: (list(v) if isinstance(v, tuple) else v if not (isinstance(v, float)
            and math.isinf(v)) else "inf") for k, v in asdict(settings).items()}


def _records(result) -> list[dict]:
    def plain(x):
        return None if isinstance(x, float) and math.isnan(x) else x

    return [{"estimator": e.estimator, "value": e.value, "ci_low": plain(e.ci_low),
             "ci_high": plain(e.ci_high), "ess": e.effective_sample_size, "n": e.n,
             "unit": UNITS[e.unit], "level": e.level} for e in result.estimates]


def _skip_lines(result, target) -> dict[str, str]:
    return {name: (target.reward_note or reason) if reason == "no reward model" else reason
            for name, reason in result.skipped.items()}


def _headline(report: dict) -> str:
    rate = report["rows"] / report["seconds"] if report["seconds"] > 0 else 0.0
    boot = report["settings"]["n_bootstrap"]
    return (f"ope: {report['rows']:,} requests of {report['users']:,} users in "
            f"{report['files']} files ({report['what']} {report['logs']}); policy "
            f"{report['policy']}; reward Eq. 5 with beta {report['beta']:g}; {boot} Poisson "
            f"bootstrap replicates; {report['engine']}; {report['seconds']:.1f}s "
            f"({rate:,.0f} rows/s)")


def _cells(record: dict) -> list[str]:
    low, high = record["ci_low"], record["ci_high"]
    interval = "-" if low is None else f"[{low:.4g}, {high:.4g}]"
    return [record["estimator"], f"{record['value']:.4g}", interval,
            f"{record['ess']:,.1f}", f"{record['n']:,}", record["unit"]]


HEADER = ["estimator", "value", "95% interval", "ESS", "n", "unit"]


def format_table(records: list[dict]) -> str:
    """Plain text, aligned: estimator left, numbers right."""
    table = [HEADER, *(_cells(r) for r in records)]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADER))]

    def line(cells):
        return "  ".join(c.ljust(w) if i in (0, 5) else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join([line(table[0]), "  ".join("-" * w for w in widths),
                      *(line(r) for r in table[1:])])


def format_markdown(report: dict) -> str:
    lines = [f"# rliv ope: {report['policy']}", "", _headline(report), "",
             "| " + " | ".join(HEADER) + " |", "| --- | ---: | ---: | ---: | ---: | --- |"]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in report["estimates"]]
    lines += [f"\n{name}: not estimated: {line}" for name, line in report["skipped"].items()]
    return "\n".join(lines) + "\n"


def _write(args: argparse.Namespace, report: dict) -> None:
    from rliv_ray.tracking import tracking_run

    with tracking_run(args.tracking_uri, f"ope__{Path(args.logs).name}") as tracker:
        tracker.log_params({k: report[k] for k in ("logs", "policy", "beta", "settings")})
        tracker.log_metrics({"ope": {r["estimator"]: {"value": r["value"], "ess": r["ess"],
                                                       **({"ci_low": r["ci_low"],
                                                           "ci_high": r["ci_high"]}
                                                          if r["ci_low"] is not None else {})}
                                     for r in report["estimates"]},
                             "time": {"seconds": report["seconds"]}})
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "ope.json").write_text(json.dumps(report, indent=2) + "\n")
            (out / "ope.md").write_text(format_markdown(report))
            for name in ("ope.json", "ope.md"):
                tracker.log_artifact(out / name)
            print(f"wrote ope.json and ope.md to {out}")
