"""Can a session reach the Prefect API it is given? Warn when it obviously cannot.

A session runs on a CANFAR node, so `localhost` there is the session itself: a worker
whose `PREFECT_API_URL` is a loopback address hands every run an API it cannot reach,
and the run sits in Pending until it times out. That only works when the platform is
this machine (`url = local`, or a CANFAR URL that is itself a loopback address).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from canfar_core.config import LOCAL_URL

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def is_loopback_url(url: str | None) -> bool:
    """True when `url` names this machine (localhost, 127.0.0.0/8, ::1, 0.0.0.0)."""
    if not url:
        return False
    host = (urlsplit(url if "//" in url else f"//{url}").hostname or "").lower()
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def platform_is_local(canfar_url: str) -> bool:
    """True when sessions run on this machine (the embedded platform)."""
    return canfar_url == LOCAL_URL or is_loopback_url(canfar_url)


def unreachable_api_warning(api_url: str | None, canfar_url: str) -> str | None:
    """The warning to log when sessions cannot reach `api_url`, else None."""
    if not is_loopback_url(api_url) or platform_is_local(canfar_url):
        return None
    return (
        f"PREFECT_API_URL is {api_url}, a loopback address, but sessions run on CANFAR "
        f"({canfar_url}), where it names the session itself: the flow run will not reach "
        "the Prefect API. Point PREFECT_API_URL (in the worker's environment, or the "
        "`env` job variable) at an address the CANFAR nodes can reach."
    )
