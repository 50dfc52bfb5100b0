"""Crash safety: ``canfar-local serve`` SIGKILLed while sessions run, then restarted."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import httpx
from canfar_local import LocalPlatform
from canfar_local.testing import processes_mentioning, served, skaha_client, wait_for

IMAGE = "images.canfar.net/skaha/base:latest"


def client_for(url: str, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=url,
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
        timeout=30,
    )


def python_args(code: str) -> str:
    return f"-c exec(bytes.fromhex('{code.encode().hex()}').decode())"


def create(client: httpx.Client, name: str, code: str) -> str:
    response = client.post(
        "/session", data={"image": IMAGE, "name": name, "cmd": "python3", "args": python_args(code)}
    )
    assert response.status_code == 200, response.text
    return response.text.strip()


def status_of(client: httpx.Client, session_id: str) -> str | None:
    response = client.get(f"/session/{session_id}")
    return response.json()["status"] if response.status_code == 200 else None


def internal_state(url: str, token: str, session_id: str) -> dict[str, Any]:
    base = url.rsplit("/skaha/", 1)[0]
    response = httpx.get(
        f"{base}/_platform/sessions/{session_id}", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200
    return response.json()


def test_sigkilled_server_restarts_and_readopts_sessions(tmp_path: Path) -> None:
    root = tmp_path / "root"
    release = tmp_path / "release-long"
    long_code = (
        "import os, time\n"
        f"while not os.path.exists({str(release)!r}):\n"
        "    time.sleep(0.05)\n"
        "print('long done')\n"
    )
    with served(root) as (process, url, token):
        with client_for(url, token) as c:
            long_id = create(c, "long", long_code)
            ok_id = create(c, "short-ok", "import time; time.sleep(0.5); print('ok')")
            bad_id = create(c, "short-bad", "import sys, time; time.sleep(0.5); sys.exit(5)")
            for session_id in (long_id, ok_id, bad_id):
                wait_for(lambda s=session_id: status_of(c, s) == "Running", what="running")
        process.kill()
        process.wait(timeout=10)

    # While the server is down, the short sessions end and their supervisors record it.
    for session_id in (ok_id, bad_id):
        status_file = root / "sessions" / session_id / "status.json"
        wait_for(status_file.exists, timeout=15, what=f"{session_id} status while down")

    with served(root) as (process, url, token2):
        assert token2 == token
        with client_for(url, token) as c:
            assert status_of(c, long_id) == "Running"
            wait_for(lambda: status_of(c, ok_id) == "Completed", what="ok completed")
            wait_for(lambda: status_of(c, bad_id) == "Failed", what="bad failed")
            assert internal_state(url, token, bad_id)["exit_code"] == 5
            assert internal_state(url, token, ok_id)["exit_code"] == 0
            assert c.get(f"/session/{ok_id}", params={"view": "logs"}).text == "ok\n"
            release.touch()
            wait_for(lambda: status_of(c, long_id) == "Completed", what="long completed")
            assert c.get(f"/session/{long_id}", params={"view": "logs"}).text == "long done\n"
    assert process.returncode == 0
    wait_for(lambda: not processes_mentioning(str(root)), what="no process left behind")


def test_lost_supervisor_means_failed(platform: LocalPlatform) -> None:
    with skaha_client(platform) as c:
        response = c.post(
            "/session", data={"image": IMAGE, "name": "victim", "cmd": "sleep", "args": "300"}
        )
        session_id = response.text.strip()
        wait_for(lambda: status_of(c, session_id) == "Running", what="running")
        state = platform.session_state(session_id)
        assert state is not None
        os.kill(state["supervisor_pid"], signal.SIGKILL)
        wait_for(lambda: status_of(c, session_id) == "Failed", what="failed after loss")
        state = platform.session_state(session_id)
        assert state is not None and state["reason"] == "SupervisorLost"
    wait_for(lambda: not processes_mentioning(str(platform.root)), what="child killed")
