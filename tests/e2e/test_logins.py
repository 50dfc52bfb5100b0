"""End to end: the ways credentials reach a real user, and drivers that run inside CANFAR.

1. `canfar login` (the official client's OIDC login, saved by its own code) and nothing
   else set: `snakemake --executor canfar` runs, refreshing the login as it goes.
2. Inside a CANFAR session nothing is configured: code finds the server from the
   injected `skaha_hostname` and authenticates with the proxy certificate the server
   wrote into `$HOME/.ssl/cadcproxy.pem`.
3. A driver that is itself a session: Snakemake, and `prefect worker start --type
   canfar`, launched as headless sessions, create their jobs' sessions with nothing but
   that proxy; the workflow and the flow run complete.

The in-session tests use one HTTPS platform with client certificates from its own CA,
which writes proxies into sessions and whose sessions trust that CA (as sessions on
CANFAR trust its publicly signed server certificate). The sessions get no CANFAR_*
variable, token or certificate path: `env` carries only Prefect's API URL and tuning.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from canfar.models.auth import Expiry
from canfar_core.models import SessionSpec
from canfar_core.sync import CanfarClient
from canfar_local import LocalPlatform, PlatformConfig
from canfar_local.testing import processes_mentioning, wait_for

from tests.core import official
from tests.core.certs import make_pki, platform_tls
from tests.prefect.conftest import IMAGE, PrefectServer, final_flow_run

FLOWS = Path(__file__).parents[1] / "prefect" / "flows"
SNAKEFILE = """
rule all:
    input: expand("out/{i}.txt", i=[1, 2])

rule make:
    output: "out/{i}.txt"
    shell: "echo made $skaha_sessionid > {output}"
"""
PROBE = """
import json, os
from canfar_core.sync import CanfarClient

with CanfarClient() as client:
    ids = [s.id for s in client.list_sessions()]
    config = client.aio.config
    print(json.dumps({"url": config.url, "source": config.source, "ids": ids,
                      "canfar_env": sorted(k for k in os.environ if k.startswith("CANFAR"))}))
"""


def no_canfar_settings(**extra: str) -> dict[str, str]:
    """This environment without any CANFAR or Snakemake-CANFAR setting, plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CANFAR_", "SNAKEMAKE_CANFAR_", "PREFECT_"))
    }
    env.update(extra)
    return env


def snakemake_argv(workdir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--executor",
        "canfar",
        "--jobs",
        "2",
        "--seconds-between-status-checks",
        "1",
        "--nocolor",
        "--directory",
        str(workdir),
        "--snakefile",
        str(workdir / "Snakefile"),
    ]


def workflow(directory: Path) -> Path:
    directory.mkdir(parents=True)
    (directory / "Snakefile").write_text(textwrap.dedent(SNAKEFILE))
    return directory


def made_by_sessions(workdir: Path) -> list[str]:
    """The session ids the two jobs' outputs name (each job ran in its own session)."""
    texts = [(workdir / "out" / f"{i}.txt").read_text().split() for i in (1, 2)]
    assert all(t[0] == "made" and len(t) == 2 for t in texts), texts
    return [t[1] for t in texts]


# -- 1. the official client's login, nothing else ----------------------------------------------


def test_snakemake_runs_with_the_official_login_and_nothing_else_set(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    near = Expiry(access=time.time() + 3)  # the driver must refresh before its first request
    login = official.from_login(platform.oidc_login(), expiry=near)
    official.save(home, login, platform.url.rsplit("/v1", 1)[0])
    saved_before = official.load(home).authentication["srcnet"]
    wf = workflow(tmp_path / "wf")
    platform.reset_counters()

    done = subprocess.run(
        snakemake_argv(wf),
        cwd=wf,
        env=no_canfar_settings(HOME=str(home)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=180,
    )

    assert done.returncode == 0, done.stdout[-3000:]
    assert f"on {platform.url}" in done.stdout
    made = made_by_sessions(wf)
    assert len(set(made)) == 2
    assert {e["id"] for e in platform.created()} >= set(made)
    assert platform.counters().get("POST /oidc/token", 0) >= 1
    saved_after = official.load(home).authentication["srcnet"]
    assert saved_after.token.access != saved_before.token.access  # type: ignore[union-attr]
    assert saved_after.access_usable  # type: ignore[union-attr]
    for value in (login.token.refresh, login.client.secret):  # secrets stay out of output
        assert value is not None and value.get_secret_value() not in done.stdout


# -- 2 and 3. inside CANFAR -------------------------------------------------------------------


@pytest.fixture(scope="module")
def canfar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:
    """HTTPS, client certificates, proxies written into sessions, sessions trust the CA."""
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    root = tmp_path_factory.mktemp("inside-canfar")
    platform = LocalPlatform.start(PlatformConfig(root=root, **platform_tls(pki)))
    yield platform
    platform.stop(kill_sessions=True)
    assert not processes_mentioning(str(root)), "session processes left behind"


@pytest.fixture(scope="module")
def operator(canfar: LocalPlatform) -> Iterator[CanfarClient]:
    """The test's own client (the user at a terminal, with the platform's token)."""
    assert canfar.config.client_ca is not None
    with CanfarClient(url=canfar.url, token=canfar.token, verify=canfar.config.client_ca) as c:
        yield c


def launch(client: CanfarClient, name: str, argv: list[str], **env: str) -> str:
    """A headless session running `argv` (no spaces inside its arguments)."""
    return client.create(
        SessionSpec(name=name, image=IMAGE, cmd=argv[0], args=" ".join(argv[1:]), env=env)
    )


def finished(client: CanfarClient, session_id: str, timeout: float) -> Any:
    return wait_for(
        lambda: (s := client.get(session_id)).status in ("Completed", "Failed") and s,
        timeout=timeout,
        interval=0.5,
        what=f"session {session_id} to finish",
    )


def test_code_in_a_session_needs_no_configuration(
    canfar: LocalPlatform, operator: CanfarClient, tmp_path: Path
) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(textwrap.dedent(PROBE))
    session_id = launch(operator, "probe", [sys.executable, str(probe)])
    proxy = canfar.home() / ".ssl" / "cadcproxy.pem"
    assert stat.S_IMODE(proxy.stat().st_mode) == 0o600  # written at create, before launch
    session = finished(operator, session_id, timeout=60)
    log = operator.logs(session_id)
    assert session.status == "Completed", log
    seen = json.loads(log.strip().splitlines()[-1])
    assert seen["url"] == canfar.url  # https://<skaha_hostname>/skaha/v1
    assert seen["source"] == f"{proxy} (the proxy CANFAR writes into this session)"
    assert session_id in seen["ids"]  # it listed its own session: it authenticated as us
    assert seen["canfar_env"] == []


def test_snakemake_driver_runs_as_a_session(
    canfar: LocalPlatform, operator: CanfarClient, tmp_path: Path
) -> None:
    wf = workflow(tmp_path / "wf")
    driver = launch(operator, "driver", snakemake_argv(wf))
    session = finished(operator, driver, timeout=240)
    log = operator.logs(driver)
    assert session.status == "Completed", log[-3000:]
    assert f"on {canfar.url}" in log
    made = made_by_sessions(wf)
    assert len(set(made)) == 2 and driver not in made
    jobs = [e for e in canfar.created() if e["id"] in made]
    assert len(jobs) == 2 and all(e["user"] == canfar.user for e in jobs)


def test_prefect_worker_runs_as_a_session(
    canfar: LocalPlatform, operator: CanfarClient, prefect_api: PrefectServer
) -> None:
    from prefect import flow, get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.client.schemas.objects import StateType
    from prefect.deployments import run_deployment
    from prefect_canfar import CanfarWorker

    pool = "canfar-in-session"
    with get_client(sync_client=True) as client:  # what `prefect work-pool create` sends
        client.create_work_pool(
            WorkPoolCreate(
                name=pool,
                type="canfar",
                base_job_template=CanfarWorker.get_default_base_job_template(),
            ),
            overwrite=True,
        )
    worker = launch(
        operator,
        "worker",
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "canfar"],
        PREFECT_API_URL=prefect_api.api_url,
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_INTEGRATIONS_CANFAR_POLL_MIN_SECONDS="0.5",
        PREFECT_INTEGRATIONS_CANFAR_POLL_MAX_SECONDS="1",
    )
    try:
        wait_for(
            lambda: (
                "started!" in operator.logs(worker)
                or operator.get(worker).status in ("Completed", "Failed")
            ),
            timeout=120,
            interval=0.5,
            what="the worker in its session to start",
        )
        assert operator.get(worker).status == "Running", operator.logs(worker)[-3000:]
        source: Any = flow.from_source(source=str(FLOWS), entrypoint="e2e_flows.py:hello")
        deployment = source.deploy(
            name="in-session",
            work_pool_name=pool,
            image=IMAGE,
            build=False,
            push=False,
            print_next_steps=False,
        )
        run = run_deployment(deployment, timeout=0)
        done = final_flow_run(run.id, timeout=180)  # type: ignore[union-attr]
        log = operator.logs(worker)
        assert done.state is not None and done.state.type == StateType.COMPLETED, log[-3000:]
        flow_session = done.infrastructure_pid
        assert flow_session and flow_session != worker
        created = {e["id"]: e for e in canfar.created()}
        assert created[flow_session]["user"] == canfar.user
    finally:
        operator.delete(worker)
