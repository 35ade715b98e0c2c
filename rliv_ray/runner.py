"""Run one function over a list of work items, in-process or on Ray Data: the thin Ray shell.

Each item is a dict of plain values (paths, numbers) and the function returns a JSON-able dict.
:class:`LocalRunner` is the single-process reference; :class:`RayRunner` maps the same
function over the items with Ray Data (one item per block, one task per item), locally with
``ray.init()`` or on a cluster with ``address`` (or ``$RAY_ADDRESS``, which Ray Jobs set).
CPU budgets follow ``../shared/RLLIB_NOTES.md``: each task asks for one CPU and a local Ray
gets exactly ``workers`` CPUs, so nothing waits on CPUs that do not exist (the silent hang of
small machines).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator

import numpy as np

from rliv_ray.progress import Progress

Work = Callable[..., dict]


class LocalRunner:
    """Calls the function on each item in this process, in order."""

    workers = 0

    def __init__(self, *, progress: bool = True):
        self.progress = progress

    def map(self, fn: Work, items: list[dict], desc: str, **kwargs) -> list[dict]:
        out = []
        with Progress(len(items), desc, unit="files", enabled=self.progress) as bar:
            for item in items:
                out.append(fn(**item, **kwargs))
                bar.update(1)
        return out

    def close(self) -> None:
        pass


def _call_on_batch(batch: dict, fn: Work, kwargs: dict) -> dict:
    """Ray Data batch (one item) -> one JSON string with the function's result."""
    results = []
    for i in range(len(next(iter(batch.values())))):
        item = {key: _plain(values[i]) for key, values in batch.items()}
        results.append(json.dumps(fn(**item, **kwargs)))
    return {"result": np.array(results, dtype=object)}


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def start_ray(*, address: str | None, num_cpus: int, progress: bool) -> bool:
    """Join ``address`` (or ``$RAY_ADDRESS``) or start a private local Ray with ``num_cpus``
    logical CPUs; nothing if Ray is already up. True when this call started or joined Ray.
    An address where nothing answers raises :class:`~rliv_ray.ray_address.ClusterUnreachable`
    at once (``ray.init`` would retry for minutes).

    Signals: the command's SIGTERM handler stays in place while Ray starts (``ray.init`` would
    put its own, ``sys.exit``, and its core worker a C++ one that dumps a stack and aborts with
    status 134). A start cut short (Ctrl-C, SIGTERM) shuts down what it had started."""
    import ray
    from ray._private import ray_constants

    from rliv_ray.ray_logs import drop_unactionable_lines

    if ray.is_initialized():
        return False
    drop_unactionable_lines()
    ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = True  # this process only, not workers
    quiet = {"log_to_driver": False, "logging_level": logging.INFO if progress
             else logging.WARNING}
    address = address or os.environ.get("RAY_ADDRESS")  # set inside `ray job submit`
    if address:
        from rliv_ray.ray_address import ClusterUnreachable, check_ray_address

        check_ray_address(address)
        try:
            with _starting():
                ray.init(address=address, **quiet)
        except ConnectionError as err:  # e.g. `auto` with no cluster running
            raise ClusterUnreachable(str(err).strip().splitlines()[0]) from None
    else:  # "local": a new Ray of our own, never a cluster that happens to be running
        loopback_only()
        no_reconnect_in_workers()
        with _starting():
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                     _node_ip_address=LOOPBACK, **quiet)
    return True


LOOPBACK = "127.0.0.1"


def loopback_only() -> None:
    """Keep a private Ray on 127.0.0.1: every socket of its processes (GCS, raylet, object
    manager, dashboard and runtime-env agents, metrics export, workers) then listens there,
    and token auth (Ray's default for a local Ray) guards them against other local users.

    On Linux Ray 2.60 replaces a loopback node address with the machine's address unless
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, which Ray reads when it is imported: set for the
    processes Ray starts, and in this process's already imported constant.
    ``tests/integration/test_local_listeners.py`` checks the sockets."""
    import ray._private.ray_constants as ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def no_reconnect_in_workers() -> None:
    """Workers of a private Ray never start a Ray of their own.

    A remote learner that exits while its Ray Data split is open closes the split's iterator,
    which calls a coordinator actor; with Ray gone, the call's automatic ``ray.init`` waited
    for the dead GCS, and the worker stayed on after the command, orphaned (``rliv train
    --num-learners 2``). With ``RAY_ENABLE_AUTO_CONNECT=0``, which the workers read when they
    import Ray, the call fails and the worker exits. This process imported Ray already, so its
    own behaviour is unchanged."""
    os.environ["RAY_ENABLE_AUTO_CONNECT"] = "0"


@contextlib.contextmanager
def _starting() -> Iterator[None]:
    """``ray.init`` with the command's SIGTERM handler kept, and shut down if cut short."""
    import psutil
    import ray
    from ray._private import utils

    ours = (threading.current_thread() is threading.main_thread()
            and callable(signal.getsignal(signal.SIGTERM)))
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    installer = utils.set_sigterm_handler
    if ours:
        utils.set_sigterm_handler = lambda handler: None
    try:
        yield
    except BaseException:
        started = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
        ray.shutdown()
        _, alive = psutil.wait_procs(started, timeout=5)
        for process in alive:  # a raylet stopped half-way leaves its agents running
            with contextlib.suppress(psutil.Error):
                process.kill()
        raise
    finally:
        utils.set_sigterm_handler = installer


class RayRunner:
    """Maps the function over items with Ray Data tasks (``workers`` at a time)."""

    def __init__(self, workers: int, *, address: str | None = None, progress: bool = True):
        import ray

        if workers < 1:
            raise ValueError(f"workers must be >= 1 for Ray, got {workers}")
        self.workers = workers
        self._started = start_ray(address=address, num_cpus=workers, progress=progress)
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = progress
        if not progress:
            logging.getLogger("ray.data").setLevel(logging.WARNING)
        self._ray = ray

    def map(self, fn: Work, items: list[dict], desc: str, **kwargs) -> list[dict]:
        if not items:
            return []
        ds = self._ray.data.from_items(items, override_num_blocks=len(items))
        mapped = ds.map_batches(
            _call_on_batch, batch_size=1, batch_format="numpy", num_cpus=1,
            compute=self._ray.data.TaskPoolStrategy(size=min(self.workers, len(items))),
            fn_kwargs={"fn": fn, "kwargs": kwargs},
        )
        return [json.loads(row["result"]) for row in mapped.take_all()]

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()


def make_runner(workers: int, *, address: str | None = None,
                progress: bool = True) -> LocalRunner | RayRunner:
    """``workers = 0``: in-process reference; otherwise Ray Data with that many tasks."""
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if workers == 0 and address is None:
        return LocalRunner(progress=progress)
    return RayRunner(max(workers, 1), address=address, progress=progress)
