"""Running one of our offline algorithms: CPU budgets, Ray, checkpoints, tracking, export.

CPU accounting on small machines (RLLIB_NOTES "Silent hang"): the reader tasks and the one
pre-learner actor take half a CPU each, remote learners half a CPU each, and a local Ray gets
at least 4 logical CPUs, so ``num_learners`` 0, 1 and 2 all fit on 2 cores.

Determinism: Ray Data keeps the shards' order (``preserve_order``), RLlib seeds torch, NumPy
and ``random`` from ``--seed`` in every learner, and nothing shuffles; so with ``num_learners``
0 the same seed and data give the same parameters, to the bit, and a resumed run the
parameters of the uninterrupted one (:mod:`rliv_ray.algorithms.common.checkpoint`; tested for
both algorithms; one remote learner reads the same way, but is not tested for it).

Faults: SIGINT and SIGTERM stop training cleanly (:class:`~rliv_ray.interrupts.StopSignals`):
the algorithm, its data iterators and Ray are shut down in order, whatever stopped the run.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rliv_ray.checks import check_field_type
from rliv_ray.interrupts import Abort, StopSignals, TrainingInterrupted
from rliv_ray.outdir import claimed_out
from rliv_ray.train_loop import LoopSettings, Resumed, latest_checkpoint, run_iterations

BATCH_CACHE_MB = 1024
"""Default of ``batch_cache_mb``: the largest epoch, in MB of tensors, a local learner keeps."""


@dataclass(frozen=True)
class TrainSettings:
    loop: LoopSettings = field(default_factory=LoopSettings)
    updates_per_iteration: int = 100
    num_learners: int = 0
    address: str | None = None
    seed: int = 0
    materialize: bool = True
    """Keep the mapped shards in Ray's object store (fast epochs; set False for logs larger
    than memory, which then stream from Parquet every epoch)."""
    batch_cache_mb: int = BATCH_CACHE_MB
    """A learner in this process (``num_learners`` 0) keeps an epoch of batches up to this
    size and replays it in later epochs, same batches, same order (0: read every epoch)."""
    training: dict[str, Any] = field(default_factory=dict)
    """The algorithm config's training() fields, e.g. {"gamma": 0.9}."""

    def __post_init__(self) -> None:
        if self.updates_per_iteration < 1:
            raise ValueError(f"updates_per_iteration must be >= 1, got "
                             f"{self.updates_per_iteration}")
        if self.num_learners < 0:
            raise ValueError(f"num_learners must be >= 0, got {self.num_learners}")
        if self.batch_cache_mb < 0:
            raise ValueError(f"batch_cache_mb must be >= 0, got {self.batch_cache_mb}")


def with_offline_data(config, files: list[Path], settings: TrainSettings, prelearner_class):
    """Learners, the Parquet reader and the pre-learner with the CPU budgets above."""
    import ray.data

    from rliv_ray.data.uris import filesystem_and_paths

    filesystem, paths = filesystem_and_paths([str(f) for f in files])
    remote = settings.num_learners > 0
    config.batch_cache_mb = settings.batch_cache_mb
    return (
        config.learners(num_learners=settings.num_learners,
                        num_cpus_per_learner=0.5 if remote else 1)
        .offline_data(
            input_=paths, input_filesystem=filesystem, input_read_method="read_parquet",
            input_read_method_kwargs={"num_cpus": 0.5}, prelearner_class=prelearner_class,
            map_batches_kwargs={"compute": ray.data.ActorPoolStrategy(size=1),
                                "num_cpus": 0.5, "batch_format": "pyarrow"},
            materialize_mapped_data=settings.materialize,
            dataset_num_iters_per_learner=settings.updates_per_iteration)
        .debugging(seed=settings.seed)
    )


@contextlib.contextmanager
def training_out(out: Path, samples: str | Path, *, resume: bool,
                 overwrite: bool) -> Iterator[Resumed | None]:
    """Hold OUT for one training run and yield the checkpoint to resume from (None: OUT is
    empty). OUT is never the samples or inside or around them, one run writes it at a time, and
    ``overwrite`` keeps the old OUT (as ``OUT.old-<pid>``) until this run has finished
    (:func:`rliv_ray.outdir.claimed_out`).

    A new run that stops (fails, is interrupted) before its first checkpoint leaves nothing:
    OUT is removed, and the OUT that ``overwrite`` moved aside is put back."""
    with claimed_out(out, resume=resume, overwrite=overwrite, what="training",
                     inputs=[samples]) as claim:
        start = None
        if resume:
            start = latest_checkpoint(out)
            if start is None:
                from rliv_ray.checks import CLIError

                raise CLIError(f"{out}: no checkpoint to resume from")
        try:
            yield start
        except BaseException:
            if start is None and _nothing_kept(out):
                shutil.rmtree(out, ignore_errors=True)
                if claim.old is not None and not os.path.lexists(out):
                    claim.old.rename(out)
                    claim.old = None
            raise


def _nothing_kept(out: Path) -> bool:
    try:
        return latest_checkpoint(out) is None
    except ValueError:  # a checkpoint we cannot read: not ours to remove
        return False


def check_resume(out: Path, config, *, resume: bool) -> None:
    """Before OUT is claimed: with ``resume``, OUT's latest checkpoint is one of this algorithm
    and network (DataFileError or ValueError if not). No checkpoint at all is reported under
    OUT's lock (:func:`training_out`), where a run still writing OUT is named first."""
    if not resume:
        return
    from rliv_ray.algorithms.common.checkpoint import check_checkpoint

    start = latest_checkpoint(out) if Path(out).is_dir() else None
    if start is not None:
        check_checkpoint(start.checkpoint, config)


SETTINGS_FILE = "training_fields.json"


def remember_training(out: Path, settings: TrainSettings,
                      start: Resumed | None) -> TrainSettings:
    """A resumed run keeps the config fields of the run it continues (OUT/training_fields.json);
    fields given again override them."""
    if start is not None:
        settings = resumed_training(out, settings, resume=True)
    (out / SETTINGS_FILE).write_text(json.dumps(plain(settings.training), indent=2) + "\n")
    return settings


def resumed_training(out: Path, settings: TrainSettings, *, resume: bool) -> TrainSettings:
    """The settings a run will train with, read before OUT is claimed (nothing is written):
    with ``resume``, the fields of the run it continues (OUT/training_fields.json), overridden
    by those given again."""
    file = Path(out) / SETTINGS_FILE
    if not resume or not file.is_file():
        return settings
    try:
        saved = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        from rliv_ray.checks import InvalidInput

        raise InvalidInput(f"{file}: not readable ({err}); start again with --overwrite") from None
    return replace(settings, training={**saved, **settings.training})


def check_training_fields(config_class, fields: dict[str, Any]):
    """The checks of :func:`configured` that need no data (names, types, gamma and lr); a
    fresh ``config_class()``."""
    fresh = config_class()
    for name, value in fields.items():
        if not hasattr(fresh, name):
            raise ValueError(f"unknown training field '{name}' of {config_class.__name__} "
                             "(--set FIELD=VALUE)")
        if not (name == "lr" and isinstance(value, list)):  # RLlib's lr schedule
            check_field_type(name, value, getattr(fresh, name))
    if "gamma" in fields and not 0.0 <= fields["gamma"] < 1.0:
        raise ValueError(f"gamma must be in [0, 1), got {fields['gamma']}")
    if isinstance(fields.get("lr"), int | float) and not fields["lr"] > 0:
        raise ValueError(f"lr must be > 0, got {fields['lr']}")
    return fresh


def configured(config_class, fields: dict[str, Any]):
    """``config_class().training(**fields)`` with its field errors, where an unknown field, a
    value of the wrong type or out of range is a ValueError naming it (``--set``)."""
    fresh = check_training_fields(config_class, fields)
    try:
        config = fresh.training(**fields)
        errors = config.field_errors()
    except TypeError as err:
        found = re.search(r"unexpected keyword argument '(\w+)'", str(err))
        if found:
            raise ValueError(f"unknown training field '{found.group(1)}' of "
                             f"{config_class.__name__} (--set FIELD=VALUE)") from None
        raise ValueError(f"invalid training field: {err}") from None
    if errors:
        raise ValueError("; ".join(errors))
    return config


CPUS_PER_LEARNER = 0.5
DATA_CPUS = 1.0
"""The Parquet reader tasks and the pre-learner actor (0.5 each, :func:`with_offline_data`)."""


def local_ray_cpus() -> int:
    """Logical CPUs of the private local Ray a training run starts."""
    return max(4, os.cpu_count() or 1)


def cpus_needed(settings: TrainSettings) -> float:
    return DATA_CPUS + CPUS_PER_LEARNER * settings.num_learners


@contextlib.contextmanager
def training_ray(settings: TrainSettings) -> Iterator[None]:
    """Check, before OUT is claimed, that the Ray a run will use has the CPUs its learners and
    data need (too few and Ray waits for them forever): a local Ray's from this machine, a
    cluster's (``address`` or ``$RAY_ADDRESS``, joined here and left at the end of the block)
    or that of a Ray this process runs already, from ``ray.cluster_resources()``. CLIError
    (exit status 2) if not."""
    from rliv_ray.checks import CLIError

    need = cpus_needed(settings)
    address = settings.address or os.environ.get("RAY_ADDRESS")
    ray = _ray_if_running()
    started = False
    if ray is None and not address:
        have, where = float(local_ray_cpus()), "the local Ray of this run has"
    else:
        import ray

        from rliv_ray.runner import start_ray

        started = start_ray(address=settings.address, num_cpus=local_ray_cpus(), progress=False)
        have = float(ray.cluster_resources().get("CPU", 0.0))
        where = (f"the Ray cluster at {address} has" if address and started else
                 "the running Ray has")
    try:
        if need > have:
            raise CLIError(f"--num-learners {settings.num_learners} needs {need:g} CPUs "
                           f"({CPUS_PER_LEARNER:g} per learner and {DATA_CPUS:g} for reading "
                           f"the data) but {where} {have:g}: use at most "
                           f"{max(0, int((have - DATA_CPUS) / CPUS_PER_LEARNER))} learners")
        yield
    finally:
        if started:
            ray.shutdown()


def _ray_if_running():
    import sys

    ray = sys.modules.get("ray")
    return ray if ray is not None and ray.is_initialized() else None


def run_training(config, out: Path, settings: TrainSettings, *, start: Resumed | None,
                 run_name: str, params: dict[str, Any], tracking_uri: str | None,
                 export: Callable[[Path], Path],
                 on_export: Callable[[Path, int, dict], None] | None = None,
                 evaluate: Callable[[Path, int], dict[str, float]] | None = None,
                 evaluate_each_checkpoint: bool = False) -> dict[str, Any]:
    """Build the algorithm, restore, iterate, checkpoint, export; the loop's result plus the
    final checkpoint, the export and the wall time. Checkpoints are our own tensors-and-JSON
    format (:mod:`rliv_ray.algorithms.common.checkpoint`); RLlib's pickles are neither written
    nor read.

    With ``on_export``, every checkpoint is exported too and ``on_export(exported, iteration,
    metrics)`` called (``rliv sweep`` evaluates each exported policy). With ``evaluate``, the
    last checkpoint (every one with ``evaluate_each_checkpoint``) is exported and
    ``evaluate(exported, iteration)`` gives metrics logged with that iteration's
    (``rliv train sl-mgac``'s off-policy estimates).

    SIGINT or SIGTERM (in the main thread) raise :class:`TrainingInterrupted` once the run is
    closed: after the current iteration and its checkpoint, or at once on a second signal or
    before the iterations start."""
    with StopSignals() as stop:
        try:
            return _run_training(config, out, settings, start=start, run_name=run_name,
                                 params=params, tracking_uri=tracking_uri, export=export,
                                 on_export=on_export, evaluate=evaluate,
                                 evaluate_each_checkpoint=evaluate_each_checkpoint, stop=stop)
        except Abort as abort:
            good = latest_checkpoint(out)
            raise TrainingInterrupted(abort.signum, good.checkpoint if good else None,
                                      good.iteration if good else None) from None


def _run_training(config, out: Path, settings: TrainSettings, *, start: Resumed | None,
                  run_name: str, params: dict[str, Any], tracking_uri: str | None,
                  export: Callable[[Path], Path],
                  on_export: Callable[[Path, int, dict], None] | None,
                  evaluate: Callable[[Path, int], dict[str, float]] | None,
                  evaluate_each_checkpoint: bool, stop: StopSignals) -> dict[str, Any]:
    import ray

    from rliv_ray.algorithms.common.checkpoint import apply_state, read_state, save_state
    from rliv_ray.runner import start_ray
    from rliv_ray.tracking import tracking_run

    saved = read_state(start.checkpoint, config) if start is not None else None  # before Ray
    # A signal while Ray starts is acted on once it has started: ray.init cut short by one
    # leaves processes behind and can crash the interpreter at exit.
    stop.armed = True
    # Our per-iteration lines are the progress display; Ray Data's would drown them.
    started = start_ray(address=settings.address, num_cpus=max(4, os.cpu_count() or 1),
                        progress=False)
    stop.install()
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    keep_order, context.execution_options.preserve_order = (
        context.execution_options.preserve_order, True)  # the shards' order, every run
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    began = time.perf_counter()
    algo = None

    def export_each(checkpoint: Path, iteration: int, metrics: dict) -> None:
        on_export(export(checkpoint), iteration, metrics)

    def evaluate_checkpoint(checkpoint: Path, iteration: int) -> dict[str, float]:
        if evaluate_each_checkpoint or iteration == settings.loop.iterations:
            return evaluate(export(checkpoint), iteration)
        return {}

    try:
        if stop.requested:  # while Ray started
            raise Abort(stop.signum)
        algo = config.build_algo()
        if saved is not None:
            apply_state(algo, saved)
        with tracking_run(tracking_uri, run_name, out=out,
                          resume=start is not None) as tracker:
            tracker.log_params(params)
            rows = config.train_batch_size_per_learner * max(1, settings.num_learners)
            result = run_iterations(algo, out, settings.loop,
                                    updates_per_iteration=settings.updates_per_iteration,
                                    rows_per_update=rows, start=start, tracker=tracker,
                                    save_state=lambda a, path: save_state(a, path, config),
                                    on_checkpoint=export_each if on_export else None,
                                    evaluate=evaluate_checkpoint if evaluate else None,
                                    stop=stop)
            _stop(algo)
            algo = None
            checkpoint = latest_checkpoint(out).checkpoint
            exported = export(checkpoint)
            tracker.log_artifact(exported)
    finally:
        stop.closing = True  # from here on a signal waits for Ray to be shut down
        context.execution_options.preserve_order = keep_order
        if algo is not None:
            _stop(algo, quiet=True)
        del algo
        gc.collect()  # the learner's data iterator must finish while Ray is still up
        if started:
            ray.shutdown()
    evaluation = result.pop("evaluation", {})
    if evaluate is not None:
        result["evaluation"] = evaluation
    return {**result, "checkpoint": str(checkpoint), "export": str(exported),
            "resumed_from": str(start.checkpoint) if start else None,
            "wall_s": time.perf_counter() - began}


def load_module(checkpoint: str | Path):
    """The trained RLModule of a checkpoint, without starting Ray or an Algorithm, and without
    unpickling (:func:`rliv_ray.algorithms.common.checkpoint.load_module`)."""
    from rliv_ray.algorithms.common.checkpoint import load_module as load

    return load(checkpoint)


def settings_params(settings: TrainSettings) -> dict[str, Any]:
    return plain(asdict(settings))


def plain(value):
    """Tuples to lists, recursively (JSON and MLflow parameters)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def _stop(algo, *, quiet: bool = False) -> None:
    """Stop the algorithm, closing its open data iterators first (they would otherwise be
    finalised after Ray shuts down, with a noisy traceback). ``quiet``: after a failure or an
    interrupt, whatever stopping raises is dropped (the run's own error is the one to show)."""
    try:
        for learner in _local_learners(algo):
            iterator = getattr(learner, "iterator", None)
            epoch = getattr(iterator, "_epoch_iterator", None)
            if hasattr(epoch, "close"):
                epoch.close()
            learner.iterator = None
        iterators = getattr(algo.offline_data, "batch_iterators", None)
        for iterator in iterators if isinstance(iterators, list) else [iterators]:
            if hasattr(iterator, "close"):
                iterator.close()
        algo.stop()
    except Exception:
        if not quiet:
            raise
    gc.collect()


def _local_learners(algo) -> list:
    group = getattr(algo, "learner_group", None)
    learner = getattr(group, "_learner", None) if group is not None else None
    return [learner] if learner is not None else []
