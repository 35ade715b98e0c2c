"""SL-MGAC's Tables 1-2 on the synthetic live-stream world: NCIS and the true value per method.

Per seed s (world seed ``--world-seed`` if given, else s; training seed s): log ``--users``
users x ``--days`` days under the logging policy (in memory; the same log as
``generate_live_world(..., n_files=1)``), split the users 4:1 (``split_table``), compute the
activity-group edges on the training users, build SL-MGAC samples (``live_samples``) and
train every method of ``--methods`` with a plain torch loop (Adam, embedding lr 1e-5 / other
lr 1e-3, random minibatches, Polyak targets). Each trained network is served with Eq. 16
(greedy, ``--epsilon`` exploration) and scored by ``ope.evaluate.evaluate``: NCIS
(``--ncis-kind``, default step-wise, cap 10) on the held-out users' logged trajectories and
the true value of the same users run on-policy (``--eval-seeds`` runs, expected rewards).
Reference rows: the logging policy (NCIS and truth) and the immediate-greedy oracle with the
same epsilon (truth only; it reads the world's latent expectations). The "true - L2R" column
is paired by seed (``--reference``). ``--terminal`` and ``--discount`` set the samples' MDP and
every method's TD target; ``--eval-gamma 0.9`` scores J (truth and estimates) under the trained
objective, the one ``rliv check-live-world`` checks (default 1: undiscounted).

Learning curves (``--curve-at 200,400,800``, on the first ``--curve-seeds`` seeds): each run is
also scored at those updates (NCIS, per-decision NCIS, the truth with ``--curve-eval-seeds``
runs); the mean curve per method, its stopping step (``convergence.stopping_step`` on the
NCIS curve, which a user without the truth has; the truth's for comparison) go to table.json
and curves.png.

    python benchmarks/sl_mgac_table.py --world-seed 0 --seeds 3 --out /tmp/sl_mgac_table
    python benchmarks/sl_mgac_table.py --users 2000 --seeds 10 --methods SL-MGAC,L2R,DQN \
        --updates 1200 --batch 512 --curve-at 200,400,800,1200 --curve-seeds 3 \
        --eval-gamma 0.9 --per-decision --out /tmp/sl_mgac_main
    python benchmarks/sl_mgac_table.py --methods L2R,BCQ,SAC,TD3,TD3-BC,IQL   # Table 1's RL rows
    python benchmarks/sl_mgac_table.py --merge /tmp/run_a /tmp/run_b   # one table from two runs
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rliv_ray import schema as S
from rliv_ray.algorithms.common.convergence import stopping_step
from rliv_ray.algorithms.sl_mgac.baselines import Method, method
from rliv_ray.algorithms.sl_mgac.losses import ACTOR_LOSSES
from rliv_ray.algorithms.sl_mgac.network import BIN_SOURCES, SLMGACNetwork, SLMGACSpec
from rliv_ray.algorithms.sl_mgac.objective import DISCOUNTS, SLMGACSettings, update_target
from rliv_ray.data.live_config import LiveWorldConfig
from rliv_ray.data.live_generate import bucket_table, live_log_schema_for_world
from rliv_ray.data.live_policies import OraclePolicy, logging_policy
from rliv_ray.data.live_population import LivePopulation
from rliv_ray.data.live_samples import (
    DEFAULT_TERMINAL,
    TERMINAL_MODES,
    group_edges,
    live_samples,
    user_watch_3w,
)
from rliv_ray.data.live_world import simulate_live_users
from rliv_ray.ope.evaluate import EvalRow, NetworkPolicy, batch_from_table, evaluate
from rliv_ray.ope.ncis import DEFAULT_KIND, KINDS
from rliv_ray.ope.split import split_table
from rliv_ray.ope.table import render_markdown, render_text, summarise, to_records

DEFAULT_METHODS = ("SL-MGAC,SL-MGAC-sep,SL-MGAC-vanilla,SL-MGAC-0,L2R,DQN,BC,w/o MG,w/o MG&DD,"
                   "w/o MG&DD&SL,w/o LN,w/o SG,w/o Q-norm")
LOGGING, ORACLE = "logging policy", "oracle (eps-greedy, truth only)"
_LOG_STREAM = 1  # generate_live_world's bucket stream: bucket 0 of a one-file world
SETTINGS = SLMGACSettings()  # the defaults of the options below


@dataclasses.dataclass(frozen=True)
class EpsilonGreedy:
    """(1 - eps) * policy + eps / 2 where a live stream is on air (Eq. 16 around any policy)."""

    policy: object
    epsilon: float

    def inject_probability(self, obs):
        p = (1 - self.epsilon) * self.policy.inject_probability(obs) + self.epsilon / 2
        return np.where(obs[S.LIVE_ID] >= 0, p, 0.0)


def logged_world(config: LiveWorldConfig, pop: LivePopulation):
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, _LOG_STREAM, 0]))
    result = simulate_live_users(config, pop, np.arange(config.n_users), logging_policy(config),
                                 rng)
    return bucket_table(result, live_log_schema_for_world(config))


def train(m: Method, spec: SLMGACSpec, settings: SLMGACSettings, data: dict, *, updates: int,
          batch_size: int, seed: int, log_every: int,
          curve: Callable[[SLMGACNetwork, SLMGACNetwork | None], dict] | None = None,
          curve_at: Sequence[int] = ()) -> tuple[SLMGACNetwork, list[dict]]:
    """Adam on random minibatches of ``data`` (tensors of every sample); Polyak targets.
    At each step of ``curve_at`` the history entry also holds ``curve(net, target)`` (called
    in eval mode; training resumes in train mode)."""
    torch.manual_seed(seed)
    net = SLMGACNetwork(spec)
    target = copy.deepcopy(net).requires_grad_(False) if m.uses_target else None
    opt = torch.optim.Adam(net.param_groups(settings.lr, settings.embedding_lr))
    gen = torch.Generator().manual_seed(seed)
    n, history = len(data[S.ACTION]), []
    for step in range(1, updates + 1):
        index = torch.randint(0, n, (batch_size,), generator=gen)
        loss, metrics = m.loss(net, target, {k: v[index] for k, v in data.items()}, settings,
                               step=step - 1)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{m.name}: loss {loss.item()} at update {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if target is not None:
            update_target(net, target, settings, step)
        if step % log_every == 0 or step == updates or step in curve_at:
            point = {"step": step, **metrics}
            if curve is not None and step in curve_at:
                point.update(curve(net.eval(), target))
                net.train()
            history.append(point)
    return net, history


def _short(metrics: dict) -> str:
    keys = ("loss/total", "loss/critic", "loss/actor", "q/mean", "pi/greedy_inject_rate")
    return " ".join(f"{k.split('/')[-1]}={metrics[k]:.3g}" for k in keys if k in metrics)


def one_seed(args, seed: int, methods: list[str], results: dict, greedy: dict,
             records: list) -> None:
    started = time.perf_counter()
    world = LiveWorldConfig(n_users=args.users, days=args.days,
                            seed=args.world_seed if args.world_seed is not None else seed,
                            history_length=args.history,
                            **({} if args.beta is None else {"beta": args.beta}),
                            **dict(args.world))
    pop = LivePopulation.build(world)
    log = logged_world(world, pop)
    train_log, test_log = split_table(log)
    edges = group_edges(user_watch_3w(train_log), args.groups)
    samples = live_samples(train_log, groups=args.groups, edges=edges, terminal=args.terminal)
    data = batch_from_table(samples, edges=edges)
    users = (np.unique(test_log[S.USER_ID].to_numpy()) if args.truth_users == "test"
             else np.arange(world.n_users))
    print(f"seed {seed}: {log.num_rows} requests, {samples.num_rows} train samples, "
          f"{test_log.num_rows} test rows of {len(users)} users "
          f"({time.perf_counter() - started:.1f}s)", flush=True)
    eval_seeds = tuple(range(args.eval_seeds))
    curve_seeds = tuple(range(args.curve_eval_seeds))
    common = {"world_config": world, "beta": world.beta, "seeds": eval_seeds, "users": users,
              "population": pop, "cap": args.cap, "n_bootstrap": args.bootstrap,
              "kind": args.ncis_kind, "per_decision": args.per_decision, "gamma": args.eval_gamma}

    def add(name: str, row: EvalRow, extra: dict, epsilon: float = args.epsilon) -> None:
        (results if epsilon == args.epsilon else greedy).setdefault(name, []).append(row)
        records.append({"method": name, "seed": seed, "epsilon": epsilon, **extra,
                        **row.to_dict()})
        tag = "" if epsilon == args.epsilon else " (greedy)"
        print(f"  {name:>22}{tag}: NCIS {row.ncis_value:8.2f} (ESS {row.ess:6.1f})  true "
              f"{row.true_value:8.2f} [{row.true_low:.1f}, {row.true_high:.1f}]  inject "
              f"{row.injection_ratio:.1%}  {extra.get('train_s', 0):.0f}s", flush=True)

    logged = evaluate(logging_policy(world), test_log=test_log, **common)
    add(LOGGING, logged, {})
    add(ORACLE, evaluate(EpsilonGreedy(OraclePolicy(world.beta), args.epsilon), test_log=None,
                         **common), {})
    if args.greedy:
        add(LOGGING, logged, {}, 0.0)
        add(ORACLE, evaluate(OraclePolicy(world.beta), test_log=None, **common), {}, 0.0)
    base_spec = SLMGACSpec(user_dim=data[S.USER_FEATURES].shape[1],
                           live_dim=data[S.LIVE_FEATURES].shape[1], groups=args.groups,
                           bin_source=args.bin_source)
    base_settings = SLMGACSettings(beta=world.beta, reward_scale=args.reward_scale,
                                   q_temperature=args.q_temperature, discount=args.discount,
                                   actor_loss=args.actor_loss, **dict(args.setting))
    for name in methods:
        m = method(name)
        spec, settings = m.configure(base_spec, base_settings)

        def curve(net: SLMGACNetwork, _target, m: Method = m) -> dict:
            row = evaluate(NetworkPolicy(net, edges, epsilon=args.epsilon,
                                         probability=m.probability),
                           test_log=test_log, **{**common, "seeds": curve_seeds,
                                                 "n_bootstrap": 0, "per_decision": True})
            return {"ncis": row.ncis_value, "ncis_pd": row.ncis_per_decision.value,
                    "true": row.true_value}

        t0 = time.perf_counter()
        net, history = train(m, spec, settings, data, updates=args.updates,
                             batch_size=args.batch, seed=seed, log_every=args.log_every,
                             curve=curve, curve_at=args.curve_at if seed < args.curve_seeds
                             else ())
        train_s = time.perf_counter() - t0
        print(f"  {name:>22}  trained: {_short(history[-1])}", flush=True)
        policy = NetworkPolicy(net.eval(), edges, epsilon=args.epsilon, probability=m.probability)
        add(name, evaluate(policy, test_log=test_log, **common),
            {"train_s": train_s, "eval_s": time.perf_counter() - t0 - train_s,
             "train_history": history})
        if args.greedy:
            add(name, evaluate(NetworkPolicy(net, edges, epsilon=0.0, probability=m.probability),
                               test_log=test_log, **common), {"train_s": train_s}, 0.0)


def _field_setting(cls):
    """argparse type of ``FIELD=VALUE`` for a numeric field of the dataclass ``cls``."""
    names = {f.name for f in dataclasses.fields(cls)}

    def parse(text: str) -> tuple[str, float | int]:
        name, sep, value = text.partition("=")
        if not sep or name not in names:
            raise argparse.ArgumentTypeError(f"expected FIELD=VALUE with a {cls.__name__} "
                                             f"field, got {text!r}")
        return name, int(value) if value.lstrip("-").isdigit() else float(value)

    return parse


def _clean(value):
    """nan -> None, recursively (strict JSON)."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--history", type=int, default=20,
                        help="behaviour history length (the paper: 50; shorter is faster)")
    parser.add_argument("--beta", type=float, default=None, help="Eq. 5 beta (world default)")
    parser.add_argument("--world-seed", type=int, default=None,
                        help="one world for every seed (seeds then vary training only); "
                             "default: world seed = training seed")
    parser.add_argument("--world", type=_field_setting(LiveWorldConfig), action="append",
                        default=[], metavar="FIELD=VALUE",
                        help="a LiveWorldConfig field (repeatable)")
    parser.add_argument("--setting", type=_field_setting(SLMGACSettings), action="append",
                        default=[], metavar="FIELD=VALUE",
                        help="a numeric SLMGACSettings field for every method, e.g. tau=0.05 "
                             "(repeatable)")
    parser.add_argument("--reference", default="L2R",
                        help="method of the paired 'true - reference' column")
    parser.add_argument("--groups", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds are first-seed .. first-seed + seeds - 1 (split a long run "
                             "over processes, then --merge)")
    parser.add_argument("--methods", default=DEFAULT_METHODS, help="comma-separated names")
    parser.add_argument("--updates", type=int, default=1_000)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--reward-scale", type=float, default=SETTINGS.reward_scale)
    parser.add_argument("--q-temperature", type=float, default=SETTINGS.q_temperature)
    parser.add_argument("--actor-loss", default=SETTINGS.actor_loss, choices=ACTOR_LOSSES)
    parser.add_argument("--bin-source", default=SLMGACSpec.bin_source, choices=BIN_SOURCES)
    parser.add_argument("--epsilon", type=float, default=0.2, help="Eq. 16 exploration")
    parser.add_argument("--greedy", action="store_true",
                        help="also score every trained policy and the oracle at epsilon 0 "
                             "(a second table, table_greedy.md)")
    parser.add_argument("--eval-seeds", type=int, default=5, help="on-policy runs per policy")
    parser.add_argument("--truth-users", default="test", choices=("test", "all"),
                        help="users run on-policy for the true value (all: less noise, but "
                             "the training users too)")
    parser.add_argument("--terminal", default=DEFAULT_TERMINAL, choices=TERMINAL_MODES,
                        help="where the samples end an episode (live_samples)")
    parser.add_argument("--discount", default=SETTINGS.discount, choices=DISCOUNTS,
                        help="per-transition discount of every method's TD target")
    parser.add_argument("--eval-gamma", type=float, default=1.0,
                        help="discount per request of J, true and estimated (0.9: the trained "
                             "objective that rliv check-live-world checks)")
    parser.add_argument("--curve-at", type=lambda t: sorted({int(x) for x in t.split(",")}),
                        default=[], metavar="STEPS",
                        help="comma-separated updates at which to evaluate each run (NCIS, "
                             "NCIS-PD and the truth) for its learning curve")
    parser.add_argument("--curve-seeds", type=int, default=1_000_000,
                        help="draw learning curves on the first N seeds only (default: all)")
    parser.add_argument("--curve-eval-seeds", type=int, default=1,
                        help="on-policy runs per learning-curve point")
    parser.add_argument("--cap", type=float, default=10.0, help="NCIS cap c")
    parser.add_argument("--ncis-kind", default=DEFAULT_KIND, choices=KINDS)
    parser.add_argument("--per-decision", action="store_true",
                        help="add the per-decision NCIS estimate as a column")
    parser.add_argument("--bootstrap", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--out", type=Path, default=None, help="folder for table.json/.md")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="DIR",
                        help="instead of training: one table from earlier --out folders run "
                             "on the same world, seeds and evaluation (each method's rows "
                             "from the first folder that has them)")
    args = parser.parse_args()
    if args.merge:
        results, greedy, header = merged(args.merge)
        write(summarise(results, reference=args.reference), header, args, {"merged": [
            str(d) for d in args.merge]}, [], _greedy_rows(greedy, args.reference))
        return
    torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for name in methods:
        method(name)  # fail fast on a typo
    started = time.perf_counter()
    results: dict[str, list[EvalRow]] = {}
    greedy: dict[str, list[EvalRow]] = {}
    records: list[dict] = []
    last = args.first_seed + args.seeds - 1
    for seed in range(args.first_seed, last + 1):
        one_seed(args, seed, methods, results, greedy, records)
        if args.out is not None or seed == last:  # a partial table survives an interruption
            finish(args, results, greedy, records, seed, time.perf_counter() - started)


def finish(args, results, greedy, records, seed: int, wall: float) -> None:
    """Tables of the seeds done so far (first_seed .. seed)."""
    rows = summarise(results, reference=args.reference)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    world = "world seed = training seed" if args.world_seed is None else \
        f"world seed {args.world_seed}"
    done = seed - args.first_seed + 1
    partial = "" if done == args.seeds else f" (partial: {done} of {args.seeds})"
    header = (f"{args.users} users x {args.days} days, {done} seeds {args.first_seed}-{seed}"
              f"{partial} ({world}"
              f"{''.join(f', {k}={v}' for k, v in args.world)}), {args.updates} "
              f"updates{''.join(f', {k}={v}' for k, v in args.setting)}, "
              f"batch {args.batch}, reward_scale {args.reward_scale}, "
              f"q_temperature {args.q_temperature}, actor_loss {args.actor_loss}, bin_source "
              f"{args.bin_source}, NCIS {args.ncis_kind} cap {args.cap}, epsilon "
              f"{args.epsilon}, {args.eval_seeds} on-policy runs per policy, terminal "
              f"{args.terminal}, discount {args.discount}, J discounted at {args.eval_gamma} "
              f"per request, wall {wall:.0f}s")
    write(rows, header, args, {"settings": settings, "wall_s": wall}, records,
          _greedy_rows(greedy, args.reference))


def _greedy_rows(greedy: dict[str, list[EvalRow]], reference: str):
    return summarise(greedy, reference=reference if reference in greedy else None) \
        if greedy else None


def learning_curves(records: list[dict]) -> dict[str, dict]:
    """Method -> steps, the mean of each curve (``ncis``, ``ncis_pd``, ``true``) over the seeds
    that drew one, and the stopping step of each (``convergence.stopping_step``; the table is
    fair when it is made at or after every method's NCIS stopping step)."""
    out = {}
    for name in dict.fromkeys(r["method"] for r in records):
        points = [run for run in ([p for p in r.get("train_history") or [] if "true" in p]
                                  for r in records if r["method"] == name) if run]
        if not points:
            continue
        steps = [p["step"] for p in points[0]]
        curve = {"steps": steps}
        for key in ("ncis", "ncis_pd", "true"):
            curve[key] = np.mean([[p[key] for p in run] for run in points], axis=0).tolist()
            curve[f"stop_{key}"] = stopping_step(steps, curve[key])
        out[name] = curve
    return out


def plot_curves(curves: dict[str, dict], path: Path) -> None:
    """Mean true J (solid) and NCIS estimate (dashed) against updates, one colour per method;
    a dot marks each method's NCIS stopping step."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (name, c) in enumerate(curves.items()):
        colour = f"C{i % 10}"
        ax.plot(c["steps"], c["true"], "-o", color=colour, ms=3, label=f"{name} (true)")
        ax.plot(c["steps"], c["ncis"], "--", color=colour, alpha=0.7)
        if c["stop_ncis"] is not None:
            ax.axvline(c["stop_ncis"], color=colour, lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.set(xlabel="updates", ylabel="J per held-out user",
           title="learning curves: true J (solid), step-wise NCIS (dashed), NCIS stop (dotted)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(rows, header: str, args, extra: dict, records: list[dict], greedy=None) -> None:
    """Print the table (and the epsilon-0 one); with ``--out`` also write table.json (runs
    included), table.md, table_greedy.md and, with learning curves, curves.png."""
    print(header)
    print(render_text(rows, args.reference))
    if greedy is not None:
        print("greedy (epsilon 0):")
        print(render_text(greedy, args.reference))
    curves = learning_curves(records)
    for name, c in curves.items():
        print(f"  {name}: NCIS stops at {c['stop_ncis']}, truth at {c['stop_true']} "
              f"(curve at {c['steps']})")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "table.json").write_text(json.dumps(_clean(
            {**extra, "header": header, "table": to_records(rows), "curves": curves,
             "table_greedy": None if greedy is None else to_records(greedy),
             "runs": records}), indent=1, default=float))
        (args.out / "table.md").write_text(f"{header}\n\n{render_markdown(rows, args.reference)}\n")
        if greedy is not None:
            (args.out / "table_greedy.md").write_text(
                f"{header}; scored at epsilon 0\n\n{render_markdown(greedy, args.reference)}\n")
        if curves:
            plot_curves(curves, args.out / "curves.png")


_SAME_SETTINGS = ("users", "days", "history", "beta", "world_seed", "world", "groups",
                  "epsilon", "eval_seeds", "truth_users", "cap", "ncis_kind", "eval_gamma",
                  "terminal")


def merged(dirs: list[Path]) -> tuple[dict[str, list[EvalRow]], dict[str, list[EvalRow]], str]:
    """Method -> rows (one per seed) at the table's epsilon and at epsilon 0 (runs of
    ``--greedy``) from several output folders, and a combined header."""
    by_method: dict[str, dict[int, EvalRow]] = {}
    greedy: dict[str, dict[int, EvalRow]] = {}
    first, headers = None, []
    for folder in dirs:
        data = json.loads((folder / "table.json").read_text())
        same = {k: data["settings"].get(k) for k in _SAME_SETTINGS}
        if first is not None and same != first:
            raise SystemExit(f"{folder}: {same} differs from {dirs[0]}: {first}")
        first = same
        headers.append(data.get("header") or (folder / "table.md").read_text().splitlines()[0])
        for run in data["runs"]:
            into = by_method if run.get("epsilon", same["epsilon"]) == same["epsilon"] else greedy
            into.setdefault(run["method"], {}).setdefault(run["seed"], EvalRow.from_dict(run))

    def by_seed(table: dict[str, dict[int, EvalRow]], common: bool = False):
        seeds = set.intersection(*(set(r) for r in table.values())) if common and table else None
        return {name: [rows[s] for s in sorted(rows) if seeds is None or s in seeds]
                for name, rows in table.items()}
    # Greedy rows exist only for runs made with --greedy: that table keeps the common seeds.
    return by_seed(by_method), by_seed(greedy, common=True), "merged from:\n" + "\n".join(
        f"- {h}" for h in headers)


if __name__ == "__main__":
    main()
