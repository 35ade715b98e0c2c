"""``rliv ui``: browse the project's MLflow store in the MLflow UI, served on this machine only.

    rliv ui [--tracking-uri URI] [--port 5000] [--host 127.0.0.1] [--allow-remote]

The store is ``--tracking-uri``, else ``$RLIV_TRACKING_URI``, else ``./mlflow.db`` (SQLite in
the working directory; ``make mlflow-ui`` passes the demo's ``demo_out/mlflow.db``). The server
is ``mlflow server`` in a process group of its own; Ctrl-C (or SIGTERM, SIGHUP) stops the whole
group. MLflow's background job runner (GenAI judges, not needed to browse runs) is switched off.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from rliv_ray.checks import POSITIVE, integer

DEFAULT_PORT = 5000
DEFAULT_STORE = "mlflow.db"
START_TIMEOUT_S = 180.0  # a cold `mlflow server` on a busy machine takes a minute to answer
STOP_TIMEOUT_S = 15.0  # SIGTERM, then SIGKILL for what is still running after this
POLL_S = 0.5


def add_ui_parsers(add) -> None:
    """Register ``rliv ui`` with ``add(name, func, help_text) -> ArgumentParser``."""
    p = add("ui", cmd_ui,
            "Serve an MLflow store in the MLflow UI (`mlflow server`) on this machine, print "
            "the URL of the rliv-ray experiment's runs and stop on Ctrl-C.")
    p.add_argument("--tracking-uri", help="the store to browse (default: $RLIV_TRACKING_URI, "
                   f"else sqlite:///$PWD/{DEFAULT_STORE})")
    p.add_argument("--port", type=integer(0, 65535), default=DEFAULT_PORT,
                   help=f"port to listen on (default {DEFAULT_PORT}; 0: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; "
                   "a non-loopback address needs --allow-remote)")
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host: "
                   "the MLflow server has no login, so anyone who reaches it can read and "
                   "delete runs")
    p.add_argument("--workers", type=integer(1), default=1,
                   help="server worker processes (default 1)")
    p.add_argument("--start-timeout", type=POSITIVE, default=START_TIMEOUT_S,
                   help=f"seconds to wait for the server to answer (default {START_TIMEOUT_S:g})")


def store_uri(given: str | None, cwd: Path | None = None) -> str:
    """The store to serve: ``given``, else ``$RLIV_TRACKING_URI``, else ./mlflow.db; a SQLite
    store must exist (serving an empty new one helps nobody). CLIError if not."""
    from rliv_ray.cli import CLIError
    from rliv_ray.tracking import resolve_tracking_uri

    cwd = Path.cwd() if cwd is None else cwd
    uri = resolve_tracking_uri(given) or f"sqlite:///{(cwd / DEFAULT_STORE).resolve()}"
    path = sqlite_path(uri)
    if path is not None and not path.is_file():
        demo = cwd / "demo_out" / DEFAULT_STORE
        hint = (f"; the demo's store is --tracking-uri sqlite:///{demo.resolve()}"
                if demo.is_file() else "; log runs with --tracking-uri first (e.g. `make demo`)")
        raise CLIError(f"no MLflow store at {uri}{hint}")
    return uri


def sqlite_path(uri: str) -> Path | None:
    """``sqlite:////abs/x.db`` -> /abs/x.db, ``sqlite:///x.db`` -> x.db; None for other URIs."""
    prefix = "sqlite:///"
    return Path(uri[len(prefix):]) if uri.startswith(prefix) else None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host(host: str, allow_remote: bool) -> None:
    from rliv_ray.cli import CLIError

    if not (allow_remote or is_loopback(host)):
        raise CLIError(f"--host {host} is not a loopback address and the MLflow server has no "
                       "login (anyone who reaches it can read and delete runs); pass "
                       "--allow-remote to serve it there anyway")


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (the OS's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    """Whether something holds ``port``; connections of a stopped server that linger in
    TIME_WAIT do not count (SO_REUSEADDR, as the server itself binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def server_command(uri: str, host: str, port: int, workers: int = 1) -> list[str]:
    """``mlflow server`` over ``uri``; uvicorn logs warnings only, not every request."""
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
            "--host", host, "--port", str(port), "--workers", str(workers),
            "--uvicorn-opts", "--log-level warning"]


def server_env() -> dict[str, str]:
    """No job runner: it starts 7 consumers that ignore SIGTERM and only serve GenAI jobs."""
    return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def get_json(url: str, timeout: float = 10.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (http only)
        return json.loads(response.read())


def wait_until_ready(proc: subprocess.Popen, base_url: str, timeout: float) -> None:
    """Poll ``/health`` until it answers; CLIError if the server exits or times out first."""
    from rliv_ray.cli import CLIError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CLIError(f"mlflow server exited with status {proc.returncode} before it "
                           "answered (its messages are above)")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{base_url}/health", timeout=5) as response:  # noqa: S310
                if response.status == 200:
                    return
        time.sleep(POLL_S)
    raise CLIError(f"mlflow server did not answer at {base_url} within {timeout:g}s")


def experiment_url(base_url: str, name: str | None = None) -> str:
    """The UI page of experiment ``name``'s runs, or the home page if it has none yet."""
    from rliv_ray.tracking import EXPERIMENT

    query = urllib.parse.urlencode({"experiment_name": name or EXPERIMENT})
    try:
        found = get_json(f"{base_url}/api/2.0/mlflow/experiments/get-by-name?{query}")
    except (OSError, ValueError):
        return f"{base_url}/"
    return f"{base_url}/#/experiments/{found['experiment']['experiment_id']}/runs"


def stop_group(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the server's process group, SIGKILL whatever is left after ``timeout``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and group_alive(proc):
            time.sleep(0.2)
        if not group_alive(proc):
            return


def group_alive(proc: subprocess.Popen) -> bool:
    """Whether any process of the server's group still runs (zombies do not count)."""
    proc.poll()  # reap our direct child
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    return bool(group_members(proc.pid)) or not Path("/proc/self/stat").exists()


def group_members(pgid: int) -> list[int]:
    """Pids of the live (not zombie) processes in process group ``pgid``, from Linux /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            state, _ppid, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
            if int(group) == pgid and state != "Z":
                pids.append(int(stat.parent.name))
    return pids


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGINT (also where a shell started us with it ignored), SIGTERM and SIGHUP raise
    KeyboardInterrupt, so the server is stopped whichever way this command is asked to end."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, interrupt) for sig in stops}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cmd_ui(args: argparse.Namespace) -> int:
    from rliv_ray.cli import CLIError

    check_host(args.host, args.allow_remote)
    uri = store_uri(args.tracking_uri)
    port = args.port or free_port(args.host)
    if port_in_use(args.host, port):
        raise CLIError(f"port {port} on {args.host} is in use; pick another with --port "
                       "(0: any free port)")
    base_url = f"http://{'[' + args.host + ']' if ':' in args.host else args.host}:{port}"
    print(f"starting mlflow server over {uri} ...", flush=True)
    with _signals_interrupt():
        proc = subprocess.Popen(server_command(uri, args.host, port, args.workers),
                                env=server_env(), start_new_session=True)
        try:
            wait_until_ready(proc, base_url, args.start_timeout)
            print(f"MLflow UI: {experiment_url(base_url)}  (Ctrl-C stops it)", flush=True)
            proc.wait()
            raise CLIError(f"mlflow server exited with status {proc.returncode}")
        except KeyboardInterrupt:
            print("stopping the MLflow server ...", flush=True)
        finally:
            stop_group(proc)
    print(f"stopped; {base_url} is closed")
    return 0
