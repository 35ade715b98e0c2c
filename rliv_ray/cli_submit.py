"""``rliv submit``: run an ``rliv`` command as a Ray Job on a cluster, follow it, return its status.

    rliv submit [--address URL] [--working-dir DIR] [--runtime-env FILE] [--no-wait]
                [--placement FILE] -- COMMAND [ARG ...]

The command (``build-samples``, ``train``, ``sweep``, ``evaluate``, ...; a leading ``rliv`` is
optional) is checked here with the ``rliv`` parser, then sent to the head's Jobs API
(``JobSubmissionClient``) as the entrypoint ``python -m rliv_ray.cli COMMAND ...`` (``rliv``
itself, run by the job's Python: it also works when the runtime environment ships the package
with ``pip``, ``py_modules`` or ``working_dir``). Inside the job, Ray sets
``$RAY_ADDRESS`` and the command joins the cluster instead of starting a Ray of its own. The
job's output is streamed here as it comes (``tail_job_logs``); the exit status is 0 if the job
SUCCEEDED, else the command's own exit status (2 for bad arguments, 1 for invalid data), or 1
when the job failed before or outside the command; the reason is one line on stderr.

Paths in the command are read and written *by the cluster*: they must exist on its nodes (a
shared filesystem), or be relative to ``--working-dir``, which Ray uploads and makes the job's
working directory. ``rliv-ray`` must be importable by ``python`` on the nodes (installed, or
shipped by ``--runtime-env``). A cluster with token auth needs
``RAY_AUTH_MODE=token`` and the token (``RAY_AUTH_TOKEN_PATH`` or ``RAY_AUTH_TOKEN``) here too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shlex
import sys
import time
from collections import Counter
from pathlib import Path

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
ENTRYPOINT = ("python", "-m", "rliv_ray.cli")
NOT_SUBMITTED = ("submit", "ui")  # a job that submits jobs; a UI nobody could open
TOKEN_HINT = "token auth: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN"
AGENT_WAIT_S = 60.0  # a head that has just started answers before its job agent is ready
POLL_S = 0.5
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


def add_submit_parsers(add) -> None:
    """Register ``rliv submit`` with ``add(name, func, help_text) -> ArgumentParser``."""
    p = add("submit", cmd_submit,
            "Run an rliv command (build-samples, train, sweep, evaluate, ...) as a Ray Job on a "
            "cluster with the Jobs API: stream its output here and exit with its status. "
            "Paths in the command are the cluster's. Example: rliv submit --address "
            "http://HEAD:8265 -- train rliv-ua /shared/samples --out /shared/runs/ua")
    p.add_argument("--address", dest="dashboard", metavar="URL",
                   help="the head's dashboard (Jobs API) (default: $RAY_API_SERVER_ADDRESS, "
                   f"else $RAY_ADDRESS, else {DEFAULT_ADDRESS})")
    p.add_argument("--working-dir", metavar="DIR", help="a local directory Ray uploads and "
                   "runs the command in (relative paths in the command are then inside it)")
    p.add_argument("--runtime-env", metavar="FILE", help="a Ray runtime environment, YAML or "
                   "JSON (env_vars, pip, py_modules, ...; see cluster/runtime_env.yaml)")
    p.add_argument("--no-wait", action="store_true", help="print the job id and return at once")
    p.add_argument("--placement", metavar="FILE", help="after the job, write which nodes ran "
                   "its actors and tasks (Ray's state API) to FILE (JSON) and print it")
    p.add_argument("rliv_args", nargs=argparse.REMAINDER, metavar="-- COMMAND ...",
                   help="the rliv command to run, after --")


def cmd_submit(args: argparse.Namespace) -> int:
    from rliv_ray.cli import CLIError
    from rliv_ray.ray_address import check_reachable, dashboard_url, url_host_port

    command = rliv_command(args.rliv_args)
    if command is None:
        return 0  # the command's --help was printed
    runtime_env = load_runtime_env(args.runtime_env, args.working_dir)
    given, source = _address(args.dashboard)
    try:
        url = dashboard_url(given)
    except ValueError as err:
        raise CLIError(f"{source}: {err}") from err
    check_reachable(*url_host_port(url), f"the Ray dashboard (Jobs API) at {url}")
    client = _client(url)
    entrypoint = shlex.join([*ENTRYPOINT, *command])
    job = _submit(client, entrypoint, runtime_env)
    _say(f"submitted {job} to {url}: {entrypoint}")
    if args.no_wait:
        print(job)
        _say(f"follow it: ray job logs --follow {job} --address {url}; stop it: ray job stop "
             f"{job} --address {url}")
        return 0
    logging.getLogger("ray.dashboard.modules.job.sdk").setLevel(logging.WARNING)
    try:
        if not args.quiet:
            asyncio.run(_follow(client, job))
        info = _wait(client, job)
    except KeyboardInterrupt:
        _say(f"stopped following {job}; it goes on running (ray job stop {job} --address {url})")
        return EXIT_INTERRUPTED
    if args.placement:
        _write_placement(url, info, Path(args.placement))
    return job_exit_status(job, info)


def _address(given: str | None) -> tuple[str, str]:
    """The dashboard address and where it came from (for the error message)."""
    for value, source in ((given, "--address"),
                          (os.environ.get("RAY_API_SERVER_ADDRESS"), "$RAY_API_SERVER_ADDRESS"),
                          (os.environ.get("RAY_ADDRESS"), "$RAY_ADDRESS")):
        if value:
            return value, source
    return DEFAULT_ADDRESS, "the default address"


def rliv_command(argv: list[str]) -> list[str] | None:
    """The command after ``--`` (a leading ``rliv`` dropped), checked with the rliv parser:
    CLIError for a missing or refused command, SystemExit(2) for bad arguments (argparse's
    usage and one error line), None after a ``--help``."""
    from rliv_ray.cli import CLIError, build_parser

    command = argv[1:] if argv[:1] == ["--"] else list(argv)
    if command[:1] == ["rliv"]:
        command = command[1:]
    if not command:
        raise CLIError("no command to submit: rliv submit [OPTIONS] -- COMMAND [ARG ...]")
    if command[0] in NOT_SUBMITTED:
        raise CLIError(f"'{command[0]}' cannot run as a job; submit build-samples, train, "
                       "sweep, evaluate or another data or model command")
    try:
        build_parser().parse_args(command)
    except SystemExit as exit_:
        if exit_.code in (0, None):
            return None
        raise
    return command


def load_runtime_env(path: str | None, working_dir: str | None) -> dict:
    """The runtime environment from ``path`` (a YAML or JSON mapping) plus ``working_dir``."""
    import yaml

    from rliv_ray.cli import CLIError

    env: dict = {}
    if path:
        try:
            env = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise CLIError(f"--runtime-env {path}: {_first_line(err)}") from err
        if not isinstance(env, dict):
            raise CLIError(f"--runtime-env {path}: expected a mapping (env_vars, pip, ...)")
    if working_dir:
        if not Path(working_dir).is_dir():
            raise CLIError(f"--working-dir {working_dir}: no such directory")
        env["working_dir"] = str(Path(working_dir).resolve())
    return env


def job_exit_status(job: str, info) -> int:
    """0 for SUCCEEDED; else the command's exit status (or 1), with the reason on one line."""
    status = str(getattr(info.status, "value", info.status))
    if status == "SUCCEEDED":
        _say(f"job {job} succeeded")
        return 0
    code = info.driver_exit_code
    reason = _first_line(info.message or "no reason given")
    _say(f"rliv submit: job {job} {status.lower()}"
         + (f" (exit status {code})" if code is not None else "") + f": {reason}")
    return code if isinstance(code, int) and code > 0 else EXIT_FAILED


def job_placement(url: str, job_id: str, driver_node: str | None = None) -> dict[str, dict]:
    """node id -> {"driver", "actors": {class: n}, "tasks": {name: n}} for one Ray job, from
    Ray's state API: actors from the GCS actor table, tasks (Ray Data's included) from the
    task events; ``driver`` marks ``driver_node``, where the job's command ran."""
    from ray.util.state import list_actors, list_tasks

    nodes: dict[str, dict] = {}

    def node(node_id: str) -> dict:
        return nodes.setdefault(node_id, {"driver": node_id == driver_node,
                                          "actors": Counter(), "tasks": Counter()})

    if driver_node:
        node(driver_node)
    for actor in list_actors(address=url, filters=[("job_id", "=", job_id)], limit=10_000,
                             raise_on_missing_output=False):
        if actor.node_id:
            node(actor.node_id)["actors"][actor.class_name] += 1
    for task in list_tasks(address=url, filters=[("job_id", "=", job_id)], limit=10_000,
                           raise_on_missing_output=False):
        if task.node_id and task.type == "NORMAL_TASK":
            node(task.node_id)["tasks"][task.name] += 1
    return {k: {**v, "actors": dict(v["actors"]), "tasks": dict(v["tasks"])}
            for k, v in nodes.items()}


def _write_placement(url: str, info, path: Path) -> None:
    if not info.job_id:
        _say("placement: the job never started a Ray driver")
        return
    nodes = job_placement(url, info.job_id, driver_node=info.driver_node_id)
    path.write_text(json.dumps({"job_id": info.job_id, "nodes": nodes}, indent=2) + "\n")
    _say(f"placement of Ray job {info.job_id} ({len(nodes)} nodes; {path}):")
    for node_id, n in sorted(nodes.items(), key=lambda item: not item[1]["driver"]):
        what = [f"{count} x {name}" for name, count in {**n["actors"], **n["tasks"]}.items()]
        _say(f"  {node_id[:12]}{' (driver)' if n['driver'] else ''}: "
             + (", ".join(what) or "nothing else"))


def _client(url: str):
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    from rliv_ray.cli import CLIError

    try:
        return JobSubmissionClient(url)
    except AuthenticationError as err:
        raise CLIError(f"{url} refused this client: {_first_line(err)} ({TOKEN_HINT})") from err
    except (ConnectionError, RuntimeError) as err:
        raise CLIError(f"{url} does not answer as a Ray dashboard: {_first_line(err)}") from err


def _submit(client, entrypoint: str, runtime_env: dict) -> str:
    """Submit, retrying while a fresh head's job agent is not ready; CLIError on refusal."""
    from ray.exceptions import AuthenticationError

    from rliv_ray.cli import CLIError

    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env or None)
        except AuthenticationError as err:
            raise CLIError(f"the cluster refused the job: {_first_line(err)} ({TOKEN_HINT})"
                           ) from err
        except (RuntimeError, ValueError, TypeError) as err:
            if "No available agent" not in str(err) or time.monotonic() > deadline:
                raise CLIError(f"the cluster refused the job: {_first_line(err)}") from err
            time.sleep(1.0)


async def _follow(client, job: str) -> None:
    """Copy the job's output to stdout as it comes; a dropped stream just stops following."""
    try:
        async for chunk in client.tail_job_logs(job):
            sys.stdout.write(chunk)
            sys.stdout.flush()
    except Exception as err:  # noqa: BLE001 - aiohttp's or Ray's; the status is still polled
        _say(f"rliv submit: log stream closed ({_first_line(err)}); waiting for the job")


def _wait(client, job: str):
    """The job's final JobInfo (SUCCEEDED, FAILED or STOPPED); CLIError if the cluster goes."""
    from rliv_ray.cli import CLIError

    while True:
        try:
            info = client.get_job_info(job)
        except (OSError, RuntimeError) as err:  # requests' ConnectionError is an OSError
            raise CLIError(f"lost the cluster while waiting for {job}: {_first_line(err)}",
                           EXIT_FAILED) from err
        if info.status.is_terminal():
            return info
        time.sleep(POLL_S)


def _first_line(err) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
