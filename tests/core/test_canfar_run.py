"""`canfar-run`, the real command in a subprocess, against the embedded platform.

One platform serves the whole module (sessions are told apart by their `--name`);
each test runs `canfar-run` as a user would, with CANFAR_URL and CANFAR_TOKEN in its
environment, and checks what a user checks: the exit code, stdout, stderr, what the
platform created and what is left running. Bad input runs `main()` in-process (the
same code, without a process start per case).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from canfar_core.launch import MARKER, marker_line
from canfar_core.outcome import Outcome, OutcomeKind
from canfar_core.phase import Phase
from canfar_core.run.cli import main
from canfar_core.run.report import Attempt, Judge
from canfar_core.run.stream import without_marker
from canfar_local import LocalPlatform, PlatformConfig
from canfar_local.testing import processes_mentioning, skaha_client, wait_for

CANFAR_RUN = str(Path(sys.executable).with_name("canfar-run"))
MISSING_IMAGE = "images.canfar.net/test/missing:1"
SECRET = "s3cr3t-Value-9f2"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:
    root = tmp_path_factory.mktemp("canfar-run-platform")
    started = LocalPlatform.start(PlatformConfig(root=root, unpullable_images=(MISSING_IMAGE,)))
    yield started
    started.stop(kill_sessions=True)
    assert not processes_mentioning(str(root)), "session processes outlived the platform"


def run_env(platform: LocalPlatform, **extra: str) -> dict[str, str]:
    env = {**os.environ, "CANFAR_URL": platform.url, "CANFAR_TOKEN": platform.token, **extra}
    env.pop("CANFAR_CERTIFICATE", None)
    return env


def start(platform: LocalPlatform, *args: str, **extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [CANFAR_RUN, *args],
        env=run_env(platform, **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    assert "Traceback" not in err, err
    return process.returncode, out, err


def run(platform: LocalPlatform, *args: str, **extra: str) -> tuple[int, str, str]:
    return finish(start(platform, *args, **extra))


def live_sessions(platform: LocalPlatform, stem: str) -> list[dict]:
    with skaha_client(platform) as http:
        listed = http.get("session").json()
    return [s for s in listed if s["name"].startswith(f"{stem}-")]


def created_names(platform: LocalPlatform, stem: str) -> list[str]:
    return [c["name"] for c in platform.created() if c["name"].startswith(f"{stem}-")]


# -- exit codes, argv, environment, secrets, progress ----------------------------------


def test_the_commands_exit_code_is_the_process_exit_code(platform: LocalPlatform) -> None:
    argv = ["a b", "it's", "$HOME", 'x="y"', "back\\slash", "$(echo no)", ""]
    # The secret is checked by its hash, so it is on no command line at all.
    script = 'printf "[%s]\\n" "$@"; printf "V=[%s]\\n" "$V"; printf %s "$SECRET_TOKEN" | sha256sum'
    runs = {
        0: start(
            platform,
            "--name=argv",
            "--env",
            'V=a=b $X "q" \\n',
            "--env",
            "SECRET_TOKEN",  # copied from this environment: never on a command line
            "--",
            "sh",
            "-c",
            script,
            "sh",
            *argv,
            SECRET_TOKEN=SECRET,
        ),
        3: start(platform, "--name=three", "--", "sh", "-c", "echo before; exit 3"),
        137: start(platform, "--name=killed", "--", "sh", "-c", "kill -9 $$"),
        124: start(platform, "--name=slow", "--timeout", "1", "--", "sleep", "30"),
        125: start(
            platform,
            "--name=unpullable",
            "--image",
            MISSING_IMAGE,
            "--pending-timeout",
            "5",
            "--",
            "true",
        ),
    }
    results = {expected: finish(process) for expected, process in runs.items()}
    assert {expected: code for expected, (code, _, _) in results.items()} == {
        0: 0,
        3: 3,
        137: 137,
        124: 124,
        125: 125,
    }

    _, out, err = results[0]
    digest = hashlib.sha256(SECRET.encode()).hexdigest()
    assert out.splitlines() == [f"[{a}]" for a in argv] + ['V=[a=b $X "q" \\n]', f"{digest}  -"]
    assert MARKER not in out and "canfar-run" not in out, "stdout is the command's alone"
    assert SECRET not in err and SECRET not in (platform.root / "requests.log").read_text()
    assert not any(SECRET.lower() in name for name in created_names(platform, "argv"))

    _, out, err = results[3]
    assert out == "before\n"
    assert "the command exited with code 3" in err
    assert "exit code 137" in results[137][2] and "memory" in results[137][2]
    assert "--timeout=1 s (exit code 124)" in results[124][2]

    _, _, err = results[125]
    assert err.count("is Pending after") == 1, err  # the reason, once
    assert "Failed to pull image" in err
    assert "no exit code was recorded, so canfar-run exits with 125" in err
    assert not live_sessions(platform, "unpullable"), "a pending timeout deletes the session"


# -- replicas, the table, --json, --retries ---------------------------------------------


def test_twenty_replicas_report_the_failing_one_and_retries_rerun_only_it(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    command = 'echo "out $REPLICA_ID of $REPLICA_COUNT"; [ "$REPLICA_ID" != 7 ] || exit 3'
    code, out, err = run(platform, "--name=fan", "-r", "20", "--json", "--", "sh", "-c", command)
    assert code == 3
    report = json.loads(out)  # stdout holds the report alone; the output went to stderr
    assert (report["exit_code"], report["succeeded"], report["failed"]) == (3, 19, 1)
    failed = [r for r in report["replicas"] if not r["success"]]
    assert [(r["replica"], r["exit_code"]) for r in failed] == [(7, 3)]
    assert failed[0]["log_tail"] == "out 7 of 20"
    assert all(r["session"] and r["runtime_seconds"] is not None for r in report["replicas"])
    for replica in range(1, 21):
        assert err.count(f"{replica:>2}: out {replica} of 20\n") == 1
    assert "19 of 20 replicas succeeded; failed: 7" in err
    assert sorted(created_names(platform, "fan")) == sorted(
        f"{report['replicas'][0]['name'].rsplit('-', 1)[0]}-{i}" for i in range(1, 21)
    )

    marker = tmp_path / "failed-once"
    flaky = (
        'echo "out $REPLICA_ID"; '
        f'if [ "$REPLICA_ID" = 7 ] && mkdir {marker} 2>/dev/null; then exit 3; fi'
    )
    code, out, err = run(
        platform, "--name=retry", "-r", "20", "--max-running", "5", "--retries", "1",
        "--", "sh", "-c", flaky,
    )  # fmt: skip
    assert code == 0, err
    names = created_names(platform, "retry")
    assert len(names) == 21
    replica_of = [name.rsplit("-", 1)[1] for name in names]
    assert replica_of.count("7") == 2 and len(set(replica_of)) == 20
    assert out.count(" 7: out 7\n") == 2 and out.count(" 8: out 8\n") == 1
    assert "replica 7 (session" in err and "retrying, attempt 2 of 2" in err
    assert "20 of 20 replicas succeeded" in err


# -- --detach, --attach ------------------------------------------------------------------


def test_detach_prints_the_ids_and_attach_waits_with_the_same_report(
    platform: LocalPlatform,
) -> None:
    code, out, err = run(
        platform, "--name=later", "-r", "2", "--detach", "--",
        "sh", "-c", 'sleep 1; echo "bye $REPLICA_ID"; exit $((REPLICA_ID + 3))',
    )  # fmt: skip
    assert code == 0, err
    ids = out.split()
    assert len(ids) == 2 and f"--attach {' '.join(ids)}" in err
    code, out, err = run(platform, "--attach", *ids, "--json")
    assert code == 5  # the highest of the replicas' codes, as srun reports
    report = json.loads(out)
    assert [(r["session"], r["exit_code"]) for r in report["replicas"]] == [
        (ids[0], 4),
        (ids[1], 5),
    ]
    assert "1: bye 1" in err and "2: bye 2" in err


# -- streaming ---------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["logs view", "state dir"])
def test_output_streams_while_the_command_runs(
    platform: LocalPlatform, tmp_path: Path, source: str
) -> None:
    go = tmp_path / "go"
    options = ["--state-dir", str(tmp_path / "state")] if source == "state dir" else []
    platform.reset_counters()
    process = start(
        platform, "--name=stream", *options, "--",
        "sh", "-c", f"echo first; while [ ! -e {go} ]; do sleep 0.1; done; echo second",
    )  # fmt: skip
    lines: list[str] = []
    assert process.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    wait_for(lambda: "first\n" in lines, timeout=30, what="the first line, while it runs")
    assert process.poll() is None
    go.touch()
    code = process.wait(timeout=60)
    reader.join(timeout=10)
    assert code == 0 and lines == ["first\n", "second\n"]
    per_session = platform.counters().get("GET /v1/session/{id}", 0)
    if source == "state dir":
        assert per_session == 0, "the shared log file is read, not the logs view"
    else:
        assert per_session >= 2


def test_a_reader_that_goes_away_does_not_stop_the_run(platform: LocalPlatform) -> None:
    process = start(
        platform, "--name=head", "--", "sh", "-c", "echo one; sleep 1; echo two; exit 4"
    )  # like `canfar-run ... | head -1`
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline() == "one\n"
    process.stdout.close()
    code = process.wait(timeout=60)
    err = process.stderr.read()
    assert code == 4 and "Traceback" not in err and "exited with code 4" in err


# -- Ctrl-C ------------------------------------------------------------------------------


def test_ctrl_c_deletes_every_session_and_says_so(platform: LocalPlatform) -> None:
    process = start(platform, "--name=ctrlc", "-r", "3", "--", "sleep", "300")
    wait_for(
        lambda: sum(s["status"] == "Running" for s in live_sessions(platform, "ctrlc")) == 3,
        timeout=30,
        what="three running replicas",
    )
    process.send_signal(signal.SIGINT)
    code, _, err = finish(process, timeout=60)
    assert code == 130
    assert "interrupted; deleted 3 sessions" in err
    assert not live_sessions(platform, "ctrlc")
    wait_for(lambda: not processes_mentioning("ctrlc-"), timeout=20, what="no sleep left")


def test_ctrl_c_while_creates_are_in_flight_still_deletes_what_they_create(
    platform: LocalPlatform,
) -> None:
    # The platform holds each create for 2 s before making the session, so the
    # interrupt arrives while all three requests are in flight.
    platform.inject_fault(method="POST", route="/v1/session", delay=2.0, count=3)
    before = platform.counters().get("POST /v1/session", 0)
    process = start(platform, "--name=inflight", "-r", "3", "--", "sleep", "300")
    wait_for(
        lambda: platform.counters().get("POST /v1/session", 0) - before == 3,
        timeout=30,
        what="three creates sent",
    )
    assert not created_names(platform, "inflight")
    process.send_signal(signal.SIGINT)
    code, _, err = finish(process, timeout=60)
    platform.clear_faults()
    assert code == 130
    assert len(created_names(platform, "inflight")) == 3
    assert "interrupted; deleted 3 sessions" in err
    assert not live_sessions(platform, "inflight")
    wait_for(lambda: not processes_mentioning("inflight-"), timeout=20, what="no sleep left")


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["--cores", "abc", "--", "true"], "--cores='abc'"),
        (["--cores", "100", "--", "true"], "--cores=100"),
        (["--ram", "0", "--", "true"], "--ram='0'"),
        (["--image", "docker.io/library/x:1", "--", "true"], "--image='docker.io/library/x:1'"),
        (["--env", "1BAD=x", "--", "true"], "--env key '1BAD'"),
        (["--env", "REPLICA_ID=2", "--", "true"], "--env key 'REPLICA_ID'"),
        (["--replicas", "0", "--", "true"], "--replicas='0'"),
        (["--timeout", "5x", "--", "true"], "--timeout='5x'"),
        (["--name", "My_Job", "--", "true"], "--name='My_Job'"),
        (["--detach", "--retries", "1", "--", "true"], "--retries=1"),
        (["--attach", "nosuchid"], "--attach='nosuchid'"),
        (["--attach", "abc", "--", "true"], "a command is not allowed with --attach"),
        (["--url", "ws-uv.canfar.net", "--", "true"], "--url='ws-uv.canfar.net'"),
        (["--bogus", "--", "true"], "unrecognized arguments: --bogus"),
        ([], "a command is required"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2_before_anything_is_submitted(
    platform: LocalPlatform,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    names: str,
) -> None:
    monkeypatch.setenv("CANFAR_URL", platform.url)
    monkeypatch.setenv("CANFAR_TOKEN", platform.token)
    before = platform.counters().get("POST /v1/session", 0)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"canfar-run: {names}") and err.count("\n") == 1, err
    assert platform.counters().get("POST /v1/session", 0) == before


def test_refused_credentials_are_the_shared_sentence_and_exit_2(
    platform: LocalPlatform,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CANFAR_URL", platform.url)
    monkeypatch.setenv("CANFAR_TOKEN", "not-a-token-of-this-platform")
    before = platform.counters().get("POST /v1/session", 0)
    assert main(["--", "true"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"canfar-run: CANFAR at {platform.url} refused the credentials from environment "
        "(Unauthorized); renew them with `canfar login`.\n"
    )
    assert "not-a-token" not in err
    assert platform.counters().get("POST /v1/session", 0) == before


# -- rules beside the end-to-end tests ---------------------------------------------------


def _attempt(kind: OutcomeKind, phase: Phase, code: int | None, logs: str) -> Attempt:
    attempt = Attempt(1, "x")
    attempt.finish(Outcome("s1", "x", kind, phase, code, None, logs=logs))
    return attempt


@pytest.mark.parametrize(
    ("kind", "phase", "code", "logs", "expected"),
    [
        (OutcomeKind.SUCCEEDED, Phase.COMPLETED, 0, f"{marker_line(0, 's1')}\n", 0),
        # Completed, but no exit code could be read: never a success.
        (OutcomeKind.SUCCEEDED, Phase.COMPLETED, 0, "", 125),
        # Failed is never overruled by a marker 0.
        (OutcomeKind.SUCCEEDED, Phase.FAILED, 0, f"{marker_line(0, 's1')}\n", 125),
        (OutcomeKind.FAILED, Phase.FAILED, None, "", 125),
        (OutcomeKind.VANISHED, Phase.RUNNING, None, "", 125),
        (OutcomeKind.RUNTIME_EXCEEDED, Phase.RUNNING, None, "", 124),
        (OutcomeKind.OUT_OF_MEMORY, Phase.FAILED, 137, f"{marker_line(137, 's1')}\n", 137),
    ],
)
def test_a_success_needs_a_recorded_exit_code_of_zero(
    kind: OutcomeKind, phase: Phase, code: int | None, logs: str, expected: int
) -> None:
    verdict = Judge()(_attempt(kind, phase, code, logs))
    assert verdict.exit_code == expected and verdict.success is (expected == 0)


def test_the_envelope_marker_is_not_shown() -> None:
    assert without_marker(marker_line(0, "s1")) is None
    assert without_marker(f"no newline{marker_line(7, 's1')}") == "no newline"
    assert without_marker("canfar-launch: exit code soon") == "canfar-launch: exit code soon"
