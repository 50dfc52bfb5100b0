"""`CANFAR_URL=local`: the embedded platform, started once per process on demand.

Also the rules for "this platform runs on this machine" (the embedded platform, in-
process or on a loopback URL) and what follows from it, the same for every engine:
sessions then see this filesystem and this Python, so no shared-filesystem check is
needed, the current interpreter runs inside them, and an image can be defaulted
(there is no image: the host stands in for its contents).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from canfar_core.config import LOCAL_URL, CanfarConfig
from canfar_core.errors import ConfigurationError

if TYPE_CHECKING:
    from canfar_local import LocalPlatform

# Where CANFAR mounts its shared filesystem in every session (reference §6: `/arc` on
# canfar.net, `/cavern` on canSRC): a path below one of these is seen by sessions too.
SHARED_ROOTS = ("/arc/", "/cavern/")


def on_shared_filesystem(path: str | Path) -> bool:
    """True when sessions see `path` at the same place (it is under /arc or /cavern)."""
    text = str(path)
    return text.startswith(SHARED_ROOTS) or text.rstrip("/") in ("/arc", "/cavern")


# The image a session gets when none is set and the platform is on this machine.
LOCAL_IMAGE = "images.canfar.net/skaha/astroml:latest"
# The interpreter inside a CANFAR image: `python` is missing from many Debian-based
# images, `python3` exists wherever Python 3 does.
IMAGE_PYTHON = "python3"
# When a Pending session's events are first read and how often after (seconds), on this
# machine and on CANFAR; read at call time by `events_timing`.
SAME_MACHINE_EVENTS = (1.0, 2.0)
REMOTE_EVENTS = (10.0, 30.0)
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}

MAX_SIBLING_ROOTS = 9
log = logging.getLogger(__name__)

_lock = threading.Lock()


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


def runs_on_this_machine(target: CanfarConfig | str) -> bool:
    """True for the embedded platform, in-process (`local`) or on a loopback URL."""
    url = target.url if isinstance(target, CanfarConfig) else target
    return url == LOCAL_URL or is_loopback_url(url)


def events_timing(*, same_machine: bool) -> tuple[float, float]:
    """When a Pending session's events are first read, and how often after (seconds).

    On CANFAR a session takes tens of seconds to be scheduled and its image to start,
    and each read is a request to the shared service; on this machine a session starts
    in a second, so its events are worth reading sooner.
    """
    return SAME_MACHINE_EVENTS if same_machine else REMOTE_EVENTS


def default_image(local: bool) -> str | None:
    """The image a session gets when none is set: `LOCAL_IMAGE` on this machine, else none.

    Read at call time (not imported as a constant), so every engine follows a change.
    """
    return LOCAL_IMAGE if local else None


def session_python(local: bool) -> str:
    """The interpreter a session runs Python with: this one on this machine, else the image's."""
    return sys.executable if local else IMAGE_PYTHON


_platform: LocalPlatform | None = None


def shared_platform() -> LocalPlatform:
    """The process-wide embedded platform, started on first use.

    Its state root is `CANFAR_LOCAL_ROOT` when set, else the per-user cache directory,
    so a restarted workflow finds the sessions its previous process started. When
    another live process holds that root (a second `--canfar-url local` run at the same
    time), this one starts its own platform under the first free sibling root
    (`<root>-2`, `<root>-3`, ...) and says so in one line: sessions belong to the
    process whose platform started them, so using the other one's would let them die
    with it.
    """
    global _platform
    with _lock:
        if _platform is None:
            try:
                from canfar_local import (
                    LocalPlatform,
                    PlatformConfig,
                    PlatformError,
                    RootInUseError,
                )
            except ImportError as exc:
                raise ConfigurationError(
                    "CANFAR_URL=local needs the embedded platform, which is not installed: "
                    "install it with `pip install canfar-local` (or 'canfar-core[local]')."
                ) from exc
            root = os.environ.get("CANFAR_LOCAL_ROOT")
            base = PlatformConfig(root=Path(root)) if root else PlatformConfig()
            first = base.resolved_root()
            for attempt in range(1, MAX_SIBLING_ROOTS + 1):
                candidate = first if attempt == 1 else first.with_name(f"{first.name}-{attempt}")
                try:
                    _platform = LocalPlatform.start(base.with_overrides(root=candidate))
                except RootInUseError as exc:
                    busy = exc
                    continue
                except PlatformError as exc:
                    raise ConfigurationError(
                        f"The embedded platform could not start under {candidate}: {exc}."
                    ) from None
                if attempt > 1:
                    log.warning(
                        "The embedded platform's root %s is in use by process %s; started "
                        "another one for this run under %s.",
                        first,
                        busy.holder,
                        candidate,
                    )
                break
            else:
                raise ConfigurationError(
                    f"The embedded platform's roots {first} to {candidate} are all in use by "
                    "other processes; set CANFAR_LOCAL_ROOT to a directory of your own."
                )
        return _platform


def use_platform(platform: LocalPlatform | None) -> None:
    """Make `local` resolve to an already running platform (tests, embedding apps)."""
    global _platform
    with _lock:
        _platform = platform
