"""The platform's exceptions, one per HTTP outcome of cadc-rest's ``RestAction``.

Handlers raise these with the server's exact sentence; the app turns them into ``text/plain``
bodies the way cadc-rest does (message plus ``\\n``; 500s carry no trailing newline).
"""

from __future__ import annotations


class PlatformHTTPError(Exception):
    """An error answered with ``status`` and ``message + "\\n"`` as a text/plain body."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> str:
        """The text/plain body: the message and a newline, as cadc-rest writes it."""
        return self.message + "\n"


class BadRequest(PlatformHTTPError):
    """IllegalArgumentException / UnsupportedOperationException."""

    status = 400


class NotAuthenticated(PlatformHTTPError):
    """NotAuthenticatedException."""

    status = 401


class Forbidden(PlatformHTTPError):
    """AccessControlException / SessionAccessDeniedException."""

    status = 403


class NotFound(PlatformHTTPError):
    """ResourceNotFoundException."""

    status = 404


class Transient(PlatformHTTPError):
    """TransientException: 503 with ``Retry-After: 30``."""

    status = 503


class UnexpectedError(PlatformHTTPError):
    """Anything else: 500 ``unexpected exception: <toString>`` with no trailing newline."""

    status = 500

    def body(self) -> str:
        """The 500 body, with no trailing newline (RestServlet.handleUnexpected)."""
        return "unexpected exception: " + self.message


class PlatformError(RuntimeError):
    """A failure of the platform itself (start-up, lock, configuration), not of a request."""


class RootInUseError(PlatformError):
    """Another live server holds the platform root (its lock names the holder's pid)."""

    def __init__(self, root: object, holder: str) -> None:
        super().__init__(f"platform root {root} is already in use by another server (pid {holder})")
        self.root = root
        self.holder = holder
