"""Configuration of the embedded platform.

Every knob that a test or a benchmark needs to turn lives here, so that the rest of the
platform reads one immutable object instead of scattered module constants.  Defaults mirror
canfar.net (LimitRange mode, see the Skaha reference §3.10) except for the machine capacity,
which is generous on purpose: sleeping processes oversubscribe a laptop without harm.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

DEFAULT_IMAGES: tuple[dict[str, object], ...] = (
    {
        "id": "images.canfar.net/skaha/base:latest",
        "types": ["headless"],
        "digest": "sha256:4c1b6f0e0b3d0c7a8e3c39f2f59b3c6f9b2f0d5e7c1a2b3c4d5e6f708192a3b4",
    },
    {
        "id": "images.canfar.net/skaha/terminal:1.1.2",
        "types": ["headless"],
        "digest": "sha256:9a8b7c6d5e4f30211f2e3d4c5b6a79888776655443322110ffeeddccbbaa9988",
    },
    {
        "id": "images.canfar.net/skaha/astroml:latest",
        "types": ["notebook", "headless"],
        "digest": "sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0",
    },
    {
        "id": "images.canfar.net/skaha/desktop:latest",
        "types": ["desktop"],
        "digest": "sha256:13579bdf2468ace013579bdf2468ace013579bdf2468ace013579bdf2468ace0",
    },
    {
        "id": "images.canfar.net/skaha/carta:5.0",
        "types": ["carta"],
        "digest": "sha256:2468ace013579bdf2468ace013579bdf2468ace013579bdf2468ace013579bd",
    },
)


def default_root() -> Path:
    """The per-user state directory used when no root is given (XDG cache convention)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "canfar-local"


def os_user() -> str:
    """The name of the user running the platform; the default session owner."""
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return f"user{os.getuid()}"


@dataclass(frozen=True)
class PlatformConfig:
    """Everything the embedded platform needs to know; immutable once started."""

    root: Path | None = None
    host: str = "127.0.0.1"
    port: int = 0
    prefix: str = "/skaha"

    # Machine capacity that admission (the Kueue stand-in) fills first-come.
    cores: float = 64
    ram_gib: float = 256

    # Lifetimes (seconds): Job activeDeadlineSeconds, ttlSecondsAfterFinished, renew extension.
    deadline_seconds: int = 1209600
    interactive_deadline_seconds: int = 345600
    retention_seconds: float = 3600
    interactive_retention_seconds: float = 86400
    session_expiry_seconds: int = 345600

    # The /context LimitRange: options are 1..max; defaults are defaultRequest/defaultLimit.
    registries: tuple[str, ...] = ("images.canfar.net",)
    max_cores: int = 16
    max_ram_gib: int = 192
    max_gpus: int = 7
    default_request_cores: int = 1
    default_limit_cores: int = 16
    default_request_ram_gib: int = 4
    default_limit_ram_gib: int = 32
    max_interactive_sessions: int = 3
    # File mode (`/config/k8s-resources.json`, reference §3.10): explicit option lists
    # instead of 1..max, e.g. (1, 2, 4, 8) cores; None keeps LimitRange mode.
    core_options: tuple[int, ...] | None = None
    ram_options: tuple[int, ...] | None = None

    def cores_allowed(self) -> list[int]:
        """The `cores` options `/context` lists and creates are checked against."""
        return sorted(self.core_options or range(1, self.max_cores + 1))

    def ram_allowed(self) -> list[int]:
        """The `memoryGB` options `/context` lists and creates are checked against."""
        return sorted(self.ram_options or range(1, self.max_ram_gib + 1))

    # Identity: token -> user.  When empty, the OS user gets a generated, persisted token.
    users: Mapping[str, str] | None = None
    default_user: str | None = None
    forbidden_users: frozenset[str] = frozenset()
    uid: int = field(default_factory=os.getuid)

    # What runs: there is no image, so the host stands in for its contents.
    default_entrypoint: tuple[str, ...] = ("sleep", "infinity")
    interactive_entrypoint: tuple[str, ...] = ("sleep", "infinity")
    base_env_keys: tuple[str, ...] = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "SSL_CERT_FILE")
    top_level_directory: str = "arc"
    home_directory: str = "home"
    skaha_hostname: str | None = None
    sessions_hostname: str | None = None

    # Images: the /v1/image listing; public_images=None disables the private-image rule.
    # The real server splices the bundle with String.replaceAll, so "\\" and "$" in cmd/args/
    # env are regex-replacement syntax before YAML sees them; False skips that stage.
    java_regex_replacement: bool = True

    images: tuple[Mapping[str, object], ...] = DEFAULT_IMAGES
    public_images: tuple[str, ...] | None = None
    # Images whose pull fails (a missing tag): admitted sessions stay Pending with the
    # kubelet's ErrImagePull/BackOff events until deleted or their deadline passes.
    unpullable_images: tuple[str, ...] = ()
    # What an image contains, as the PATH its sessions run with (instead of the host's):
    # map an image to a directory of a few tools and its sessions lack the rest, as a
    # slim image without `base64` would. A session's own PATH in `env` still wins.
    image_paths: Mapping[str, str] = field(default_factory=dict)

    # Size limits on the way in (reference §7): Tomcat's form body (past it every
    # parameter is dropped: 400 "Missing parameter 'image'"), and the Kubernetes object
    # the Job becomes (past it the create fails: 500 "request is too large").
    max_form_bytes: int = 2 * 1024 * 1024
    max_object_bytes: int = 1536 * 1024

    # CANFAR's scheduling and image start: seconds between a session's admission (when it
    # gets its startTime) and its command starting. The session is Pending meanwhile, as a
    # pod is while its image is pulled and its container created; a delete cancels it.
    start_delay_seconds: float = 0.0

    # On CANFAR a session runs on a node of its own and never takes CPU from the API
    # server or from the engine that waits on it; here both share this machine's CPUs.
    # Sessions therefore run at this nice value (their whole process session, autogroup
    # included), so that a fan-out of busy sessions cannot starve the server or the
    # driver. 0 (the default, until the whole suite has run with it) runs them at the
    # platform's own priority.
    session_nice: int = 0

    # TLS (client-certificate CN -> user).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    # The key of client_ca: with it the platform writes a proxy certificate for the owner
    # into $HOME/.ssl/cadcproxy.pem at each create and renew, as the real server does.
    client_ca_key: Path | None = None
    proxy_lifetime_seconds: float = 7 * 86400
    # A CA sessions trust as they trust CANFAR's publicly trusted server certificate:
    # their SSL_CERT_FILE names <root>/session-ca.pem, the host's roots plus this file.
    session_ca_file: Path | None = None

    # The OIDC provider (/oidc/token): lifetime of the access tokens it issues.
    access_token_seconds: int = 3600

    # Supervision tuning.
    # "largest": SIGKILL the biggest process first (the kernel's choice), the rest of the
    # group after the grace period; "group": the whole group at once (memory.oom.group).
    oom_policy: str = "largest"
    memory_poll_seconds: float = 0.2
    memory_poll_max_seconds: float = 1.0
    kill_grace_seconds: float = 2.0
    reconcile_seconds: float = 0.2
    stats_available: bool = True

    def resolved_root(self) -> Path:
        """The state root, made absolute."""
        return (self.root if self.root is not None else default_root()).expanduser().resolve()

    def with_overrides(self, **changes: object) -> PlatformConfig:
        """A copy with some fields replaced (the CLI and fixtures build configs this way)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def tls_enabled(self) -> bool:
        """True when the server is configured for HTTPS."""
        return self.tls_cert is not None

    @property
    def issues_proxies(self) -> bool:
        """True when sessions get a proxy certificate in ``$HOME/.ssl/cadcproxy.pem``."""
        return self.client_ca is not None and self.client_ca_key is not None

    @property
    def home_base(self) -> str:
        """The in-"container" home base, e.g. ``arc/home``, relative to the root."""
        return f"{self.top_level_directory.strip('/')}/{self.home_directory.strip('/')}"
