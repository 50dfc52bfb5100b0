"""The plugin's session machinery without Snakemake: spec, envelope, tracker, messages.

Real sessions on the embedded platform; used where a Snakemake run would only add
minutes (Snakemake's `runtime` resource is whole minutes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from canfar_core.bridge import TrackerBridge
from canfar_core.launch import write_secrets_file
from canfar_core.outcome import OutcomeKind
from canfar_core.sync import CanfarClient
from canfar_local import LocalPlatform
from snakemake_executor_plugin_canfar.diagnostics import failure_message
from snakemake_executor_plugin_canfar.resources import SessionRequest
from snakemake_executor_plugin_canfar.submission import build_spec

IMAGE = "images.canfar.net/skaha/base:latest"


@pytest.fixture
def watcher(platform: LocalPlatform) -> Iterator[TrackerBridge]:
    watcher = TrackerBridge(
        CanfarClient(url=platform.url, token=platform.token), min_interval=0.2, max_interval=0.5
    )
    yield watcher
    watcher.close()


def start(
    watcher: TrackerBridge, tmp_path: Path, command: str, request: SessionRequest, name: str
) -> str:
    state_dir = tmp_path / "sessions"
    secrets = write_secrets_file(tmp_path / "secrets" / f"{name}.sh", {"WEIRD": 'x=1 "y" $z'})
    spec = build_spec(
        label=f"rule {name}",
        command=command,
        workdir=tmp_path,
        state_dir=state_dir,
        name=f"smk-test-{name}-1-1",
        request=request,
        secrets_file=secrets,
    )
    session_id = watcher.client.create(spec)
    watcher.watch(
        session_id,
        name=spec.name,
        state_dir=str(state_dir),
        pending_timeout=None,
        runtime_limit=None if request.runtime_seconds is None else request.runtime_seconds + 30,
    )
    return session_id


def test_runtime_limit_stops_the_session_and_says_so(
    watcher: TrackerBridge, tmp_path: Path, wait_for: Callable[..., object]
) -> None:
    request = SessionRequest(image=IMAGE, cores=1, ram=1, gpus=None, runtime_minutes=0.02)
    session_id = start(watcher, tmp_path, "sleep 60", request, "slow")
    outcome = wait_for(lambda: watcher.outcome(session_id), timeout=30, what="the outcome")
    assert outcome.kind is OutcomeKind.RUNTIME_EXCEEDED
    assert outcome.exit_code == 124
    message = failure_message(outcome, label="rule slow", request=request, pending_timeout=None)
    assert f"CANFAR session {session_id} (image {IMAGE}; 1 core, 1 GiB)" in message
    assert "exceeded its runtime of 1.2 s and was stopped (exit code 124)" in message


def test_workdir_and_environment_arrive_intact(
    watcher: TrackerBridge, tmp_path: Path, wait_for: Callable[..., object]
) -> None:
    request = SessionRequest(image=IMAGE, cores=1, ram=1, gpus=None, runtime_minutes=None)
    session_id = start(watcher, tmp_path, 'pwd; printf "%s\\n" "$WEIRD"', request, "env")
    outcome = wait_for(lambda: watcher.outcome(session_id), timeout=30, what="the outcome")
    assert outcome.success
    assert f'{tmp_path}\nx=1 "y" $z\n' in outcome.logs
    assert not (tmp_path / "secrets" / "env.sh").exists(), "the session deletes what it read"
