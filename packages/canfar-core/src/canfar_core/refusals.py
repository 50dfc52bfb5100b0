"""The sentences for credentials the server refused, worded once for every engine.

A 401 means the credentials did not authenticate (expired, revoked, mistyped): renewing
them is the fix. A 403 means they did authenticate but the account may not use the
platform (not in the users group, no POSIX mapping): renewing would not help, so the
sentence says whom to ask instead. Both plugins, the task runner, `canfar-run` and the
tracker's mid-run refusal print exactly these sentences.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from canfar_core.errors import AuthenticationError, CanfarError, PermissionDeniedError

if TYPE_CHECKING:
    from canfar_core.config import CanfarConfig

LOCAL_SOURCE = "local platform"

RENEW_COMMAND = "`canfar login`"
SUPPORT = "support@canfar.net"


def is_refusal(error: BaseException) -> bool:
    """True for a 401 or 403 answer: credentials that will not start working by waiting."""
    return isinstance(error, AuthenticationError | PermissionDeniedError)


def refusal_sentence(
    error: CanfarError, *, where: str, source: str, also: str | None = None
) -> str:
    """The one sentence for a refused request.

    `where` names the server (its URL, or "the embedded platform"), `source` where the
    credentials came from (`--canfar-token`, a block, `~/.canfar/config.yaml`), `also` a
    second remedy specific to the engine ("update the CANFAR credentials block").
    """
    reason = getattr(error, "reason", None) or getattr(error, "status", None) or str(error)
    if isinstance(error, PermissionDeniedError):
        return (
            f"CANFAR at {where} accepted the credentials from {source} but denied access "
            f"({reason}): this account may not use the platform; ask CANFAR support "
            f"({SUPPORT}) for access."
        )
    remedy = f"renew them with {RENEW_COMMAND}" + (f" or {also}" if also else "")
    return f"CANFAR at {where} refused the credentials from {source} ({reason}); {remedy}."


def where_of(config: CanfarConfig) -> str:
    """How a refusal sentence names the server: its URL, or "the embedded platform"."""
    if config.is_local or config.source == LOCAL_SOURCE:
        return "the embedded platform"
    return config.url
