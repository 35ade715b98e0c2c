"""Ray cluster addresses: parse them and fail fast, in one line, when nothing answers there.

Two kinds of address reach us:

- ``--address`` of build-samples, asa-report, train, sweep and evaluate, and ``$RAY_ADDRESS``
  inside a Ray job: what ``ray.init`` takes, ``HOST:PORT`` of the head's GCS (default port
  6379), ``ray://HOST:PORT`` (Ray Client), ``auto`` or ``local``.
- ``rliv submit --address``: the head's dashboard, which serves the Jobs API,
  ``http://HOST:8265``.

``ray.init`` retries an address that does not answer for a minute or more, printing warnings;
:func:`check_ray_address` tries one TCP connection first (``timeout_s``) and raises
:class:`ClusterUnreachable` with the reason. On Linux Ray dials the machine's own address
instead of a loopback one unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
(``services.resolve_ip_for_localhost``); the check dials what Ray will dial, and says so.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

GCS_PORT = 6379
DASHBOARD_PORT = 8265
TIMEOUT_S = 5.0


class ClusterUnreachable(ConnectionError):
    """Nothing answers at a Ray cluster address; the message is one line for the user."""


def split_host_port(text: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` -> (host, port); ValueError if malformed."""
    parsed = urlsplit(f"//{text}")
    try:
        port = parsed.port
    except ValueError as err:
        raise ValueError(f"invalid Ray address {text!r}: {err}") from None
    if not parsed.hostname or parsed.path or parsed.query:
        raise ValueError(f"invalid Ray address {text!r}: expected HOST[:PORT]")
    return parsed.hostname, port or default_port


def dashboard_url(address: str) -> str:
    """The Jobs API URL for ``rliv submit``: ``HOST[:PORT]`` or ``http(s)://HOST[:PORT]``
    (port 8265 by default). A ``ray://`` or GCS address is refused with the reason."""
    address = address.strip().rstrip("/")
    if address.startswith("ray://"):
        raise ValueError(f"{address} is a Ray Client address; the Jobs API is the dashboard's "
                         f"http://HOST:{DASHBOARD_PORT}")
    scheme, rest = address.split("://", 1) if "://" in address else ("http", address)
    if scheme not in ("http", "https"):
        raise ValueError(f"{address}: expected http://HOST[:PORT] (the head's dashboard)")
    host, port = split_host_port(rest, DASHBOARD_PORT)
    if port == GCS_PORT:
        raise ValueError(f"{address} is the GCS port; the Jobs API is the dashboard's "
                         f"http://{host}:{DASHBOARD_PORT}")
    return f"{scheme}://{_bracket(host)}:{port}"


def url_host_port(url: str) -> tuple[str, int]:
    parsed = urlsplit(url)
    return parsed.hostname or "", parsed.port or DASHBOARD_PORT


def check_reachable(host: str, port: int, what: str, timeout_s: float = TIMEOUT_S) -> None:
    """One TCP connection to ``host:port``; :class:`ClusterUnreachable` naming ``what`` if it
    is refused, times out or the name does not resolve."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except TimeoutError:
        reason = f"no answer within {timeout_s:g}s"
    except OSError as err:
        reason = err.strerror or str(err) or type(err).__name__
    raise ClusterUnreachable(f"cannot reach {what}: {reason}")


def check_ray_address(address: str | None, timeout_s: float = TIMEOUT_S) -> None:
    """Raise :class:`ClusterUnreachable` unless a ``ray.init`` address answers (``None``,
    ``auto`` and ``local`` are left to Ray)."""
    if not address or address in ("auto", "local"):
        return
    client = address.startswith("ray://")
    if "://" in address and not client:
        raise ValueError(f"--address {address}: expected HOST:PORT of the head's GCS (port "
                         f"{GCS_PORT}) or ray://HOST:10001; an http:// dashboard address is "
                         "for `rliv submit`")
    host, port = split_host_port(address[len("ray://"):] if client else address,
                                 10001 if client else GCS_PORT)
    dial_host = host if client else _ray_dials(host)
    what = f"the Ray cluster at {address}"
    if dial_host != host:
        what += (f" (Ray dials {_bracket(dial_host)}:{port}, this machine's address, for a "
                 "loopback one; a cluster listening on 127.0.0.1 only needs "
                 "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 here)")
    check_reachable(dial_host, port, what, timeout_s)


def _ray_dials(host: str) -> str:
    """The host Ray connects to for ``host``: the machine's address for a loopback one."""
    try:
        from ray._private.services import resolve_ip_for_localhost
    except ImportError:  # no Ray: nothing will dial
        return host
    return resolve_ip_for_localhost(host)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host
