"""The bad-input catalogue (issue 9, item 4): what a user could plausibly get wrong.

Every case asserts the exact sentence the user reads, where they read it, that no
traceback comes with it, and that nothing reached the platform: bad input is refused
before anything is submitted. One embedded platform serves the module; each surface
checks "nothing submitted" against the platform's creation journal (which keeps even
deleted sessions) for the user, flow run or task the case used.

- canfar-core: the exception type and `str(exc)`, one line; `canfar-local` output.
- Snakemake: real `snakemake --executor canfar` processes (token in
  SNAKEMAKE_CANFAR_TOKEN), run concurrently in the background from the start of the
  module. Refusals judged at the same stage share one run (all settings problems are
  reported together, as are all per-job refusals with `--keep-going`); each case
  asserts its own sentence in that run's output.
- Prefect: the pool's schema at the Prefect server (the 422's detail), the worker's
  submission of real flow runs (the flow run's state message and logs in the API),
  and `CanfarTaskRunner` inside real flows.

"No traceback" on a library surface: an error raised by `task.submit()` inside a flow
necessarily propagates through the user's own code, and Prefect's flow engine logs it
with the traceback of that code, as for any exception. There the exception's type and
exact `str()` are asserted, that it is one sentence (no newline, no embedded traceback
text), and the flow run's (or task run's) state message in the Prefect API.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from canfar_core import AsyncCanfarClient, SessionSpec
from canfar_core.config import certificate_expiry, resolve_config
from canfar_core.errors import (
    AuthenticationError,
    CanfarTransportError,
    ConfigurationError,
    CredentialsExpiredError,
    PermissionDeniedError,
    SpecError,
)
from canfar_core.retry import RetryPolicy
from canfar_local import LocalPlatform, PlatformConfig
from canfar_local.testing import async_wait_for, processes_mentioning
from prefect import flow, task
from prefect_canfar import CanfarCredentials, CanfarTaskRunner, CanfarWorker, canfar_options
from prefect_canfar.task_runner import TaskArgumentError

from tests.core.certs import write_proxy_pem
from tests.snakemake.conftest import Workflow

IMAGE = "images.canfar.net/skaha/astroml:latest"
OTHER_REGISTRY_IMAGE = "docker.io/library/python:3.11"
FORBIDDEN_USER = "mallory"
NO_CREDENTIALS = (
    "No CANFAR credentials found: run `canfar login`, or set CANFAR_TOKEN "
    "(or CANFAR_CERTIFICATE to a proxy certificate PEM)."
)
NO_SCHEME = (
    "is not allowed: use a URL that starts with https://, such as "
    "https://ws-uv.canfar.net/skaha/v1, or 'local'."
)
RENEW = "renew it with `canfar login` (or `cadc-get-cert -u <your CADC username>`)"


# -- the shared platform --------------------------------------------------------------------


@dataclass
class Canfar:
    """The module's platform, and what the cases need around it."""

    platform: LocalPlatform
    root: Path
    expired_pem: Path
    empty_home: Path
    dead_url: str

    def user(self, name: str) -> str:
        """A token of a user of its own, so that "nothing submitted" is attributable."""
        return self.platform.add_user(name)

    def created_by(self, user: str) -> list[dict[str, object]]:
        """Every session ever created by `user` (deleted ones too)."""
        return [e for e in self.platform.created() if e.get("user") == user]

    def created_named(self, prefix: str) -> list[dict[str, object]]:
        """Every session ever created whose name starts with `prefix`."""
        return [e for e in self.platform.created() if str(e.get("name", "")).startswith(prefix)]

    def listed(self, token: str) -> list[dict[str, Any]]:
        """The user's sessions as the API lists them."""
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            response = http.get(f"{self.platform.url}/session")
            response.raise_for_status()
            return response.json()

    def expired_on(self) -> str:
        """The expiry of `expired_pem` as messages print it."""
        when = datetime.fromtimestamp(certificate_expiry(self.expired_pem), UTC)
        return when.strftime("%Y-%m-%d %H:%M UTC")


@contextlib.contextmanager
def unreachable_url() -> Iterator[str]:
    """A loopback API URL where nothing listens, for as long as the context lasts.

    The port stays bound (without `listen()`) so that connections are refused and no
    other server started meanwhile (say, Prefect's) can take it.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/skaha/v1"


@pytest.fixture(scope="module")
def canfar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Canfar]:
    """One platform for the module; `mallory` gets 403 (not in the users group)."""
    root = tmp_path_factory.mktemp("bad-input")
    platform = LocalPlatform.start(
        PlatformConfig(root=root / "platform", forbidden_users=frozenset({FORBIDDEN_USER}))
    )
    empty_home = root / "empty-home"
    empty_home.mkdir()
    try:
        with unreachable_url() as dead_url:
            yield Canfar(
                platform=platform,
                root=root,
                expired_pem=write_proxy_pem(root / "expired.pem", days=-1),
                empty_home=empty_home,
                dead_url=dead_url,
            )
    finally:
        platform.stop(kill_sessions=True)
    assert processes_mentioning(str(platform.root)) == []


def one_sentence(text: str) -> None:
    """A message a user reads: one line, no traceback."""
    assert "\n" not in text and "Traceback" not in text, text


# -- canfar-core ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CoreCase:
    """`call(canfar)` raises `error` with the sentence `expected(canfar)`."""

    call: Callable[[Canfar], Any]
    error: type[Exception]
    expected: Callable[[Canfar], str]
    user: str | None = None  # whose sessions must stay empty


def spec(**changes: Any) -> SessionSpec:
    return SessionSpec(**{"name": "bad-input", "image": IMAGE, **changes})


def create_as(user: str, **changes: Any) -> Callable[[Canfar], Any]:
    """Create a session (validated against the server) as `user`."""

    def call(canfar: Canfar) -> Any:
        async def go() -> Any:
            client = AsyncCanfarClient(url=canfar.platform.url, token=canfar.user(user))
            async with client:
                return await client.create(spec(**changes))

        return asyncio.run(go())

    return call


def list_with(token: Callable[[Canfar], str], url: Callable[[Canfar], str] | None = None):
    """List sessions with a given token (and URL), no retries to speak of."""

    def call(canfar: Canfar) -> Any:
        async def go() -> Any:
            client = AsyncCanfarClient(
                url=url(canfar) if url else canfar.platform.url,
                token=token(canfar),
                retry=RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02),
            )
            async with client:
                return await client.list_sessions()

        return asyncio.run(go())

    return call


def replicas_zero(canfar: Canfar) -> Any:
    async def go() -> Any:
        async with AsyncCanfarClient(url=canfar.platform.url, token=canfar.user("replicas")) as c:
            return await c.create(spec(), replicas=0)

    return asyncio.run(go())


def constant(text: str) -> Callable[[Canfar], str]:
    return lambda canfar: text


CORE_CASES = {
    "core-cores-beyond-context": CoreCase(
        create_as("core-cores", cores=99),
        SpecError,
        constant("cores=99 is not allowed: allowed values are integers 1 to 16."),
        "core-cores",
    ),
    "core-ram-beyond-context": CoreCase(
        create_as("core-ram", ram=999),
        SpecError,
        constant("ram=999 is not allowed: allowed values are integers 1 to 192."),
        "core-ram",
    ),
    "core-gpus-beyond-context": CoreCase(
        create_as("core-gpus", gpus=99),
        SpecError,
        constant("gpus=99 is not allowed: allowed values are integers 1 to 7."),
        "core-gpus",
    ),
    "core-gpus-zero": CoreCase(
        lambda canfar: spec(gpus=0),
        SpecError,
        constant("gpus=0 is not allowed: leave gpus unset for none; otherwise >= 1."),
    ),
    "core-cores-negative": CoreCase(
        lambda canfar: spec(cores=-2),
        SpecError,
        constant("cores=-2 is not allowed: the value must be at least 1."),
    ),
    "core-cores-not-a-number": CoreCase(
        lambda canfar: spec(cores="abc"),
        SpecError,
        constant("cores='abc' is not allowed: a number of cores of at least 1."),
    ),
    "core-ram-infinite": CoreCase(
        lambda canfar: spec(ram=float("inf")),
        SpecError,
        constant("ram=inf is not allowed: a finite number of at least 1."),
    ),
    "core-image-other-registry": CoreCase(
        create_as("core-image", image=OTHER_REGISTRY_IMAGE),
        SpecError,
        constant(
            f"image={OTHER_REGISTRY_IMAGE!r} is not allowed: images must come from "
            "images.canfar.net."
        ),
        "core-image",
    ),
    "core-image-empty": CoreCase(
        lambda canfar: spec(image=""),
        SpecError,
        constant("image='' is not allowed: an image reference is required."),
    ),
    "core-image-missing": CoreCase(
        lambda canfar: SessionSpec(name="bad-input"),
        SpecError,
        constant("image=None is not allowed: an image reference is required."),
    ),
    "core-name-invalid-characters": CoreCase(
        lambda canfar: spec(name="My_Job"),
        SpecError,
        constant(
            "name='My_Job' is not allowed: names use lower-case letters, digits and '-', "
            "and start and end with a letter or digit."
        ),
    ),
    "core-name-too-long": CoreCase(
        lambda canfar: spec(name="a" * 64),
        SpecError,
        constant(f"name={'a' * 64!r} is not allowed: names are at most 63 characters."),
    ),
    "core-env-key-with-dash": CoreCase(
        lambda canfar: spec(env={"MY-VAR": "1"}),
        SpecError,
        constant("env key='MY-VAR' is not allowed: letters, digits and '_' only."),
    ),
    "core-unknown-field": CoreCase(
        lambda canfar: spec(memory=4),
        SpecError,
        constant(
            "memory=4 is not allowed: SessionSpec takes name, image, kind, cores, ram, gpus, "
            "cmd, args, env."
        ),
    ),
    "core-replicas-zero": CoreCase(
        replicas_zero,
        SpecError,
        constant("replicas=0 is not allowed: at least 1."),
        "replicas",
    ),
    "core-missing-credentials": CoreCase(
        lambda canfar: resolve_config(
            "https://ws-uv.canfar.net/skaha/v1", environ={}, home=canfar.empty_home
        ),
        ConfigurationError,
        constant(NO_CREDENTIALS),
    ),
    "core-expired-certificate": CoreCase(
        lambda canfar: resolve_config(
            canfar.platform.url, certificate=canfar.expired_pem, environ={}, home=canfar.root
        ),
        CredentialsExpiredError,
        lambda canfar: (
            f"The CANFAR certificate {canfar.expired_pem} (from arguments) expired on "
            f"{canfar.expired_on()}; {RENEW}."
        ),
    ),
    "core-wrong-token-401": CoreCase(
        list_with(lambda canfar: "not-a-valid-token"),
        AuthenticationError,
        constant("HTTP 401 (GET /skaha/v1/session): Unauthorized"),
    ),
    "core-forbidden-403": CoreCase(
        list_with(lambda canfar: canfar.user(FORBIDDEN_USER)),
        PermissionDeniedError,
        constant("HTTP 403 (GET /skaha/v1/session): Not authorized to use the skaha system"),
    ),
    "core-platform-unreachable": CoreCase(
        list_with(lambda canfar: "any-token", url=lambda canfar: canfar.dead_url),
        CanfarTransportError,
        constant(
            "GET session failed after 2 attempts: ConnectError: All connection attempts failed"
        ),
    ),
    "core-url-without-scheme": CoreCase(
        lambda canfar: AsyncCanfarClient(url="ws-uv.canfar.net/skaha/v1", token="any-token"),
        ConfigurationError,
        constant(f"url='ws-uv.canfar.net/skaha/v1' {NO_SCHEME}"),
    ),
    "core-timeout-not-a-number": CoreCase(
        lambda canfar: resolve_config(
            environ={
                "CANFAR_URL": canfar.platform.url,
                "CANFAR_TOKEN": "t",
                "CANFAR_TIMEOUT": "soon",
            },
            home=canfar.empty_home,
        ),
        ConfigurationError,
        constant("CANFAR_TIMEOUT='soon' is not allowed: a number of seconds greater than 0."),
    ),
}


@pytest.mark.parametrize("case_id", list(CORE_CASES))
def test_canfar_core_refuses(case_id: str, canfar: Canfar) -> None:
    case = CORE_CASES[case_id]
    with pytest.raises(Exception) as caught:  # the exact type is asserted below
        case.call(canfar)
    assert type(caught.value) is case.error, repr(caught.value)
    assert str(caught.value) == case.expected(canfar)
    one_sentence(str(caught.value))
    if case.user is not None:
        assert canfar.created_by(case.user) == []
        assert canfar.listed(canfar.user(case.user)) == []


CLI_CASES = {
    "cli-tls-key-without-certificate": (
        ["serve", "--tls-key", "server.key"],
        1,
        "canfar-local: --tls-key needs --tls-cert",
    ),
    "cli-port-not-a-number": (
        ["serve", "--port", "abc"],
        2,
        "canfar-local serve: error: argument --port: invalid int value: 'abc'",
    ),
}


def run_canfar_local(argv: list[str], root: Path) -> subprocess.CompletedProcess[str]:
    """`canfar-local <argv> --root <root>` (as `python -m`, the same entry point)."""
    return subprocess.run(
        [sys.executable, "-m", "canfar_local.cli", *argv, "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("case_id", list(CLI_CASES))
def test_canfar_local_refuses(case_id: str, background: Background) -> None:
    _, status, sentence = CLI_CASES[case_id]
    result = background.cli[case_id].result(timeout=120)
    assert result.returncode == status
    assert sentence in result.stderr.splitlines()
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout == ""  # no CANFAR_URL: nothing was served


# -- Snakemake --------------------------------------------------------------------------------

SNAKEFILE = """
rule all:
    output: "done.txt"
    shell: "touch {output}"
"""

# Every per-job refusal at once (`--keep-going`): each rule's request is impossible.
JOB_LEVEL_SNAKEFILE = """
rule all:
    input: "threads.txt", "memory.txt", "cores.txt", "elsewhere.txt", "gpus.txt"

rule many_threads:
    output: "threads.txt"
    threads: 64
    shell: "touch {output}"

rule much_memory:
    output: "memory.txt"
    resources: mem_mb=500000
    shell: "touch {output}"

rule cores_not_a_number:
    output: "cores.txt"
    resources: canfar_cores="abc"
    shell: "touch {output}"

rule elsewhere:
    output: "elsewhere.txt"
    resources: canfar_image="docker.io/library/busybox:1"
    shell: "touch {output}"

rule many_gpus:
    output: "gpus.txt"
    resources: gpu=9
    shell: "touch {output}"
"""


@dataclass(frozen=True)
class SnakemakeRun:
    """One `snakemake --executor canfar` invocation, as user `user`."""

    args: tuple[str, ...] = ()
    snakefile: str = SNAKEFILE
    user: str | None = None  # None: no token at all
    extra_env: Callable[[Canfar], dict[str, str]] = field(default=lambda canfar: {})
    # Given after the platform's `--canfar-url`, so a later `--canfar-url` wins.
    extra_args: Callable[[Canfar], tuple[str, ...]] = field(default=lambda canfar: ())


SNAKEMAKE_RUNS = {
    "settings": SnakemakeRun(
        args=(
            "--canfar-cores=0",
            "--canfar-gpus=0",
            "--canfar-pending-timeout=-5",
            "--canfar-registry-username=astro",
            "--canfar-image=",
            "--canfar-url=ws-uv.canfar.net/skaha/v1",
        ),
        user="smk-settings",
    ),
    "sizes": SnakemakeRun(
        args=(
            "--canfar-cores=99",
            "--canfar-ram=999",
            "--canfar-gpus=99",
            f"--canfar-image={OTHER_REGISTRY_IMAGE}",
        ),
        user="smk-sizes",
    ),
    "jobs": SnakemakeRun(args=("--keep-going",), snakefile=JOB_LEVEL_SNAKEFILE, user="smk-jobs"),
    "cores-not-a-number": SnakemakeRun(args=("--canfar-cores", "abc"), user="smk-argparse"),
    "typo": SnakemakeRun(args=("--canfar-imgae", IMAGE), user="smk-typo"),
    "no-credentials": SnakemakeRun(
        extra_env=lambda canfar: {"HOME": str(canfar.empty_home)},
    ),
    "expired": SnakemakeRun(
        extra_env=lambda canfar: {"SNAKEMAKE_CANFAR_CERTIFICATE": str(canfar.expired_pem)},
    ),
    "wrong-token": SnakemakeRun(
        extra_env=lambda canfar: {"SNAKEMAKE_CANFAR_TOKEN": "not-a-valid-token"},
    ),
    "forbidden": SnakemakeRun(user=FORBIDDEN_USER),
    "unreachable": SnakemakeRun(
        extra_args=lambda canfar: ("--canfar-url", canfar.dead_url),
        user="smk-unreachable",
    ),
    # Not writable for real, for every user: the tests may run as root, whom permission
    # bits do not stop, but nobody can create a directory under a regular file (ENOTDIR).
    "state-dir": SnakemakeRun(args=("--canfar-state-dir", "Snakefile/state"), user="smk-state"),
}


@dataclass(frozen=True)
class SnakemakeCase:
    """A sentence the run `run` must print (`expected(canfar, workdir)`)."""

    run: str
    expected: Callable[[Canfar, Path], str]
    status: int | None = None  # the exact exit status, when it is not just "non-zero"


def first_contact_attempts() -> int:
    """How often the client tries a server that has never answered (the default policy)."""
    policy = RetryPolicy()
    return min(policy.attempts, getattr(policy, "first_contact_attempts", policy.attempts))


def printed(text: str) -> Callable[[Canfar, Path], str]:
    """A sentence that depends on nothing the run creates."""
    return lambda canfar, workdir: text


SNAKEMAKE_CASES = {
    "smk-url-without-scheme": SnakemakeCase(
        "settings", printed(f"--canfar-url='ws-uv.canfar.net/skaha/v1' {NO_SCHEME}")
    ),
    "smk-image-empty": SnakemakeCase(
        "settings",
        printed(
            "--canfar-image='' is not allowed: give an image such as "
            "images.canfar.net/<project>/<name>:<tag>."
        ),
    ),
    "smk-cores-zero": SnakemakeCase(
        "settings", printed("--canfar-cores=0 is not allowed: it must be at least 1.")
    ),
    "smk-gpus-zero": SnakemakeCase(
        "settings",
        printed(
            "--canfar-gpus=0 is not allowed: leave it unset for no GPUs, otherwise at least 1."
        ),
    ),
    "smk-pending-timeout-negative": SnakemakeCase(
        "settings",
        printed(
            "--canfar-pending-timeout=-5 is not allowed: use a number of seconds, or 0 to "
            "wait forever."
        ),
    ),
    "smk-registry-username-without-secret": SnakemakeCase(
        "settings",
        printed("--canfar-registry-username and --canfar-registry-secret must be given together."),
    ),
    "smk-cores-beyond-context": SnakemakeCase(
        "sizes", printed("--canfar-cores=99 is not allowed: the largest cores allowed is 16.")
    ),
    "smk-ram-beyond-context": SnakemakeCase(
        "sizes",
        printed("--canfar-ram=999 is not allowed: the largest ram allowed is 192 GiB."),
    ),
    "smk-gpus-beyond-context": SnakemakeCase(
        "sizes", printed("--canfar-gpus=99 is not allowed: the largest gpus allowed is 7.")
    ),
    "smk-image-other-registry": SnakemakeCase(
        "sizes",
        printed(
            f"--canfar-image={OTHER_REGISTRY_IMAGE!r} is not allowed: images must come from "
            "images.canfar.net."
        ),
    ),
    "smk-rule-threads-beyond-context": SnakemakeCase(
        "jobs",
        printed(
            "rule many_threads requests threads=64 (cores), which is not allowed: the largest "
            "cores allowed is 16."
        ),
    ),
    "smk-rule-mem-mb-beyond-context": SnakemakeCase(
        "jobs",
        printed(
            "rule much_memory requests mem_mb=500000 (465.7 GiB), which is not allowed: the "
            "largest ram allowed is 192 GiB."
        ),
    ),
    "smk-rule-canfar-cores-not-a-number": SnakemakeCase(
        "jobs",
        printed("rule cores_not_a_number: canfar_cores='abc' is not allowed: it must be a number."),
    ),
    "smk-rule-image-other-registry": SnakemakeCase(
        "jobs",
        printed(
            "rule elsewhere: image='docker.io/library/busybox:1' is not allowed: images must "
            "come from images.canfar.net."
        ),
    ),
    "smk-rule-gpus-beyond-context": SnakemakeCase(
        "jobs",
        printed(
            "rule many_gpus requests gpu=9, which is not allowed: the largest gpus allowed is 7."
        ),
    ),
    "smk-cores-not-a-number": SnakemakeCase(
        "cores-not-a-number",
        printed("__main__.py: error: argument --canfar-cores: invalid int value: 'abc'"),
        status=2,
    ),
    "smk-setting-typo": SnakemakeCase(
        "typo",
        printed("__main__.py: error: unrecognized arguments: --canfar-imgae"),
        status=2,
    ),
    "smk-missing-credentials": SnakemakeCase("no-credentials", printed(NO_CREDENTIALS)),
    "smk-expired-certificate": SnakemakeCase(
        "expired",
        lambda canfar, workdir: (
            f"The CANFAR certificate {canfar.expired_pem} (from --canfar-certificate) expired "
            f"on {canfar.expired_on()}; {RENEW}."
        ),
    ),
    "smk-wrong-token-401": SnakemakeCase(
        "wrong-token",
        lambda canfar, workdir: (
            f"CANFAR at {canfar.platform.url} refused the credentials from --canfar-token "
            "(Unauthorized); renew them with `canfar login`."
        ),
    ),
    "smk-forbidden-403": SnakemakeCase(
        "forbidden",
        lambda canfar, workdir: (
            f"CANFAR at {canfar.platform.url} accepted the credentials from --canfar-token but "
            "denied access (Not authorized to use the skaha system): this account may not use "
            "the platform; ask CANFAR support (support@canfar.net) for access."
        ),
    ),
    "smk-platform-unreachable": SnakemakeCase(
        "unreachable",
        lambda canfar, workdir: (
            f"Cannot reach CANFAR at {canfar.dead_url}: GET context failed after "
            f"{first_contact_attempts()} attempts: ConnectError: All connection attempts failed"
        ),
    ),
    "smk-state-dir-not-writable": SnakemakeCase(
        "state-dir",
        lambda canfar, workdir: (
            f"--canfar-state-dir='Snakefile/state' is not allowed: {workdir}/Snakefile/state/"
            "sessions cannot be created or written (Not a directory); use a directory on the "
            "shared filesystem that you can write."
        ),
    ),
}


@dataclass(frozen=True)
class SnakemakeResult:
    workdir: Path
    returncode: int
    output: str


def run_snakemake(canfar: Canfar, name: str, run: SnakemakeRun, env: dict[str, str]) -> Any:
    workdir = canfar.root / "snakemake" / name
    workdir.mkdir(parents=True)
    (workdir / "Snakefile").write_text(textwrap.dedent(run.snakefile))
    args = (*run.args, *run.extra_args(canfar))
    result = Workflow(workdir, canfar.platform).run(*args, env=env)
    return SnakemakeResult(workdir, result.returncode, result.stdout)


def selected(request: pytest.FixtureRequest, test: str) -> list[str]:
    """The case ids of `test` that this session runs (after -k and the like)."""
    return [
        item.callspec.params["case_id"]
        for item in request.session.items
        if item.module is request.module
        and getattr(item, "originalname", None) == test
        and hasattr(item, "callspec")
    ]


@dataclass
class Background:
    """The module's subprocesses, started at once and collected by their tests."""

    snakemake: dict[str, Future[SnakemakeResult]]
    cli: dict[str, Future[subprocess.CompletedProcess[str]]]


@pytest.fixture(scope="module", autouse=True)
def background(request: pytest.FixtureRequest, canfar: Canfar) -> Iterator[Background]:
    """Start the selected Snakemake and `canfar-local` runs as the module begins.

    They run while the Prefect server starts (asked for here, when Prefect cases are
    selected) and while the in-process cases run, which is what keeps the module fast
    on two cores: most of their time is interpreter start-up on an otherwise idle core.
    """
    runs = {SNAKEMAKE_CASES[c].run for c in selected(request, "test_snakemake_refuses")}
    # Environments are built here, before any test changes os.environ.
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CANFAR_", "SNAKEMAKE_"))}
    envs = {}
    for name in runs:
        run = SNAKEMAKE_RUNS[name]
        env = dict(base)
        if run.user is not None:
            env["SNAKEMAKE_CANFAR_TOKEN"] = canfar.user(run.user)
        env.update(run.extra_env(canfar))
        envs[name] = env
    pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bad-input")
    started = Background(
        snakemake={
            name: pool.submit(run_snakemake, canfar, name, SNAKEMAKE_RUNS[name], envs[name])
            for name in sorted(runs)
        },
        cli={
            case_id: pool.submit(run_canfar_local, CLI_CASES[case_id][0], canfar.root / case_id)
            for case_id in selected(request, "test_canfar_local_refuses")
        },
    )
    try:
        prefect_tests = (
            "test_prefect_server_refuses_job_variables",
            "test_worker_refuses_before_submitting",
            "test_task_runner_refuses_before_submitting",
        )
        if any(selected(request, test) for test in prefect_tests):
            request.getfixturevalue("prefect_api")
        yield started
    finally:
        pool.shutdown(wait=True)


@pytest.mark.parametrize("case_id", list(SNAKEMAKE_CASES))
def test_snakemake_refuses(case_id: str, canfar: Canfar, background: Background) -> None:
    case = SNAKEMAKE_CASES[case_id]
    result = background.snakemake[case.run].result(timeout=240)
    out = result.output
    expected = case.expected(canfar, result.workdir)
    one_sentence(expected)
    assert expected in out, out[-3000:]
    if case.status is not None:
        assert result.returncode == case.status
    assert result.returncode != 0
    assert "Traceback" not in out and 'File "' not in out, out[-3000:]
    user = SNAKEMAKE_RUNS[case.run].user
    if user is not None:
        assert canfar.created_by(user) == []
        if user != FORBIDDEN_USER:
            assert canfar.listed(canfar.user(user)) == []
    assert canfar.created_named("smk-") == []  # no session of any Snakemake run, whoever


# -- Prefect: the work pool's schema, at the Prefect server -----------------------------------

POOL = "canfar-bad-input"
OLD_POOL = "canfar-bad-input-old"  # a pool whose template predates `propertyNames`


def known_variables(quote: bool = True) -> str:
    """The pool's variable names as the server (quoted) or the worker (bare) lists them."""
    properties = CanfarWorker.get_default_base_job_template()["variables"]["properties"]
    return ", ".join(repr(name) if quote else name for name in sorted(properties))


def default_template() -> dict[str, Any]:
    return CanfarWorker.get_default_base_job_template()


def old_template() -> dict[str, Any]:
    template = default_template()
    del template["variables"]["propertyNames"]
    return template


SERVER_CASES = {
    "pool-unknown-variable-on-deployment": (
        "deployment",
        {"image": IMAGE, "memory": 8},
        lambda: (
            "Error creating deployment: Validation failed. Failure reason: 'memory' is not "
            f"one of [{known_variables()}]"
        ),
    ),
    "pool-unknown-variable-on-flow-run": (
        "flow run",
        {"cpus": 4},
        lambda: (
            "Error creating flow run: Validation failed. Failure reason: 'cpus' is not one "
            f"of [{known_variables()}]"
        ),
    ),
    "pool-variable-of-wrong-type": (
        "deployment",
        {"image": IMAGE, "cores": "abc"},
        lambda: (
            "Error creating deployment: Validation failed for field 'cores'. Failure "
            "reason: 'abc' is not valid under any of the given schemas"
        ),
    ),
    "pool-cores-zero": (
        "deployment",
        {"image": IMAGE, "cores": 0},
        lambda: (
            "Error creating deployment: Validation failed for field 'cores'. Failure "
            "reason: 0 is less than the minimum of 1"
        ),
    ),
    "pool-pending-timeout-negative": (
        "deployment",
        {"image": IMAGE, "pending_timeout_seconds": -1},
        lambda: (
            "Error creating deployment: Validation failed for field "
            "'pending_timeout_seconds'. Failure reason: -1 is less than or equal to the "
            "minimum of 0"
        ),
    ),
}


@pytest.fixture(scope="module")
def pools(prefect_api: Any) -> dict[str, UUID]:
    """Both pools, each with a deployment that names only the image; their ids."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    async def create() -> dict[str, UUID]:
        async with get_client() as client:
            deployments = {}
            flow_id = await client.create_flow_from_name("bad-input")
            for pool, template in ((POOL, default_template()), (OLD_POOL, old_template())):
                await client.create_work_pool(
                    WorkPoolCreate(name=pool, type="canfar", base_job_template=template),
                    overwrite=True,
                )
                deployments[pool] = await client.create_deployment(
                    flow_id=flow_id,
                    name=f"{pool}-deployment",
                    work_pool_name=pool,
                    job_variables={"image": IMAGE},
                )
            return deployments

    return asyncio.run(create())


@pytest.mark.parametrize("case_id", list(SERVER_CASES))
def test_prefect_server_refuses_job_variables(case_id: str, pools: dict[str, UUID]) -> None:
    """The pool's schema is enforced by the Prefect server: `flow.deploy(...)` and
    `run_deployment(...)` raise with this detail, and nothing is created."""
    from prefect import get_client
    from prefect.exceptions import PrefectHTTPStatusError

    target, job_variables, expected = SERVER_CASES[case_id]

    async def attempt() -> None:
        async with get_client() as client:
            if target == "deployment":
                flow_id = await client.create_flow_from_name("bad-input")
                await client.create_deployment(
                    flow_id=flow_id,
                    name=case_id,
                    work_pool_name=POOL,
                    job_variables=job_variables,
                )
            else:
                await client.create_flow_run_from_deployment(
                    pools[POOL], job_variables=job_variables, tags=[case_id]
                )

    with pytest.raises(PrefectHTTPStatusError) as caught:
        asyncio.run(attempt())
    assert caught.value.response.status_code == 422
    detail = caught.value.response.json()["detail"]
    assert detail == expected()
    assert detail in str(caught.value)
    one_sentence(detail)

    async def created() -> tuple[list[Any], list[Any]]:
        from prefect.client.schemas.filters import (
            DeploymentFilter,
            DeploymentFilterName,
            FlowRunFilter,
            FlowRunFilterTags,
        )

        async with get_client() as client:
            deployments = await client.read_deployments(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[case_id]))
            )
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[case_id]))
            )
            return deployments, runs

    assert asyncio.run(created()) == ([], [])


# -- Prefect: the worker, submitting real flow runs ------------------------------------------


@dataclass(frozen=True)
class WorkerCase:
    """A flow run with these job variables crashes with `error: expected` before submission."""

    job_variables: Callable[[Canfar], dict[str, Any]]
    error: str
    expected: Callable[[Canfar], str]
    pool: str = POOL


def as_user(name: str, **variables: Any) -> Callable[[Canfar], dict[str, Any]]:
    """Job variables with credentials of a user of the case's own."""
    return lambda canfar: {
        "credentials": {"url": canfar.platform.url, "token": canfar.user(name)},
        **variables,
    }


WORKER_CASES = {
    "worker-cores-beyond-context": WorkerCase(
        as_user("wk-cores", cores=99),
        "SpecError",
        constant("cores=99 is not allowed: the largest cores allowed is 16."),
    ),
    "worker-ram-beyond-context": WorkerCase(
        as_user("wk-ram", ram=999),
        "SpecError",
        constant("ram=999 is not allowed: the largest ram allowed is 192 GiB."),
    ),
    "worker-gpus-beyond-context": WorkerCase(
        as_user("wk-gpus", gpus=99),
        "SpecError",
        constant("gpus=99 is not allowed: the largest gpus allowed is 7."),
    ),
    "worker-image-other-registry": WorkerCase(
        as_user("wk-image", image=OTHER_REGISTRY_IMAGE),
        "SpecError",
        constant(
            f"image={OTHER_REGISTRY_IMAGE!r} is not allowed: images must come from "
            "images.canfar.net."
        ),
    ),
    "worker-image-blank": WorkerCase(
        as_user("wk-blank", image=" "),
        "ValueError",
        constant(
            "The job variable 'image' is not set: set it on the work pool, the deployment "
            "(flow.deploy(image=...)) or the flow run, to a CANFAR image with Python and "
            "prefect installed, e.g. images.canfar.net/<project>/<name>:<tag>."
        ),
    ),
    "worker-env-key-with-dash": WorkerCase(
        as_user("wk-env", env={"MY-VAR": "1"}),
        "SpecError",
        constant("env key='MY-VAR' is not allowed: letters, digits and '_', not first a digit."),
    ),
    "worker-state-dir-relative": WorkerCase(
        as_user("wk-state", state_dir="prefect-state"),
        "SpecError",
        constant(
            "state_dir='prefect-state' is not allowed: use an absolute path that both the "
            "worker and the sessions can read and write, e.g. /arc/home/<user>/prefect-state."
        ),
    ),
    "worker-unknown-variable-old-pool": WorkerCase(
        as_user("wk-old", memory=8),
        "ValueError",
        lambda canfar: (
            "Unknown job variable 'memory' (did you mean 'ram'?) for a CANFAR work "
            f"pool; the known job variables are {known_variables(quote=False)}."
        ),
        pool=OLD_POOL,
    ),
    "worker-wrong-token-401": WorkerCase(
        lambda canfar: {"credentials": {"url": canfar.platform.url, "token": "not-a-token"}},
        "ConfigurationError",
        lambda canfar: (
            f"CANFAR at {canfar.platform.url} refused the credentials from the CANFAR "
            "credentials (Unauthorized); renew them with `canfar login` or update the CANFAR "
            "credentials block."
        ),
    ),
    "worker-forbidden-403": WorkerCase(
        as_user(FORBIDDEN_USER),
        "ConfigurationError",
        lambda canfar: (
            f"CANFAR at {canfar.platform.url} accepted the credentials from the CANFAR "
            "credentials but denied access (Not authorized to use the skaha system): this "
            "account may not use the platform; ask CANFAR support (support@canfar.net) for "
            "access."
        ),
    ),
    "worker-url-without-scheme": WorkerCase(
        as_user("wk-url", url="ws-uv.canfar.net/skaha/v1"),
        "ConfigurationError",
        constant(f"url='ws-uv.canfar.net/skaha/v1' {NO_SCHEME}"),
    ),
    "worker-missing-credentials": WorkerCase(
        lambda canfar: {"url": canfar.platform.url},
        "ConfigurationError",
        constant(NO_CREDENTIALS),
    ),
    "worker-expired-certificate": WorkerCase(
        lambda canfar: {
            "credentials": {"url": canfar.platform.url, "certificate": str(canfar.expired_pem)}
        },
        "CredentialsExpiredError",
        lambda canfar: (
            f"The CANFAR certificate {canfar.expired_pem} (from the CANFAR credentials) expired "
            f"on {canfar.expired_on()}; {RENEW}."
        ),
    ),
}


@dataclass
class WorkerResult:
    """What the user sees of one refused flow run."""

    flow_run_name: str
    state_type: str
    state_message: str
    logs: str


async def _flow_run_logs(flow_run_id: UUID, text: str) -> str:
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    async def read() -> str | None:
        await APILogHandler.aflush()
        async with get_client() as client:
            logs = await client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200
            )
        joined = "\n".join(entry.message for entry in logs)
        return joined if text in joined else None

    return await async_wait_for(read, timeout=120, interval=0.25, what=f"{text!r} in the logs")


@pytest.fixture(scope="module")
def worker_results(
    canfar: Canfar, pools: dict[str, UUID], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, WorkerResult]:
    """Create every case's flow run, let one in-process worker per pool submit them all.

    The worker runs in this process (as in tests/prefect/test_worker.py) so that it
    sees the environment of the missing-credentials case: no CANFAR_* variables and an
    empty home, hence no `canfar login` configuration and no proxy certificate.
    """
    from prefect import get_client

    async def batch() -> dict[str, WorkerResult]:
        async with get_client() as client:
            runs = {
                case_id: await client.create_flow_run_from_deployment(
                    pools[case.pool], job_variables=case.job_variables(canfar)
                )
                for case_id, case in WORKER_CASES.items()
            }

            async def settled(pool: str) -> bool:
                for case_id, run in runs.items():
                    if WORKER_CASES[case_id].pool == pool:
                        state = (await client.read_flow_run(run.id)).state
                        if state is None or not state.is_final():
                            return False
                return True

            async def work(pool: str) -> None:
                async with CanfarWorker(work_pool_name=pool) as worker:
                    await worker.get_and_submit_flow_runs()
                    await async_wait_for(
                        lambda: settled(pool), timeout=240, interval=0.2, what=f"{pool} runs"
                    )

            await asyncio.gather(work(POOL), work(OLD_POOL))

            async def result(run: Any) -> WorkerResult:
                state = (await client.read_flow_run(run.id)).state
                assert state is not None
                return WorkerResult(
                    flow_run_name=run.name,
                    state_type=state.type.value,
                    state_message=state.message or "",
                    logs=await _flow_run_logs(run.id, "as crashed"),
                )

            found = await asyncio.gather(*(result(run) for run in runs.values()))
            return dict(zip(runs, found, strict=True))

    with pytest.MonkeyPatch.context() as patch:
        for name in ("CANFAR_URL", "CANFAR_TOKEN", "CANFAR_CERTIFICATE"):
            patch.delenv(name, raising=False)
        patch.setenv("HOME", str(canfar.empty_home))
        return asyncio.run(batch())


@pytest.mark.parametrize("case_id", list(WORKER_CASES))
def test_worker_refuses_before_submitting(
    case_id: str, canfar: Canfar, worker_results: dict[str, WorkerResult]
) -> None:
    case = WORKER_CASES[case_id]
    result = worker_results[case_id]
    sentence = case.expected(canfar)
    one_sentence(sentence)
    assert result.state_type == "CRASHED"
    # The flow run's state message in the Prefect API (the UI's run page).
    assert result.state_message == (
        f"Failed to submit flow run to infrastructure: {case.error}: {sentence}"
    )
    # The flow run's logs in the Prefect API.
    assert sentence in result.logs
    assert canfar.created_named(f"prefect-{result.flow_run_name}-") == []


def test_worker_logs_refusals_without_a_traceback(
    worker_results: dict[str, WorkerResult],
) -> None:
    with_traceback = [case_id for case_id, r in worker_results.items() if "Traceback" in r.logs]
    assert with_traceback == []


# -- Prefect: CanfarTaskRunner inside a flow ------------------------------------------------


@task
def square(x: Any) -> Any:
    return x * x


@task(tags=["canfar:cores=abc"])
def tagged(x: int) -> int:
    return x


def with_options(**options: Any) -> Callable[[], Any]:
    def body() -> Any:
        with canfar_options(**options):
            return square.submit(2).result()

    return body


def submit(task_: Any, argument: Any) -> Callable[[], Any]:
    return lambda: task_.submit(argument).result()


@dataclass(frozen=True)
class RunnerCase:
    """A flow on `CanfarTaskRunner(**runner(canfar, root))` running `body` fails so."""

    body: Callable[[], Any]
    error: type[Exception]
    expected: Callable[[Canfar, Path], str]
    runner: Callable[[Canfar, Path], dict[str, Any]] = field(default=lambda canfar, tmp: {})
    user: str | None = None


def runner_as(user: str, **more: Any) -> Callable[[Canfar, Path], dict[str, Any]]:
    return lambda canfar, tmp: {
        "credentials": CanfarCredentials(url=canfar.platform.url, token=canfar.user(user)),
        **more,
    }


def sentence(text: str) -> Callable[[Canfar, Path], str]:
    return lambda canfar, tmp: text


RUNNER_CASES = {
    "runner-cores-beyond-context": RunnerCase(
        with_options(cores=64),
        SpecError,
        sentence("cores=64 is not allowed: the largest cores allowed is 16."),
        runner_as("tr-cores"),
        "tr-cores",
    ),
    "runner-ram-beyond-context": RunnerCase(
        with_options(ram=999),
        SpecError,
        sentence("ram=999 is not allowed: the largest ram allowed is 192 GiB."),
        runner_as("tr-ram"),
        "tr-ram",
    ),
    "runner-gpus-negative": RunnerCase(
        with_options(gpus=-1),
        SpecError,
        sentence("gpus=-1 is not allowed: a whole number of GPUs, 0 for none."),
        runner_as("tr-gpus"),
        "tr-gpus",
    ),
    "runner-unknown-option": RunnerCase(
        with_options(memory=4),
        SpecError,
        sentence(
            "memory=4 is not allowed: canfar_options takes cores, ram (GiB), gpus and image "
            "(did you mean ram?)."
        ),
        runner_as("tr-unknown"),
        "tr-unknown",
    ),
    "runner-cores-not-a-number": RunnerCase(
        with_options(cores="abc"),
        SpecError,
        sentence("cores='abc' is not allowed: a number of cores greater than 0."),
        runner_as("tr-abc"),
        "tr-abc",
    ),
    "runner-tag-not-a-number": RunnerCase(
        submit(tagged, 2),
        SpecError,
        sentence("tag='canfar:cores=abc' is not allowed: cores must be a number greater than 0."),
        runner_as("tr-tag"),
        "tr-tag",
    ),
    "runner-image-other-registry": RunnerCase(
        submit(square, 2),
        SpecError,
        sentence(
            f"image={OTHER_REGISTRY_IMAGE!r} is not allowed: images must come from "
            "images.canfar.net."
        ),
        runner_as("tr-image", image=OTHER_REGISTRY_IMAGE),
        "tr-image",
    ),
    "runner-unpicklable-argument": RunnerCase(
        submit(square, threading.Lock()),
        TaskArgumentError,
        sentence(
            "Argument 'x' of task 'square' is not allowed: a lock cannot be pickled to send it "
            "to the CANFAR session (TypeError: cannot pickle '_thread.lock' object); pass plain "
            "data or a file path, and create the lock inside the task."
        ),
        runner_as("tr-pickle"),
        "tr-pickle",
    ),
    # Under a regular file, as for Snakemake's state directory: unwritable even for root.
    "runner-shared-dir-not-writable": RunnerCase(
        submit(square, 2),
        SpecError,
        lambda canfar, tmp: (
            f"shared_dir='{tmp}/a-file/tasks' is not allowed: a directory both the flow and "
            "the sessions can write (on CANFAR, under /arc); this one cannot be created or "
            "written (Not a directory)."
        ),
        runner_as("tr-shared", shared_dir="a-file/tasks"),
        "tr-shared",
    ),
    "runner-missing-credentials": RunnerCase(
        submit(square, 2),
        ConfigurationError,
        sentence(NO_CREDENTIALS),
    ),
    "runner-wrong-token-401": RunnerCase(
        submit(square, 2),
        ConfigurationError,
        lambda canfar, tmp: (
            f"CANFAR at {canfar.platform.url} refused the credentials from the CANFAR "
            "credentials (Unauthorized); renew them with `canfar login` or update the CANFAR "
            "credentials block."
        ),
        lambda canfar, tmp: {
            "credentials": CanfarCredentials(url=canfar.platform.url, token="not-a-token")
        },
    ),
    "runner-expired-certificate": RunnerCase(
        submit(square, 2),
        CredentialsExpiredError,
        lambda canfar, tmp: (
            f"The CANFAR certificate {canfar.expired_pem} (from the CANFAR credentials) "
            f"expired on {canfar.expired_on()}; {RENEW}."
        ),
        lambda canfar, tmp: {
            "credentials": CanfarCredentials(
                url=canfar.platform.url, certificate=str(canfar.expired_pem)
            )
        },
    ),
}


@dataclass
class RunnerResult:
    """What the user sees of one flow whose task submission was refused."""

    root: Path  # where its shared directory is
    error: BaseException | None
    flow_state_type: str
    flow_state_message: str
    task_runs: list[tuple[str, str]]  # (state type, state message) of the flow's task runs


def run_runner_case(case_id: str, canfar: Canfar, root: Path) -> RunnerResult:
    """Run the case's flow (in a thread with a copy of the test's context) and read back
    what the Prefect API says about it."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    case = RUNNER_CASES[case_id]
    settings: dict[str, Any] = {
        "image": IMAGE,
        "python": sys.executable,
        "shared_dir": root / case_id,
        **case.runner(canfar, root),
    }
    if isinstance(settings["shared_dir"], str):
        settings["shared_dir"] = root / settings["shared_dir"]

    @flow(name=f"bad-input-{case_id}", task_runner=CanfarTaskRunner(**settings))
    def user_flow() -> Any:
        return case.body()

    state = user_flow(return_state=True)
    error = state.result(raise_on_failure=False)
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    assert flow_run.state is not None
    return RunnerResult(
        root=root,
        error=error if isinstance(error, BaseException) else None,
        flow_state_type=flow_run.state.type.value,
        flow_state_message=flow_run.state.message or "",
        task_runs=[
            (run.state.type.value, run.state.message or "") for run in task_runs if run.state
        ],
    )


@pytest.fixture(scope="module")
def runner_results(
    request: pytest.FixtureRequest,
    canfar: Canfar,
    prefect_api: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, RunnerResult]:
    """Every selected case's flow, run concurrently (each fails within a second or two).

    The environment has no CANFAR_* variables and an empty home, which is what the
    missing-credentials case needs; the others carry their own credentials.
    """
    root = tmp_path_factory.mktemp("task-runner")
    (root / "a-file").write_text("a file where the shared directory's parent should be")
    cases = selected(request, "test_task_runner_refuses_before_submitting")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("CANFAR_URL", "CANFAR_TOKEN", "CANFAR_CERTIFICATE"):
            patch.delenv(name, raising=False)
        patch.setenv("HOME", str(canfar.empty_home))
        with ThreadPoolExecutor(max_workers=4, thread_name_prefix="flow") as pool:
            # Prefect's settings (the test server's URL) live in context variables.
            futures = {
                case_id: pool.submit(
                    contextvars.copy_context().run, run_runner_case, case_id, canfar, root
                )
                for case_id in cases
            }
            return {case_id: future.result() for case_id, future in futures.items()}


@pytest.mark.parametrize("case_id", list(RUNNER_CASES))
def test_task_runner_refuses_before_submitting(
    case_id: str, canfar: Canfar, runner_results: dict[str, RunnerResult]
) -> None:
    case = RUNNER_CASES[case_id]
    result = runner_results[case_id]
    expected = case.expected(canfar, result.root)
    one_sentence(expected)
    # What `task.submit(...)` (or `.result()`) raised in the user's flow.
    assert type(result.error) is case.error, repr(result.error)
    assert str(result.error) == expected
    # The flow run's state message in the Prefect API.
    assert result.flow_state_type == "FAILED"
    assert result.flow_state_message == (
        f"Flow run encountered an exception: {case.error.__name__}: {expected}"
    )
    if case.error is TaskArgumentError:
        # Found once the arguments were resolved: the task run exists, Failed, with the
        # sentence as its message; its session was never created.
        assert result.task_runs == [("FAILED", expected)]
    else:
        assert result.task_runs == []  # refused at `.submit()`: no task run at all
    if case.user is not None:
        assert canfar.created_by(case.user) == []
    assert canfar.created_named("task-") == []


def test_the_catalogue_has_thirty_cases_or_more() -> None:
    """The issue asks for at least 30 distinct situations across the three packages."""
    cases = (
        len(CORE_CASES)
        + len(CLI_CASES)
        + len(SNAKEMAKE_CASES)
        + len(SERVER_CASES)
        + len(WORKER_CASES)
        + len(RUNNER_CASES)
    )
    assert cases >= 30
