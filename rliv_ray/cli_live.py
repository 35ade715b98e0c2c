"""The live-stream allocation (SL-MGAC) data subcommands, registered by :mod:`rliv_ray.cli`.

    rliv generate-live OUT [--users N] [--days D] [--seed S] [--files F] [--set FIELD=VALUE]
                           [--config JSON] [--overwrite]     synthetic live world -> OUT/log
    rliv build-live-samples LOGS OUT [--groups K] [--test-share 0.2] [--seed 0]
                                     [--terminal user_end|none|session] [--overwrite]
                                     SL-MGAC samples of train users -> OUT/train, test -> OUT/test
    rliv check-live-world [--users N] [--seeds S] [--tune-seeds T] [--gamma 0.9]
                          [--discount request|session] [--set FIELD=VALUE] [--out DIR]
                                     does the world's lever show under the trained objective?
"""

from __future__ import annotations

import argparse

from rliv_ray.checks import integer, number


def add_live_parsers(add, parse_override) -> None:
    """Register the live subcommands with ``add(name, func, help_text) -> ArgumentParser``
    (the helper of ``cli.build_parser``, which adds --quiet)."""
    p = add("generate-live", cmd_generate_live,
            "Simulate the synthetic live-stream allocation world (users scrolling a video feed, "
            "a live stream injected or not per request) under its logging policy and write a "
            "bucketed Parquet log (OUT/log) and OUT/manifest.json.")
    p.add_argument("out", help="output dataset directory")
    p.add_argument("--users", type=integer(1), help="number of users (default 2000)")
    p.add_argument("--days", type=integer(1), help="days simulated (default 2)")
    p.add_argument("--seed", type=integer(0), help="random seed: same seed, same log (default 0)")
    p.add_argument("--files", type=integer(1), help="number of user buckets / Parquet files "
                   "(default: about 200,000 rows each)")
    p.add_argument("--config", help="JSON file of LiveWorldConfig fields")
    p.add_argument("--set", action="append", type=parse_override, metavar="FIELD=VALUE",
                   help="override one LiveWorldConfig field, e.g. --set beta=0.3 "
                   "(repeatable; VALUE is JSON)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")

    p = add("build-live-samples", cmd_build_live_samples,
            "Split a live-stream log's users 4:1 by a hash of their id, compute the K activity "
            "groups' edges of 3-week live watch time on the train users, and write SL-MGAC "
            "transitions of the train users (OUT/train), the held-out users' raw rows "
            "(OUT/test) and OUT/manifest.json, one log file at a time.")
    p.add_argument("logs", help="log dataset directory, folder of Parquet files, or one file")
    p.add_argument("out", help="output directory")
    p.add_argument("--groups", type=integer(1), default=6,
                   help="K, the number of activity groups (default 6)")
    p.add_argument("--test-share", type=number(0.0, 1.0, low_open=True, high_open=True),
                   default=0.2,
                   help="share of users held out for evaluation (default 0.2)")
    p.add_argument("--seed", type=integer(0), default=0, help="seed of the user split (default 0)")
    p.add_argument("--terminal", metavar="{user_end,none,session}",
                   help="which transitions end the trajectory: the user's last request in the "
                   "log (user_end, default: the paper's infinite MDP), none (the last row "
                   "bootstraps from itself) or every session end (session, the old samples)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


    _add_check_parser(add, parse_override)


def _add_check_parser(add, parse_override) -> None:
    p = add("check-live-world", cmd_check_live_world,
            "Check that the live-stream world has a long-term lever under the trained objective "
            "(gamma per request or per session, terminal at the user's last request): the "
            "long-horizon oracle against the immediate oracle and a myopic threshold rule "
            "tuned on separate seeds, paired 95%% intervals over seeds, with the video time "
            "each policy costs. Exit 1 with one line if the oracle does not beat both by more "
            "than the interval.")
    p.add_argument("--users", type=integer(1), default=4000, help="users per seed (default 4000)")
    p.add_argument("--days", type=integer(1), help="days simulated (default: the world's, 2)")
    p.add_argument("--seed", type=integer(0), help="first evaluation seed (default 0)")
    p.add_argument("--seeds", type=integer(2), default=6, help="evaluation seeds (default 6)")
    p.add_argument("--tune-seeds", type=integer(1), default=2,
                   help="separate seeds that tune the threshold and the oracle (default 2)")
    p.add_argument("--gamma", type=number(0.0, 1.0, high_open=True), default=0.9,
                   help="discount (default 0.9)")
    p.add_argument("--discount", choices=["request", "session"], default="request",
                   help="gamma on every transition (request, the samples' default) or only "
                   "into a new session (session)")
    p.add_argument("--config", help="JSON file of LiveWorldConfig fields")
    p.add_argument("--set", action="append", type=parse_override, metavar="FIELD=VALUE",
                   help="override one LiveWorldConfig field (repeatable; VALUE is JSON)")
    p.add_argument("--out", help="write check.json and check.md to this folder")


def live_world_config(args: argparse.Namespace):
    """LiveWorldConfig from --config, --set and the shortcut options, validated."""
    from rliv_ray.cli import world_config
    from rliv_ray.data.live_config import LiveWorldConfig

    return world_config(args, LiveWorldConfig)


def cmd_generate_live(args: argparse.Namespace) -> int:
    from rliv_ray.cli import CLIError
    from rliv_ray.data.live_generate import generate_live_world

    config = live_world_config(args)
    if args.files is not None and args.files < 1:
        raise CLIError(f"--files must be >= 1, got {args.files}")
    m = generate_live_world(args.out, config, n_files=args.files, overwrite=args.overwrite,
                            progress=not args.quiet)
    days = f"{config.days} day" + "s" * (config.days != 1)
    print(f"wrote {m['rows']:,} requests of {m['users']:,} users ({days}) in {m['files']} files "
          f"to {args.out} in {m['seconds']:.1f}s; a live stream was on air "
          f"for {100 * m['live_supply_share']:.1f}% of the requests and the logging policy "
          f"injected one into {100 * m['injection_share']:.1f}%")
    return 0


def cmd_build_live_samples(args: argparse.Namespace) -> int:
    from rliv_ray.data.live_build import build_live_samples

    terminal = {} if args.terminal is None else {"terminal": args.terminal}
    m = build_live_samples(args.logs, args.out, groups=args.groups, test_share=args.test_share,
                           seed=args.seed, overwrite=args.overwrite, progress=not args.quiet,
                           **terminal)
    edges = ", ".join(f"{e:.1f}" for e in m["edges"])
    train, test = m["train"], m["test"]
    print(f"wrote {train['rows']:,} train samples of {train['users']:,} users and "
          f"{test['rows']:,} test rows of {test['users']:,} held-out users from {m['files']} "
          f"files to {args.out} in {m['seconds']:.1f}s; {m['groups']} activity groups, edges "
          f"[{edges}] s of 3-week live watch time (train users); terminal={m['terminal']}")
    return 0


def cmd_check_live_world(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from rliv_ray.cli import EXIT_INVALID, CLIError
    from rliv_ray.data.live_check import (
        LiveCheckSettings,
        check_live_world,
        failure_line,
        format_check,
    )

    users, args.users = args.users, None  # --users sizes the check, not the world's n_users
    config = live_world_config(args)
    try:
        settings = LiveCheckSettings(users=users, seeds=args.seeds, tune_seeds=args.tune_seeds,
                                     gamma=args.gamma, discount=args.discount)
    except ValueError as err:
        raise CLIError(str(err)) from err
    result = check_live_world(config, settings)
    table = format_check(result)
    print(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "check.json").write_text(json.dumps(result, indent=2) + "\n")
        (out / "check.md").write_text(table + "\n")
    if not result["passed"]:
        raise CLIError(failure_line(result), code=EXIT_INVALID)
    rows = {r["policy"]: r for r in result["rows"]}
    print("long-term lever: yes, the long-horizon oracle beats the immediate oracle and the "
          f"tuned threshold ({rows['myopic threshold']['parameter']}) by more than the interval")
    return 0
