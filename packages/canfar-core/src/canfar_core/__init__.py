"""canfar-core: one client and one truth about CANFAR headless sessions.

    from canfar_core import AsyncCanfarClient, SessionTracker, envelope

The embedded platform (`CANFAR_URL=local`) lives in `canfar_core.platform`.
"""

from canfar_core.client import AsyncCanfarClient
from canfar_core.config import CanfarConfig, resolve_config
from canfar_core.context import Context, ResourceOptions
from canfar_core.errors import (
    ApiError,
    AuthenticationError,
    CanfarError,
    ConfigurationError,
    CredentialsExpiredError,
    InvalidRequestError,
    PermissionDeniedError,
    ReplicaCreateError,
    ServerError,
    ServiceUnavailableError,
    SessionNotFoundError,
    SpecError,
    TrackerOutageError,
    TransportError,
)
from canfar_core.launch import Envelope, envelope
from canfar_core.models import Event, Image, Session, SessionSpec
from canfar_core.names import unique_name
from canfar_core.outcome import Outcome, OutcomeKind
from canfar_core.phase import Phase
from canfar_core.retry import RetryPolicy
from canfar_core.sync import CanfarClient
from canfar_core.tracker import SessionTracker

__all__ = [
    "ApiError",
    "AsyncCanfarClient",
    "AuthenticationError",
    "CanfarClient",
    "CanfarConfig",
    "CanfarError",
    "ConfigurationError",
    "Context",
    "CredentialsExpiredError",
    "Envelope",
    "Event",
    "Image",
    "InvalidRequestError",
    "Outcome",
    "OutcomeKind",
    "PermissionDeniedError",
    "Phase",
    "ReplicaCreateError",
    "ResourceOptions",
    "RetryPolicy",
    "ServerError",
    "ServiceUnavailableError",
    "Session",
    "SessionNotFoundError",
    "SessionSpec",
    "SessionTracker",
    "SpecError",
    "TrackerOutageError",
    "TransportError",
    "envelope",
    "resolve_config",
    "unique_name",
]
