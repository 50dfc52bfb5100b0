"""Per-session supervisor: the local stand-in for a Job's pod and kubelet.

Run as ``python -I -S supervisor.py <session-dir>`` (by path, so that no package ``__init__``
is imported: it must start fast and import only the standard library).  It is started in its
own session so it outlives the server; the server can be SIGKILLed and restarted, and learns
what happened from the files written here:

* ``spec.json``    (input)  argv, env, cwd, log path, memory limit, deadline, poll settings,
                            the time the command may start (the platform's start delay);
* ``deadline``     (input)  optional epoch seconds overriding the deadline (renew);
* ``started.json`` (output) the command's pid and start ticks once it is running;
* ``usage.json``   (output) resident memory and CPU use, refreshed every few seconds;
* ``status.json``  (output) exit code, reason and end time, written atomically, last.

The command runs in its own process group with stdout and stderr appended to the log.  The
group's resident memory is polled through ``/proc``; above the limit the group is SIGKILLed
and the exit status is 137, as after a container OOM kill.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
USAGE_EVERY_SECONDS = 5.0  # metrics-server scrapes every 15 s; no need to be finer


def write_json_atomic(path: str, data: dict[str, object], durable: bool = True) -> None:
    """Write ``data`` so that readers see either nothing or the whole file.

    ``durable`` files (start and exit records) are fsynced: they must survive a crash of
    the machine, not only of the server.  Usage samples are not worth a disk flush.
    """
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)


def proc_start_ticks(pid: int) -> int | None:
    """The process start time in clock ticks since boot (identifies a pid across reuse)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    return int(fields[19])


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants, found through ``/proc/<pid>/task/<tid>/children``."""
    found: list[int] = []
    pending = [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/children", "rb") as handle:
                    pending.extend(int(child) for child in handle.read().split())
            except OSError:
                continue
    return found


def tree_rss(pids: list[int]) -> dict[int, int]:
    """Resident set size in bytes of each of ``pids`` that still exists."""
    sizes: dict[int, int] = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm", "rb") as handle:
                sizes[pid] = int(handle.read().split()[1]) * PAGE_SIZE
        except (OSError, IndexError, ValueError):
            continue
    return sizes


def tree_cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time of ``pids``."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                data = handle.read()
            fields = data[data.rindex(b")") + 2 :].split()
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return ticks / CLOCK_TICKS


PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Adopt orphaned descendants, as a container's init does.

    A command may leave its process group (`setsid`) and then lose its parent; without
    this it would be re-parented to the host's init and survive the session's deletion.
    As a subreaper the supervisor stays the root of every process the session started.
    """
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def lower_priority(nice: int) -> None:
    """Run this session, and all it starts, at `nice`: the node it stands in for is its own.

    Raising one's own nice value needs no privilege. With the kernel's autogroups on, a
    process session competes as one group whatever its processes' nice values, so the
    group's nice is raised too; without autogroups the per-process value is what counts.
    """
    if nice <= 0:
        return
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    with contextlib.suppress(OSError), open("/proc/self/autogroup", "w") as handle:
        handle.write(str(nice))


def resolve_executable(name: str, path: str) -> str | None:
    """Find ``name`` on the session's PATH, as the container runtime would."""
    if "/" in name:
        return name
    for directory in path.split(os.pathsep):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


class Supervisor:
    """Runs one command to completion and records how it ended."""

    def __init__(self, session_dir: str) -> None:
        self.dir = session_dir
        with open(os.path.join(session_dir, "spec.json"), encoding="utf-8") as handle:
            self.spec: dict[str, object] = json.load(handle)
        self.stop_requested = False
        self.deadline = float(self.spec["deadline"])  # type: ignore[arg-type]
        self.deadline_mtime = 0.0
        self.child: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        self.wake_read = wake_read
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def _on_stop(self, signum: int, frame: object) -> None:
        self.stop_requested = True

    def path(self, name: str) -> str:
        """A file in the session directory."""
        return os.path.join(self.dir, name)

    def finish(self, exit_code: int, reason: str, message: str = "") -> int:
        """Record the exit status atomically (the server reads it, even after a restart)."""
        write_json_atomic(
            self.path("status.json"),
            {"exit_code": exit_code, "reason": reason, "end_time": time.time(), "message": message},
        )
        return 0

    def refresh_deadline(self) -> None:
        """Pick up a deadline extended by a renew."""
        try:
            mtime = os.stat(self.path("deadline")).st_mtime
        except OSError:
            return
        if mtime != self.deadline_mtime:
            self.deadline_mtime = mtime
            try:
                with open(self.path("deadline"), encoding="utf-8") as handle:
                    self.deadline = float(handle.read().strip())
            except (OSError, ValueError):
                pass

    def kill_group(self, pgid: int, sig: int) -> None:
        """Signal a process group, ignoring one that is already gone."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    def signal_all(self, pgid: int, sig: int) -> None:
        """Signal the command's group and every other descendant (a container's kill)."""
        self.kill_group(pgid, sig)
        for pid in process_tree(os.getpid())[1:]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def reap_orphans(self) -> None:
        """Collect adopted descendants that have exited (no zombies left behind)."""
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    def kill_everything(self, pgid: int, timeout: float = 10.0) -> None:
        """SIGKILL every descendant until none is left, as a container's end does.

        One pass is not enough: a process whose parent is being killed is re-parented to
        this subreaper only once that parent is gone, so a single walk of the tree can
        miss it (a command under `setsid`, whose shell died in the same instant).
        """
        deadline = time.monotonic() + timeout
        while True:
            self.signal_all(pgid, signal.SIGKILL)
            self.reap_orphans()
            if len(process_tree(os.getpid())) <= 1 or time.monotonic() >= deadline:
                return
            time.sleep(0.01)

    def wait_child(self, timeout: float) -> int | None:
        """Wait up to `timeout` seconds for the command; its exit status or None."""
        assert self.child is not None
        end = time.monotonic() + timeout
        while True:
            code = self.child.poll()
            if code is not None or time.monotonic() >= end:
                return code
            time.sleep(0.02)

    def terminate(self, pgid: int) -> None:
        """SIGTERM every process, then SIGKILL after the grace period, like a pod deletion."""
        self.signal_all(pgid, signal.SIGTERM)
        if self.wait_child(float(self.spec.get("grace", 2.0))) is None:  # type: ignore[arg-type]
            self.signal_all(pgid, signal.SIGKILL)
            assert self.child is not None
            self.child.wait()

    def oom_kill(self, pgid: int, sizes: dict[int, int]) -> None:
        """Kill like the kernel's OOM killer, then make sure the container is gone.

        With ``oom_policy == "largest"`` the biggest process dies first and the others get
        the grace period to notice (a wrapper can record its child's 137, as under cgroup v1
        or ``singleProcessOOMKill``); the group is SIGKILLed afterwards either way.  With
        ``"group"`` the whole group dies at once (cgroup v2 ``memory.oom.group``).
        """
        assert self.child is not None
        victim = max(sizes, key=lambda pid: sizes[pid]) if sizes else pgid
        if self.spec.get("oom_policy", "largest") == "largest" and victim != pgid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(victim, signal.SIGKILL)
            self.wait_child(float(self.spec.get("grace", 2.0)))  # type: ignore[arg-type]
        self.kill_group(pgid, signal.SIGKILL)
        self.child.wait()

    def wait_for_start(self) -> bool:
        """Wait until ``start_at`` (the platform's start delay); False if stopped meanwhile.

        This is the image pull and container creation of a real pod: the session is
        admitted and Pending, nothing runs yet, and a delete (SIGTERM) ends the wait.
        """
        start_at = float(self.spec.get("start_at") or 0.0)  # type: ignore[arg-type]
        while not self.stop_requested:
            remaining = start_at - time.time()
            if remaining <= 0:
                return True
            readable, _, _ = select.select([self.wake_read], [], [], remaining)
            if readable:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self.wake_read, 512):
                        pass
        return False

    def run(self) -> int:
        """Start the command in its own process group and supervise it to the end."""
        become_subreaper()
        lower_priority(int(self.spec.get("nice", 0)))  # type: ignore[call-overload]
        if not self.wait_for_start():
            return self.finish(143, "Terminated", "deleted before its container started")
        spec = self.spec
        argv = [str(a) for a in spec["argv"]]  # type: ignore[union-attr]
        env = {str(k): str(v) for k, v in spec["env"].items()}  # type: ignore[union-attr]
        cwd = str(spec["cwd"])
        executable = resolve_executable(argv[0], env.get("PATH", os.defpath)) if argv else None
        with open(str(spec["log"]), "ab", buffering=0) as log:
            if executable is None:
                return self.finish(
                    128, "StartError", f'exec: "{argv[0] if argv else ""}": not found in $PATH'
                )
            try:
                self.child = subprocess.Popen(
                    argv,
                    executable=executable,
                    env=env,
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    process_group=0,
                    close_fds=True,
                )
            except OSError as exc:
                return self.finish(128, "StartError", f'exec: "{argv[0]}": {exc.strerror}')
        child = self.child
        pgid = child.pid
        self.started_at = time.time()
        write_json_atomic(
            self.path("started.json"),
            {"pid": pgid, "start_ticks": proc_start_ticks(pgid), "time": time.time()},
        )
        return self.watch(child, pgid)

    def watch(self, child: subprocess.Popen[bytes], pgid: int) -> int:
        """Poll memory and the deadline until the command exits; kill it when over either."""
        limit = int(self.spec["memory_limit_bytes"])  # type: ignore[arg-type]
        base = float(self.spec.get("poll", 0.2))  # type: ignore[arg-type]
        ceiling = float(self.spec.get("poll_max", 1.0))  # type: ignore[arg-type]
        pidfd = os.pidfd_open(pgid)
        interval = base
        reason: str | None = None
        next_usage = 0.0
        last_cpu: tuple[float, float] | None = None
        while True:
            readable, _, _ = select.select([pidfd, self.wake_read], [], [], interval)
            if self.wake_read in readable:
                try:
                    while os.read(self.wake_read, 512):
                        pass
                except BlockingIOError:
                    pass
            if child.poll() is not None:
                break
            if self.stop_requested:
                reason = "Terminated"
                self.terminate(pgid)
                break
            self.refresh_deadline()
            now = time.time()
            if now >= self.deadline:
                reason = "DeadlineExceeded"
                self.terminate(pgid)
                break
            pids = process_tree(os.getpid())[1:]
            sizes = tree_rss(pids)
            rss = sum(sizes.values())
            if rss > limit:
                reason = "OOMKilled"
                self.oom_kill(pgid, sizes)
                break
            interval = base if rss * 2 > limit else min(ceiling, interval * 1.5)
            if now >= next_usage:
                cpu = tree_cpu_seconds(pids)
                rate = 0.0
                if last_cpu is not None and now > last_cpu[0]:
                    rate = max(0.0, (cpu - last_cpu[1]) / (now - last_cpu[0]))
                else:
                    run_for = max(now - float(self.started_at), 1e-3)
                    rate = cpu / run_for
                last_cpu = (now, cpu)
                next_usage = now + USAGE_EVERY_SECONDS
                sample = {"rss": rss, "cpu": rate, "time": now}
                write_json_atomic(self.path("usage.json"), sample, durable=False)
        os.close(pidfd)
        # The container is gone: nothing it started may outlive it.
        code = child.returncode if child.returncode is not None else child.wait()
        self.kill_everything(pgid)
        exit_code = 128 - code if code < 0 else code
        if reason == "OOMKilled":
            exit_code = 137
        if reason is None:
            reason = "Completed" if exit_code == 0 else "Error"
        return self.finish(exit_code, reason)


def main(argv: list[str]) -> int:
    """Entry point: `supervisor.py SESSION_DIR`."""
    if len(argv) != 2:
        print("usage: supervisor.py SESSION_DIR", file=sys.stderr)
        return 2
    os.chdir("/")
    return Supervisor(argv[1]).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
