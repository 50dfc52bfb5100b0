"""The session lifecycle: create, admit, launch, observe, renew, delete, expire.

This is the Job controller, kubelet and TTL controller of the embedded platform rolled
into one object.  It runs on the server's event-loop thread; its state is the
:class:`~.store.SessionStore` plus the files each supervisor writes, which is what lets a
restarted server pick up exactly where a killed one stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import string
import subprocess
import time
from pathlib import Path

from . import proxies, runtime
from .argv import build_argv, container_env, effective_env
from .bundle import parse_container
from .config import PlatformConfig
from .errors import BadRequest, UnexpectedError
from .render import job_name
from .scheduler import admissible, usage_of
from .store import (
    DELETED,
    FINISHED,
    LAUNCHED,
    PULL_BACKOFF,
    QUEUED,
    RUNNING,
    SessionRecord,
    SessionStore,
)
from .validation import CreateRequest

GIB = 1024**3
_FIRST = string.ascii_lowercase
_REST = string.ascii_lowercase + string.digits
LIVENESS_SECONDS = 1.0
JOB_TEMPLATE_BYTES = 6 * 1024  # what the Job's YAML holds besides cmd, args and env
CREATION_JOURNAL = "created.log"


def new_session_id() -> str:
    """An id like UWS ``RandomStringGenerator(8)``: ``^[a-z][a-z0-9]{7}$``."""
    return secrets.choice(_FIRST) + "".join(secrets.choice(_REST) for _ in range(7))


class SessionManager:
    """Owns every session of one platform root."""

    def __init__(self, config: PlatformConfig, root: Path, store: SessionStore) -> None:
        self.config = config
        self.root = root
        self.store = store
        self.sessions_dir = root / "sessions"
        self.sessions_dir.mkdir(parents=True, exist_ok=True)
        self.skaha_hostname = config.skaha_hostname or "localhost"
        # <root>/session-ca.pem when sessions trust the platform's CA (set by the server).
        self.session_bundle: Path | None = None
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self._last_liveness = 0.0
        # The most sessions alive at once since start or `reset_peak` (see `alive`).
        self.peak_alive = 0

    # -- paths -------------------------------------------------------------------------

    def home(self, user: str) -> Path:
        """``<root>/<top-level>/<home>/<user>``: the user's $HOME on this machine."""
        return self.root / self.config.top_level_directory / self.config.home_directory / user

    def session_dir(self, session_id: str) -> Path:
        """The directory that holds a session's spec, status and log."""
        return self.sessions_dir / session_id

    def log_path(self, session_id: str) -> Path:
        """The session's captured stdout and stderr."""
        return self.session_dir(session_id) / "log"

    # -- queries -----------------------------------------------------------------------

    def visible(self, user: str | None) -> list[SessionRecord]:
        """Sessions that exist for ``user`` (all users when None), oldest first."""
        return [r for r in self.store if r.phase != DELETED and (user is None or r.userid == user)]

    def find(self, user: str, session_id: str) -> SessionRecord | None:
        """The caller's session with this id, if it still exists."""
        record = self.store.get(session_id)
        if record is None or record.phase == DELETED or record.userid != user:
            return None
        return record

    def active_interactive(self, user: str) -> int:
        """Non-headless, non-desktop-app sessions of ``user`` that are Running or Pending."""
        return sum(
            1
            for r in self.visible(user)
            if r.type not in ("headless", "desktop-app") and r.status in ("Running", "Pending")
        )

    def allocation(self) -> tuple[float, float]:
        """Cores and GiB held by admitted sessions (what the scheduler compares to capacity)."""
        usage = usage_of(self.store)
        return usage.cores, usage.ram_gib

    # -- create ------------------------------------------------------------------------

    def create(self, user: str, request: CreateRequest) -> SessionRecord:
        """Build the session as the server's Job would be built, then queue and admit it."""
        session_id = new_session_id()
        while session_id in self.store:
            session_id = new_session_id()
        name = request.name.lower()
        home = self.home(user)
        home.mkdir(parents=True, exist_ok=True)  # Cavern's ensureUserBase

        record = SessionRecord(
            id=session_id,
            userid=user,
            type=request.type,
            name=name,
            image=request.image,
            cores_request=request.cores_request,
            cores_limit=request.cores_limit,
            ram_request_gib=request.ram_request_gib,
            ram_limit_gib=request.ram_limit_gib,
            fixed=request.fixed,
            gpus=request.gpus,
            argv=[],
            env={},
            created=time.time(),
            deadline_seconds=(
                self.config.deadline_seconds
                if request.type == "headless"
                else self.config.interactive_deadline_seconds
            ),
        )
        threads = str(max(1, int(request.cores_request)))
        injected = [
            ("skaha_hostname", self.skaha_hostname),
            ("skaha_username", user),
            ("skaha_sessionid", session_id),
            ("HOME", str(home)),
            ("PWD", str(home)),
            ("OMP_NUM_THREADS", threads),
        ]
        if request.type == "headless":
            container = parse_container(
                request.image,
                request.cmd,
                request.args,
                request.env,
                job_name(record),
                java_regex=self.config.java_regex_replacement,
            )
            record.image = container.image
            entries = container_env(container.env, injected)
            env = effective_env(entries)
            command = container.command[0] if container.command else None
            extra = container.command[1:] if container.command else []
            argv = build_argv(
                command,
                [*extra, *(container.args or [])],
                env,
                self.config.default_entrypoint,
            )
        else:
            env = effective_env(container_env([], injected))
            argv = list(self.config.interactive_entrypoint)
        if len(name) > 63 or name.startswith("-") or name.endswith("-"):
            raise UnexpectedError(
                "java.io.IOException: Error executing command: [kubectl, create, -f, "
                f'/tmp/job.yaml] Error: The Job "{job_name(record)}" is invalid: '
                f'spec.template.spec.hostname: Invalid value: "{name}": a lowercase RFC 1123 '
                "label must consist of lower case alphanumeric characters or '-', and must "
                "start and end with an alphanumeric character"
            )
        size = sum(len(k.encode()) + len(v.encode()) + 2 for k, v in env.items())
        size += sum(len(a.encode()) + 1 for a in argv) + JOB_TEMPLATE_BYTES
        if size > self.config.max_object_bytes:
            raise UnexpectedError(
                "java.io.IOException: Error executing command: [kubectl, create, -f, "
                f"/tmp/job.yaml] Error from server: etcdserver: request is too large "
                f"({size} bytes, limit {self.config.max_object_bytes})"
            )
        record.argv = argv
        record.env = env
        self.inject_proxy(user)
        self.session_dir(session_id).mkdir(parents=True, exist_ok=True)
        self.store.add(record)
        self._journal_creation(record)
        self.schedule()
        # Only a create adds a live session, so sampling here catches every maximum.
        self.peak_alive = max(self.peak_alive, self.alive())
        return record

    def alive(self) -> int:
        """Sessions that hold or wait for a pod: queued, starting, running, or deleted
        with their processes still going (a pod in Terminating is still there)."""
        return sum(1 for record in self.store if record.phase != FINISHED)

    def _journal_creation(self, record: SessionRecord) -> None:
        """Append the creation to ``<root>/created.log`` (Kubernetes' audit log, in short).

        Sessions are forgotten once deleted or expired; the journal keeps every one ever
        created, so a test can count duplicates by name after the fact, across restarts.
        """
        entry = {
            "time": time.time(),
            "id": record.id,
            "name": record.name,
            "user": record.userid,
            "type": record.type,
            "image": record.image,
        }
        with open(self.root / CREATION_JOURNAL, "a", encoding="utf-8") as journal:
            journal.write(json.dumps(entry, separators=(",", ":")) + "\n")

    def inject_proxy(self, user: str) -> None:
        """Write the user's proxy certificate into their home (create and renew, §6)."""
        config = self.config
        if config.client_ca is None or config.client_ca_key is None:
            return
        proxies.inject_proxy(
            self.home(user),
            config.client_ca,
            config.client_ca_key,
            user,
            config.proxy_lifetime_seconds,
        )

    # -- admission and launch ------------------------------------------------------------

    def schedule(self) -> None:
        """Admit whatever fits now, first-come."""
        for record in admissible(self.store, self.config.cores, self.config.ram_gib):
            self._launch(record)

    def _process_env(self, record: SessionRecord) -> dict[str, str]:
        """The host's small base environment (the image's PATH, when it has one), the pod
        hostname, then the container env."""
        env = {k: os.environ[k] for k in self.config.base_env_keys if k in os.environ}
        if self.session_bundle is not None:
            # The image's trust store: the user's own env entries may still override it.
            env["SSL_CERT_FILE"] = str(self.session_bundle)
        image_path = self.config.image_paths.get(record.image)
        if image_path is not None:
            env["PATH"] = image_path
        env["HOSTNAME"] = record.name
        env.update(record.env)
        return env

    def _launch(self, record: SessionRecord) -> None:
        now = time.time()
        if record.image in self.config.unpullable_images:
            # Scheduled, but the kubelet cannot pull the image: no process ever starts.
            record.start_time = int(now)
            record.phase = PULL_BACKOFF
            self.store.save(record)
            return
        directory = self.session_dir(record.id)
        directory.mkdir(parents=True, exist_ok=True)
        record.start_time = int(now)
        runtime.write_json(
            directory / "spec.json",
            {
                "argv": record.argv,
                "env": self._process_env(record),
                "cwd": str(self.home(record.userid)),
                "log": str(self.log_path(record.id)),
                "memory_limit_bytes": int(record.ram_limit_gib * GIB),
                "deadline": record.start_time + record.deadline_seconds,
                "start_at": now + self.config.start_delay_seconds,
                "poll": self.config.memory_poll_seconds,
                "poll_max": self.config.memory_poll_max_seconds,
                "grace": self.config.kill_grace_seconds,
                "oom_policy": self.config.oom_policy,
                "nice": self.config.session_nice,
            },
        )
        self.home(record.userid).mkdir(parents=True, exist_ok=True)
        process, ticks = runtime.start_supervisor(directory)
        self.children[record.id] = process
        record.phase = LAUNCHED
        record.supervisor_pid = process.pid
        record.supervisor_ticks = ticks
        self.store.save(record)

    # -- observation ---------------------------------------------------------------------

    def reconcile(self) -> None:
        """One pass of the controllers: progress, completion, loss, expiry, clean-up."""
        now = time.time()
        check_liveness = now - self._last_liveness >= LIVENESS_SECONDS
        if check_liveness:
            self._last_liveness = now
        freed = False
        for record in self.store:
            if record.phase in (LAUNCHED, RUNNING):
                freed |= self._observe(record, check_liveness)
            elif record.phase == FINISHED:
                if record.end_time is not None and now >= record.end_time + self._retention(record):
                    self._forget(record)
            elif record.phase == DELETED and not self._supervisor_running(record, check=True):
                self._forget(record)
            elif (
                record.phase == PULL_BACKOFF
                and record.start_time is not None
                and now >= record.start_time + record.deadline_seconds
            ):
                self._finish(record, {"exit_code": None, "reason": "DeadlineExceeded"})
                freed = True
        if freed:
            self.schedule()

    def _retention(self, record: SessionRecord) -> float:
        if record.headless:
            return self.config.retention_seconds
        return self.config.interactive_retention_seconds

    def _supervisor_running(self, record: SessionRecord, check: bool) -> bool:
        """Whether the session's supervisor still runs (own children are cheap to check)."""
        process = self.children.get(record.id)
        if process is not None:
            if process.poll() is None:
                return True
            self.children.pop(record.id, None)
            return False
        if not check:
            return True
        return runtime.is_alive(record.supervisor_pid, record.supervisor_ticks)

    def _observe(self, record: SessionRecord, check_liveness: bool) -> bool:
        """Advance one launched/running session; True when it finished."""
        directory = self.session_dir(record.id)
        own = record.id in self.children
        running = self._supervisor_running(record, check=check_liveness)
        if record.phase == LAUNCHED:
            started = runtime.read_json(directory / "started.json")
            if started is not None:
                record.phase = RUNNING
                record.child_pid = int(started.get("pid") or 0) or None  # type: ignore[call-overload]
                ticks = started.get("start_ticks")
                record.child_ticks = int(ticks) if isinstance(ticks, int) else None
                record.run_time = float(started.get("time") or time.time())  # type: ignore[arg-type]
                self.store.save(record)
        if own and running:
            return False
        status = runtime.read_json(directory / "status.json")
        if status is not None:
            self._finish(record, status)
            return True
        if running:
            return False
        # The supervisor is gone without a word: a lost pod.  Make sure nothing it
        # started survives, then report the session as failed.
        self._learn_child(record)
        runtime.kill_group(record.child_pid, record.child_ticks)
        self._finish(
            record,
            {"exit_code": None, "reason": "SupervisorLost", "end_time": time.time()},
        )
        return True

    def _finish(self, record: SessionRecord, status: dict[str, object]) -> None:
        code = status.get("exit_code")
        record.exit_code = int(code) if isinstance(code, int) else None
        record.reason = str(status.get("reason") or "")
        message = status.get("message")
        record.message = str(message) if message else None
        end = status.get("end_time")
        record.end_time = float(end) if isinstance(end, (int, float)) else time.time()
        if record.run_time is None and record.reason != "StartError":
            record.run_time = record.end_time
        record.phase = FINISHED
        record.ram_in_use = None
        record.cpu_in_use = None
        self.children.pop(record.id, None)
        self.store.save(record)

    def _forget(self, record: SessionRecord) -> None:
        """Remove every trace of a session (TTL expiry or completed deletion)."""
        self.children.pop(record.id, None)
        self.store.remove(record.id)
        shutil.rmtree(self.session_dir(record.id), ignore_errors=True)

    def usage_files(self) -> dict[str, Path]:
        """The metrics samples to read: one per running session."""
        return {
            r.id: self.session_dir(r.id) / "usage.json" for r in self.store if r.phase == RUNNING
        }

    @staticmethod
    def read_usage(files: dict[str, Path]) -> dict[str, dict[str, object]]:
        """Read the samples (blocking file I/O: run it off the event loop)."""
        samples = {}
        for session_id, path in files.items():
            sample = runtime.read_json(path)
            if sample is not None:
                samples[session_id] = sample
        return samples

    def apply_usage(self, samples: dict[str, dict[str, object]]) -> None:
        """Record ``ramInUse``/``cpuCoresInUse`` for sessions that are still running."""
        for session_id, sample in samples.items():
            record = self.store.get(session_id)
            if record is None or record.phase != RUNNING:
                continue
            rss, cpu = sample.get("rss"), sample.get("cpu")
            record.ram_in_use = int(rss) if isinstance(rss, (int, float)) else None
            record.cpu_in_use = float(cpu) if isinstance(cpu, (int, float)) else None

    # -- user actions ----------------------------------------------------------------------

    def delete(self, user: str, session_id: str) -> None:
        """Delete the caller's session: it vanishes at once, its processes get SIGTERM."""
        record = self.find(user, session_id)
        if record is None:
            return
        if record.phase in (QUEUED, PULL_BACKOFF):
            self._forget(record)
            self.schedule()
            return
        running = self._supervisor_running(record, check=True)
        record.phase = DELETED
        self.store.save(record)
        if running:
            runtime.signal_process(record.supervisor_pid, record.supervisor_ticks, signal.SIGTERM)
        else:
            self._forget(record)
        self.schedule()

    def hold(self, session_id: str, status: str, *, kill: bool = False) -> None:
        """Show `status` for a session from now on, whatever its lifecycle does.

        A pod stuck `Terminating` after its command ended, or a node lost mid-run
        (`Unknown`): the Job never reaches a final state. With `kill`, the session's
        processes are SIGKILLed first, as a lost node takes them, so nothing it runs can
        record an exit code.
        """
        record = self.store.get(session_id)
        if record is None or record.phase == DELETED:
            raise KeyError(f"no session {session_id}")
        if kill and record.phase in (LAUNCHED, RUNNING):
            self._learn_child(record)
            runtime.kill_tree(record.supervisor_pid, record.supervisor_ticks)
            runtime.kill_group(record.child_pid, record.child_ticks)
        record.held_status = status
        self.store.save(record)

    def renew(self, user: str, session_id: str, principal: str) -> None:
        """Extend an active session's deadline to now + the session expiry when shorter."""
        record = self.find(user, session_id)
        if record is None or record.phase not in (LAUNCHED, RUNNING) or record.start_time is None:
            raise BadRequest(f"No active job for user {principal} with session {session_id}")
        self.inject_proxy(user)
        elapsed = int(time.time()) - record.start_time
        remaining = record.deadline_seconds - elapsed
        if self.config.session_expiry_seconds > remaining:
            record.deadline_seconds = elapsed + self.config.session_expiry_seconds
            self.store.save(record)
            deadline_file = self.session_dir(session_id) / "deadline"
            tmp = deadline_file.with_name("deadline.tmp")
            tmp.write_text(str(record.start_time + record.deadline_seconds), encoding="utf-8")
            os.replace(tmp, deadline_file)

    # -- shutdown ------------------------------------------------------------------------

    def _learn_child(self, record: SessionRecord) -> None:
        """Read the command's pid from ``started.json`` if it is not known yet."""
        if record.child_pid is not None:
            return
        started = runtime.read_json(self.session_dir(record.id) / "started.json")
        if started is not None:
            record.child_pid = int(started.get("pid") or 0) or None  # type: ignore[call-overload]
            ticks = started.get("start_ticks")
            record.child_ticks = int(ticks) if isinstance(ticks, int) else None

    def kill_all(self, timeout: float = 10.0) -> None:
        """Kill every session's processes and wait until they are gone.

        The command's group is SIGKILLed first and its supervisor asked to stop, so that the
        supervisor reaps the command itself (no orphan zombie is left for init); only a
        supervisor that does not exit in time is SIGKILLed.
        """
        targets = [r for r in self.store if r.phase in (LAUNCHED, RUNNING, DELETED)]
        for record in targets:
            self._learn_child(record)
            runtime.kill_group(record.child_pid, record.child_ticks)
            runtime.signal_process(record.supervisor_pid, record.supervisor_ticks, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        remaining = list(targets)
        while remaining:
            still: list[SessionRecord] = []
            for record in remaining:
                self._learn_child(record)
                runtime.kill_group(record.child_pid, record.child_ticks)
                process = self.children.get(record.id)
                if process is not None:
                    process.poll()
                if runtime.is_alive(record.supervisor_pid, record.supervisor_ticks) or (
                    runtime.is_alive(record.child_pid, record.child_ticks)
                ):
                    still.append(record)
            remaining = still
            if not remaining:
                break
            if time.monotonic() >= deadline - 2.0:
                for record in remaining:
                    runtime.signal_process(
                        record.supervisor_pid, record.supervisor_ticks, signal.SIGKILL
                    )
            if time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        for record in targets:
            process = self.children.pop(record.id, None)
            if process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=1.0)
            if record.phase == DELETED:
                self._forget(record)
            else:
                self._finish(
                    record,
                    {"exit_code": 137, "reason": "PlatformStopped", "end_time": time.time()},
                )

    def release_children(self) -> None:
        """Stop tracking supervisors as children (they keep running, detached)."""
        self.children.clear()


def read_creation_journal(root: Path) -> list[dict[str, object]]:
    """Every session ever created under ``root``, oldest first (a torn last line is skipped)."""
    path = root / CREATION_JOURNAL
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):
            entries.append(json.loads(line))
    return entries
