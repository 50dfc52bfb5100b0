"""Sessions as local processes: argv/env/cwd, logs, queueing, limits, lifetimes, clean-up."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from canfar_local import LocalPlatform, PlatformConfig, PlatformError
from canfar_local.testing import image_path, processes_mentioning, skaha_client, wait_for

IMAGE = "images.canfar.net/skaha/base:latest"


def create(client: httpx.Client, **params: Any) -> str:
    params.setdefault("image", IMAGE)
    params.setdefault("name", "job")
    response = client.post("/session", data=params)
    assert response.status_code == 200, response.text
    return response.text.strip()


def session(client: httpx.Client, session_id: str) -> dict[str, Any]:
    return client.get(f"/session/{session_id}").json()


def status_of(client: httpx.Client, session_id: str) -> str | None:
    response = client.get(f"/session/{session_id}")
    return response.json()["status"] if response.status_code == 200 else None


def finished(client: httpx.Client, session_id: str, timeout: float = 15) -> str:
    return wait_for(
        lambda: (s := status_of(client, session_id)) in ("Completed", "Failed") and s,
        timeout=timeout,
        what=f"{session_id} to finish",
    )


def python_one_liner(code: str) -> str:
    """An ``args`` value that survives the server's split/regex/YAML pipeline intact."""
    return f"-c exec(bytes.fromhex('{code.encode().hex()}').decode())"


DUMP = """
import json, os, sys
out = os.path.join(os.environ["HOME"], "dump-" + os.environ["skaha_sessionid"] + ".json")
with open(out, "w") as f:
    json.dump({"argv": sys.argv, "env": dict(os.environ), "cwd": os.getcwd()}, f)
"""


def test_argv_env_and_cwd(
    platform: LocalPlatform, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CANFAR_PLATFORM_TEST_SECRET", "must-not-leak")
    args = python_one_liner(DUMP) + "  tail \\$(skaha_sessionid) \\$\\$(HOME) $0 "
    session_id = create(
        client,
        name="Dumper",
        cmd="python3",
        args=args,
        cores="3",
        env=[
            "FIRST=1",
            "WITH_EQUALS=a=b",
            "EMPTY=",
            "HOME=/not/home",
            "OMP_NUM_THREADS=99",
            "DERIVED=\\$(FIRST)2",
            "QUOTED=tab\\\\there",
        ],
    )
    assert finished(client, session_id) == "Completed"
    home = platform.home()
    dump = json.loads((home / f"dump-{session_id}.json").read_text())

    code = python_one_liner(DUMP).split(" ", 1)[1]
    assert dump["argv"][0] == "-c"  # python reports "-c" for the script name
    assert dump["argv"][1:] == ["", "tail", session_id, "$(HOME)", "${headless.image.bundle}"]
    assert dump["cwd"] == str(home)
    env = dump["env"]
    assert env["FIRST"] == "1"
    assert "WITH_EQUALS" not in env and "EMPTY" not in env
    assert env["HOME"] == env["PWD"] == str(home)
    assert env["OMP_NUM_THREADS"] == "3"
    assert env["DERIVED"] == "12"
    assert env["QUOTED"] == "tab\there"
    assert env["skaha_username"] == platform.user
    assert env["skaha_sessionid"] == session_id
    assert env["skaha_hostname"]
    assert env["HOSTNAME"] == "dumper"
    assert "CANFAR_PLATFORM_TEST_SECRET" not in env
    allowed = set(platform.config.base_env_keys) | {
        "HOSTNAME",
        "FIRST",
        "DERIVED",
        "QUOTED",
        "skaha_hostname",
        "skaha_username",
        "skaha_sessionid",
        "HOME",
        "PWD",
        "OMP_NUM_THREADS",
    }
    # Python itself may add LC_CTYPE when coercing the C locale.
    assert set(env) - allowed <= {"LC_CTYPE"}
    state = platform.session_state(session_id)
    assert state is not None
    assert state["argv"][:3] == ["python3", "-c", code]


def test_flexible_session_gets_one_thread(platform: LocalPlatform, client: httpx.Client) -> None:
    code = 'import os; print(os.environ["OMP_NUM_THREADS"], os.environ["HOSTNAME"])'
    session_id = create(client, name="Flex", cmd="python3", args=python_one_liner(code))
    assert finished(client, session_id) == "Completed"
    assert client.get(f"/session/{session_id}", params={"view": "logs"}).text == "1 flex\n"


def test_logs_capture_stdout_and_stderr_and_exit_status(
    platform: LocalPlatform, client: httpx.Client
) -> None:
    code = "import sys; print('out', flush=True); print('err', file=sys.stderr); sys.exit(3)"
    session_id = create(client, cmd="python3", args=python_one_liner(code))
    assert finished(client, session_id) == "Failed"
    logs = client.get(f"/session/{session_id}", params={"view": "logs"})
    assert logs.headers["content-type"] == "text/plain"
    assert logs.text == "out\nerr\n"
    state = platform.session_state(session_id)
    assert state is not None and (state["exit_code"], state["reason"]) == (3, "Error")


PRIORITY = """
import os
try:
    group = open("/proc/self/autogroup").read().split()[-1]
except OSError:
    group = "none"
print(os.getpriority(os.PRIO_PROCESS, 0), group)
"""


def test_sessions_run_below_the_platform_and_the_driver(
    platform_factory: Callable[..., LocalPlatform],
) -> None:
    """A busy fan-out must not starve the server or the engine, as on CANFAR's own nodes."""
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    for nice, expected in ((19, 19), (None, ours)):
        changes = {} if nice is None else {"session_nice": nice}
        with skaha_client(platform_factory(**changes)) as client:
            session_id = create(client, cmd="python3", args=python_one_liner(PRIORITY))
            assert finished(client, session_id) == "Completed"
            process, group = client.get(
                f"/session/{session_id}", params={"view": "logs"}
            ).text.split()
        assert int(process) == max(expected, ours)
        if group != "none" and nice == 19:
            assert group == "19"


def test_args_without_cmd_is_the_argv(client: httpx.Client) -> None:
    session_id = create(client, args="echo hello  world")
    assert finished(client, session_id) == "Completed"
    assert client.get(f"/session/{session_id}", params={"view": "logs"}).text == "hello  world\n"


def test_missing_executable_fails_with_an_event(
    platform: LocalPlatform, client: httpx.Client
) -> None:
    session_id = create(client, cmd="no-such-program-here")
    assert finished(client, session_id) == "Failed"
    events = client.get(f"/session/{session_id}", params={"view": "events"}).text
    assert "Warning" in events and "no-such-program-here" in events
    state = platform.session_state(session_id)
    assert state is not None and state["reason"] == "StartError"


def test_default_entrypoint_runs_until_deleted(
    platform: LocalPlatform, client: httpx.Client
) -> None:
    session_id = create(client)
    wait_for(lambda: status_of(client, session_id) == "Running", what="running")
    state = platform.session_state(session_id)
    assert state is not None
    assert state["argv"] == ["sleep", "infinity"]
    child = state["child_pid"]
    assert child and os.path.exists(f"/proc/{child}")
    client.delete(f"/session/{session_id}")
    assert status_of(client, session_id) is None
    wait_for(lambda: not processes_mentioning(str(platform.root)), what="processes gone")


def test_queueing_when_capacity_is_full(platform_factory: Callable[..., LocalPlatform]) -> None:
    platform = platform_factory(cores=2, ram_gib=8)
    with skaha_client(platform) as c:
        big = create(c, name="big", cores="2", cmd="sleep", args="60")
        small = create(c, name="small", cores="1", ram="1", cmd="sleep", args="60")
        flexible = create(c, name="flex", cmd="sleep", args="60")
        wait_for(lambda: status_of(c, big) == "Running", what="big running")
        for queued in (small, flexible):
            waiting = session(c, queued)
            assert waiting["status"] == "Pending"
            assert "startTime" not in waiting and "expiryTime" not in waiting
            events = c.get(f"/session/{queued}", params={"view": "events"})
            assert (events.status_code, events.text) == (404, f"session {queued} not found.\n")
            assert c.get(f"/session/{queued}", params={"view": "logs"}).text == ""
        c.delete(f"/session/{big}")
        wait_for(lambda: status_of(c, small) == "Running", what="small admitted")
        wait_for(lambda: status_of(c, flexible) == "Running", what="flexible admitted")
        assert "startTime" in session(c, small)
        stats = c.get("/session", params={"view": "stats"}).json()
        assert stats["cores"]["requestedCPUCores"] == 2.0


def test_flexible_sessions_count_their_default_request(
    platform_factory: Callable[..., LocalPlatform],
) -> None:
    platform = platform_factory(cores=64, ram_gib=8)
    with skaha_client(platform) as c:
        ids = [create(c, name=f"f{i}", cmd="sleep", args="60") for i in range(3)]
        wait_for(lambda: status_of(c, ids[1]) == "Running", what="two admitted")
        assert status_of(c, ids[0]) == "Running"
        assert status_of(c, ids[2]) == "Pending"


def test_sixteen_cores_fit_the_default_capacity(client: httpx.Client) -> None:
    session_id = create(client, cores="16", ram="64", cmd="sleep", args="30")
    wait_for(lambda: status_of(client, session_id) == "Running", what="admitted")


def test_memory_limit_kills_like_oom(platform: LocalPlatform, client: httpx.Client) -> None:
    code = "import time; hog = b'x' * (1536 * 1024 * 1024); time.sleep(60)"
    session_id = create(client, ram="1", cmd="python3", args=python_one_liner(code))
    assert finished(client, session_id, timeout=30) == "Failed"
    state = platform.session_state(session_id)
    assert state is not None
    assert (state["exit_code"], state["reason"]) == (137, "OOMKilled")
    status_file = platform.root / "sessions" / session_id / "status.json"
    assert json.loads(status_file.read_text())["exit_code"] == 137


WRAPPER = """
import subprocess, sys
hog = "b = bytearray(1536 * 1024 ** 2); import time; time.sleep(60)"
code = subprocess.run([sys.executable, "-c", hog]).returncode
print("child", code, flush=True)
sys.exit(128 - code if code < 0 else code)
"""


@pytest.mark.parametrize(("policy", "wrapper_survives"), [("largest", True), ("group", False)])
def test_oom_victim_policy(
    platform_factory: Callable[..., LocalPlatform], policy: str, wrapper_survives: bool
) -> None:
    platform = platform_factory(oom_policy=policy)
    with skaha_client(platform) as c:
        session_id = create(c, ram="1", cmd="python3", args=python_one_liner(WRAPPER))
        assert finished(c, session_id, timeout=30) == "Failed"
        logs = c.get(f"/session/{session_id}", params={"view": "logs"}).text
    assert (logs == "child -9\n") is wrapper_survives
    state = platform.session_state(session_id)
    assert state is not None
    assert (state["exit_code"], state["reason"]) == (137, "OOMKilled")


def test_deadline_fails_the_session(platform_factory: Callable[..., LocalPlatform]) -> None:
    platform = platform_factory(deadline_seconds=1, kill_grace_seconds=0.2)
    with skaha_client(platform) as c:
        session_id = create(c, cmd="sleep", args="60")
        assert finished(c, session_id) == "Failed"
    state = platform.session_state(session_id)
    assert state is not None and state["reason"] == "DeadlineExceeded"


def test_finished_sessions_expire_after_retention(
    platform_factory: Callable[..., LocalPlatform],
) -> None:
    platform = platform_factory(retention_seconds=2)
    with skaha_client(platform) as c:
        session_id = create(c, cmd="echo", args="bye")
        assert finished(c, session_id) == "Completed"
        assert c.get(f"/session/{session_id}", params={"view": "logs"}).text == "bye\n"
        wait_for(lambda: status_of(c, session_id) is None, timeout=10, what="expiry")
        assert c.get(f"/session/{session_id}", params={"view": "logs"}).text == ""
        assert c.get(f"/session/{session_id}", params={"view": "events"}).status_code == 404
        assert c.get("/session").json() == []
    assert not (platform.root / "sessions" / session_id).exists()


def test_delete_terminates_the_process_group(platform: LocalPlatform, client: httpx.Client) -> None:
    # A sleep of a length no other test uses, so that tests running beside this one
    # (pytest -n) cannot stand in for the grandchild.
    code = "import subprocess, time; subprocess.Popen(['sleep', '299.75']); time.sleep(300)"
    session_id = create(client, cmd="python3", args=python_one_liner(code))
    wait_for(lambda: status_of(client, session_id) == "Running", what="running")
    # The session's own command carries this code hex-encoded: only the sleep says 299.75.
    wait_for(lambda: len(processes_mentioning("299.75")) > 0, what="grandchild started")
    state = platform.session_state(session_id)
    assert state is not None
    pgid = state["child_pid"]
    client.delete(f"/session/{session_id}")
    assert client.get("/session").json() == []

    def group_gone() -> bool:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    fields = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
                    return False
        return True

    wait_for(group_gone, timeout=10, what="process group gone")
    wait_for(lambda: platform.session_state(session_id) is None, what="record forgotten")


def test_stop_with_kill_sessions_leaves_no_process(tmp_path: Path) -> None:
    root = tmp_path / "root"
    platform = LocalPlatform.start(PlatformConfig(root=root, cores=4))
    with skaha_client(platform) as c:
        running = [create(c, name=f"r{i}", cmd="sleep", args="300") for i in range(3)]
        create(c, name="queued", cores="4", cmd="sleep", args="300")
        create(c, type="notebook", name="nb")
        wait_for(lambda: all(status_of(c, s) == "Running" for s in running), what="running")
    assert processes_mentioning(str(root))
    platform.stop(kill_sessions=True)
    assert processes_mentioning(str(root)) == []


def test_stop_keeps_sessions_and_restart_adopts_them(tmp_path: Path) -> None:
    root = tmp_path / "root"
    first = LocalPlatform.start(PlatformConfig(root=root))
    token = first.token
    with skaha_client(first) as c:
        long_id = create(c, cmd="sleep", args="2")
        short_id = create(c, cmd="true")
        wait_for(lambda: status_of(c, long_id) == "Running", what="running")
    first.stop()
    second = LocalPlatform.start(PlatformConfig(root=root))
    try:
        assert second.token == token
        with skaha_client(second) as c:
            assert status_of(c, long_id) == "Running"
            assert finished(c, short_id) == "Completed"
            assert finished(c, long_id) == "Completed"
    finally:
        second.stop(kill_sessions=True)
    assert processes_mentioning(str(root)) == []


def test_one_server_per_root(platform: LocalPlatform) -> None:
    with pytest.raises(PlatformError) as info:
        LocalPlatform.start(PlatformConfig(root=platform.root))
    message = str(info.value)
    assert str(platform.root) in message
    assert f"pid {os.getpid()}" in message


def test_tokens_persist_privately(tmp_path: Path) -> None:
    root = tmp_path / "root"
    first = LocalPlatform.start(PlatformConfig(root=root))
    alice = first.add_user("alice")
    first.stop()
    tokens = root / "tokens.json"
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o600
    second = LocalPlatform.start(PlatformConfig(root=root))
    try:
        assert second.add_user("alice") == alice
        with skaha_client(second, token=alice) as c:
            assert c.get("/session").headers["x-vo-authenticated"] == "alice"
    finally:
        second.stop(kill_sessions=True)


def test_configured_users_and_default_user(platform_factory: Callable[..., LocalPlatform]) -> None:
    platform = platform_factory(users={"tok-bob": "bob", "tok-eve": "eve"})
    assert (platform.user, platform.token) == ("bob", "tok-bob")
    with skaha_client(platform, token="tok-eve") as c:
        assert c.get("/session").headers["x-vo-authenticated"] == "eve"
    assert platform.home("eve") == platform.root / "arc" / "home" / "eve"


def test_context_manager_stops_and_kills(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with LocalPlatform.start(PlatformConfig(root=root)) as platform, skaha_client(platform) as c:
        session_id = create(c, cmd="sleep", args="300")
        wait_for(lambda: status_of(c, session_id) == "Running", what="running")
    assert processes_mentioning(str(root)) == []
    with pytest.raises(httpx.TransportError):
        httpx.get(platform.url + "/session", timeout=2)


def test_default_root_is_a_user_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert PlatformConfig().resolved_root() == (tmp_path / "cache" / "canfar-local").resolve()


def test_an_unpullable_image_stays_pending_with_pull_events(
    platform_factory: Callable[..., LocalPlatform],
) -> None:
    missing = "images.canfar.net/skaha/base:no-such-tag"
    platform = platform_factory(cores=2, ram_gib=8, unpullable_images=(missing,))
    with skaha_client(platform) as client:
        stuck = create(client, image=missing, cores="2", ram="1", cmd="true")
        waiting = create(client, cores="2", ram="1", cmd="true")
        first = session(client, stuck)
        assert first["status"] == "Pending" and "startTime" in first, "admitted, not queued"
        events = client.get(f"/session/{stuck}", params={"view": "events"})
        assert events.status_code == 200
        assert "ErrImagePull" in events.text and "ImagePullBackOff" in events.text
        assert "Pulled" not in events.text.split()
        assert client.get(f"/session/{stuck}", params={"view": "logs"}).text == ""
        assert session(client, waiting)["status"] == "Pending"  # its capacity is held
        client.delete(f"/session/{stuck}")
        assert finished(client, waiting) == "Completed", "deleting frees the capacity"


def test_an_image_path_narrows_what_its_sessions_find(
    platform_factory: Callable[..., LocalPlatform], tmp_path: Path
) -> None:
    slim = "images.canfar.net/skaha/slim:1.0"
    tools = image_path(tmp_path / "slim-bin", ["sh", "cat"])
    platform = platform_factory(image_paths={slim: tools})
    with skaha_client(platform) as client:
        probe = {"cmd": "sh", "args": "-c \\$(S)", "env": "S=command -v base64 || echo none"}
        narrow = create(client, image=slim, **probe)
        wide = create(client, **probe)
        finished(client, narrow), finished(client, wide)
        narrow_log = client.get(f"/session/{narrow}", params={"view": "logs"}).text
        wide_log = client.get(f"/session/{wide}", params={"view": "logs"}).text
    assert narrow_log == "none\n"
    assert wide_log.strip().endswith("/base64")


def test_held_phases_and_a_lost_node(platform: LocalPlatform, client: httpx.Client) -> None:
    ended = create(client, cmd="true")
    finished(client, ended)
    platform.hold_phase(ended, "Terminating")
    assert status_of(client, ended) == "Terminating"
    assert client.get("/session").json()[0]["status"] == "Terminating"
    running = create(client, cmd="sleep", args="60")
    wait_for(lambda: status_of(client, running) == "Running", timeout=60, what="Running")
    child = wait_for(
        lambda: platform.session_state(running)["child_pid"], timeout=60, what="a child pid"
    )
    platform.hold_phase(running, "Unknown", kill=True)
    wait_for(
        lambda: not os.path.exists(f"/proc/{child}/stat"),
        timeout=60,
        what="the lost node's processes",
    )
    wait_for(
        lambda: platform.session_state(running)["phase"] == "finished", timeout=60, what="its end"
    )
    assert status_of(client, running) == "Unknown", "the status stays held"
    assert platform.session_state(running)["exit_code"] is None, "nothing recorded an exit"


def test_a_revoked_token_is_refused(platform: LocalPlatform) -> None:
    extra = platform.add_user("carol")
    with skaha_client(platform, token=extra) as carol:
        assert carol.get("/session").status_code == 200
        assert platform.revoke_token(extra)
        refused = carol.get("/session")
    assert refused.status_code == 401 and refused.text == "Unauthorized\n"
    assert not platform.revoke_token(extra)


def test_the_servers_size_limits(client: httpx.Client) -> None:
    """Tomcat drops every parameter of a form over 2 MiB; Kubernetes refuses a Job over
    about 1.5 MiB (reference §7)."""
    too_big = client.post("/session", data={"name": "big", "image": IMAGE, "cmd": "x" * 2_200_000})
    assert (too_big.status_code, too_big.text) == (400, "Missing parameter 'image'\n")
    env = [("env", f"V{i}=" + "y" * 100_000) for i in range(16)]
    large = client.post("/session", content=urlencode([("name", "large"), ("image", IMAGE), *env]))
    assert large.status_code == 500
    assert "request is too large" in large.text
