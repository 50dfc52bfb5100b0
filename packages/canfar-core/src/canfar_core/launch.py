"""The launch envelope: carry any command through the Skaha API intact.

The server splits `args` on single spaces, drops `env` values containing `=` or
empty ones, splices values into YAML without escaping (so `"` and `\\` break it), and
Kubernetes then expands `$(VAR)` and reduces `$$` (reference §3.1.4). The envelope
sidesteps all of it: the real work is a POSIX sh script, base64-encoded without
padding (so no `=`), split over `CANFAR_LAUNCH_<n>` variables (each below Linux's
128 KiB limit per environment string), and a bootstrap line free of `=`, `"`, `\\`,
`$(` and `$$` in `CANFAR_BOOT`. The session runs `cmd=/bin/sh`, `args=-c $(CANFAR_BOOT)`.

The script exports the environment, changes directory, runs the command (with an
optional runtime limit, exit code 124 when it is exceeded), tees its output to
`<state_dir>/<session id>.log`, writes the exit code atomically to
`<state_dir>/<session id>.exit`, prints a final marker line and exits with the code.
Files are named by the session id, so concurrent sessions never collide.

Secrets (an API key, a workflow's `envvars:`) should not travel in the request at all:
the server stores `env` in the Job spec, where anyone who can read the Job sees it, and
an encoding is not a protection. With `secrets_file`, the script instead sources a 0600
file on the shared filesystem (written beforehand with `write_secrets_file`) and deletes
it, so the secrets exist only in that file, briefly, and in the running process.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from canfar_core.errors import SpecError
from canfar_core.models import ENV_KEY_PATTERN, SessionSpec

BOOT_VAR = "CANFAR_BOOT"
SCRIPT_VAR_PREFIX = "CANFAR_LAUNCH_"
MARKER = "canfar-launch: exit code"
CHUNK_CHARS = 64 * 1024  # a multiple of 4, so base64 chunks concatenate cleanly
KILL_GRACE_SECONDS = 10
_MARKER_RE = re.compile(rf"^{re.escape(MARKER)} (\d+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Envelope:
    """The `cmd`, `args` and `env` that carry a command through the API."""

    cmd: str
    args: str
    env: dict[str, str]
    state_dir: str | None = None
    timeout: float | None = None
    script: str = field(repr=False, default="")

    def exit_file(self, session_id: str) -> Path | None:
        """Where the session writes its exit code, when a state directory is used."""
        return exit_file(self.state_dir, session_id) if self.state_dir else None

    def log_file(self, session_id: str) -> Path | None:
        """Where the session tees its output, when a state directory is used."""
        return Path(self.state_dir) / f"{session_id}.log" if self.state_dir else None

    def spec(
        self,
        *,
        name: str,
        image: str,
        cores: float | None = None,
        ram: float | None = None,
        gpus: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> SessionSpec:
        """A session spec that runs this envelope (extra `env` must be API-safe)."""
        return SessionSpec(
            name=name,
            image=image,
            cores=cores,
            ram=ram,
            gpus=gpus,
            cmd=self.cmd,
            args=self.args,
            env={**self.env, **(env or {})},
        )


def envelope(
    command: Sequence[str] | str,
    *,
    env: Mapping[str, str] | None = None,
    workdir: str | Path | None = None,
    state_dir: str | Path | None = None,
    timeout: float | None = None,
    shell: str = "/bin/sh",
    secrets_file: str | Path | None = None,
) -> Envelope:
    """Build the envelope for `command` (an argv list, or a string run by `shell -c`).

    `env` values may hold anything (`=`, quotes, newlines, any size); keys must be
    shell identifiers. `workdir` defaults to the session's `$HOME`. With `state_dir`
    (a path both sides can read, e.g. on `/arc`), the log and exit code land there.
    With `secrets_file` (see `write_secrets_file`), the command's extra environment is
    read from that file, which the session deletes once read; a missing file fails the
    session with exit code 126 and a sentence saying so.
    """
    if isinstance(command, str):
        if not command.strip():
            raise SpecError("command", command, "a non-empty command is required")
        argv = [shell, "-c", command]
    else:
        argv = [str(a) for a in command]
        if not argv:
            raise SpecError("command", command, "a non-empty argv is required")
    env = dict(env or {})
    for key in env:
        if not ENV_KEY_PATTERN.match(key):
            raise SpecError("env key", key, "letters, digits and '_', not first a digit")
    if timeout is not None and timeout <= 0:
        raise SpecError("timeout", timeout, "a positive number of seconds")
    script = render_script(
        argv,
        env,
        str(workdir) if workdir is not None else None,
        str(state_dir) if state_dir is not None else None,
        timeout,
        str(secrets_file) if secrets_file is not None else None,
    )
    chunks = encode_script(script)
    names = [f"{SCRIPT_VAR_PREFIX}{i}" for i in range(len(chunks))]
    boot = f"printf %s {' '.join('$' + n for n in names)} | base64 -d | /bin/sh -s"
    return Envelope(
        cmd="/bin/sh",
        args=f"-c $({BOOT_VAR})",
        env={**dict(zip(names, chunks, strict=True)), BOOT_VAR: boot},
        state_dir=str(state_dir) if state_dir is not None else None,
        timeout=timeout,
        script=script,
    )


def encode_script(script: str) -> list[str]:
    """Base64 without padding (the text is padded to a multiple of 3 bytes first)."""
    raw = script.encode()
    raw += b"\n" * (-len(raw) % 3)
    text = base64.b64encode(raw).decode("ascii")
    return [text[i : i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)]


def _q(value: str) -> str:
    return shlex.quote(value)


def render_script(
    argv: Sequence[str],
    env: Mapping[str, str],
    workdir: str | None,
    state_dir: str | None,
    timeout: float | None,
    secrets_file: str | None = None,
) -> str:
    """The POSIX sh script the session runs (see the module docstring)."""
    lines = ["{", "__cf_rc=0"]
    lines += [f"export {key}={_q(value)}" for key, value in env.items()]
    command = " ".join(_q(a) for a in argv)
    secrets: list[str] = []
    if secrets_file is not None:
        missing = f"canfar-launch: the secrets file {secrets_file} is missing or unreadable"
        secrets = [
            f"if [ -r {_q(secrets_file)} ]; then",
            f"  . {_q(secrets_file)}",
            f"  rm -f -- {_q(secrets_file)}",
            "else",
            f"  echo {_q(missing)} >&2",
            "  return 126",
            "fi",
        ]
    if timeout is None:
        run_body = [*secrets, command]
    else:
        limit = f"{timeout:g}"
        run_body = [
            *secrets,
            "if command -v setsid >/dev/null 2>&1; then",
            f"  setsid {command} &",
            "else",
            f"  {command} &",
            "fi",
            "__cf_pid=$!",
            "(",
            "  sleep " + limit + " & __cf_sleep=$!",
            "  trap 'kill $__cf_sleep 2>/dev/null; exit 0' TERM",
            "  wait $__cf_sleep",
            "  trap '' TERM",
            f"  echo 'canfar-launch: runtime limit of {limit} s exceeded; stopping' >&2",
            "  kill -TERM -$__cf_pid 2>/dev/null || kill -TERM $__cf_pid 2>/dev/null",
            "  __cf_n=0",
            f"  while kill -0 $__cf_pid 2>/dev/null && [ $__cf_n -lt {KILL_GRACE_SECONDS} ]; do",
            "    sleep 1; __cf_n=$((__cf_n + 1))",
            "  done",
            "  kill -KILL -$__cf_pid 2>/dev/null || kill -KILL $__cf_pid 2>/dev/null",
            "  exit 124",
            ") &",
            "__cf_dog=$!",
            "wait $__cf_pid",
            "__cf_r=$?",
            "kill -TERM $__cf_dog 2>/dev/null",
            "wait $__cf_dog",
            "[ $? -eq 124 ] && __cf_r=124",
            "return $__cf_r",
        ]
    lines.append("__cf_run() {")
    lines += ["  " + line for line in run_body]
    lines.append("}")
    cd_line = f"cd -- {_q(workdir)}" if workdir else "true"
    cd_error = (
        f"echo {_q(f'canfar-launch: cannot change directory to {workdir}')} >&2"
        if workdir
        else "true"
    )
    if state_dir is None:
        lines += [
            f"if {cd_line}; then",
            "  __cf_run",
            "  __cf_rc=$?",
            "else",
            f"  {cd_error}",
            "  __cf_rc=126",
            "fi",
            f"echo '{MARKER}' $__cf_rc",
        ]
    else:
        lines += [
            '__cf_id="${skaha_sessionid:-pid$$}"',
            f"__cf_dir={_q(state_dir)}",
            'mkdir -p -- "$__cf_dir" 2>/dev/null',
            '__cf_log="$__cf_dir/$__cf_id.log"',
            '__cf_exit="$__cf_dir/$__cf_id.exit"',
            '__cf_rcf="$__cf_dir/.$__cf_id.$$.rc"',
            f"if {cd_line}; then",
            '  { __cf_run; echo $? > "$__cf_rcf"; } 2>&1 | tee -a "$__cf_log"',
            '  read __cf_rc < "$__cf_rcf" || __cf_rc=1',
            '  rm -f -- "$__cf_rcf"',
            "else",
            f'  {cd_error} 2>&1 | tee -a "$__cf_log" >&2',
            "  __cf_rc=126",
            "fi",
            f"echo '{MARKER}' $__cf_rc | tee -a \"$__cf_log\"",
            'echo $__cf_rc > "$__cf_exit.$$.tmp" && mv -f -- "$__cf_exit.$$.tmp" "$__cf_exit"',
        ]
    lines += ["exit $__cf_rc", "} </dev/null", ""]
    return "\n".join(lines)


def write_secrets_file(path: str | Path, secrets: Mapping[str, str]) -> Path:
    """Write `secrets` as shell exports to a new 0600 file (its directory made 0700).

    The file is created with O_EXCL, so an existing file (or a symlink planted there)
    is never overwritten or followed. Keys must be shell identifiers.
    """
    for key in secrets:
        if not ENV_KEY_PATTERN.match(key):
            raise SpecError("env key", key, "letters, digits and '_', not first a digit")
    target = Path(path)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    body = "".join(f"export {key}={_q(value)}\n" for key, value in secrets.items())
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(body)
    return target


def remove_secrets_file(path: str | Path | None) -> None:
    """Delete a secrets file that no session consumed (never started, deleted, failed)."""
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def exit_file(state_dir: str | Path, session_id: str) -> Path:
    """The exit-code file of `session_id` under `state_dir`."""
    return Path(state_dir) / f"{session_id}.exit"


def read_exit_file(state_dir: str | Path | None, session_id: str) -> int | None:
    """The exit code a session recorded, or None when it recorded none."""
    if state_dir is None:
        return None
    try:
        return int(exit_file(state_dir, session_id).read_text().strip())
    except (OSError, ValueError):
        return None


def parse_exit_marker(log_text: str) -> int | None:
    """The exit code from the envelope's last marker line in a log, if present."""
    found = _MARKER_RE.findall(log_text)
    return int(found[-1]) if found else None
