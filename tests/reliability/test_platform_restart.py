"""The platform SIGKILLed mid-workflow and restarted after a pause (issue 9, item 2).

`canfar-local serve` runs in its own process on a fixed port; Snakemake is mid-run when
the server is killed. Sessions keep running under their supervisors, as pods outlive a
Skaha restart. After the outage the server starts again on the same root and port, and
the workflow must finish with correct outputs and one session per job.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
from canfar_local.sessions import read_creation_journal
from canfar_local.testing import served, wait_for

from tests.reliability.conftest import duplicated_names
from tests.snakemake.conftest import processes_mentioning

JOBS = 12
OUTAGE_SECONDS = 8  # how long the server stays down: the outage under test, not a wait
SNAKEFILE = f"""
rule all:
    input: "total.txt"

rule square:
    output: "squares/{{i}}.txt"
    shell: "sleep 1; echo $(( {{wildcards.i}} * {{wildcards.i}} )) > {{output}}"

rule total:
    input: expand("squares/{{i}}.txt", i=range({JOBS}))
    output: "total.txt"
    shell: "cat {{input}} | awk '{{{{s += $1}}}} END {{{{print s}}}}' > {{output}}"
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def refuses(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.ConnectError:
        return True
    except httpx.HTTPError:
        return False
    return False


def test_workflow_completes_across_a_platform_crash(tmp_path: Path) -> None:
    root = tmp_path / "platform"
    port = str(free_port())
    workdir = tmp_path / "wf"
    workdir.mkdir()
    (workdir / "Snakefile").write_text(textwrap.dedent(SNAKEFILE))
    log = open(workdir / "snakemake.out", "w")  # noqa: SIM115 - closed below
    try:
        with served(root, "--port", port) as (server, url, token):
            snakemake = subprocess.Popen(
                [
                    sys.executable,
                    *("-m", "snakemake", "--executor", "canfar", "--canfar-url", url),
                    *("--jobs", "4", "--seconds-between-status-checks", "1", "--nocolor"),
                ],
                cwd=workdir,
                env={**_clean_env(), "SNAKEMAKE_CANFAR_TOKEN": token},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            wait_for(
                lambda: len(read_creation_journal(root)) >= 4 or snakemake.poll() is not None,
                timeout=120,
                interval=0.1,
                what="the workflow to be under way",
            )
            assert snakemake.poll() is None, (workdir / "snakemake.out").read_text()
            server.send_signal(signal.SIGKILL)
            server.wait(timeout=30)
        killed_at = time.monotonic()
        assert refuses(url)
        alive = processes_mentioning(str(root))
        assert alive, "sessions must outlive the server, as pods outlive Skaha"
        wait_for(
            lambda: time.monotonic() - killed_at >= OUTAGE_SECONDS or snakemake.poll() is not None,
            timeout=OUTAGE_SECONDS + 5,
            what="the outage to last its time",
        )
        assert snakemake.poll() is None, "Snakemake gave up during the outage"
        with served(root, "--port", port) as (_, url_again, token_again):
            assert (url_again, token_again) == (url, token)
            snakemake.wait(timeout=300)
    finally:
        if snakemake.poll() is None:
            snakemake.kill()
        log.close()
    output = (workdir / "snakemake.out").read_text()
    assert snakemake.returncode == 0, output[-5000:]
    for i in range(JOBS):
        assert (workdir / "squares" / f"{i}.txt").read_text() == f"{i * i}\n"
    assert (workdir / "total.txt").read_text() == f"{sum(i * i for i in range(JOBS))}\n"
    created = read_creation_journal(root)
    assert len(created) == JOBS + 1 and duplicated_names(created) == []
    assert "Traceback" not in output
    assert "retrying in" in output  # the outage was felt, and ridden out
    wait_for(lambda: not processes_mentioning(str(root)), timeout=30, what="sessions to end")


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("CANFAR_")}
