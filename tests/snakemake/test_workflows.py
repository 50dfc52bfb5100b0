"""End to end: real `snakemake --executor canfar` processes on the embedded platform.

Each test asserts what a user would check: the files a workflow made, what the platform
says the sessions requested, the messages Snakemake printed, and what is left running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from canfar_core.local import LOCAL_IMAGE
from canfar_local import LocalPlatform

from .conftest import SNAKEMAKE_TIMEOUT, Workflow, processes_mentioning

HOSTILE = "a=b c==d \"double\" 'single' $HOME `tick` \\back  two  spaces"


def gib(requested_ram: str) -> float:
    """The API reports requestedRAM in decimal GB (3 GiB -> "3.22"); back to GiB."""
    return round(float(requested_ram) * 1e9 / 2**30, 1)


def by_rule(sessions: list[dict[str, object]], rule: str) -> list[dict[str, object]]:
    return [s for s in sessions if f"-{rule}-" in str(s["name"])]


def test_multi_rule_workflow_with_wildcards_group_resources_and_envvars(
    workflow: Callable[..., Workflow], platform: LocalPlatform
) -> None:
    wf = workflow(
        """
        envvars: "CANFAR_TEST_VALUE"

        SAMPLES = ["one", "two"]

        rule all:
            input: "summary.txt", "env.txt", "big.txt"

        rule split:
            output: "parts/{sample}.txt"
            group: "prep"
            shell: "echo {wildcards.sample} > {output}"

        rule upper:
            input: "parts/{sample}.txt"
            output: "upper/{sample}.txt"
            group: "prep"
            shell: "tr a-z A-Z < {input} > {output}"

        rule summary:
            input: expand("upper/{sample}.txt", sample=SAMPLES)
            output: "summary.txt"
            shell: "cat {input} > {output}"

        rule env:
            output: "env.txt"
            run:
                import os
                with open(output[0], "w") as handle:
                    handle.write(os.environ["CANFAR_TEST_VALUE"])

        rule big:
            output: "big.txt"
            threads: 4
            resources: mem_mb=3000
            shell: "echo big > {output}"
        """
    )
    # The session list fails for a while: status checks ride it out, and say so.
    platform.inject_fault(method="GET", route="/v1/session", status=500, count=3)
    # A profile's --default-resources gives every rule mem_mb=1000; --canfar-ram beats
    # that generated default, a rule's own mem_mb beats --canfar-ram (issue 16, item 5).
    result = wf.run(
        "--canfar-keep-sessions",
        "--default-resources",
        "--canfar-ram",
        "2",
        env=wf.env(CANFAR_TEST_VALUE=HOSTILE),
    )
    assert result.returncode == 0, result.stdout
    assert "GET session failed (HTTP 500" in result.stdout and "retrying in" in result.stdout
    # Every line the plugin and canfar-core write reaches Snakemake's own log file.
    [logfile] = (wf.path / ".snakemake" / "log").glob("*.snakemake.log")
    logged = logfile.read_text()
    assert "GET session failed (HTTP 500" in logged and "CANFAR executor: run" in logged

    assert (wf.path / "summary.txt").read_text() == "ONE\nTWO\n"
    assert (wf.path / "env.txt").read_text() == HOSTILE

    sessions = wf.sessions()
    # 2 group jobs (split+upper per sample), summary, env, big: one session each.
    assert len(sessions) == 5
    assert {s["status"] for s in sessions} == {"Completed"}
    assert len(by_rule(sessions, "prep")) == 2
    [big] = by_rule(sessions, "big")
    assert big["requestedCPUCores"] == "4"
    assert gib(str(big["requestedRAM"])) == 3.0
    [summary] = by_rule(sessions, "summary")
    assert gib(str(summary["requestedRAM"])) == 2.0

    logs = wf.logs()
    assert {p.stem.split("-", 1)[1] for p in logs} == {s["id"] for s in sessions}
    assert {p.relative_to(wf.path / ".snakemake/canfar/logs").parts[0] for p in logs} == {
        "group_prep",
        "summary",
        "env",
        "big",
    }
    # The value travelled inside the envelope, never in a command line or a log.
    assert HOSTILE not in result.stdout
    assert not any(HOSTILE in p.read_text() for p in logs)


def test_failures_are_job_errors_with_exit_code_log_and_attempt_scaled_retry(
    workflow: Callable[..., Workflow],
) -> None:
    wf = workflow(
        """
        rule all:
            input: "grown.txt", "fails.txt", "huge.txt", "elsewhere.txt"

        rule grow:
            output: "grown.txt"
            resources: mem_mb=lambda wildcards, attempt: 1000 * attempt
            shell: "test {resources.mem_mb} -ge 2000 || exit 1; echo ok > {output}"

        rule fails:
            output: "fails.txt"
            shell: "echo about-to-fail-marker; exit 3"

        rule huge:
            output: "huge.txt"
            threads: 64
            shell: "touch {output}"

        rule elsewhere:
            output: "elsewhere.txt"
            resources: canfar_image="docker.io/library/busybox:1"
            shell: "touch {output}"
        """
    )
    result = wf.run(
        "--retries", "1", "--keep-going", "--show-failed-logs", "--canfar-keep-sessions"
    )
    out = result.stdout
    assert result.returncode != 0

    # The retry of `grow` ran in a session with more memory and succeeded.
    assert (wf.path / "grown.txt").read_text() == "ok\n"
    sessions = wf.sessions()
    grow = sorted(by_rule(sessions, "grow"), key=lambda s: str(s["name"]))
    assert [str(s["name"])[-2:] for s in grow] == ["-1", "-2"]
    assert [gib(str(s["requestedRAM"])) for s in grow] == [1.0, 2.0]
    assert [s["status"] for s in grow] == ["Failed", "Completed"]

    # The failing rule: its exit code, session and image are named, its log printed.
    [first, *_] = by_rule(sessions, "fails")
    assert f"CANFAR session {first['id']} (image {LOCAL_IMAGE}" in out
    assert "failed: the rule's command exited with code 3" in out
    assert out.count("about-to-fail-marker") >= 2  # echoed by the shell, printed from the log
    [fails_log, *_] = sorted((wf.path / ".snakemake/canfar/logs/fails").glob("*.log"))
    assert "about-to-fail-marker" in fails_log.read_text()

    # An impossible request is refused before submission, naming rule, value and maximum.
    assert (
        "rule huge requests threads=64 (cores), which is not allowed: the largest cores "
        "allowed is 16." in out
    )
    assert by_rule(sessions, "huge") == []
    assert (
        "rule elsewhere: image='docker.io/library/busybox:1' is not allowed: images must "
        "come from images.canfar.net." in out
    )
    assert by_rule(sessions, "elsewhere") == []
    assert "Traceback" not in out


def test_a_bad_image_stops_before_anything_is_submitted(
    workflow: Callable[..., Workflow], platform: LocalPlatform
) -> None:
    wf = workflow(
        """
        rule all:
            output: "x.txt"
            shell: "touch {output}"
        """
    )
    result = wf.run("--canfar-image", "docker.io/library/python:3.11")
    assert result.returncode != 0
    assert (
        "--canfar-image='docker.io/library/python:3.11' is not allowed: images must come "
        "from images.canfar.net." in result.stdout
    )
    assert "Traceback" not in result.stdout and 'File "' not in result.stdout
    assert platform.counters().get("POST /v1/session", 0) == 0


def test_pending_timeout_fails_the_job_with_the_events(
    workflow: Callable[..., Workflow], platform_factory: Callable[..., LocalPlatform]
) -> None:
    small = platform_factory(cores=2)  # a 4-core request is allowed but never fits
    wf = workflow(
        """
        rule all:
            output: "never.txt"
            threads: 4
            shell: "touch {output}"
        """,
        small,
    )
    result = wf.run("--canfar-pending-timeout", "5")
    assert result.returncode != 0
    assert "was still Pending after 5 s and was deleted (--canfar-pending-timeout)" in result.stdout
    assert "Session events:" in result.stdout
    assert wf.sessions() == []
    # While it waited, the log said why, once (issue 16, item 2).
    [logfile] = (wf.path / ".snakemake" / "log").glob("*.snakemake.log")
    queued = [line for line in logfile.read_text().splitlines() if "is Pending: queued" in line]
    assert len(queued) == 1, queued
    assert "the platform's admission queue has not admitted it yet" in queued[0]


def test_an_unpullable_image_fails_fast_with_the_pull_errors(
    workflow: Callable[..., Workflow], platform_factory: Callable[..., LocalPlatform]
) -> None:
    missing = "images.canfar.net/skaha/base:no-such-tag"
    platform = platform_factory(unpullable_images=(missing,))
    wf = workflow(
        f"""
        rule all:
            output: "never.txt"
            resources: canfar_image="{missing}"
            shell: "touch {{output}}"
        """,
        platform,
    )
    # A mistyped tag fails within the pull window, not at the hour-long pending timeout.
    result = wf.run("--canfar-pending-timeout", "3600", "--canfar-image-pull-timeout", "3")
    assert result.returncode != 0
    assert "could not pull its image and was deleted" in result.stdout
    assert "ErrImagePull" in result.stdout and "ImagePullBackOff" in result.stdout
    assert wf.sessions() == []


LOCAL_ARGV = ["-m", "snakemake", "--executor", "canfar", "--canfar-url", "local", "--jobs", "4"]


def local_workflow(workdir: Path, shell_a: str = "echo a > {output}") -> Path:
    workdir.mkdir()
    (workdir / "Snakefile").write_text(
        'rule all:\n    input: "b.txt"\n\n'
        f'rule a:\n    output: "a.txt"\n    shell: "{shell_a}"\n\n'
        'rule b:\n    input: "a.txt"\n    output: "b.txt"\n    shell: "cat {input} > {output}"\n'
    )
    return workdir


def test_local_mode_needs_no_configuration_and_two_runs_may_overlap(
    tmp_path: Path, wait_for: Callable[..., object]
) -> None:
    root = tmp_path / "local-root"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CANFAR_", "SNAKEMAKE_"))}
    env["CANFAR_LOCAL_ROOT"] = str(root)
    # A first run holds the per-user platform root while its job sleeps...
    first_dir = local_workflow(tmp_path / "first", shell_a="sleep 60; echo a > {output}")
    with open(tmp_path / "first.out", "w") as out:
        first = subprocess.Popen(
            [sys.executable, *LOCAL_ARGV],
            cwd=first_dir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    try:
        wait_for(
            lambda: processes_mentioning(str(root / "sessions")),
            timeout=120,
            interval=0.2,
            what="the first run's session",
        )
        # ...and a second run at the same time starts its own platform beside it.
        workdir = local_workflow(tmp_path / "second")
        result = subprocess.run(
            [sys.executable, *LOCAL_ARGV],
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=SNAKEMAKE_TIMEOUT,
        )
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(timeout=90)
    assert result.returncode == 0, result.stdout
    assert (workdir / "b.txt").read_text() == "a\n"
    assert "on the embedded platform" in result.stdout
    assert "Traceback" not in result.stdout
    assert (
        f"The embedded platform's root {root} is in use by process {first.pid}; started "
        f"another one for this run under {root}-2." in result.stdout
    )
    assert processes_mentioning(str(root)) == []


def test_credentials_revoked_mid_run_stop_the_run_at_once(
    workflow: Callable[..., Workflow],
    platform: LocalPlatform,
    wait_for: Callable[..., object],
) -> None:
    assert platform.tokens is not None
    token = "a-token-revoked-mid-run"
    platform.tokens.merge({token: platform.user})
    wf = workflow(
        """
        rule all:
            output: "slow.txt"
            shell: "sleep 300; touch {output}"
        """
    )
    process = wf.start_with(wf.env(SNAKEMAKE_CANFAR_TOKEN=token))
    try:
        [session] = wait_for(
            lambda: [s for s in wf.sessions() if s["status"] == "Running"],
            timeout=60,
            interval=0.2,
            what="the running session",
        )
        platform.revoke_token(token)
        # Not an outage to ride out for ten minutes: the run stops within seconds.
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    out = (wf.path / "snakemake.out").read_text()
    assert process.returncode != 0
    sentence = (
        f"CANFAR at {platform.url} refused the credentials from --canfar-token (Unauthorized); "
        "renew them with `canfar login`. Watching stopped; sessions that may still be running "
        f"on CANFAR: {session['id']}."
    )
    assert sentence in out, out
    assert "Traceback" not in out


def test_a_job_is_finished_while_later_sessions_are_still_being_created(
    workflow: Callable[..., Workflow],
    platform: LocalPlatform,
    wait_for: Callable[..., object],
) -> None:
    """Creating a batch runs beside Snakemake's scheduler, not inside it.

    The platform holds the second creation for 20 s (an injected delay, as a slow
    CANFAR would): the first job's `Finished` line must not wait for it, or a fan-out's
    early ends reach Snakemake only once the whole batch exists.
    """
    wf = workflow(
        """
        rule all:
            input: "a.txt", "b.txt"
        rule overlap:
            output: "{name}.txt"
            shell: "echo {wildcards.name} > {output}"
        """
    )
    platform.inject_fault(method="POST", route="/v1/session", delay=0.01, count=1)
    platform.inject_fault(method="POST", route="/v1/session", delay=20.0, count=1)
    process = wf.start("--canfar-submit-concurrency", "1")
    try:
        out = wf.path / "snakemake.out"
        wait_for(
            lambda: "Finished jobid" in out.read_text(),
            timeout=60,
            interval=0.1,
            what="the first job's Finished line",
        )
        overlapping = [s for s in platform.created() if "-overlap-" in s["name"]]
        assert len(overlapping) == 1, out.read_text()  # the second is still being created
        assert process.wait(timeout=SNAKEMAKE_TIMEOUT) == 0, out.read_text()
    finally:
        platform.clear_faults()
        if process.poll() is None:
            process.kill()
    assert (wf.path / "a.txt").read_text() == "a\n"
    assert (wf.path / "b.txt").read_text() == "b\n"
    assert "Traceback" not in out.read_text()


def test_credentials_refused_at_creation_fail_the_job_and_stop_the_run(
    workflow: Callable[..., Workflow], platform: LocalPlatform
) -> None:
    """A 401 answering a create (injected: the token dies between the first list and
    the create) is the job's error and stops the run with the renew sentence."""
    wf = workflow(
        """
        rule all:
            output: "never.txt"
            shell: "touch {output}"
        """
    )
    platform.inject_fault(method="POST", route="/v1/session", status=401, count=1)
    try:
        result = wf.run()
    finally:
        platform.clear_faults()
    assert result.returncode != 0
    assert (
        f"CANFAR at {platform.url} refused the credentials from --canfar-token" in result.stdout
    ), result.stdout
    assert "renew them with `canfar login`" in result.stdout
    assert "Traceback" not in result.stdout
    assert not (wf.path / "never.txt").exists()
