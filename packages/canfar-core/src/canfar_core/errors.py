"""Typed errors, so callers branch on what went wrong instead of parsing text.

Every API error carries the HTTP status and the server's own `text/plain` sentence:
the official client logs only the exception class and loses that sentence, which is
the one thing a user needs to fix the request. The whole tree, one root:

    CanfarError
    ├── ConfigurationError            no usable URL or credentials (before any request)
    │   └── CredentialsExpiredError   a certificate or token expired; says how to renew
    ├── SpecError (also ValueError)   a request refused before it is sent: field, value, allowed
    ├── CanfarTransportError          the server could not be reached (after retrying), or
    │                                 its answer could not be read
    ├── CanfarApiError                the server answered with an error status
    │   ├── InvalidRequestError       400
    │   ├── AuthenticationError       401
    │   ├── PermissionDeniedError     403
    │   ├── SessionNotFoundError      404
    │   ├── ServiceUnavailableError   503 (`retry_after`)
    │   └── ServerError               500 and any other status
    ├── ReplicaCreateError            some replicas of a multi-replica create failed
    └── TrackerOutageError            the session list stayed unreadable too long
        └── CredentialsRefusedError   401/403 on the list mid-run: every watch stops at once

Using a client after `aclose()` raises `ClientClosedError`, a RuntimeError outside the
tree: it is a programming mistake, not something the platform did, so code that rides
out CANFAR's failures (`except CanfarError`) must not swallow it.
"""

from __future__ import annotations


class CanfarError(Exception):
    """Base class of every error this package raises."""


class ConfigurationError(CanfarError):
    """The server URL or credentials could not be resolved or are unusable."""


class CredentialsExpiredError(ConfigurationError):
    """A certificate or token has expired; the message says how to renew it."""


class SpecError(CanfarError, ValueError):
    """A session request is invalid; raised before anything is sent.

    The message is one sentence naming the field, the value and what is allowed.
    """

    def __init__(self, field: str, value: object, allowed: str) -> None:
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # `cores=32`, not `cores=32.0`
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field}={value!r} is not allowed: {allowed}.")


class CanfarTransportError(CanfarError):
    """The server could not be reached, even after retrying."""


class CanfarApiError(CanfarError):
    """The server answered with an error status.

    `reason` is the server's sentence, stripped of its trailing newline.
    """

    status: int = 0

    def __init__(self, status: int, reason: str, *, method: str = "", path: str = "") -> None:
        self.status = status
        self.reason = reason
        self.method = method
        self.path = path
        where = f" ({method} {path})" if method else ""
        super().__init__(f"HTTP {status}{where}: {reason}" if reason else f"HTTP {status}{where}")


class InvalidRequestError(CanfarApiError):
    """400: the server rejected the request's parameters."""


class AuthenticationError(CanfarApiError):
    """401: no valid credentials reached the server."""


class PermissionDeniedError(CanfarApiError):
    """403: the caller is authenticated but not allowed (e.g. not in the users group)."""


class SessionNotFoundError(CanfarApiError):
    """404: no such session for this user (never created, deleted, or expired)."""


class ServerError(CanfarApiError):
    """500 or another unexpected status: the server failed."""


class ServiceUnavailableError(CanfarApiError):
    """503: the service is temporarily unavailable; `retry_after` is its hint in seconds."""

    def __init__(
        self,
        status: int,
        reason: str,
        *,
        method: str = "",
        path: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, reason, method=method, path=path)
        self.retry_after = retry_after


class ReplicaCreateError(CanfarError):
    """Some replicas of a multi-replica create failed.

    `created` maps replica id (1-based) to session id; `failures` maps replica id to the
    error. Callers can re-create a failed replica with its original replica id.
    """

    def __init__(self, created: dict[int, str], failures: dict[int, CanfarError]) -> None:
        self.created = created
        self.failures = failures
        detail = "; ".join(f"replica {i}: {err}" for i, err in sorted(failures.items()))
        super().__init__(
            f"{len(failures)} of {len(created) + len(failures)} replicas failed to start ({detail})"
        )


class TrackerOutageError(CanfarError):
    """The session list could not be read for longer than the tracker tolerates."""


class CredentialsRefusedError(TrackerOutageError):
    """CANFAR refused the credentials (401/403) while sessions were being watched.

    Waiting will not help, so the tracker fails every watch at once with this error
    instead of riding it out as an outage. The message is the renew sentence of
    `canfar_core.refusals` plus the sessions that may still be running; `sessions` lists
    their ids and `cause` is the AuthenticationError or PermissionDeniedError. Engines
    stop on it and exit non-zero. It is a TrackerOutageError because, as after an
    outage, the tracker no longer knows what the sessions are doing.
    """

    def __init__(self, message: str, *, sessions: list[str], cause: CanfarError) -> None:
        super().__init__(message)
        self.sessions = sessions
        self.cause = cause


class ClientClosedError(RuntimeError):
    """A client was used after it was closed (httpx's rule: a closed client stays closed)."""


_BY_STATUS: dict[int, type[CanfarApiError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: SessionNotFoundError,
    503: ServiceUnavailableError,
}


def error_for_status(
    status: int,
    reason: str,
    *,
    method: str = "",
    path: str = "",
    retry_after: float | None = None,
) -> CanfarApiError:
    """Build the typed error for an HTTP error status."""
    if status == 503:
        return ServiceUnavailableError(
            status, reason, method=method, path=path, retry_after=retry_after
        )
    cls = _BY_STATUS.get(status, ServerError)
    return cls(status, reason, method=method, path=path)
