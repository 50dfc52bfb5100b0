"""The platform's start delay: CANFAR's scheduling and image start, made reproducible."""

from __future__ import annotations

import time
from pathlib import Path

from canfar_local.testing import processes_mentioning, skaha_client

from tests.dask.conftest import IMAGE

DELAY = 3.0  # long enough that the delete below lands inside it on a loaded machine


def test_sessions_stay_pending_with_a_start_time_for_the_delay(
    platform_factory, wait_for, tmp_path: Path
) -> None:
    platform = platform_factory(start_delay_seconds=DELAY)
    ran, cancelled = tmp_path / "ran", tmp_path / "cancelled"
    with skaha_client(platform) as http:

        def create(name: str, marker: Path) -> str:
            form = {"name": name, "image": IMAGE, "cmd": "touch", "args": str(marker)}
            return http.post("/session", data=form).text.strip()

        def status(session_id: str) -> str:
            return http.get(f"/session/{session_id}").json()["status"]

        started = time.monotonic()
        session = create("delayed", ran)
        listed = http.get(f"/session/{session}").json()
        assert listed["status"] == "Pending" and "startTime" in listed, listed
        wait_for(lambda: status(session) == "Completed", timeout=30, what="the delayed command")
        assert ran.exists()
        assert time.monotonic() - started >= DELAY

        # A delete during the delay cancels the start: the command never runs.
        doomed = create("doomed", cancelled)
        assert status(doomed) == "Pending"
        http.delete(f"/session/{doomed}")
        wait_for(
            lambda: not processes_mentioning(f"sessions/{doomed}"),
            timeout=10,
            what="the cancelled session's supervisor to exit",
        )
    assert not cancelled.exists()
