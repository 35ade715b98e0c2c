"""A Ray cluster of several nodes on this machine, listening on 127.0.0.1 only, token auth on.

    python cluster/local_cluster.py [--nodes 2] [--num-cpus 2] [--head-cpus N]
                                    [--dashboard-port 8265] [--dir DIR] [--ready-file FILE]
                                    [--no-auth] [--stop-with-parent]

A head node (GCS, dashboard with the Jobs API) with ``--head-cpus`` logical CPUs and
``--nodes - 1`` worker nodes with ``--num-cpus`` each, every node a raylet of its own, so Ray
schedules across nodes as on a real cluster. It prints the environment a client needs and the
``rliv submit`` address, then runs until Ctrl-C or SIGTERM (or, with ``--stop-with-parent``,
until the process that started it exits), and then stops every node. The cluster tests
(``tests/integration/test_cluster.py``) start exactly this.

Why not two ``ray start`` processes: on Linux Ray 2.60 replaces a loopback ``--node-ip-address``
and ``--address`` with the machine's address (``services.resolve_ip_for_localhost``), so its
gRPC servers listen on every interface. This script starts the nodes with
``ray.cluster_utils.Cluster`` and node address 127.0.0.1, which Ray keeps, and sets
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, which makes Ray's address lookup answer 127.0.0.1
(its only other effect, refusing ``ray start --address`` worker nodes, does not apply here).
Every process of the cluster, job drivers included, inherits the environment set here.

Token auth: ``RAY_AUTH_MODE=token`` unless the caller set ``RAY_AUTH_MODE``; the token is
``$RAY_AUTH_TOKEN_PATH`` or ``$RAY_AUTH_TOKEN`` if set, else a new one in DIR/auth_token
(mode 0600). ``--no-auth`` sets ``RAY_AUTH_MODE=disabled``: anyone on this machine could then
run code in the cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import sys
import tempfile
import threading
from pathlib import Path

LOOPBACK = "127.0.0.1"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=2, help="nodes, the head included (default 2)")
    p.add_argument("--num-cpus", type=int, default=2,
                   help="logical CPUs of each worker node (default 2)")
    p.add_argument("--head-cpus", type=int, help="logical CPUs of the head (default --num-cpus)")
    p.add_argument("--dashboard-port", type=int, default=8265,
                   help="port of the dashboard and Jobs API on 127.0.0.1 (default 8265)")
    p.add_argument("--dir", help="Ray's temporary files, logs and the token (default: a new "
                   "/tmp/rliv-cluster-*; keep it short: Ray's socket paths must fit 107 bytes)")
    p.add_argument("--ready-file", help="write the cluster's addresses and node ids here "
                   "(JSON) once every node is up")
    p.add_argument("--no-auth", action="store_true", help="RAY_AUTH_MODE=disabled")
    p.add_argument("--stop-with-parent", action="store_true", help="also stop when the process "
                   "that started this one exits (the tests: a killed run leaves nothing)")
    args = p.parse_args(argv)
    args.head_cpus = args.num_cpus if args.head_cpus is None else args.head_cpus
    if args.nodes < 1 or min(args.num_cpus, args.head_cpus) < 0:
        p.error("--nodes must be >= 1, --num-cpus and --head-cpus >= 0")
    return args


def loopback_environment(directory: Path, *, auth: bool) -> dict[str, str]:
    """The variables this process and every Ray process it starts need (see the docstring)."""
    env = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_TMPDIR": str(directory)}
    mode = os.environ.get("RAY_AUTH_MODE") or ("token" if auth else "disabled")
    env["RAY_AUTH_MODE"] = mode
    if mode == "token" and not (os.environ.get("RAY_AUTH_TOKEN_PATH")
                                or os.environ.get("RAY_AUTH_TOKEN")):
        token = directory / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        env["RAY_AUTH_TOKEN_PATH"] = str(token)
    return env


def start(args: argparse.Namespace, directory: Path):
    """The started ``Cluster`` (every node up) and its description."""
    from ray.cluster_utils import Cluster

    common = {"node_ip_address": LOOPBACK}
    cluster = Cluster(initialize_head=True, shutdown_at_exit=True, head_node_args={
        **common, "num_cpus": args.head_cpus, "node_name": "head", "include_dashboard": True,
        "dashboard_host": LOOPBACK, "dashboard_port": args.dashboard_port,
        "dashboard_agent_listen_port": None})  # any free port, as worker nodes get
    for i in range(1, args.nodes):
        cluster.add_node(**common, num_cpus=args.num_cpus, node_name=f"worker-{i}")
    nodes = [cluster.head_node, *sorted(cluster.worker_nodes, key=lambda n: n.node_id)]
    info = {
        "gcs_address": cluster.gcs_address,
        "dashboard_url": f"http://{LOOPBACK}:{args.dashboard_port}",
        "nodes": [{"node_id": n.node_id, "head": n is cluster.head_node} for n in nodes],
        "env": {k: os.environ[k] for k in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE",
                                           "RAY_AUTH_TOKEN_PATH") if k in os.environ},
        "dir": str(directory), "pid": os.getpid(),
    }
    return cluster, info


def announce(info: dict) -> None:
    exports = " ".join(f"{k}={v}" for k, v in info["env"].items())
    print(f"Ray cluster of {len(info['nodes'])} nodes on {LOOPBACK} "
          f"(auth: {info['env']['RAY_AUTH_MODE']}), files in {info['dir']}\n"
          f"  in another shell:  export {exports}\n"
          f"  rliv submit --address {info['dashboard_url']} -- <rliv command>\n"
          f"  rliv <command> --address {info['gcs_address']}\n"
          "Ctrl-C stops every node.", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    directory = Path(args.dir or tempfile.mkdtemp(prefix="rliv-cluster-", dir="/tmp"))
    directory.mkdir(parents=True, exist_ok=True)
    os.environ.update(loopback_environment(directory, auth=not args.no_auth))
    os.environ.pop("RAY_ADDRESS", None)
    cluster, info = start(args, directory)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # after Ray installs its own
        signal.signal(sig, lambda *_: stop.set())
    try:
        if args.ready_file:
            tmp = Path(args.ready_file).with_suffix(".tmp")
            tmp.write_text(json.dumps(info, indent=2) + "\n")
            tmp.replace(args.ready_file)  # readers never see half a file
        announce(info)
        parent = os.getppid()
        while not stop.wait(2.0):
            if args.stop_with_parent and os.getppid() != parent:
                break  # the process that started us died (a killed test run)
    finally:
        print("stopping the cluster ...", flush=True)
        cluster.shutdown()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
