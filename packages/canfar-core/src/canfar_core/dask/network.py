"""Which address of this process the cluster's sessions can reach.

On CANFAR the process that makes the cluster is usually a session itself (a notebook or
a flow), and sessions reach each other's pod IPs: the address that faces the platform
is that of the interface through which the Skaha server is reached (the pod's own IP;
loopback for the embedded platform, which runs its sessions on this machine). Whether
pods may open connections to each other is the platform's network policy, which could
not be verified from outside CANFAR; `python -m canfar_core.dask check` tests it.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from urllib.parse import urlsplit

from distributed.utils import get_ip

log = logging.getLogger("canfar_core.dask")


def address_facing(url: str) -> str:
    """The local IP address through which the server at `url` is reached."""
    host = urlsplit(url).hostname or "127.0.0.1"
    return get_ip(host)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def in_canfar_session() -> bool:
    """True inside a CANFAR session (the server injects `skaha_sessionid`)."""
    return bool(os.environ.get("skaha_sessionid"))  # noqa: SIM112 (the server's name)


def warn_if_unreachable(host: str) -> None:
    """Say so when the scheduler listens where sessions most likely cannot connect."""
    if not is_loopback(host) and not in_canfar_session():
        log.warning(
            "This process does not run in a CANFAR session, so worker sessions will most "
            "likely not reach its scheduler at %s: make the cluster from a CANFAR notebook "
            "or headless session (check with `python -m canfar_core.dask check`).",
            host,
        )
