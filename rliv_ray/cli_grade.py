"""``rliv ope-grade``: every off-policy estimator graded against the truth on both synthetic
worlds (rliv_ray/ope/grade*.py).

    rliv ope-grade [--worlds live,rliv-ua] [--seeds 1] [--live-users 300] [--ua-users 100]
                   [--policy NAME=SPEC ...] [--bootstrap 50] [--out DIR] [--overwrite]

For each world and seed: a log under the logging policy, the true value of every policy of
the family by rollout on the same random numbers, every estimator on the log; then per
estimator its relative error, interval coverage, Spearman and Kendall rank correlation with
the truth and the regret of choosing by it. Prints the tables; --out writes grade.md,
grade.json and grade.png. The defaults are tiny (a minute or two on two cores); the
README's tables come from benchmarks/ope_grade.py.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from rliv_ray.checks import integer, number

WORLDS = ("live", "rliv-ua")


def add_grade_parser(add, parse_override) -> None:
    """Register ``rliv ope-grade`` with ``add(name, func, help_text)`` (``cli.build_parser``)."""
    p = add("ope-grade", cmd_ope_grade,
            "Grade every off-policy estimator against the truth on the live-stream world "
            "(SL-MGAC) and the user-author world (RLIV-UA): a family of policies (logging, "
            "greedy, oracles, noisy mixtures, trained runs) is estimated from a logged run and "
            "rolled out on the same random numbers; per estimator: relative error, 95%% "
            "interval coverage, Spearman and Kendall rank correlation with the truth and the "
            "regret of choosing its best policy. Tiny defaults; see the README for the scale "
            "of its tables.")
    p.add_argument("--worlds", default=",".join(WORLDS),
                   help=f"comma-separated, of {', '.join(WORLDS)} (default both)")
    p.add_argument("--seeds", type=integer(1), default=1,
                   help="seeds per world: a world, a log and "
                   "the rollouts per seed (default 1)")
    p.add_argument("--first-seed", type=integer(0), default=0, help="seeds run from this one "
                   "(default 0)")
    p.add_argument("--live-users", type=integer(1), default=300, help="live world: users (default "
                   "300)")
    p.add_argument("--live-days", type=integer(1), default=1, help="live world: days (default 1)")
    p.add_argument("--live-gamma", type=number(0, 1), default=0.9, help="live world: discount per "
                   "request of J (default 0.9, SL-MGAC's objective)")
    p.add_argument("--ua-users", type=integer(1), default=100, help="user-author world: users "
                   "(default 100)")
    p.add_argument("--ua-days", type=integer(1), default=2, help="user-author world: days "
                   "(default 2)")
    p.add_argument("--ua-gamma", type=number(0, 1), default=1.0, help="user-author world: discount "
                   "per request of J (default 1: the LTV over the horizon)")
    p.add_argument("--mix", default="0.25,0.5,0.75", help="rates at which the logging policy "
                   "is mixed with the greedy policy (the immediate oracle in the live world) "
                   "(default 0.25,0.5,0.75)")
    p.add_argument("--policy", action="append", metavar="NAME=SPEC", default=[],
                   help="also grade a trained policy: a `rliv train sl-mgac` run (or its "
                   "policy.pt; live world) or rliv:OUT[@RULE] (a `rliv train rliv-ua` output; "
                   "user-author world); repeatable")
    p.add_argument("--epsilon", type=number(0, 1), default=0.2,
                   help="trained SL-MGAC policies: Eq. "
                   "16's exploration (default 0.2)")
    p.add_argument("--ua-epsilon", type=number(0, 1), default=0.0, help="trained RLIV-UA policies: "
                   "per-candidate exploration (default 0, as `rliv evaluate`)")
    p.add_argument("--estimators", help="comma-separated subset (default: all: ips, snips, "
                   "ncis, dm, dr, sndr, switch_dr, ncis_stepwise, ncis_trajectory, "
                   "ncis_per_decision, pdis, wpdis, dr_steps, wdr, magic, fqe)")
    p.add_argument("--bootstrap", type=integer(0), default=50, help="bootstrap resamples per "
                   "interval (default 50; 200 for a report)")
    p.add_argument("--no-fqe", action="store_true", help="skip FQE (the DR family then uses "
                   "the per-decision reward model)")
    p.add_argument("--fqe-iterations", type=integer(1), default=30, help="FQE's fitted iterations "
                   "(default 30)")
    p.add_argument("--fqe-steps", type=integer(1), default=20,
                   help="FQE's Adam steps per iteration "
                   "(default 20)")
    p.add_argument("--fqe-hidden", type=integer(1), default=32,
                   help="FQE's Q network hidden width, "
                   "one layer (default 32)")
    p.add_argument("--fqe-refits", type=integer(0), default=0,
                   help="FQE's bootstrap refits for its "
                   "interval (default 0: no interval)")
    p.add_argument("--live-set", action="append", type=parse_override, metavar="FIELD=VALUE",
                   help="override a LiveWorldConfig field (repeatable)")
    p.add_argument("--ua-set", action="append", type=parse_override, metavar="FIELD=VALUE",
                   help="override a UAWorldConfig field (repeatable)")
    p.add_argument("--out", help="write grade.md, grade.json and grade.png to this directory")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def _floats(text: str, name: str) -> tuple[float, ...]:
    from rliv_ray.cli import CLIError

    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise CLIError(f"{name} must be comma-separated numbers, got {text!r}") from None
    if not all(0 < v < 1 for v in values):
        raise CLIError(f"{name} rates must lie in (0, 1), got {text!r}")
    return values


def _is_ua_spec(spec: str) -> bool:
    return spec.startswith("rliv:") or (Path(spec).is_dir()
                                        and (Path(spec) / "scorer.pt").is_file())


def _policies(texts: list[str]) -> dict[str, dict[str, str]]:
    """{world: {name: spec}} from --policy NAME=SPEC."""
    from rliv_ray.cli import CLIError

    out: dict[str, dict[str, str]] = {world: {} for world in WORLDS}
    for text in texts:
        name, sep, spec = text.partition("=")
        if not sep or not name or not spec:
            raise CLIError(f"--policy expects NAME=SPEC, got {text!r}")
        world = "rliv-ua" if _is_ua_spec(spec) else "live"
        if any(name in named for named in out.values()):
            raise CLIError(f"--policy name '{name}' is given twice")
        out[world][name] = spec
    return out


def _settings(args: argparse.Namespace):
    from rliv_ray.cli import CLIError
    from rliv_ray.ope.fqe import FQEConfig
    from rliv_ray.ope.grade_live import LiveGradeSettings
    from rliv_ray.ope.grade_suite import LONG_TERM, PER_DECISION, SuiteSettings
    from rliv_ray.ope.grade_ua import UAGradeSettings

    worlds = tuple(w.strip() for w in args.worlds.split(",") if w.strip())
    unknown = [w for w in worlds if w not in WORLDS]
    if unknown or not worlds:
        raise CLIError(f"--worlds must name some of {', '.join(WORLDS)}, got {args.worlds!r}")
    if args.seeds < 1:
        raise CLIError(f"--seeds must be >= 1, got {args.seeds}")
    mix = _floats(args.mix, "--mix")
    estimators = (PER_DECISION + LONG_TERM if not args.estimators else
                  tuple(e.strip() for e in args.estimators.split(",") if e.strip()))
    for name, value in (("--live-users", args.live_users), ("--live-days", args.live_days),
                        ("--ua-users", args.ua_users), ("--ua-days", args.ua_days)):
        if value < 1:
            raise CLIError(f"{name} must be >= 1, got {value}")
    try:
        fqe = None if args.no_fqe else FQEConfig(
            iterations=args.fqe_iterations, steps_per_iteration=args.fqe_steps,
            batch_size=512, hidden=(args.fqe_hidden,))
        suites = {world: SuiteSettings(gamma=gamma, n_bootstrap=args.bootstrap, fqe=fqe,
                                       fqe_refits=args.fqe_refits, estimators=estimators)
                  for world, gamma in (("live", args.live_gamma), ("rliv-ua", args.ua_gamma))}
        live = LiveGradeSettings(args.live_users, args.live_days, args.live_gamma, mix,
                                 dict(args.live_set or []))
        ua = UAGradeSettings(args.ua_users, args.ua_days, args.ua_gamma, mix,
                             dict(args.ua_set or []))
        live.config(args.first_seed), ua.config(args.first_seed)  # validate the worlds now
    except (TypeError, ValueError) as err:
        raise CLIError(f"invalid setting: {err}") from err
    if not 0 <= args.epsilon <= 1 or not 0 <= args.ua_epsilon <= 1:
        raise CLIError("--epsilon and --ua-epsilon must lie in [0, 1]")
    return worlds, suites, live, ua


def _live_extra(specs: dict[str, str], epsilon: float):
    """A factory of the trained live policies for a world config (checked once, now)."""
    from rliv_ray.cli import EXIT_INVALID, CLIError
    from rliv_ray.data.live_world import LIVE_FEATURE_NAMES, USER_FEATURE_NAMES
    from rliv_ray.ope.targets import OPEInputError, TargetSpec, load_target

    targets = {}
    for name, spec in specs.items():
        try:
            target = load_target(TargetSpec(spec, epsilon=epsilon))
            if not hasattr(target, "policy"):
                raise OPEInputError(f"{spec}: rliv ope-grade grades trained `rliv train "
                                    "sl-mgac` runs in the live world (an external model's "
                                    "probabilities are not known on unlogged requests)")
            target.check_widths(len(USER_FEATURE_NAMES), len(LIVE_FEATURE_NAMES))
        except OPEInputError as err:
            raise CLIError(str(err), EXIT_INVALID) from err
        targets[name] = target.policy
    return (lambda config: targets) if targets else None


def _ua_extra(specs: dict[str, str], epsilon: float, config):
    from rliv_ray.cli import EXIT_INVALID, EXIT_USAGE, CLIError
    from rliv_ray.evaluation.policies import PolicyError, make_policy
    from rliv_ray.evaluation.world import state_dim
    from rliv_ray.tensor_files import DataFileError

    def build(world) -> dict:
        return {name: make_policy(spec, world, state_dim(world), epsilon=epsilon)
                for name, spec in specs.items()}

    try:
        build(config)  # a bad policy fails now, before any rollout
    except PolicyError as err:
        raise CLIError(str(err), EXIT_INVALID if isinstance(err, DataFileError)
                       else EXIT_USAGE) from err
    return build if specs else None


def _headline(world: str, settings, suite, seeds: list[int], seconds: float) -> str:
    if world == "live":
        what = (f"live-stream world (SL-MGAC's inject decision): {settings.users:,} users x "
                f"{settings.days} days per seed; J = per-user return discounted by "
                f"{suite.gamma:g} per request (Eq. 5, beta from the world)")
    else:
        what = (f"user-author world (RLIV-UA): {settings.users:,} users x {settings.days} days "
                f"per seed; J = per-user LTV (click + effective view + 5 follow + 20 gift)"
                f"{'' if suite.gamma == 1 else f' discounted by {suite.gamma:g} per request'};"
                f" exposure-level estimators (the exposed candidate as the decision, exact "
                f"exposure propensities) and per-row ones on the exposure-selected rows "
                f"(' (as logged)')")
    fqe = ("FQE off" if suite.fqe is None or world == "rliv-ua" else
           f"FQE {suite.fqe.iterations} iterations x {suite.fqe.steps_per_iteration} steps, "
           f"hidden {suite.fqe.hidden}, {suite.fqe_refits} refits")
    return (f"{what}; seeds {seeds[0]}..{seeds[-1]}; truth by rollout on the log's random "
            f"numbers; {suite.n_bootstrap} bootstrap resamples; {fqe}; {seconds:.0f}s")


def run_grading(worlds, suites, live, ua, seeds: list[int], *, live_extra=None, ua_extra=None,
                say=print) -> dict:
    """Every world and seed; returns the report (records, facts, summary, headlines)."""
    from rliv_ray.ope.grade import summarise
    from rliv_ray.ope.grade_live import grade_live_seed
    from rliv_ray.ope.grade_ua import grade_ua_seed

    records, facts, headlines = [], [], {}
    for world in worlds:
        began = time.perf_counter()
        for seed in seeds:
            if world == "live":
                graded, fact = grade_live_seed(seed, live, suites[world], extra=live_extra,
                                               say=say)
            else:
                graded, fact = grade_ua_seed(seed, ua, suites[world], extra=ua_extra, say=say)
            records += graded
            facts += fact
        headlines[world] = _headline(world, live if world == "live" else ua, suites[world],
                                     seeds, time.perf_counter() - began)
    return {"records": records, "facts": facts, "summary": summarise(records),
            "headlines": headlines}


def cmd_ope_grade(args: argparse.Namespace) -> int:
    import torch

    from rliv_ray.cli import CLIError
    from rliv_ray.data import io
    from rliv_ray.ope.grade_report import format_text

    worlds, suites, live, ua = _settings(args)
    specs = _policies(args.policy)
    for world, named in specs.items():
        if named and world not in worlds:
            raise CLIError(f"--policy {', '.join(named)}: a policy of the {world} world, "
                           f"which --worlds leaves out")
    live_extra = _live_extra(specs["live"], args.epsilon)
    ua_extra = _ua_extra(specs["rliv-ua"], args.ua_epsilon, ua.config(args.first_seed))
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    say = (lambda _: None) if args.quiet else (lambda line: print(line, flush=True))
    inputs = [s.removeprefix("rliv:").partition("@")[0] for named in specs.values()
              for s in named.values()]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small networks: a second thread only contends
    try:
        if args.out:
            with io.atomic_output_dir(args.out, overwrite=args.overwrite, inputs=inputs) as tmp:
                report = _report(args, worlds, suites, live, ua, seeds, live_extra, ua_extra,
                                 say)
                _write(tmp, report)
        else:
            report = _report(args, worlds, suites, live, ua, seeds, live_extra, ua_extra, say)
    finally:
        torch.set_num_threads(threads)
    for world, headline in report["headlines"].items():
        print(f"\n{world}: {headline}")
        print(format_text(report["summary"], world))
    if args.out:
        print(f"\nwrote grade.md, grade.json and grade.png to {args.out}")
    return 0


def _report(args, worlds, suites, live, ua, seeds, live_extra, ua_extra, say) -> dict:
    began = time.perf_counter()
    report = run_grading(worlds, suites, live, ua, seeds, live_extra=live_extra,
                         ua_extra=ua_extra, say=say)
    report["seconds"] = round(time.perf_counter() - began, 1)
    report["settings"] = {k: v for k, v in vars(args).items() if k not in ("func",)}
    return report


def _write(out: Path, report: dict) -> None:
    from rliv_ray.ope.grade_report import format_markdown, plot

    (out / "grade.md").write_text(format_markdown(report["summary"], report["records"],
                                                  report["facts"], report["headlines"]))

    def plain(x):
        return None if isinstance(x, float) and not math.isfinite(x) else x

    data = {"settings": report["settings"], "seconds": report["seconds"],
            "headlines": report["headlines"],
            "summary": [{k: plain(v) for k, v in r.items()} for r in report["summary"]],
            "policies": report["facts"],
            "estimates": [r.to_dict() for r in report["records"]]}
    (out / "grade.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    plot(report["summary"], report["records"], out / "grade.png")
