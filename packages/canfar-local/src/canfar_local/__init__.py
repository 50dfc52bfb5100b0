"""The embedded CANFAR platform: a faithful Skaha v1 server running sessions as processes.

``LocalPlatform.start(PlatformConfig(...))`` serves the session API on a loopback port from a
daemon thread; ``canfar-local serve`` does the same from the command line.
"""

from .config import PlatformConfig
from .errors import PlatformError, RootInUseError
from .server import LocalPlatform

__all__ = ["LocalPlatform", "PlatformConfig", "PlatformError", "RootInUseError"]
