"""Driver restarts and cancellation (issue 9, item 3).

Snakemake SIGKILLed mid-run and restarted must adopt the sessions of jobs still running
(no duplicates); SIGINT must leave zero sessions; cancelling a running Prefect flow run
must delete its session.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from canfar_local import LocalPlatform
from prefect import flow, get_client
from prefect.client.schemas.objects import StateType
from prefect.deployments import run_deployment
from prefect.states import Cancelling

from tests.prefect.conftest import (
    IMAGE,
    PrefectServer,
    Worker,
    final_flow_run,
    read_flow_run,
    running_worker,
)
from tests.reliability.conftest import duplicated_names, none_left_running, sessions_at
from tests.snakemake.conftest import SNAKEMAKE_TIMEOUT, Workflow

FLOWS = Path(__file__).parent / "flows"
POOL = "canfar-cancel"


@pytest.mark.parametrize("interrupts", [1, 2], ids=["ctrl-c", "ctrl-c-twice"])
def test_sigint_mid_run_leaves_zero_sessions(
    workflow: Callable[..., Workflow],
    platform: LocalPlatform,
    wait_for: Callable[..., object],
    interrupts: int,
) -> None:
    wf = workflow(
        """
        rule all:
            input: expand("slow/{i}.txt", i=range(3))

        rule slow:
            output: "slow/{i}.txt"
            shell: "sleep 300; touch {output}"
        """
    )
    process = wf.start()
    try:
        wait_for(
            lambda: len([s for s in wf.sessions() if s["status"] == "Running"]) == 3,
            timeout=60,
            interval=0.2,
            what="three running sessions",
        )
        if interrupts == 2:
            # Injected by the platform: each DELETE takes 2 s, so the second Ctrl-C is
            # sure to arrive while the first one's deletions are still under way.
            platform.inject_fault(method="DELETE", route="/v1/session/{id}", delay=2.0, count=3)
        process.send_signal(signal.SIGINT)
        if interrupts == 2:
            wait_for(
                lambda: platform.counters().get("DELETE /v1/session/{id}", 0) >= 1,
                timeout=60,
                interval=0.05,
                what="the first deletion to reach the platform",
            )
            process.send_signal(signal.SIGINT)
        process.wait(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
    out = (wf.path / "snakemake.out").read_text()
    assert process.returncode != 0
    assert wf.sessions() == []
    assert "Deleted 3 CANFAR session(s) of run" in out
    assert "Traceback" not in out
    if interrupts == 2:
        assert "Still deleting this run's CANFAR sessions; please wait." in out


SLOW_WORKFLOW = """
rule all:
    input: "after.txt"

rule slow:
    output: "slow/{i}.txt"
    # Held until the test releases it (at most 120 s), not for a fixed time: on a loaded
    # machine the restart alone can outlast a fixed sleep, and there is then nothing
    # left running to adopt or to replace.
    shell:
        "for n in $(seq 600); do [ -e GATE ] && break; sleep 0.2; done; "
        "echo CODE{wildcards.i} > {output}"

rule after:
    input: expand("slow/{i}.txt", i=range(2))
    output: "after.txt"
    shell: "cat {input} > {output}"
"""


@pytest.mark.parametrize(
    ("restart_args", "new_code"),
    [
        pytest.param((), None, id="snakemake-record"),
        # Snakemake forgets external job ids with --rerun-incomplete: the ledger remembers.
        pytest.param(("--rerun-incomplete",), None, id="run-ledger"),
        # The rule's code changed while no Snakemake watched: its old sessions run the
        # old code, so they are deleted and the jobs run again (issue 14, item 7).
        pytest.param(("--rerun-incomplete",), "NEW", id="code-changed"),
    ],
)
def test_restart_after_sigkill_adopts_running_sessions(
    tmp_path: Path,
    workflow: Callable[..., Workflow],
    platform: LocalPlatform,
    wait_for: Callable[..., object],
    restart_args: tuple[str, ...],
    new_code: str | None,
) -> None:
    gate = tmp_path / "release"
    wf = workflow(SLOW_WORKFLOW.replace("GATE", str(gate)))
    first = wf.start()
    try:
        wait_for(
            lambda: len([s for s in wf.sessions() if s["status"] == "Running"]) == 2,
            timeout=60,
            interval=0.2,
            what="two running sessions",
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    running = {s["id"] for s in wf.sessions() if s["status"] == "Running"}
    assert len(running) == 2
    assert platform.counters()["POST /v1/session"] == 2

    unlock = subprocess.run(
        [sys.executable, "-m", "snakemake", "--unlock"],
        cwd=wf.path,
        capture_output=True,
        text=True,
        timeout=SNAKEMAKE_TIMEOUT,
    )
    assert unlock.returncode == 0, unlock.stderr
    if new_code is not None:
        snakefile = wf.path / "Snakefile"
        snakefile.write_text(snakefile.read_text().replace("echo CODE", f"echo {new_code}"))
    restarted = wf.start(*restart_args)
    output = wf.path / "snakemake.out"
    verb = "Adopting" if new_code is None else "Deleted"
    try:
        wait_for(
            lambda: all(f"{verb} CANFAR session {s}" in output.read_text() for s in running),
            timeout=SNAKEMAKE_TIMEOUT,
            interval=0.2,
            what=f"the restarted Snakemake to say '{verb}' for both sessions",
        )
    finally:
        gate.touch()
        returncode = restarted.wait(timeout=SNAKEMAKE_TIMEOUT)
    second = subprocess.CompletedProcess(restarted.args, returncode, output.read_text())
    assert second.returncode == 0, second.stdout
    created = platform.created()
    assert duplicated_names(created) == []
    if new_code is None:
        for session_id in running:
            assert f"Adopting CANFAR session {session_id}" in second.stdout
        # Only `after` was submitted; the slow jobs were not run twice.
        assert platform.counters()["POST /v1/session"] == 3
        assert len(created) == 3
        assert (wf.path / "after.txt").read_text() == "CODE0\nCODE1\n"
    else:
        for session_id in running:
            assert f"Deleted CANFAR session {session_id}" in second.stdout
            assert f"Adopting CANFAR session {session_id}" not in second.stdout
        assert "the job's code, inputs or resources have changed" in second.stdout
        assert platform.counters()["POST /v1/session"] == 5 and len(created) == 5
        assert (wf.path / "after.txt").read_text() == "NEW0\nNEW1\n"
    none_left_running(platform)


@pytest.fixture
def cancel_worker(
    prefect_api: PrefectServer, platform: LocalPlatform, tmp_path: Path
) -> Iterator[Worker]:
    env = prefect_api.env(
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_WORKER_ENABLE_CANCELLATION="true",
        PREFECT_WORKER_CANCELLATION_POLL_SECONDS="1",
        PREFECT_INTEGRATIONS_CANFAR_POLL_MIN_SECONDS="0.5",
        PREFECT_INTEGRATIONS_CANFAR_POLL_MAX_SECONDS="1",
        CANFAR_URL=platform.url,
        CANFAR_TOKEN=platform.token,
    )
    with running_worker(env, POOL, "cancel", tmp_path / "worker.log") as worker:
        yield worker


def test_cancelling_a_running_flow_run_leaves_zero_sessions(
    cancel_worker: Worker,
    platform: LocalPlatform,
    tmp_path: Path,
    wait_for: Callable[..., object],
) -> None:
    marker = tmp_path / "running"
    source = flow.from_source(source=str(FLOWS), entrypoint="reliable_flows.py:wait_forever")
    deployment = source.deploy(  # type: ignore[union-attr]
        name="forever",
        work_pool_name=POOL,
        image=IMAGE,
        build=False,
        push=False,
        print_next_steps=False,
    )
    run = run_deployment(deployment, parameters={"marker": str(marker)}, timeout=0)
    wait_for(marker.exists, timeout=120, interval=0.2, what="the flow to be running")
    session_id = read_flow_run(run.id).infrastructure_pid  # type: ignore[union-attr]
    assert session_id and platform.session_state(session_id)["status"] == "Running"  # type: ignore[index]
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run.id, Cancelling())  # type: ignore[union-attr]
    done = final_flow_run(run.id, timeout=180)  # type: ignore[union-attr]
    assert done.state is not None and done.state.type == StateType.CANCELLED, done.state
    wait_for(lambda: sessions_at(platform) == [], timeout=30, what="no session left")
    none_left_running(platform)
    # Whoever saw the cancellation first (the worker's observer, or the engine in the
    # session, which then exits 0), the worker says that it deleted the session. The
    # line is written just after the DELETE returns: wait for it rather than race it.
    line = f"Flow run cancelled: deleted CANFAR session {session_id}."
    wait_for(
        lambda: line in cancel_worker.output(),
        timeout=30,
        what="the worker to report the session deleted",
    )
    assert "Traceback" not in cancel_worker.output(), cancel_worker.output()[-5000:]
