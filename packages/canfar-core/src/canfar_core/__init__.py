"""canfar-core: one client and one truth about CANFAR headless sessions.

    from canfar_core import AsyncCanfarClient, SessionTracker, envelope

The embedded platform (`CANFAR_URL=local`) is the separate package `canfar-local`
(import `canfar_local`); this package imports it only when that URL is used.
"""

from canfar_core.client import AsyncCanfarClient
from canfar_core.config import CanfarConfig, resolve_config
from canfar_core.context import Context, ResourceOptions
from canfar_core.diagnosis import Diagnosis, DiagnosisCategory, DiagnosisLevel, diagnose_outcome
from canfar_core.errors import (
    AuthenticationError,
    CanfarApiError,
    CanfarError,
    CanfarTransportError,
    ClientClosedError,
    ConfigurationError,
    CredentialsExpiredError,
    CredentialsRefusedError,
    InvalidRequestError,
    PermissionDeniedError,
    ReplicaCreateError,
    ServerError,
    ServiceUnavailableError,
    SessionNotFoundError,
    SpecError,
    TrackerOutageError,
)
from canfar_core.launch import Envelope, envelope
from canfar_core.models import Event, Image, Session, SessionSpec
from canfar_core.names import unique_name
from canfar_core.outcome import Outcome, OutcomeKind
from canfar_core.phase import Phase
from canfar_core.progress import Progress, ProgressKind
from canfar_core.retry import RetryPolicy
from canfar_core.sync import CanfarClient
from canfar_core.tracker import SessionTracker

__all__ = [
    "AsyncCanfarClient",
    "AuthenticationError",
    "CanfarApiError",
    "CanfarClient",
    "CanfarConfig",
    "CanfarError",
    "CanfarTransportError",
    "ClientClosedError",
    "ConfigurationError",
    "Context",
    "CredentialsExpiredError",
    "CredentialsRefusedError",
    "Diagnosis",
    "DiagnosisCategory",
    "DiagnosisLevel",
    "Envelope",
    "Event",
    "Image",
    "InvalidRequestError",
    "Outcome",
    "OutcomeKind",
    "PermissionDeniedError",
    "Phase",
    "Progress",
    "ProgressKind",
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
    "diagnose_outcome",
    "envelope",
    "resolve_config",
    "unique_name",
]
