"""Can a session reach the Prefect API it is given? Warn when it obviously cannot.

A session runs on a CANFAR node, so `localhost` there is the session itself: a worker
whose `PREFECT_API_URL` is a loopback address hands every run an API it cannot reach,
and the run sits in Pending until it times out. That only works when the platform is
this machine (`url = local`, or a CANFAR URL that is itself a loopback address).
"""

from __future__ import annotations

from canfar_core import is_loopback_url, runs_on_this_machine


def unreachable_api_warning(api_url: str | None, canfar_url: str) -> str | None:
    """The warning to log when sessions cannot reach `api_url`, else None."""
    if not is_loopback_url(api_url) or runs_on_this_machine(canfar_url):
        return None
    return (
        f"PREFECT_API_URL is {api_url}, a loopback address, but sessions run on CANFAR "
        f"({canfar_url}), where it names the session itself: the flow run will not reach "
        "the Prefect API. Point PREFECT_API_URL (in the worker's environment, or the "
        "`env` job variable) at an address the CANFAR nodes can reach."
    )
