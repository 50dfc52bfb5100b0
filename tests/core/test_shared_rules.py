"""One test per rule both engines share, driven through each engine's own code.

Each test gives the Snakemake plugin (its run context, resource plan, spec and plan), the
Prefect worker (job configuration -> session request, `CanfarWorker.run`) and the Prefect
task runner (its session service, validation and spec building) the same input, against
one embedded platform on a loopback URL offering 1/2/4/8 cores, and asserts that what the
user sees is canfar-core's rule. Then the rule is changed in canfar-core alone
(monkeypatched where it is read at call time) and every engine must follow: a rule
that a plugin copied instead of calling would fail here.
"""

from __future__ import annotations

import asyncio
import logging
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from uuid import uuid4

import canfar_core.allowed
import canfar_core.launch
import canfar_core.local
import canfar_core.refusals
import canfar_core.runtime_limit
import pytest
from canfar_core import (
    AsyncCanfarClient,
    CanfarClient,
    ConfigurationError,
    Context,
    SpecError,
    TrackerBridge,
    events_timing,
    fit,
    refusal_sentence,
    registry_problem,
    resolve_config,
    runs_on_this_machine,
    runtime_backstop,
    write_secrets_file,
)
from canfar_core.allowed import Fitted
from canfar_core.errors import AuthenticationError, PermissionDeniedError
from canfar_core.refusals import is_refusal
from canfar_local import LocalPlatform, PlatformConfig
from prefect.client.schemas.objects import FlowRun
from prefect_canfar import CanfarCredentials
from prefect_canfar import task_runner as task_runner_module
from prefect_canfar.configuration import CanfarWorkerJobConfiguration, SessionRequest
from prefect_canfar.connections import Backends, resolve_connection
from prefect_canfar.options import SessionOptions, checked_options
from prefect_canfar.reachability import unreachable_api_warning
from prefect_canfar.task_runner import CanfarTaskRunner, _SessionService, _TaskJob
from prefect_canfar.worker import CanfarWorker
from pydantic import SecretStr
from snakemake_executor_plugin_canfar import executor as executor_module
from snakemake_executor_plugin_canfar.resources import RequestError, plan_request
from snakemake_executor_plugin_canfar.run_context import RunContext, _python, open_run
from snakemake_executor_plugin_canfar.settings import ExecutorSettings
from snakemake_executor_plugin_canfar.submission import Plan, build_spec, write_secrets
from snakemake_interface_common.exceptions import WorkflowError

IMAGE = "images.canfar.net/skaha/astroml:latest"
FOREIGN_IMAGE = "docker.io/library/python:3.12"
TOKEN, BANNED, WRONG = "tok-alice", "tok-bob", "tok-nobody"
BLOCK = "update the CANFAR credentials block"  # the Prefect engines' second remedy


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:
    """A file-mode server (1/2/4/8 cores) with a user, a forbidden user and one registry."""
    platform = LocalPlatform.start(
        PlatformConfig(
            root=tmp_path_factory.mktemp("rules-platform"),
            core_options=(1, 2, 4, 8),
            users={TOKEN: "alice", BANNED: "bob"},
            default_user="alice",
            forbidden_users=frozenset({"bob"}),
        )
    )
    yield platform
    platform.stop(kill_sessions=True)


def server_context(server: LocalPlatform) -> Context:
    """The server's `/context`, read by canfar-core alone (the expected side)."""
    with CanfarClient(resolve_config(url=server.url, token=TOKEN)) as client:
        return client.context()


# -- Snakemake: the run context, the resource plan, the spec ------------------------------


def snakemake_run(server: LocalPlatform, tmp_path: Path, **settings: Any) -> RunContext:
    """What `Executor.__post_init__` decides (`open_run`), for a workflow in `tmp_path`."""
    settings = {"url": server.url, "token": TOKEN, **settings}
    workflow = SimpleNamespace(
        executor_settings=ExecutorSettings(**settings),
        workdir_init=str(tmp_path),
        deployment_settings=SimpleNamespace(deployment_method=set()),
        remote_execution_settings=SimpleNamespace(
            seconds_between_status_checks=10, max_status_checks_per_second=10
        ),
    )
    run, client = open_run(workflow)
    client.close()
    return run


def snakemake_refusal(server: LocalPlatform, tmp_path: Path, **settings: Any) -> str:
    """The one sentence the executor stops with (`open_run`'s WorkflowError)."""
    with pytest.raises(WorkflowError) as refused:
        snakemake_run(server, tmp_path, **settings)
    return str(refused.value)


def snakemake_plan(run: RunContext, tmp_path: Path, resources: dict[str, object]) -> Plan:
    """The executor's plan of a job of `rule align` (`_request` and `_plan`)."""
    request = plan_request(
        label="rule align",
        threads=int(resources.pop("threads", 1)),  # type: ignore[call-overload]
        resources=resources,
        defaults=run.defaults,
        context=run.server,
    )
    name = f"smk-rules-{uuid4().hex[:6]}"
    spec = build_spec(
        label="rule align",
        command="true",
        workdir=tmp_path,
        state_dir=run.sessions_dir,
        name=name,
        request=request,
        secrets_file=run.secrets_dir / f"{name}.sh",
    )
    return Plan(
        job=None,
        label="rule align",
        log_rule="align",
        wildcards=None,
        name=name,
        key=name,
        request=request,
        spec=spec,
        secrets_file=run.secrets_dir / f"{name}.sh",
    )


# -- Prefect worker: job configuration -> session request, and `run()` ---------------------


def worker_configuration(server: LocalPlatform, token: str = TOKEN, **values: Any):
    """A flow run's resolved job configuration, prepared as the worker prepares it."""
    values.setdefault("image", IMAGE)
    configuration = CanfarWorkerJobConfiguration(
        url=server.url, credentials=CanfarCredentials(token=SecretStr(token)), **values
    )
    configuration.prepare_for_flow_run(FlowRun(flow_id=uuid4(), name="gentle-otter"))
    return configuration


def worker_request(server: LocalPlatform, **values: Any) -> SessionRequest:
    """`configuration.session_request(await creator.context())`, as `CanfarWorker._run` does."""
    configuration = worker_configuration(server, **values)

    async def build() -> SessionRequest:
        backends = Backends()
        try:
            creator = await backends.creator(resolve_connection(configuration), None)
            return configuration.session_request(await creator.context())
        finally:
            await backends.aclose()

    return asyncio.run(build())


def worker_events_timing(server: LocalPlatform) -> tuple[float, float]:
    """When the worker's tracker reads a Pending session's events (first, then how often)."""

    async def read() -> tuple[float, float]:
        backends = Backends()
        try:
            backend = await backends.backend(resolve_connection(worker_configuration(server)))
            policy = backend.tracker.policy
            return policy.events_delay, policy.events_interval
        finally:
            await backends.aclose()

    return asyncio.run(read())


def worker_run_error(server: LocalPlatform, token: str = TOKEN, **values: Any) -> BaseException:
    """What `CanfarWorker.run` raises for a flow run that must be refused."""
    configuration = worker_configuration(server, token, **values)
    flow_run = FlowRun(flow_id=uuid4(), name="gentle-otter")

    async def run() -> BaseException:
        worker = CanfarWorker(work_pool_name="rules")
        try:
            await worker.run(flow_run, configuration)
        except Exception as exc:
            return exc
        finally:
            await worker._backends.aclose()
        raise AssertionError("the worker ran a flow run it should have refused")

    return asyncio.run(run())


# -- Prefect task runner: its session service, validation and spec --------------------------


class Said:
    """A run logger that keeps what was said (the task runner logs each raise once)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str, *args: object) -> None:
        self.lines.append(message % args if args else message)


@contextmanager
def task_runner(
    server: LocalPlatform, token: str = TOKEN, **arguments: Any
) -> Iterator[tuple[CanfarTaskRunner, _SessionService]]:
    """A runner and the session service its first `.submit()` opens."""
    runner = CanfarTaskRunner(
        url=server.url, credentials=CanfarCredentials(token=SecretStr(token)), **arguments
    )
    service = runner._ensure_service()
    try:
        yield runner, service
    finally:
        service.close()


def task_options(
    runner: CanfarTaskRunner, service: _SessionService, said: Said, **options: Any
) -> SessionOptions:
    """The options `.submit()` sends a task with (`canfar_options(...)` over the runner's)."""
    wanted = checked_options(**options).over(runner.defaults)
    return runner._validated(service, wanted, "size", said)


class Stop(Exception):
    """Raised by the stand-in for session creation: the test has what it came for."""


def task_runner_session(
    runner: CanfarTaskRunner,
    service: _SessionService,
    options: SessionOptions,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, Any]:
    """The spec and runtime limit a task's thread hands to the service (`_run_session`)."""
    seen: dict[str, Any] = {}

    def run(spec: Any, state_dir: str, *, pending_timeout: Any, runtime_limit: Any) -> Any:
        seen.update(spec=spec, runtime_limit=runtime_limit)
        raise Stop

    monkeypatch.setattr(service, "run", run)
    job = _TaskJob(
        runner=runner,
        service=service,
        task=SimpleNamespace(name="size"),
        task_run_id=uuid4(),
        parameters={},
        wait_for=[],
        dependencies=None,
        context={},
        env={},
        options=options,
        logger=logging.getLogger(__name__),
    )
    with pytest.raises(Stop):
        job._run_session(tmp_path)
    return seen


# -- the rules ------------------------------------------------------------------------------


def test_fit_rounds_up_says_so_and_refuses_above_the_largest(
    server: LocalPlatform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    context = server_context(server)

    def granted(cores: int) -> dict[str, tuple[int, tuple[str, ...]]]:
        run = snakemake_run(server, tmp_path)
        snakemake = snakemake_plan(run, tmp_path, {"threads": cores}).request
        worker = worker_request(server, cores=cores)
        said = Said()
        with task_runner(server) as (runner, service):
            task = task_options(runner, service, said, cores=cores)
        return {
            "snakemake": (snakemake.cores, snakemake.notes),
            "worker": (worker.spec.cores, worker.adjustments),
            "task runner": (int(task.cores or 0), tuple(said.lines)),
        }

    # cores=3 on 1/2/4/8: raised to 4 and said so, in the core's sentence, by all three.
    fitted = fit(context, "cores", 3)
    assert fitted.value == 4 and fitted.note is not None
    assert granted(3) == {
        "snakemake": (4, (f"rule align: {fitted.note_for('threads=3 (cores)')}",)),
        "worker": (4, (fitted.note,)),
        "task runner": (4, (f"Task 'size': {fitted.note}.",)),
    }

    # Above the largest option: refused, never clamped, with the core's reason.
    with pytest.raises(SpecError) as core:
        fit(context, "cores", 9)
    with pytest.raises(RequestError) as snakemake:
        snakemake_plan(snakemake_run(server, tmp_path), tmp_path, {"threads": 9})
    with pytest.raises(SpecError) as worker:
        worker_request(server, cores=9)
    with pytest.raises(SpecError) as task, task_runner(server) as (runner, service):
        task_options(runner, service, Said(), cores=9)
    assert core.value.allowed == "the largest cores allowed is 8"
    assert str(snakemake.value) == (
        f"rule align requests threads=9 (cores), which is not allowed: {core.value.allowed}."
    )
    assert str(worker.value) == str(task.value) == str(core.value)

    # Change the rule in canfar-core alone (round to the largest option, another
    # sentence): all three engines follow.
    smallest = Context.smallest_allowed

    def largest_cores(self: Context, resource: str, at_least: float, **kw: Any) -> int:
        if resource != "cores":
            return smallest(self, resource, at_least, **kw)
        return self.options_for(resource).options[-1]

    monkeypatch.setattr(Context, "smallest_allowed", largest_cores)
    monkeypatch.setattr(
        Fitted,
        "note_for",
        lambda self, asked: f"{asked} became {self.value}" if self.raised else None,
    )
    assert granted(3) == {
        "snakemake": (8, ("rule align: threads=3 (cores) became 8",)),
        "worker": (8, ("cores 3 became 8",)),
        "task runner": (8, ("Task 'size': cores 3 became 8.",)),
    }


def test_the_runtime_backstop_is_the_limit_plus_the_cores_margin(
    server: LocalPlatform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same two-minute limit: Snakemake's `runtime` (minutes), the worker's
    # job_timeout_seconds, the task runner's task_timeout.
    def limits() -> dict[str, float | None]:
        run = snakemake_run(server, tmp_path)
        snakemake = snakemake_plan(run, tmp_path, {"runtime": 2})
        worker = worker_request(server, job_timeout_seconds=120)
        with task_runner(server, task_timeout=120) as (runner, service):
            options = task_options(runner, service, Said(), image=IMAGE)
            task = task_runner_session(runner, service, options, tmp_path, monkeypatch)
        return {
            "snakemake": snakemake.runtime_limit,
            "worker": worker.runtime_limit,
            "task runner": task["runtime_limit"],
        }

    expected = runtime_backstop(120)
    assert expected == 120 + canfar_core.runtime_limit.BACKSTOP_MARGIN_SECONDS
    assert limits() == dict.fromkeys(("snakemake", "worker", "task runner"), expected)

    monkeypatch.setattr(canfar_core.runtime_limit, "BACKSTOP_MARGIN_SECONDS", 3)
    assert limits() == dict.fromkeys(("snakemake", "worker", "task runner"), 123)


def test_refused_credentials_get_the_cores_sentence(
    server: LocalPlatform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def core_error(token: str) -> AuthenticationError | PermissionDeniedError:
        with CanfarClient(resolve_config(url=server.url, token=token)) as client:
            try:
                client.context()
            except (AuthenticationError, PermissionDeniedError) as exc:
                return exc
        raise AssertionError(f"the server accepted {token}")

    def sentences(token: str) -> dict[str, str]:
        worker = worker_run_error(server, token)
        with (
            task_runner(server, token) as (runner, service),
            pytest.raises(ConfigurationError) as task,
        ):
            task_options(runner, service, Said(), image=IMAGE)
        assert isinstance(worker, ConfigurationError)
        return {
            "snakemake": snakemake_refusal(server, tmp_path, token=token),
            "worker": str(worker),
            "task runner": str(task.value),
        }

    block = CanfarCredentials(token=SecretStr(TOKEN)).resolve(server.url).source

    def expected(token: str) -> dict[str, str]:
        error = core_error(token)
        assert is_refusal(error)
        prefect = refusal_sentence(error, where=server.url, source=block, also=BLOCK)
        return {
            "snakemake": refusal_sentence(error, where=server.url, source="--canfar-token"),
            "worker": prefect,
            "task runner": prefect,
        }

    for token in (WRONG, BANNED):  # 401: renew them; 403: ask CANFAR support
        assert sentences(token) == expected(token)
    assert "renew them with `canfar login`" in sentences(WRONG)["snakemake"]
    assert "ask CANFAR support (support@canfar.net)" in sentences(BANNED)["worker"]

    monkeypatch.setattr(canfar_core.refusals, "RENEW_COMMAND", "`canfar auth login`")
    monkeypatch.setattr(canfar_core.refusals, "SUPPORT", "help@example.org")
    unauthorized, forbidden = sentences(WRONG), sentences(BANNED)
    assert unauthorized == expected(WRONG) and forbidden == expected(BANNED)
    assert all("renew them with `canfar auth login`" in s for s in unauthorized.values())
    assert all("(help@example.org)" in s for s in forbidden.values())


def test_an_image_from_another_registry_is_refused_before_anything_is_sent(
    server: LocalPlatform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with CanfarClient(resolve_config(url=server.url, token=TOKEN)) as client:
        registries = client.repositories()
        before = len(client.list_sessions())

    def refusals() -> dict[str, str]:
        worker = worker_run_error(server, image=FOREIGN_IMAGE)
        with task_runner(server) as (runner, service), pytest.raises(SpecError) as task:
            task_options(runner, service, Said(), image=FOREIGN_IMAGE)
        assert isinstance(worker, SpecError)
        return {
            "snakemake": snakemake_refusal(server, tmp_path, image=FOREIGN_IMAGE),
            "worker": str(worker),
            "task runner": str(task.value),
        }

    def expected() -> dict[str, str]:
        problem = canfar_core.allowed.registry_problem(FOREIGN_IMAGE, registries)
        return {
            "snakemake": f"--canfar-image={FOREIGN_IMAGE!r} is not allowed: {problem}.",
            "worker": f"image={FOREIGN_IMAGE!r} is not allowed: {problem}.",
            "task runner": f"image={FOREIGN_IMAGE!r} is not allowed: {problem}.",
        }

    assert registry_problem(FOREIGN_IMAGE, registries) == "images must come from images.canfar.net"
    assert refusals() == expected()

    monkeypatch.setattr(
        canfar_core.allowed, "registry_problem", lambda image, registries: "not from the moon"
    )
    assert refusals() == expected()
    assert all(s.endswith("is not allowed: not from the moon.") for s in refusals().values())
    with CanfarClient(resolve_config(url=server.url, token=TOKEN)) as client:
        assert len(client.list_sessions()) == before  # nothing was created


def test_a_platform_on_this_machine_gets_the_local_defaults(
    server: LocalPlatform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The platform on a loopback URL (not `local`): it is on this machine all the same.
    assert runs_on_this_machine(server.url)
    here = events_timing(same_machine=True)

    def defaults() -> dict[str, tuple[str | None, str]]:
        run = snakemake_run(server, tmp_path)  # no --canfar-image
        assert run.same_machine and (run.events_delay, run.events_interval) == here
        with task_runner(server) as (runner, service):  # no image=
            options = task_options(runner, service, Said())
            policy = service.bridge.tracker.policy
            assert (policy.events_delay, policy.events_interval) == here
            python = runner.python_executable(service.local)
        return {
            "snakemake": (run.defaults.image, run.python),
            "task runner": (options.image, python),
        }

    expected = (canfar_core.local.LOCAL_IMAGE, sys.executable)
    assert defaults() == {"snakemake": expected, "task runner": expected}
    # The worker requires its image (documented); what it shares is "this machine":
    # the events timing and no warning about a loopback Prefect API.
    assert worker_events_timing(server) == here
    assert unreachable_api_warning("http://127.0.0.1:4200/api", server.url) is None
    # Away from this machine both run the image's interpreter.
    away = (
        _python(ExecutorSettings(), same_machine=False),
        CanfarTaskRunner().python_executable(False),
    )
    assert away == (canfar_core.local.IMAGE_PYTHON,) * 2

    monkeypatch.setattr(canfar_core.local, "LOCAL_IMAGE", "images.canfar.net/skaha/other:1")
    monkeypatch.setattr(canfar_core.local, "IMAGE_PYTHON", "python3.13")
    changed = ("images.canfar.net/skaha/other:1", sys.executable)
    assert defaults() == {"snakemake": changed, "task runner": changed}
    away = (
        _python(ExecutorSettings(), same_machine=False),
        CanfarTaskRunner().python_executable(False),
    )
    assert away == ("python3.13",) * 2


def test_whether_the_platform_is_on_this_machine_is_decided_once_for_every_engine(
    server: LocalPlatform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def decided(**snakemake_settings: Any) -> dict[str, tuple[bool, tuple[float, float]]]:
        """Each engine's "this machine" and when its tracker reads a Pending session's events."""
        run = snakemake_run(server, tmp_path, **snakemake_settings)
        with task_runner(server) as (_, service):
            policy = service.bridge.tracker.policy
            task = (service.local, (policy.events_delay, policy.events_interval))
        # The worker's decision shows in its tracker and in its Prefect API warning.
        loopback_api = unreachable_api_warning("http://127.0.0.1:4200/api", server.url)
        return {
            "snakemake": (run.same_machine, (run.events_delay, run.events_interval)),
            "worker": (loopback_api is None, worker_events_timing(server)),
            "task runner": task,
        }

    engines = ("snakemake", "worker", "task runner")
    here = (True, canfar_core.local.SAME_MACHINE_EVENTS)
    assert decided() == dict.fromkeys(engines, here)

    # When events are read on this machine: changed in the core, every tracker follows.
    monkeypatch.setattr(canfar_core.local, "SAME_MACHINE_EVENTS", (0.5, 0.75))
    assert decided() == dict.fromkeys(engines, (True, (0.5, 0.75)))

    # The decision itself: were a loopback URL not this machine, every engine would treat
    # the server as CANFAR (the shared-filesystem check, an image required, the image's
    # interpreter, the remote events timing, a warning about a loopback Prefect API).
    monkeypatch.setattr(canfar_core.local, "is_loopback_url", lambda url: False)
    assert not runs_on_this_machine(server.url)
    refused = snakemake_refusal(server, tmp_path)
    assert refused.startswith(f"The working directory {tmp_path} is not on CANFAR's shared")
    away = (False, canfar_core.local.REMOTE_EVENTS)
    assert decided(skip_workdir_check=True, image=IMAGE) == dict.fromkeys(engines, away)
    run = snakemake_run(server, tmp_path, skip_workdir_check=True)  # no default image
    with task_runner(server) as (runner, service), pytest.raises(SpecError) as task:
        assert runner.python_executable(service.local) == canfar_core.local.IMAGE_PYTHON
        task_options(runner, service, Said())
    assert str(task.value).startswith("image=None is not allowed: CanfarTaskRunner needs")
    assert (run.python, run.defaults.image) == (canfar_core.local.IMAGE_PYTHON, None)


def test_both_engines_watch_through_the_cores_thread_bridge(server: LocalPlatform) -> None:
    # Snakemake's executor builds its bridge in `__post_init__` from this name, which must
    # be canfar-core's class, not a copy; the task runner's service holds a live one.
    assert executor_module.TrackerBridge is TrackerBridge
    assert task_runner_module.TrackerBridge is TrackerBridge
    with task_runner(server) as (_, service):
        assert type(service.bridge) is TrackerBridge
        assert service.bridge.client is service.client


def worker_secrets_file(
    server: LocalPlatform, state_dir: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, int, int, str]:
    """The file `CanfarWorker.run` writes for a flow run's secrets, as the create sees it.

    The create is stopped (nothing reaches the server); the worker must remove the file.
    """
    seen: dict[str, Any] = {}

    async def create(self: AsyncCanfarClient, spec: Any, **kwargs: Any) -> str:
        # The one file under the state directory's secrets folder, just before the create.
        (path,) = (state_dir / ".secrets").iterdir()
        mode, parent = path.stat().st_mode, path.parent.stat().st_mode
        seen.update(path=path, file=(stat.S_IMODE(mode), stat.S_IMODE(parent), path.read_text()))
        assert not any(value in str(spec.to_params()) for value in env.values())
        raise Stop

    monkeypatch.setattr(AsyncCanfarClient, "create", create)
    error = worker_run_error(server, state_dir=str(state_dir), env=env)
    assert isinstance(error, Stop), error
    return (seen["path"], *seen["file"])


def test_secrets_travel_in_a_0600_file_written_by_the_core(
    server: LocalPlatform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cr'et with $dollar"
    env = {"PREFECT_API_KEY": secret}

    def written() -> dict[str, tuple[int, int, str]]:
        run = snakemake_run(server, tmp_path)
        plan = snakemake_plan(run, tmp_path, {})
        write_secrets(plan, env)  # the executor's hand-off, just before the create
        path = plan.secrets_file
        mode, parent = path.stat().st_mode, path.parent.stat().st_mode
        snakemake = (stat.S_IMODE(mode), stat.S_IMODE(parent), path.read_text())
        canfar_core.launch.remove_secrets_file(path)
        assert not path.exists()
        with pytest.MonkeyPatch.context() as patch:
            path, *worker = worker_secrets_file(server, tmp_path / "worker", env, patch)
        assert not path.exists()  # removed by the worker when the create failed
        return {"snakemake": snakemake, "worker": tuple(worker)}

    core = write_secrets_file(tmp_path / "core" / "k.sh", env)
    expected = (0o600, 0o700, core.read_text())
    assert written() == {"snakemake": expected, "worker": expected}

    monkeypatch.setattr(canfar_core.launch, "_q", lambda value: "'quoted by the core'")
    changed = (0o600, 0o700, "export PREFECT_API_KEY='quoted by the core'\n")
    assert written() == {"snakemake": changed, "worker": changed}


def test_a_401_says_renew_and_a_403_says_whom_to_ask() -> None:
    """The sentences themselves (the test above drives them through every engine)."""
    unauthorized = AuthenticationError(401, "Unauthorized")
    forbidden = PermissionDeniedError(403, "Not authorized to use the skaha system")
    assert is_refusal(unauthorized) and is_refusal(forbidden)
    assert refusal_sentence(unauthorized, where="https://x/skaha/v1", source="--canfar-token") == (
        "CANFAR at https://x/skaha/v1 refused the credentials from --canfar-token "
        "(Unauthorized); renew them with `canfar login`."
    )
    assert refusal_sentence(
        unauthorized, where="w", source="s", also="update the CANFAR credentials block"
    ).endswith("renew them with `canfar login` or update the CANFAR credentials block.")
    assert refusal_sentence(forbidden, where="w", source="s") == (
        "CANFAR at w accepted the credentials from s but denied access (Not authorized to use "
        "the skaha system): this account may not use the platform; ask CANFAR support "
        "(support@canfar.net) for access."
    )
