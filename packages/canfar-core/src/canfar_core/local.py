"""`CANFAR_URL=local`: the embedded platform, started once per process on demand."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from canfar_core.errors import ConfigurationError

if TYPE_CHECKING:
    from canfar_local import LocalPlatform

_lock = threading.Lock()
_platform: LocalPlatform | None = None


def shared_platform() -> LocalPlatform:
    """The process-wide embedded platform, started on first use.

    Its state root is `CANFAR_LOCAL_ROOT` when set, else the per-user cache directory,
    so a restarted workflow finds the sessions its previous process started.
    """
    global _platform
    with _lock:
        if _platform is None:
            try:
                from canfar_local import LocalPlatform, PlatformConfig
            except ImportError as exc:
                raise ConfigurationError(
                    "CANFAR_URL=local needs the embedded platform, which is not installed: "
                    "install it with `pip install canfar-local` (or 'canfar-core[local]')."
                ) from exc
            root = os.environ.get("CANFAR_LOCAL_ROOT")
            config = PlatformConfig(root=Path(root)) if root else PlatformConfig()
            _platform = LocalPlatform.start(config)
        return _platform


def use_platform(platform: LocalPlatform | None) -> None:
    """Make `local` resolve to an already running platform (tests, embedding apps)."""
    global _platform
    with _lock:
        _platform = platform
