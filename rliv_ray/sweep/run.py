"""``rliv sweep``: a whole sweep, from the YAML to the summary table and the MLflow runs.

    SWEEP/sweep.yaml              the config the sweep was started with (a resume must match)
    SWEEP/sweep.json              the tracking URI and the parent run's id
    SWEEP/world/, SWEEP/samples/  the data (:mod:`rliv_ray.sweep.data`)
    SWEEP/tune/                   Ray Tune's experiment (``Tuner.restore`` reads it)
    SWEEP/trials/<trial id>/      each trial's training output, policies, truth.json
    SWEEP/summary.md, .json       the trials table and the regret of the estimator's pick
    SWEEP/plots/                  the sweep's scatter plot and learning curves

OUT is held as :func:`rliv_ray.outdir.claimed_out` holds a training OUT (one sweep at a time;
``--overwrite`` keeps the old one until the new sweep has run to its end).

Ctrl-C stops Tune gracefully (its state is saved); ``--resume`` restores the experiment with
``Tuner.restore``: finished trials are kept as they are, unfinished and failed ones start again.
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
from rliv_ray.sweep.space import trial_params

STATE_FILE = "sweep.json"
CONFIG_COPY = "sweep.yaml"
TUNE_DIR = "tune"
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
    from rliv_ray.runner import start_ray
    from rliv_ray.sweep.data import prepare_samples, prepare_world
    from rliv_ray.sweep.tracking import SweepTracker, sweep_tracking_uri

    world = prepare_world(config, out, say)
    samples = prepare_samples(config, world, out, say)
    _check_training_fields(config, samples)
    tracker = SweepTracker(state.get("tracking_uri") or sweep_tracking_uri(tracking_uri),
                           state.get("parent_run_id"))
    tracker.start_parent(config.name, _sweep_params(config, config_file))
    (out / STATE_FILE).write_text(json.dumps({"tracking_uri": tracker.uri,
                                              "parent_run_id": tracker.parent_run_id}) + "\n")
    say(f"sweep {config.name}: {config.algorithm}, metric {config.metric} (max), "
        f"{_trial_count(config)} trials, scheduler {config.scheduler.type}; MLflow "
        f"{tracker.uri}; output {out}")
    started = start_ray(address=address, num_cpus=config.resources.ray_cpus, progress=False)
    try:
        results = _tuner(config, out, str(world), samples, tracker, resume).fit()
        trials = results._experiment_analysis.trials  # Ray 2.60: the Trial of each result
        return _finish(config, out, trials, results, str(world), samples, tracker, say)
    except BaseException:
        tracker.end(tracker.parent_run_id, "KILLED")
        raise
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
    here with one line rather than in every trial."""
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

                build_config(*train_files(path), settings)
            else:
                from rliv_ray.algorithms.rliv_ua.train import build_config
                from rliv_ray.offline.shards import inspect_shards

                build_config(inspect_shards(path), settings)
        except TypeError as err:  # RLlib's training() on an unknown field
            raise ValueError(f"training.set: {err}") from err


def _data_point_of(config: SweepConfig, key: str) -> dict[str, Any]:
    from rliv_ray.sweep.space import data_key, data_points

    for settings in data_points(config):
        if data_key(settings) == key:
            return {d.name: settings[d.name] for d in config.search if d.name in settings}
    return {}


def _trial_count(config: SweepConfig) -> int:
    grid = math.prod(len(d.values) for d in config.search if d.kind == "grid")
    return grid * config.num_samples


def _sweep_params(config: SweepConfig, config_file) -> dict[str, Any]:
    t = config.training
    return {
        "config_file": str(Path(config_file).resolve()), "algorithm": config.algorithm,
        "metric": config.metric, "mode": "max", "num_samples": config.num_samples,
        "scheduler": config.scheduler.type, "iterations": t.iterations,
        "updates_per_iteration": t.updates_per_iteration, "eval_every": t.eval_every,
        "search": {d.name: f"{d.kind} {list(d.values)}" for d in config.search},
        "fixed": t.fields, "data": config.data.path or config.data.generate,
        "samples": config.data.samples,
    }


def _tuner(config: SweepConfig, out: Path, world: str, samples: dict[str, str], tracker,
           resume: bool):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from rliv_ray.sweep.callbacks import MLflowCallback, ProgressCallback
    from rliv_ray.sweep.space import tune_space
    from rliv_ray.sweep.trainable import TrialContext, run_trial

    context = TrialContext(config, world, samples, str(out / TRIALS_DIR))
    trainable = tune.with_resources(tune.with_parameters(run_trial, context=context),
                                    {"cpu": config.resources.cpus_per_trial})
    path = out / TUNE_DIR
    if resume and tune.Tuner.can_restore(str(path)):
        return tune.Tuner.restore(str(path), trainable, resume_unfinished=True,
                                  restart_errored=True)
    s = config.scheduler
    scheduler = FIFOScheduler() if s.type == "fifo" else ASHAScheduler(
        max_t=max_reports(config), grace_period=min(s.grace_period, max_reports(config)),
        reduction_factor=s.reduction_factor)
    return tune.Tuner(
        trainable, param_space=tune_space(config),
        tune_config=tune.TuneConfig(metric=config.metric, mode="max", scheduler=scheduler,
                                    num_samples=config.num_samples,
                                    max_concurrent_trials=config.resources.max_concurrent_trials),
        run_config=tune.RunConfig(name=TUNE_DIR, storage_path=str(out), verbose=0,
                                  callbacks=[MLflowCallback(tracker, config),
                                             ProgressCallback(config)]))


def max_reports(config: SweepConfig) -> int:
    """Reports a trial makes: one per ``eval_every`` iterations and one after the last."""
    t = config.training
    return math.ceil(t.iterations / t.eval_every)


def _finish(config: SweepConfig, out: Path, trials, results, world: str,
            samples: dict[str, str], tracker, say) -> int:
    statuses = [t.status for t in trials]
    expected = _trial_count(config)  # Tune creates trials lazily: Ctrl-C leaves some uncreated
    if len(statuses) < expected or any(s not in ("TERMINATED", "ERROR") for s in statuses):
        done = statuses.count("TERMINATED")
        tracker.end(tracker.parent_run_id, "KILLED")
        say(f"interrupted after {done} of {expected} trials; finish with: rliv sweep "
            f"CONFIG --resume --out {out}")
        return EXIT_INTERRUPTED
    say(f"all {len(statuses)} trials ended; measuring the true values")
    rows, histories = [], {}
    for trial, result in zip(trials, results, strict=True):
        history = _history(result)
        histories[trial.trial_id] = history
        row = _row(config, trial, result, history, world, samples)
        rows.append(row)
        _log_trial(config, out, tracker, row, history)
    chosen = report.regret(rows)
    names = [d.name for d in config.search]
    table = report.summary_markdown(rows, chosen, metric=config.metric, names=names,
                                    note=_note(config))
    _write_summary(config, out, rows, chosen, table, histories, tracker)
    say(table)
    failed = statuses.count("ERROR")
    if failed:
        say(f"{failed} trial(s) failed; their errors are in {out / TUNE_DIR}/*/error.txt")
    return 1 if failed else 0


def _history(result) -> list[dict[str, Any]]:
    frame = result.metrics_dataframe
    if frame is None or frame.empty:
        return []
    keep = [c for c in frame.columns if c == "iteration" or c.startswith(("eval/", "train/"))]
    return frame[keep].to_dict("records")


def _row(config: SweepConfig, trial, result, history, world: str,
         samples: dict[str, str]) -> report.TrialRow:
    from rliv_ray.sweep.data import samples_for

    last = result.metrics or {}
    iterations = int(last.get("iteration", 0) or 0)
    status = ("error" if trial.status == "ERROR" else "finished"
              if iterations >= config.training.iterations else "stopped early")
    policy = last.get("policy")
    truth = {}
    if policy and Path(policy).exists():
        truth = _truth(config, Path(policy), world, samples_for(samples, config, trial.config))
    extra = {k: v for k, v in {**last, **truth}.items()
             if k.startswith(("eval/", "truth/")) and isinstance(v, int | float)}
    return report.TrialRow(trial.trial_id, trial_params(config, trial.config), status,
                           iterations, float(last.get(config.metric, math.nan)),
                           float(truth.get("truth/value", math.nan)), policy, extra)


def _truth(config: SweepConfig, policy: Path, world: str, samples: str) -> dict[str, float]:
    """The truth of a trial's last policy, cached next to it (a resumed sweep reuses it)."""
    from rliv_ray.sweep.evaluate import truth_metrics

    cache = policy.parent.parent / "truth.json"
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


def _write_summary(config, out: Path, rows, chosen, table: str, histories, tracker) -> None:
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    names = [d.name for d in config.search]
    labelled = {f"{r.trial_id} {r.params}": histories[r.trial_id] for r in rows}
    files = [report.plot_sweep(rows, names, config.metric, plots / "sweep.png"),
             report.plot_curves(labelled, [config.metric, "train/loss/total"],
                                plots / "curves.png", f"{config.name}: learning curves")]
    (out / "summary.md").write_text(f"# sweep {config.name}\n\n{table}\n")
    summary = {"metric": config.metric, "regret": chosen,
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
                                 "sweep/best_truth": chosen.get("best_truth", math.nan)})
    for path in [out / CONFIG_COPY, out / "summary.md", out / "summary.json", *files]:
        tracker.artifact(parent, path)
    tracker.end(parent, "FINISHED")


def _note(config: SweepConfig) -> str:
    ev = config.evaluation
    if config.algorithm == "sl-mgac":
        return (f"{config.metric}: {ev.ncis_kind} NCIS (cap {ev.cap:g}, epsilon {ev.epsilon:g}) "
                f"on the held-out users; truth/value: their true on-policy value in the world "
                f"({ev.truth_seeds} seed(s)), measured after the sweep.")
    users = ev.truth_users or "all"
    return (f"RLIV-UA has no off-policy estimator here: {config.metric} is the world's true "
            f"{ev.world_metric} on {ev.users} users (seeds 0..{ev.seeds - 1}); truth/value is "
            f"the same on {users} users with other seeds, so the regret is the cost of that "
            "cheap, noisy selection.")
