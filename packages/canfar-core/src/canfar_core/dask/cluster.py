"""`CanfarCluster`: a `dask.distributed` cluster whose workers are CANFAR headless sessions.

The shape is dask-jobqueue's `JobQueueCluster` (and dask-kubernetes' classic
`KubeCluster`): a `SpecCluster` whose worker class submits one unit of the resource
manager per Dask worker, here one headless session per worker through the launch
envelope. What CANFAR adds to that shape:

- sizes are the server's: the cores and RAM asked for are rounded up to the server's
  allowed options before anything starts, and the worker's threads and memory limit are
  the granted values;
- one `SessionTracker` watches every session of the cluster (one list request per tick),
  so a worker session that dies is reported with its reason in the log
  (`logging.getLogger("canfar_core.dask")`), and replaced, while Dask reruns its tasks;
- TLS with credentials made per cluster, handed to each session in a 0600 file on the
  shared filesystem (never in the request, a command line or a log);
- every session the cluster made is deleted by `close()`, finished ones included.
"""

from __future__ import annotations

import asyncio
import logging
import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dask.utils import parse_bytes
from distributed.core import Status
from distributed.deploy.adaptive import Adaptive
from distributed.deploy.spec import SpecCluster
from distributed.scheduler import Scheduler
from pydantic import SecretStr

from canfar_core.allowed import check_registry
from canfar_core.config import CanfarConfig, resolve_config
from canfar_core.dask.credentials import cluster_security
from canfar_core.dask.network import address_facing, is_loopback, warn_if_unreachable
from canfar_core.dask.options import (
    WorkerPlan,
    checked_env,
    checked_scheduler,
    checked_shared_dir,
    checked_text,
    default_workdir,
    granted,
    optional_seconds,
    positive_number,
    whole_number,
)
from canfar_core.dask.scheduler import SchedulerSession
from canfar_core.dask.sessions import ClusterSessions
from canfar_core.dask.worker import RETIRE_GRACE_SECONDS, CanfarWorker
from canfar_core.errors import CanfarApiError, SpecError
from canfar_core.local import LOCAL_IMAGE, runs_on_this_machine, session_python
from canfar_core.names import unique_name
from canfar_core.outcome import Outcome
from canfar_core.refusals import is_refusal, refusal_sentence
from canfar_core.sync import CanfarClient

log = logging.getLogger("canfar_core.dask")

# After this many worker sessions in a row end before their worker ever connected, the
# cluster stops starting new ones: the image or the network is wrong, and every new
# session would fail the same way.
MAX_START_FAILURES = 3
CLUSTER_NAME_LENGTH = 40
# Adaptive scaling tuned for sessions that take tens of seconds to start: an idle worker
# is retired after about a minute rather than Dask's default three seconds.
ADAPT_DEFAULTS = {"interval": "2s", "wait_count": 30}


class CanfarCluster(SpecCluster):
    """A Dask cluster whose workers are CANFAR headless sessions.

    Args:
        image: the workers' image; it needs Python with `distributed` (the version this
            process has) and whatever the tasks import. Optional when the platform runs on
            this machine (`CANFAR_URL=local`, or a loopback URL).
        cores, ram: each worker session's cores and RAM (GiB), rounded up to the server's
            allowed options; the worker gets one thread per core and the RAM as its
            memory limit.
        n_workers: workers to start now (`scale`/`adapt` change it later).
        scheduler: `"local"` (default) runs the scheduler in this process, listening on
            the address that faces the platform; `"session"` runs it in a session of its
            own and reads its address from a scheduler file on the shared filesystem.
        shared_dir: a directory this process and the sessions share (on CANFAR, under
            `/arc` or `/cavern`), for the credentials' hand-off and the sessions' exit and
            log files; default `~/.cache/canfar-core/dask`.
        url, token, certificate: the server and credentials; by default the usual
            resolution (`CANFAR_URL`, `~/.canfar/config.yaml`, `~/.ssl/cadcproxy.pem`).
        python: the interpreter in the sessions (default `python3`; on this machine's
            platform this interpreter).
        workdir: the workers' working directory (default: the current directory when
            the sessions see it, under /arc or /cavern; else each session's $HOME).
        env: extra, non-secret environment variables for the workers.
        nanny: run each worker under a Dask nanny (restarts it when it runs out of memory).
        death_timeout: seconds a worker waits for an unreachable scheduler before it
            exits, ending its session (so a vanished client leaves no session running).
        pending_timeout: seconds a worker session may stay Pending before it is deleted
            (and replaced); default: no limit.
        scheduler_host: the address the local scheduler listens on (default: the one
            facing the platform).
        dashboard_address: where the local scheduler's dashboard listens; loopback by
            default, because it has no authentication.
        scheduler_options: more `distributed.Scheduler` keywords for a local scheduler.
        scheduler_idle_timeout: seconds without work after which a scheduler *session*
            exits (so a client that vanished does not hold it for 14 days); None: never.
        name: a prefix for the cluster's session names (a random suffix is added).
    """

    def __init__(
        self,
        *,
        image: str | None = None,
        cores: float = 1,
        ram: float = 4,
        n_workers: int = 0,
        scheduler: str = "local",
        shared_dir: str | Path | None = None,
        url: str | None = None,
        token: str | SecretStr | None = None,
        certificate: str | Path | None = None,
        python: str | None = None,
        workdir: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        nanny: bool = True,
        death_timeout: float = 60,
        pending_timeout: float | None = None,
        scheduler_host: str | None = None,
        dashboard_address: str = "127.0.0.1:8787",
        scheduler_options: Mapping[str, Any] | None = None,
        scheduler_idle_timeout: float | None = 3600,
        name: str | None = None,
        asynchronous: bool = False,
        loop: Any = None,
    ) -> None:
        # Everything that can be refused is refused here, before a session exists.
        cores = positive_number("cores", cores, "a number of cores greater than 0")
        ram = positive_number("ram", ram, "a number of GiB greater than 0")
        n_workers = whole_number("n_workers", n_workers, "a whole number of workers >= 0")
        place = checked_scheduler(scheduler)
        death_timeout = positive_number(
            "death_timeout", death_timeout, "a number of seconds greater than 0"
        )
        pending_timeout = optional_seconds("pending_timeout", pending_timeout)
        idle_timeout = optional_seconds("scheduler_idle_timeout", scheduler_idle_timeout)
        extra_env = checked_env(env)
        if not isinstance(nanny, bool):
            raise SpecError("nanny", nanny, "True or False")
        if python is not None:
            checked_text("python", python, "the path or name of a Python interpreter")
        if image is not None:
            checked_text("image", image, "an image reference such as images.canfar.net/...")
        config = resolve_config(url, token, certificate)
        local = runs_on_this_machine(config)
        if image is None:
            if not local:
                raise SpecError(
                    "image", None, "CanfarCluster needs an image (e.g. images.canfar.net/...)"
                )
            image = LOCAL_IMAGE
        self._cluster_name = unique_name(name or "dask", max_length=CLUSTER_NAME_LENGTH)
        root = Path(shared_dir) if shared_dir is not None else default_shared_dir()
        directory = checked_shared_dir(root, local=local) / self._cluster_name
        granted_cores, granted_ram, base_url = _server_facts(config, image, cores, ram)

        self.worker_plan = WorkerPlan(
            image=image,
            cores=granted_cores,
            ram=granted_ram,
            python=python or session_python(local),
            workdir=str(workdir) if workdir is not None else default_workdir(local),
            env=extra_env,
            nanny=nanny,
            death_timeout=death_timeout,
            pending_timeout=pending_timeout,
        )
        self.directory = directory
        self._sessions = ClusterSessions(config, self.worker_plan, directory)
        self._connected: set[str] = set()
        self._start_failures = 0
        self._halted: str | None = None
        self._worker_count = 0
        self.worker_failures: list[tuple[str, Outcome]] = []
        security = cluster_security()
        host = scheduler_host or address_facing(base_url)
        if place == "local":
            warn_if_unreachable(host)
            scheduler_spec: dict[str, Any] = {
                "cls": Scheduler,
                "options": {
                    "protocol": "tls://",
                    "host": host,
                    "port": 0,
                    "security": security,
                    "dashboard_address": dashboard_address,
                    **dict(scheduler_options or {}),
                },
            }
        else:
            scheduler_spec = {
                "cls": SchedulerSession,
                "options": {
                    "sessions": self._sessions,
                    "security": security,
                    "name": f"{self._cluster_name}-scheduler",
                    "loopback": is_loopback(host),
                    "idle_timeout": idle_timeout,
                },
            }
        worker_spec = {
            "cls": CanfarWorker,
            "options": {
                "sessions": self._sessions,
                "security": security,
                "on_end": self._worker_ended,
            },
        }
        directory.mkdir(mode=0o700, exist_ok=True)
        initial = dict(self._next_worker(worker_spec) for _ in range(n_workers))
        super().__init__(
            workers=initial,
            scheduler=scheduler_spec,
            worker=worker_spec,
            security=security,
            name=self._cluster_name,
            asynchronous=asynchronous,
            loop=loop,
        )

    # -- what users see ------------------------------------------------------------------

    @property
    def worker_cores(self) -> int:
        """Cores of each worker session (granted by the server), = threads per worker."""
        return self.worker_plan.cores

    @property
    def worker_ram(self) -> int:
        """RAM (GiB) of each worker session (granted by the server), = memory limit."""
        return self.worker_plan.ram

    @property
    def session_ids(self) -> list[str]:
        """The cluster's sessions that exist now (scheduler session included)."""
        return list(self._sessions.live)

    def session_phases(self) -> dict[str, str]:
        """The last phase the tracker saw of each session that exists now (id -> phase)."""
        return {sid: self._sessions.phase_of(sid) for sid in self._sessions.live}

    # -- scaling -------------------------------------------------------------------------

    def _next_worker(self, spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """A name never used before in this cluster (a replacement gets a new one)."""
        name = f"{self._cluster_name}-{self._worker_count}"
        self._worker_count += 1
        return name, spec

    def new_worker_spec(self) -> dict[str, Any]:
        """The next worker: a new session name, the same spec."""
        name, spec = self._next_worker(self.new_spec)
        return {name: spec}

    def _threads_per_worker(self) -> int:
        return self.worker_plan.threads

    def _memory_per_worker(self) -> int:
        return self.worker_plan.memory_limit

    def scale(self, n: int = 0, memory: str | None = None, cores: int | None = None) -> Any:
        """Scale to `n` workers (sessions), or enough for `memory`/`cores` in total."""
        if isinstance(n, float) and n.is_integer():
            n = int(n)  # Adaptive's arithmetic may hand over 3.0
        n = whole_number("n", n, "a whole number of workers >= 0")
        if memory is not None:
            n = max(n, math.ceil(parse_bytes(memory) / self.worker_plan.memory_limit))
        if cores is not None:
            n = max(n, math.ceil(cores / self.worker_plan.threads))
        if self._halted is not None and n > len(self.worker_spec):
            log.warning("Not starting more workers: %s", self._halted)
            n = len(self.worker_spec)
        return super().scale(n)

    def adapt(
        self,
        Adaptive: type[Adaptive] = Adaptive,
        minimum: int = 0,
        maximum: int | None = None,
        minimum_cores: int | None = None,
        maximum_cores: int | None = None,
        minimum_memory: str | None = None,
        maximum_memory: str | None = None,
        **kwargs: Any,
    ) -> Adaptive:
        """Scale with the load between `minimum` and `maximum` workers (sessions).

        A maximum is required: without one Dask may start a session for every queued
        task. Idle workers are retired after about a minute (`wait_count=30` checks
        `interval="2s"` apart) rather than Dask's default few seconds, since a new
        session costs tens of seconds to start.
        """
        minimum = whole_number("minimum", minimum, "a whole number of workers >= 0")
        if maximum is None and maximum_cores is None and maximum_memory is None:
            raise SpecError(
                "maximum",
                None,
                "a whole number of workers (sessions) at least `minimum`; without a bound "
                "adapt could start a session for every queued task",
            )
        if maximum is not None:
            maximum = whole_number("maximum", maximum, "a whole number of workers >= 0")
            if maximum < minimum:
                raise SpecError("maximum", maximum, f"at least minimum={minimum}")
        for key, value in ADAPT_DEFAULTS.items():
            kwargs.setdefault(key, value)
        return super().adapt(
            Adaptive=Adaptive,
            minimum=minimum,
            maximum=math.inf if maximum is None else maximum,
            minimum_cores=minimum_cores,
            maximum_cores=maximum_cores,
            minimum_memory=minimum_memory,
            maximum_memory=maximum_memory,
            **kwargs,
        )

    # -- workers that connect or end -----------------------------------------------------

    def _update_worker_status(self, op: str, msg: Any) -> None:
        if op == "add":
            for info in (msg.get("workers") or {}).values():
                worker = str(info.get("name"))
                if worker not in self._connected:
                    self._connected.add(worker)
                    self._start_failures = 0
                    log.info("Dask worker %s connected.", worker)
        super()._update_worker_status(op, msg)

    def _worker_ended(self, worker: CanfarWorker, outcome: Outcome) -> None:
        """A worker session ended unasked: replace it (unless workers keep failing)."""
        if self.status in (Status.closing, Status.closed):
            return
        name = worker.name
        self.worker_failures.append((name, outcome))
        if self.workers.get(name) is worker:
            del self.workers[name]
        if name not in self.worker_spec:
            return  # scaled away meanwhile
        del self.worker_spec[name]
        if name not in self._connected:
            self._start_failures += 1
        if self._start_failures >= MAX_START_FAILURES:
            plan = self.worker_plan
            self._halted = (
                f"{self._start_failures} worker sessions in a row ended before their Dask "
                f"worker connected to the scheduler (the last: {outcome.reason or 'no reason'})"
                f"; check that {plan.image} has `{plan.python}` with `distributed` and that "
                f"sessions can reach {self.scheduler_address} "
                "(`python -m canfar_core.dask check`)"
            )
            log.error("Not starting more workers: %s.", self._halted)
            return
        replacement = self.new_worker_spec()
        log.info("Starting worker %s to replace %s.", next(iter(replacement)), name)
        self.worker_spec.update(replacement)
        self._futures.add(asyncio.ensure_future(self._reconcile()))

    async def _reconcile(self) -> None:
        try:
            await self._correct_state()
        except Exception as exc:
            log.error("Could not start a replacement worker session: %s", exc)

    # -- closing -------------------------------------------------------------------------

    async def _close(self) -> None:
        """Let the workers exit, close as SpecCluster does, delete what is left."""
        try:
            if self.status == Status.running:
                await self._let_workers_exit()
            await super()._close()
        finally:
            await self._sessions.aclose()
            shutil.rmtree(self.directory, ignore_errors=True)

    async def _let_workers_exit(self) -> None:
        """Ask the connected workers to close, and give their sessions time to end.

        SpecCluster closes workers by deleting them (here: their sessions) before it
        stops the scheduler; a worker told to close by the scheduler instead exits on
        its own and flushes what it buffers (Prefect task logs), then its session is
        deleted all the same. Bounded by RETIRE_GRACE_SECONDS.
        """
        connected = {str(w.get("name")): a for a, w in self.scheduler_info["workers"].items()}
        workers = [w for name, w in self.workers.items() if name in connected]
        if not workers:
            return
        try:
            if isinstance(self.scheduler, Scheduler):
                for name in connected:
                    self.scheduler.close_worker(connected[name])
            else:
                await asyncio.wait_for(
                    self.scheduler_comm.retire_workers(
                        names=list(connected), close_workers=True, remove=False
                    ),
                    RETIRE_GRACE_SECONDS,
                )
        except Exception as exc:  # the delete that follows stops them regardless
            log.debug("Could not ask the workers to close: %s", exc)
        await asyncio.gather(
            *(w.exited(RETIRE_GRACE_SECONDS) for w in workers if isinstance(w, CanfarWorker))
        )


def default_shared_dir() -> Path:
    """`~/.cache/canfar-core/dask`: on /arc when this process is a CANFAR session."""
    return Path.home() / ".cache" / "canfar-core" / "dask"


def _server_facts(
    config: CanfarConfig, image: str, cores: float, ram: float
) -> tuple[int, int, str]:
    """Granted cores and RAM, the image checked against the registries, the server's URL.

    Credentials the server refuses get the sentence every engine prints for them.
    """
    with CanfarClient(config) as client:
        try:
            context = client.context()
            registries = client.repositories()
        except CanfarApiError as exc:
            if not is_refusal(exc):
                raise
            where = "the embedded platform" if config.is_local else config.url
            sentence = refusal_sentence(exc, where=where, source=config.source)
            raise type(exc)(exc.status, sentence, method=exc.method, path=exc.path) from None
        check_registry(image, registries)
        granted_cores = granted(context, "cores", cores)
        granted_ram = granted(context, "ram", ram)
        base_url = client.aio.base_url or config.url
    return granted_cores, granted_ram, base_url
