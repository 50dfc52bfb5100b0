"""Shared fixtures: an embedded CANFAR platform per test, and polling helpers.

``platform`` is a fresh :class:`LocalPlatform` on a ``tmp_path`` root; ``platform_factory``
starts more (or differently configured) ones.  Everything started here is stopped with
``kill_sessions=True`` at teardown, so no session process outlives its test.  Never sleep
and hope: poll with ``wait_for`` (a fixture here, or
``from canfar_local.testing import wait_for``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from canfar_local import LocalPlatform, PlatformConfig
from canfar_local.testing import (
    async_wait_for,
    processes_mentioning,
    skaha_client,
    wait_for,
)

from tests.prefect.conftest import VENV_BIN, PrefectServer, running_prefect_server

__all__ = ["async_wait_for", "processes_mentioning", "skaha_client", "wait_for"]
pytest_plugins = ["tests.scheduling"]  # the order `make test` hands out files in

# Platforms started in this process run their sessions with its PATH, and sessions run
# `prefect` and `snakemake` by name: this environment's must come first, also when the
# suite is started as `.venv/bin/python -m pytest` rather than through `uv run`.
if os.environ.get("PATH", "").split(os.pathsep)[0] != VENV_BIN:
    os.environ["PATH"] = os.pathsep.join([VENV_BIN, os.environ.get("PATH", "")])


@pytest.fixture
def platform_factory(tmp_path: Path) -> Iterator[Callable[..., LocalPlatform]]:
    """Start platforms with ``PlatformConfig(**overrides)``; each gets its own root by default.

    At teardown every platform is stopped with ``kill_sessions=True`` and no process that
    mentions its root (supervisors, session commands) may remain.
    """
    started: list[LocalPlatform] = []

    def factory(**overrides: Any) -> LocalPlatform:
        overrides.setdefault("root", tmp_path / f"platform-{len(started)}")
        platform = LocalPlatform.start(PlatformConfig(**overrides))
        started.append(platform)
        return platform

    yield factory
    for platform in reversed(started):
        platform.stop(kill_sessions=True)
    leftovers = {str(p.root): processes_mentioning(str(p.root)) for p in started}
    assert not any(leftovers.values()), f"processes left behind: {leftovers}"


@pytest.fixture
def platform(platform_factory: Callable[..., LocalPlatform]) -> LocalPlatform:
    """A fresh embedded platform with default settings on a temporary root."""
    return platform_factory()


@pytest.fixture(name="wait_for")
def wait_for_fixture() -> Callable[..., Any]:
    """``wait_for(predicate, timeout=10, interval=0.05, what="")``: poll until truthy."""
    return wait_for


@pytest.fixture(name="async_wait_for")
def async_wait_for_fixture() -> Callable[..., Any]:
    """``async_wait_for``: the same for coroutine predicates."""
    return async_wait_for


@pytest.fixture
def client(platform: LocalPlatform) -> Iterator[httpx.Client]:
    """A plain httpx client for ``platform`` as its default user."""
    with skaha_client(platform) as c:
        yield c


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A real Prefect server on SQLite, shared by every test that needs Prefect."""
    with running_prefect_server(tmp_path_factory.mktemp("prefect-home")) as server:
        yield server


@pytest.fixture(scope="session")
def prefect_api(prefect_server: PrefectServer) -> Iterator[PrefectServer]:
    """Point this process's Prefect client at the shared server."""
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    with temporary_settings(
        updates={PREFECT_API_URL: prefect_server.api_url, PREFECT_HOME: prefect_server.home}
    ):
        yield prefect_server
        APILogWorker.drain_all(timeout=5)  # send buffered logs while the server is up
