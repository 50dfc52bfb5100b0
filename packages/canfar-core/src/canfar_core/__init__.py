"""canfar-core: one client and one truth about CANFAR headless sessions.

    from canfar_core import AsyncCanfarClient, SessionTracker, envelope

This module is the package's public surface: the client and tracker, the exception
tree (drawn in `canfar_core.errors`), the models, and the rules both engines share
(sizing to the server's options, the runtime backstop, the refusal sentences, the
registry check, the thread bridge, the local-mode defaults, the secrets file, the
diagnosis). The Snakemake and Prefect plugins import only from here (a test guards
it), so a module moved inside the core breaks no plugin. `canfar_core.dask` (the
`dask` extra) and `canfar_core.run` (the `canfar-run` command) are surfaces of their own.

The embedded platform (`CANFAR_URL=local`) is the separate package `canfar-local`
(import `canfar_local`); this package imports it only when that URL is used.
"""

from canfar_core.allowed import check_registry, fit, registry_problem
from canfar_core.bridge import TrackerBridge
from canfar_core.client import AsyncCanfarClient
from canfar_core.config import CanfarConfig, resolve_config, url_problem
from canfar_core.context import Context, ResourceOptions
from canfar_core.diagnosis import (
    Diagnosis,
    DiagnosisCategory,
    DiagnosisLevel,
    child_exit_code,
    diagnose_outcome,
)
from canfar_core.engine_logs import CORE_LOGGER, forward_logs
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
from canfar_core.launch import Envelope, envelope, remove_secrets_file, write_secrets_file
from canfar_core.local import (
    IMAGE_PYTHON,
    LOCAL_IMAGE,
    default_image,
    events_timing,
    is_loopback_url,
    on_shared_filesystem,
    runs_on_this_machine,
    session_python,
    shared_platform,
    use_platform,
)
from canfar_core.models import NAME_MAX_LENGTH, Event, Image, Session, SessionSpec
from canfar_core.names import random_token, sanitize, unique_name
from canfar_core.outcome import OOM_EXIT_CODE, TIMEOUT_EXIT_CODE, Outcome, OutcomeKind
from canfar_core.phase import Phase
from canfar_core.progress import Progress, ProgressKind
from canfar_core.refusals import is_refusal, refusal_sentence, where_of
from canfar_core.resources import SessionResources
from canfar_core.retry import RetryPolicy
from canfar_core.runtime_limit import runtime_backstop
from canfar_core.sync import CanfarClient
from canfar_core.tracker import SessionTracker

__all__ = [
    "CORE_LOGGER",
    "IMAGE_PYTHON",
    "LOCAL_IMAGE",
    "NAME_MAX_LENGTH",
    "OOM_EXIT_CODE",
    "TIMEOUT_EXIT_CODE",
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
    "SessionResources",
    "SessionSpec",
    "SessionTracker",
    "SpecError",
    "TrackerBridge",
    "TrackerOutageError",
    "check_registry",
    "child_exit_code",
    "default_image",
    "diagnose_outcome",
    "envelope",
    "events_timing",
    "fit",
    "forward_logs",
    "is_loopback_url",
    "is_refusal",
    "on_shared_filesystem",
    "random_token",
    "refusal_sentence",
    "registry_problem",
    "remove_secrets_file",
    "resolve_config",
    "runs_on_this_machine",
    "runtime_backstop",
    "sanitize",
    "session_python",
    "shared_platform",
    "unique_name",
    "url_problem",
    "use_platform",
    "where_of",
    "write_secrets_file",
]
