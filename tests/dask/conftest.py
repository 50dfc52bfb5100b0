"""Fixtures for CanfarCluster tests: the embedded platform as the server, sessions listed.

Workers are real `dask worker` processes started by the platform as sessions, running
this environment's interpreter (the image is recorded, the host stands in for it).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from canfar_local import LocalPlatform
from canfar_local.testing import skaha_client

IMAGE = "images.canfar.net/skaha/astroml:latest"
# The workers' working directory: the repository root, where `tests.dask...` (whose
# functions the tests send to the workers by reference) is importable.
ROOT = Path(__file__).resolve().parents[2]


def listed(platform: LocalPlatform) -> list[dict[str, Any]]:
    """The default user's sessions as the API lists them (what `canfar ps` shows)."""
    with skaha_client(platform) as http:
        return http.get("/session").json()


def live(platform: LocalPlatform, prefix: str = "") -> list[dict[str, Any]]:
    """Listed sessions that are Pending or Running, whose name starts with `prefix`."""
    return [
        s
        for s in listed(platform)
        if s["status"] in ("Pending", "Running") and s["name"].startswith(prefix)
    ]


@pytest.fixture
def cluster_kwargs(
    platform: LocalPlatform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    """CanfarCluster arguments for this test's platform (CANFAR_URL/TOKEN point at it)."""
    monkeypatch.setenv("CANFAR_URL", platform.url)
    monkeypatch.setenv("CANFAR_TOKEN", platform.token)
    yield {
        "image": IMAGE,
        "python": sys.executable,
        "shared_dir": str(tmp_path / "shared"),
        "workdir": str(ROOT),
        "cores": 1,
        "ram": 1,
    }


@pytest.fixture
def cluster_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Records of the cluster's logger (`canfar_core.dask`) from INFO up."""
    caplog.set_level(logging.INFO, logger="canfar_core.dask")
    return caplog
