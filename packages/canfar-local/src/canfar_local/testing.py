"""Helpers for tests and benchmarks that drive the embedded platform.

Importable from anywhere (``tests/`` modules cannot import ``conftest`` reliably), and used
by ``tests/conftest.py`` to build its fixtures.  Poll with :func:`wait_for` instead of
sleeping: it returns as soon as the condition holds and fails loudly at its deadline.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

if TYPE_CHECKING:
    from .server import LocalPlatform

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll ``predicate`` until it returns a truthy value; return that value.

    Raises AssertionError (naming ``what``) when ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


async def async_wait_for(
    predicate: Callable[[], Awaitable[T]],
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "",
) -> T:
    """:func:`wait_for` for coroutine predicates."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(interval)


def processes_mentioning(text: str) -> list[int]:
    """Live pids (zombies excluded) whose command line or environment contains ``text``.

    Session commands carry ``HOME=<root>/...`` and supervisors ``<root>/sessions/...`` in
    their arguments, so the platform root finds every process a platform started.
    """
    found = []
    needle = text.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read()
            if needle not in cmdline:
                with open(f"/proc/{entry}/environ", "rb") as handle:
                    cmdline = handle.read()
            with open(f"/proc/{entry}/stat", "rb") as handle:
                state = handle.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if needle in cmdline and state not in (b"Z", b"X"):
            found.append(int(entry))
    return found


def image_path(directory: Path, tools: Iterable[str]) -> str:
    """A PATH for `PlatformConfig.image_paths`: a directory holding only `tools`.

    Each tool is a symlink to the host's program of that name, so a session "in the
    image" finds those and nothing else (an image without `base64`, say).
    """
    directory.mkdir(parents=True, exist_ok=True)
    for tool in tools:
        found = shutil.which(tool)
        if found is None:
            raise FileNotFoundError(f"the host has no {tool!r} to put in the image")
        link = directory / tool
        if not link.exists():
            link.symlink_to(found)
    return str(directory)


def skaha_client(platform: LocalPlatform, token: str | None = None, **kwargs: Any) -> httpx.Client:
    """A plain httpx client for ``platform.url``, sending the headers canfar sends."""
    headers = {
        "Authorization": f"Bearer {token or platform.token}",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    headers.update(kwargs.pop("headers", {}))
    return httpx.Client(base_url=platform.url, headers=headers, timeout=30, **kwargs)


@contextmanager
def served(root: Path, *options: str) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    """Run ``canfar-local serve --root <root> <options>``; yield (process, url, token).

    A separate process, so that a test can SIGKILL the server as a crash would. At exit a
    server still running gets SIGTERM (its sessions keep running under their supervisors).
    """
    cli = Path(sys.executable).with_name("canfar-local")
    command = [str(cli)] if cli.exists() else [sys.executable, "-m", "canfar_local.cli"]
    process = subprocess.Popen(
        [*command, "serve", "--root", str(root), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        url_line = process.stdout.readline().strip()
        token_line = process.stdout.readline().strip()
        if not url_line.startswith("CANFAR_URL="):
            raise RuntimeError(f"canfar-local serve did not start: {process.stderr.read()}")
        yield process, url_line.split("=", 1)[1], token_line.split("=", 1)[1]
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
