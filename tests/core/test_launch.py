"""The launch envelope carries hostile content intact, through the real API."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from canfar_core import AsyncCanfarClient, SessionTracker, envelope
from canfar_core.errors import SpecError
from canfar_core.launch import encode_script, write_secrets_file

IMAGE = "images.canfar.net/skaha/terminal:1.1.2"
HOSTILE = [
    "two  spaces",
    'double " quote',
    "single ' quote",
    "back\\slash \\n",
    "a=b=c",
    "$(HOME) and $(NOPE)",
    "$$ and $$(HOME)",
    "line one\nline two",
    "non-ASCII: é ß 星",
    "",
]

DUMP = (
    "import json, os, sys\n"
    "json.dump({'argv': sys.argv[1:], 'env': dict(os.environ), 'cwd': os.getcwd()},"
    " open(os.environ['DUMP_TO'], 'w'))\n"
    "sys.exit(3)\n"
)


async def test_hostile_argv_env_and_workdir_arrive_exactly(platform, tmp_path: Path) -> None:
    workdir = tmp_path / "work dir 'quoted'"
    workdir.mkdir()
    state = tmp_path / "state"
    dump = tmp_path / "dump.json"
    env = {f"V{i}": value for i, value in enumerate(HOSTILE)}
    env["BIG"] = "x=" * 50_000  # 100 kB of environment
    env["DUMP_TO"] = str(dump)
    wrapped = envelope(
        [sys.executable, "-c", DUMP, *HOSTILE], env=env, workdir=workdir, state_dir=state
    )
    assert len(wrapped.env) >= 3, "a 100 kB script must be split across variables"
    async with AsyncCanfarClient(url=platform.url, token=platform.token) as client:
        session_id = await client.create(wrapped.spec(name="hostile", image=IMAGE))
        tracker = SessionTracker(client, min_interval=0.2)
        tracker.watch(session_id, state_dir=str(state))
        outcome = await tracker.wait(session_id)
        await tracker.aclose()
    seen = json.loads(dump.read_text())
    assert seen["argv"] == HOSTILE
    assert {k: seen["env"][k] for k in env} == env
    assert not [k for k in seen["env"] if k.startswith(("CANFAR_LAUNCH_", "CANFAR_BOOT"))]
    assert seen["cwd"] == str(workdir)
    assert outcome.exit_code == 3 and not outcome.success
    assert outcome.reason == "the command exited with code 3"
    assert (state / f"{session_id}.exit").read_text().strip() == "3"


async def test_marker_line_gives_the_exit_code_without_a_state_dir(platform) -> None:
    wrapped = envelope("echo out; echo err >&2; exit 5")
    async with AsyncCanfarClient(url=platform.url, token=platform.token) as client:
        session_id = await client.create(wrapped.spec(name="marker", image=IMAGE))
        tracker = SessionTracker(client, min_interval=0.2)
        outcome = await tracker.watch(session_id)
        await tracker.aclose()
    assert outcome.exit_code == 5
    assert "out" in outcome.logs and "err" in outcome.logs
    assert outcome.log_tail(1) == f"canfar-launch: exit code 5 session {session_id}"


async def test_runtime_limit_stops_the_command_with_124(platform, tmp_path: Path) -> None:
    wrapped = envelope(["sleep", "60"], timeout=1, state_dir=tmp_path)
    async with AsyncCanfarClient(url=platform.url, token=platform.token) as client:
        session_id = await client.create(wrapped.spec(name="slow", image=IMAGE))
        tracker = SessionTracker(client, min_interval=0.2)
        outcome = await tracker.watch(session_id, state_dir=str(tmp_path))
        await tracker.aclose()
    assert outcome.exit_code == 124
    assert "runtime limit of 1 s exceeded" in outcome.logs


async def test_concurrent_sessions_do_not_collide(platform, tmp_path: Path) -> None:
    wrapped = envelope("echo $skaha_sessionid", state_dir=tmp_path)
    async with AsyncCanfarClient(url=platform.url, token=platform.token) as client:
        ids = await client.create(wrapped.spec(name="many", image=IMAGE), replicas=8)
        tracker = SessionTracker(client, min_interval=0.2)
        outcomes = [await tracker.watch(i, state_dir=str(tmp_path)) for i in ids]
        await tracker.aclose()
    assert all(o.success for o in outcomes)
    for session_id in ids:
        assert (tmp_path / f"{session_id}.log").read_text().splitlines()[0] == session_id
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp files left"


def test_envelope_text_is_api_safe() -> None:
    wrapped = envelope(["echo", 'a "b" \\c'], env={"K": "v=1 $(X) $$"})
    assert wrapped.cmd == "/bin/sh" and wrapped.args == "-c $(CANFAR_BOOT)"
    for value in wrapped.env.values():
        for bad in ('"', "\\", "=", "$(", "$$"):
            assert bad not in value
    assert all(len(chunk) % 4 == 0 for chunk in encode_script("x" * 100_001)[:-1])


def test_envelope_rejects_bad_input() -> None:
    with pytest.raises(SpecError, match="env key='1BAD' is not allowed"):
        envelope(["true"], env={"1BAD": "x"})
    with pytest.raises(SpecError, match="timeout"):
        envelope(["true"], timeout=0)
    with pytest.raises(SpecError, match="command"):
        envelope([])


async def test_deleting_a_session_stops_a_command_under_a_runtime_limit(platform, tmp_path) -> None:
    """The envelope runs a timed command under setsid; deletion must still stop it."""
    marker = tmp_path / "pid"
    wrapped = envelope(["/bin/sh", "-c", f"echo $$ > {marker}; exec sleep 300"], timeout=600)
    async with AsyncCanfarClient(url=platform.url, token=platform.token) as client:
        session_id = await client.create(wrapped.spec(name="doomed", image=IMAGE))
        for _ in range(200):
            if marker.exists() and marker.read_text().strip():
                break
            await asyncio.sleep(0.05)
        pid = int(marker.read_text())
        await client.delete(session_id)
        for _ in range(200):
            if not _alive(pid):
                break
            await asyncio.sleep(0.05)
    assert not _alive(pid), "the command outlived its deleted session"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


async def test_secrets_travel_in_a_file_that_the_session_deletes(platform, tmp_path: Path) -> None:
    """Secrets reach the command, but not the request, and their file is gone after."""
    secret = "s3cr3t 'quoted' $NOT_EXPANDED=="
    secrets = write_secrets_file(tmp_path / "secrets" / "job.sh", {"API_KEY": secret})
    assert secrets.stat().st_mode & 0o777 == 0o600
    assert secrets.parent.stat().st_mode & 0o777 == 0o700
    dump = tmp_path / "dump.json"
    wrapped = envelope(
        [sys.executable, "-c", DUMP],
        env={"DUMP_TO": str(dump)},
        state_dir=tmp_path / "state",
        secrets_file=secrets,
        timeout=60,
    )
    assert secret not in wrapped.script
    sent = json.dumps(wrapped.spec(name="secretive", image=IMAGE).to_params())
    assert secret not in sent and "API_KEY" not in sent
    async with AsyncCanfarClient(url=platform.url, token=platform.token) as client:
        session_id = await client.create(wrapped.spec(name="secretive", image=IMAGE))
        tracker = SessionTracker(client, min_interval=0.2)
        tracker.watch(session_id, state_dir=str(tmp_path / "state"))
        outcome = await tracker.wait(session_id)
        # The same envelope again: its file is consumed, so the session fails and says so.
        again = await client.create(wrapped.spec(name="secretive-again", image=IMAGE))
        tracker.watch(again, state_dir=str(tmp_path / "state"))
        second = await tracker.wait(again)
        await tracker.aclose()
    assert outcome.exit_code == 3
    assert json.loads(dump.read_text())["env"]["API_KEY"] == secret
    assert not secrets.exists()
    assert second.exit_code == 126
    assert f"canfar-launch: the secrets file {secrets} is missing or unreadable" in second.logs
    with pytest.raises(FileExistsError):
        write_secrets_file(tmp_path / "state" / f"{session_id}.exit", {"A": "b"})
