"""``rliv sweep``: a whole sweep, from the YAML to the summary table and the MLflow runs.

    SWEEP/sweep.yaml              the config the sweep was started with (a resume must match)
    SWEEP/sweep.json              the tracking URI and the parent run's id
    SWEEP/world/, SWEEP/samples/  the data (:mod:`rliv_ray.sweep.data`)
    SWEEP/tune/attempt_N/         Ray Tune's experiment of each run (never read back)
    SWEEP/trials/<trial id>/      each trial's record (trial.json), training output, policies,
                                  truth.json
    SWEEP/summary.md, .json       the trials table and the regret of the estimator's pick
    SWEEP/plots/                  the sweep's scatter plot and learning curves

OUT is held as :func:`rliv_ray.outdir.claimed_out` holds a training OUT (one sweep at a time;
``--overwrite`` keeps the old one until the new sweep has run to its end).

The trials are planned by the sweep (:func:`~rliv_ray.sweep.space.plan_trials`: the same
config gives the same trials and points) and each is recorded by the driver in JSON
(:mod:`rliv_ray.sweep.records`). Ctrl-C stops Tune gracefully; ``--resume`` plans the trials
again, keeps those whose record says they finished and runs only the others, from scratch, in a
new Tune experiment; the summary merges them all. Nothing Tune wrote is read back (its state
files are pickles, and no code may run from a data file), so ``Tuner.restore`` is not used.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from rliv_ray.outdir import claimed_out
from rliv_ray.sweep import report
from rliv_ray.sweep.config import SweepConfig, load_sweep
from rliv_ray.sweep.records import ENDED, finished_trials, number, read_record
from rliv_ray.sweep.space import plan_trials, trial_params
from rliv_ray.sweep.trainable import TRUTH_FILE

STATE_FILE = "sweep.json"
CONFIG_COPY = "sweep.yaml"
TUNE_DIR = "tune"
ATTEMPT_PREFIX = "attempt_"
TRIALS_DIR = "trials"
EXIT_INTERRUPTED = 130


def run_sweep(config_file: str | Path, out: str | Path | None = None, *, resume: bool = False,
              overwrite: bool = False, tracking_uri: str | None = None,
              address: str | None = None, say: Callable[[str], None] = print) -> int:
    """Run (or resume) the sweep; its exit status: 0, 1 if a trial failed, 130 if interrupted."""
    config = load_sweep(config_file)
    if not (address or os.environ.get("RAY_ADDRESS")):
        config.resources.check_fits()
    out = Path(out or Path("sweeps") / config.name).resolve()
    with claimed_out(out, resume=resume, overwrite=overwrite, what="sweep",
                     inputs=[] if resume else [config_file]) as claim:
        state = _prepare_out(out, Path(config_file), resume=resume)
        code = _run(config, config_file, out, state, resume=resume, tracking_uri=tracking_uri,
                    address=address, say=say)
        claim.finished = code != EXIT_INTERRUPTED
    return code


def _run(config: SweepConfig, config_file, out: Path, state: dict, *, resume: bool,
         tracking_uri: str | None, address: str | None, say: Callable[[str], None]) -> int:
    from rliv_ray.sweep.tracking import SweepTracker, sweep_tracking_uri

    world, samples = _prepare_data(config, out, say)
    plan = plan_trials(config)
    done = finished_trials(out / TRIALS_DIR, plan)  # our own JSON records, nothing of Tune's
    pending = [trial_id for trial_id in plan if trial_id not in done]
    tracker = SweepTracker(state.get("tracking_uri") or sweep_tracking_uri(tracking_uri),
                           state.get("parent_run_id"))
    tracker.start_parent(config.name, _sweep_params(config, config_file))
    (out / STATE_FILE).write_text(json.dumps({"tracking_uri": tracker.uri,
                                              "parent_run_id": tracker.parent_run_id}) + "\n")
    say(f"sweep {config.name}: {config.algorithm}, metric {config.metric} (max), "
        f"{len(plan)} trials, scheduler {config.scheduler.type}; MLflow "
        f"{tracker.uri}; output {out}")
    if resume:
        say(f"resuming: {len(done)} of {len(plan)} trials finished before and are kept; "
            f"{len(pending)} to run from scratch")
    try:
        if pending:
            _run_tune(config, out, str(world), samples, tracker, plan, pending, done, address)
        return _finish(config, out, plan, str(world), samples, tracker, say)
    except BaseException:
        tracker.end(tracker.parent_run_id, "KILLED")
        raise


def _prepare_data(config: SweepConfig, out: Path, say) -> tuple[Path, dict[str, str]]:
    """The world and every sample build (made once, cached), the fixed fields checked."""
    from rliv_ray.sweep.data import prepare_samples, prepare_world

    world = prepare_world(config, out, say)
    samples = prepare_samples(config, world, out, say)
    _check_training_fields(config, samples)
    return world, samples


def _run_tune(config: SweepConfig, out: Path, world: str, samples: dict[str, str], tracker,
              plan: dict[str, dict], pending: list[str], done: dict[str, dict],
              address: str | None) -> None:
    """Run the pending trials with Tune, in a new experiment directory."""
    from rliv_ray.runner import start_ray

    started = start_ray(address=address, num_cpus=config.resources.ray_cpus, progress=False)
    try:
        _tuner(config, out, world, samples, tracker, plan, pending, done).fit()
    finally:
        if started:
            import ray

            ray.shutdown()


def _prepare_out(out: Path, config_file: Path, *, resume: bool) -> dict:
    """The saved state of a sweep to resume, or the (empty, claimed) OUT with the config
    copied in."""
    text = config_file.read_text()
    if resume:
        if not (out / CONFIG_COPY).exists():
            raise FileNotFoundError(f"{out}: no sweep to resume (start it without --resume)")
        if yaml.safe_load((out / CONFIG_COPY).read_text()) != yaml.safe_load(text):
            raise ValueError(f"{out} was started from another config than {config_file}: "
                             "resume with the same file, or pass --overwrite to start again")
        state = out / STATE_FILE
        return json.loads(state.read_text()) if state.exists() else {}
    (out / CONFIG_COPY).write_text(text)
    return {}


def _check_training_fields(config: SweepConfig, samples: dict[str, str]) -> None:
    """Build the algorithm config of one point per sample build, so a bad fixed field fails
    here with one line rather than in every trial; SL-MGAC's model estimators (dm, dr, ...) need
    a reward model the configured method has."""
    from rliv_ray.algorithms.common.driver import TrainSettings
    from rliv_ray.sweep.data import samples_for
    from rliv_ray.sweep.space import training_fields

    first = {d.name: d.values[0] for d in config.search}
    for key in samples:
        point = {**first, **_data_point_of(config, key)}
        settings = TrainSettings(training=training_fields(config, point))
        path = samples_for(samples, config, point)
        try:
            if config.algorithm == "sl-mgac":
                from rliv_ray.algorithms.sl_mgac.train import build_config, train_files

                _check_reward_model(config, build_config(*train_files(path), settings))
            else:
                from rliv_ray.algorithms.rliv_ua.train import build_config
                from rliv_ray.offline.shards import inspect_shards

                build_config(inspect_shards(path), settings)
        except TypeError as err:  # RLlib's training() on an unknown field
            raise ValueError(f"training.set: {err}") from err


def _check_reward_model(config: SweepConfig, built) -> None:
    from rliv_ray.ope.metrics import MODEL_ESTIMATORS
    from rliv_ray.ope.targets import reward_model_note

    wanted = [e for e in config.estimators if e in MODEL_ESTIMATORS]
    note = reward_model_note(built, built.method, built.reward_scale) if wanted else None
    if note:
        raise ValueError(f"evaluation.estimators: {', '.join(wanted)} need the policy's reward "
                         f"model, but {note}: leave them out")


def _data_point_of(config: SweepConfig, key: str) -> dict[str, Any]:
    from rliv_ray.sweep.space import data_key, data_points

    for settings in data_points(config):
        if data_key(settings) == key:
            return {d.name: settings[d.name] for d in config.search if d.name in settings}
    return {}


def _sweep_params(config: SweepConfig, config_file) -> dict[str, Any]:
    t = config.training
    return {
        "config_file": str(Path(config_file).resolve()), "algorithm": config.algorithm,
        "metric": config.metric, "mode": "max", "num_samples": config.num_samples,
        "estimators": ",".join(config.estimators) or None,
        "scheduler": config.scheduler.type, "iterations": t.iterations,
        "updates_per_iteration": t.updates_per_iteration, "eval_every": t.eval_every,
        "search": {d.name: f"{d.kind} {list(d.values)}" for d in config.search},
        "fixed": t.fields, "data": config.data.path or config.data.generate,
        "samples": config.data.samples,
    }


def _tuner(config: SweepConfig, out: Path, world: str, samples: dict[str, str], tracker,
           plan: dict[str, dict], pending: list[str], done: dict[str, dict]):
    """A new Tune experiment over the pending trials (``{"trial_id": ID}`` each), in a new
    ``SWEEP/tune/attempt_N``; ASHA's rungs start with the finished trials' reports."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    from rliv_ray.sweep.callbacks import MLflowCallback, ProgressCallback, RecordCallback
    from rliv_ray.sweep.trainable import TrialContext, run_trial

    trials_dir = str(out / TRIALS_DIR)
    context = TrialContext(config, world, samples, trials_dir,
                           {trial_id: plan[trial_id] for trial_id in pending})
    trainable = tune.with_resources(tune.with_parameters(run_trial, context=context),
                                    {"cpu": config.resources.cpus_per_trial})
    scheduler = (FIFOScheduler() if config.scheduler.type == "fifo"
                 else _asha(config, list(done.values())))
    return tune.Tuner(
        trainable, param_space={"trial_id": tune.grid_search(pending)},
        tune_config=tune.TuneConfig(scheduler=scheduler, num_samples=1,
                                    max_concurrent_trials=config.resources.max_concurrent_trials),
        run_config=tune.RunConfig(name=_attempt_name(out), storage_path=str(out / TUNE_DIR),
                                  verbose=0,
                                  callbacks=[RecordCallback(config, plan, trials_dir),
                                             MLflowCallback(tracker, config, plan),
                                             ProgressCallback(config, plan)]))


def _attempt_name(out: Path) -> str:
    """``attempt_N`` for the first N whose directory does not exist yet."""
    n = 1
    while (out / TUNE_DIR / f"{ATTEMPT_PREFIX}{n}").exists():
        n += 1
    return f"{ATTEMPT_PREFIX}{n}"


def _asha(config: SweepConfig, finished: list[dict]):
    """ASHA on the sweep's metric; on a resume its rungs first record the finished trials'
    reports (report k at time k), so the re-run trials are cut against the whole sweep."""
    from types import SimpleNamespace

    from ray.tune.schedulers import ASHAScheduler

    s, most = config.scheduler, max_reports(config)
    scheduler = ASHAScheduler(metric=config.metric, mode="max", max_t=most,
                              grace_period=min(s.grace_period, most),
                              reduction_factor=s.reduction_factor)
    brackets = getattr(scheduler, "_brackets", None)  # Ray 2.60's; without it, rungs start empty
    if finished and isinstance(brackets, list) and len(brackets) == 1:
        for record in finished:
            stub = SimpleNamespace(trial_id=f"finished:{record['trial_id']}")
            for k, entry in enumerate(record["reports"], start=1):
                value = entry.get(config.metric)
                if value is not None and math.isfinite(value):
                    brackets[0].on_result(stub, k, value)
    return scheduler


def max_reports(config: SweepConfig) -> int:
    """Reports a trial makes: one per ``eval_every`` iterations and one after the last."""
    t = config.training
    return math.ceil(t.iterations / t.eval_every)


def _finish(config: SweepConfig, out: Path, plan: dict[str, dict], world: str,
            samples: dict[str, str], tracker, say) -> int:
    """The summary from the trials' records, or exit 130 when some trial has not ended."""
    records = {trial_id: read_record(out / TRIALS_DIR, trial_id) for trial_id in plan}
    statuses = {t: r["status"] if r else "not started" for t, r in records.items()}
    if any(status not in ENDED for status in statuses.values()):
        ended = sum(status in ENDED for status in statuses.values())
        tracker.end(tracker.parent_run_id, "KILLED")
        say(f"interrupted after {ended} of {len(plan)} trials; finish with: rliv sweep "
            f"CONFIG --resume --out {out}")
        return EXIT_INTERRUPTED
    say(f"all {len(plan)} trials ended; measuring the true values")
    rows, histories = [], {}
    for trial_id, record in records.items():
        history = [{k: number(v) for k, v in entry.items() if k != "policy"}
                   for entry in record["reports"]]
        histories[trial_id] = history
        row = _row(config, record, world, samples)
        rows.append(row)
        _log_trial(config, out, tracker, row, history)
    chosen = report.regret(rows)
    keys = list(dict.fromkeys([config.metric, *(f"eval/{e}" for e in config.estimators)]))
    by_metric = report.regrets(rows, keys) if len(keys) > 1 else {}
    names = [d.name for d in config.search]
    table = report.summary_markdown(rows, chosen, metric=config.metric, names=names,
                                    note=_note(config), by_metric=by_metric)
    _write_summary(config, out, rows, chosen, by_metric, table, histories, tracker)
    say(table)
    failed = [r for r in records.values() if r["status"] == "error"]
    if failed:
        where = ", ".join(str(r.get("error") or r["trial_id"]) for r in failed)
        say(f"{len(failed)} trial(s) failed; their errors: {where}")
    return 1 if failed else 0


def _row(config: SweepConfig, record: dict, world: str,
         samples: dict[str, str]) -> report.TrialRow:
    from rliv_ray.sweep.data import samples_for

    last = record["reports"][-1] if record["reports"] else {}
    iterations = int(last.get("iteration") or 0)
    policy = last.get("policy")
    truth = {}
    if policy and Path(policy).exists():
        truth = _truth(config, Path(policy), world, samples_for(samples, config,
                                                                record["point"]))
    extra = {k: number(v) for k, v in {**last, **truth}.items()
             if k.startswith(("eval/", "truth/"))
             and (v is None or isinstance(v, int | float))}
    return report.TrialRow(record["trial_id"], trial_params(config, record["point"]),
                           record["status"], iterations, number(last.get(config.metric)),
                           number(truth.get("truth/value")), policy, extra)


def _truth(config: SweepConfig, policy: Path, world: str, samples: str) -> dict[str, float]:
    """The truth of a trial's last policy, cached next to it (a resumed sweep reuses it)."""
    from rliv_ray.sweep.evaluate import truth_metrics

    cache = policy.parent.parent / TRUTH_FILE
    if cache.exists():
        saved = json.loads(cache.read_text())
        if saved.get("policy") == str(policy):
            return saved["truth"]
    truth = truth_metrics(config, samples, world, policy)
    cache.write_text(json.dumps({"policy": str(policy), "truth": truth}, indent=2) + "\n")
    return truth


def _log_trial(config, out: Path, tracker, row: report.TrialRow, history) -> None:
    """The child run's truth, exported policy and learning curves."""
    trial_dir = out / TRIALS_DIR / row.trial_id
    curves = None
    if history:
        keys = [config.metric, "train/loss/total"]
        curves = report.plot_curves({row.trial_id: history}, keys, trial_dir / "curves.png",
                                    f"trial {row.trial_id}: {row.params}")
    run_id = tracker.child_id(row.trial_id)
    tracker.log(run_id, metrics={k: v for k, v in row.extra.items()
                                 if k.startswith("truth/")})
    tracker.log(run_id, params={"status": row.status})
    if row.policy:
        tracker.artifact(run_id, row.policy, "policy")
    if curves:
        tracker.artifact(run_id, curves, "plots")


def _write_summary(config, out: Path, rows, chosen, by_metric, table: str, histories,
                   tracker) -> None:
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    names = [d.name for d in config.search]
    labelled = {f"{r.trial_id} {r.params}": histories[r.trial_id] for r in rows}
    files = [report.plot_sweep(rows, names, config.metric, plots / "sweep.png"),
             report.plot_curves(labelled, [config.metric, "train/loss/total"],
                                plots / "curves.png", f"{config.name}: learning curves")]
    (out / "summary.md").write_text(f"# sweep {config.name}\n\n{table}\n")
    summary = {"metric": config.metric, "regret": chosen, "regret_by_metric": by_metric,
               "trials": [{"trial_id": r.trial_id, "params": r.params, "status": r.status,
                           "iterations": r.iterations, "metric": r.metric, "truth": r.truth,
                           "policy": r.policy, **r.extra} for r in rows]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    parent = tracker.parent_run_id
    best = report.pick(rows, "metric")
    tracker.log(parent, metrics={"sweep/trials": len(rows), "sweep/regret": chosen["regret"],
                                 "sweep/relative_regret": chosen["relative_regret"],
                                 "sweep/best_metric": best.metric if best else math.nan,
                                 "sweep/picked_truth": chosen.get("estimator_pick_truth",
                                                                  math.nan),
                                 "sweep/best_truth": chosen.get("best_truth", math.nan),
                                 **{f"sweep/regret/{key.removeprefix('eval/')}": r["regret"]
                                    for key, r in by_metric.items()}})
    for path in [out / CONFIG_COPY, out / "summary.md", out / "summary.json", *files]:
        tracker.artifact(parent, path)
    tracker.end(parent, "FINISHED")


def _note(config: SweepConfig) -> str:
    ev = config.evaluation
    if config.algorithm == "sl-mgac":
        clip = "none" if ev.clip is None else f"{ev.clip:g}"
        return (f"eval/: the off-policy estimates ({', '.join(config.estimators)}; NCIS cap "
                f"{ev.cap:g}, clip {clip}, epsilon {ev.epsilon:g}, gamma {ev.gamma:g}) on the "
                f"held-out users, the sweep selecting on {config.metric}; truth/value: their "
                f"true on-policy value in the world ({ev.truth_seeds} seed(s)), measured after "
                "the sweep. The other estimators' regrets are on the same trials.")
    users = ev.truth_users or "all"
    return (f"RLIV-UA has no off-policy estimator here: {config.metric} is the world's true "
            f"{ev.world_metric} on {ev.users} users (seeds 0..{ev.seeds - 1}); truth/value is "
            f"the same on {users} users with other seeds, so the regret is the cost of that "
            "cheap, noisy selection.")
