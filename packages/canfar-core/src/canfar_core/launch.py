"""The launch envelope: carry any command through the Skaha API intact, and its exit code back.

The server splits `args` on single spaces, drops `env` values containing `=` or
empty ones, splices values into YAML without escaping (so `"` and `\\` break it), and
Kubernetes then expands `$(VAR)` and reduces `$$` (reference §3.1.4). The envelope
sidesteps all of it: the real work is a POSIX sh script, base64-encoded without
padding (so no `=`), split over `CANFAR_LAUNCH_<n>` variables (each below Linux's
128 KiB limit per environment string), and a bootstrap line free of `=`, `"`, `\\`,
`$(` and `$$` in `CANFAR_BOOT`. The session runs `cmd=/bin/sh`, `args=-c $(CANFAR_BOOT)`.

The boot line fails loudly. `set -o pipefail` is not POSIX, so instead of asking the
pipeline for `base64`'s status, the decoded text is followed by a trailer line,
`echo <sentence> >&2; exit 125`. The script is one `{ ... }` group that ends in `exit`,
so when it decodes whole, `sh` runs it and never reads the trailer; when `base64` is
missing, fails, or its output is cut short, `sh` meets the trailer (or a syntax error)
and the session ends non-zero with the reason in its log. A boot that ends `Completed`
without the script's exit record is therefore impossible from this line, and the
tracker counts any envelope session without a record as a failure.

The script unsets the envelope's own variables (the command never sees the chunks),
exports the environment, changes directory, runs the command in its own process group
(`setsid`, when the image has it) with an optional runtime limit (exit code 124), and,
once the command has exited, kills what it left behind in that group: a background
process can then neither print after the exit line nor hold the log's pipe open. It
tees the output to `<state_dir>/<session id>.log`, prints the exit line, writes the exit
code atomically to `<state_dir>/<session id>.exit`, and exits with the code.

The exit line names the session: `canfar-launch: exit code N session <id>`, where `<id>`
is `$skaha_sessionid`, which the server injects into every session (reference §6). It
counts only as the log's final line (`parse_exit_marker`). A command that prints such a
line by accident (it cats an earlier session's log, say) prints another session's id,
and one that prints it and is then killed leaves phase `Failed`, which a marker 0 never
overrules. Unlike a per-launch nonce, the id is known to whoever watches the session,
so a driver restarted after a crash, or a Prefect worker re-adopting a run, verifies
markers with nothing persisted. Files are named by the session id too, so concurrent
sessions never collide.

Size limits are checked here, not discovered in the session (`canfar_core.limits`): an
argv or environment string past Linux's 128 KiB limit, or a command whose argv and
environment exceed what one exec takes, is refused with a sentence. A script too large
to travel in the request (Kubernetes objects hold about 1.5 MiB) is written to
`<state_dir>/launch/` and the request carries only a stub that runs it; without a state
directory such a request is refused before anything is sent.

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
from functools import partial
from pathlib import Path
from secrets import token_hex

from canfar_core.errors import SpecError
from canfar_core.limits import (
    CONTAINER_ENV_ALLOWANCE,
    MAX_ARG_STRLEN,
    MAX_EXEC_BYTES,
    MAX_REQUEST_ENV_BYTES,
    ByteCount,
    check_env_string,
    env_string_bytes,
    kib,
)
from canfar_core.models import ENV_KEY_PATTERN, SessionSpec

BOOT_VAR = "CANFAR_BOOT"
SCRIPT_VAR_PREFIX = "CANFAR_LAUNCH_"
MARKER = "canfar-launch: exit code"
BOOT_FAILURE = "canfar-launch: the launch script did not decode or run in this image"
BOOT_FAILURE_EXIT_CODE = 125
LAUNCH_SUBDIR = "launch"
CHUNK_CHARS = 64 * 1024  # a multiple of 4, so base64 chunks concatenate cleanly
KILL_GRACE_SECONDS = 10
# Room left in the request for what `Envelope.spec(env=...)` and the client add.
EXTRA_ENV_ALLOWANCE = 16 * 1024
_MARKER_RE = re.compile(rf"{re.escape(MARKER)} (\d+) session (\S+)\s*$")


@dataclass(frozen=True)
class Envelope:
    """The `cmd`, `args` and `env` that carry a command through the API.

    `script_file` is set when the script was too large for the request and travels as a
    file under the state directory instead (the session deletes it when its command
    ends; `discard()` deletes it for a session that never started).
    """

    cmd: str
    args: str
    env: dict[str, str]
    state_dir: str | None = None
    timeout: float | None = None
    script: str = field(repr=False, default="")
    script_file: Path | None = None

    def exit_file(self, session_id: str) -> Path | None:
        """Where the session writes its exit code, when a state directory is used."""
        return exit_file(self.state_dir, session_id) if self.state_dir else None

    def log_file(self, session_id: str) -> Path | None:
        """Where the session tees its output, when a state directory is used."""
        return Path(self.state_dir) / f"{session_id}.log" if self.state_dir else None

    def discard(self) -> None:
        """Delete the script file of a session that will never run it (if there is one)."""
        if self.script_file is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.script_file)

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

    `env` values may hold anything (`=`, quotes, newlines), up to Linux's 128 KiB per
    environment string; keys must be shell identifiers. `workdir` defaults to the
    session's `$HOME`. With `state_dir` (a path both sides can read, e.g. on `/arc`), the
    log and exit code land there, and a script too large for the request is written
    there (see the module docstring). With `secrets_file` (see `write_secrets_file`),
    the command's extra environment is read from that file, which the session deletes
    once read; a missing file fails the session with exit code 126 and a sentence.
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
    check_exec_size(argv, env)
    state = str(state_dir) if state_dir is not None else None
    render = partial(
        render_script,
        argv,
        env,
        str(workdir) if workdir is not None else None,
        state,
        timeout,
        str(secrets_file) if secrets_file is not None else None,
    )
    script = render()
    chunks = encode_script(script)
    script_file: Path | None = None
    if _request_bytes(chunks) > MAX_REQUEST_ENV_BYTES - EXTRA_ENV_ALLOWANCE:
        if state is None:
            raise SpecError(
                "command and env",
                ByteCount(len(script.encode())),
                f"without a state_dir the launch script travels in the request, which "
                f"CANFAR holds to about {kib(MAX_REQUEST_ENV_BYTES)} (the Kubernetes "
                "object limit); pass state_dir (a directory the session can read) to carry "
                "it as a file, or move large values into files",
            )
        script_file = launch_file_path(state)
        write_launch_file(script_file, render(script_file=str(script_file)))
        script = render_stub(script_file)
        chunks = encode_script(script)
    names = [f"{SCRIPT_VAR_PREFIX}{i}" for i in range(len(chunks))]
    return Envelope(
        cmd="/bin/sh",
        args=f"-c $({BOOT_VAR})",
        env={**dict(zip(names, chunks, strict=True)), BOOT_VAR: boot_line(names)},
        state_dir=state,
        timeout=timeout,
        script=script,
        script_file=script_file,
    )


def check_exec_size(argv: Sequence[str], env: Mapping[str, str]) -> None:
    """Refuse an argv or environment that the session's exec would reject (E2BIG).

    Linux refuses one string over 128 KiB and an argv plus environment over about
    2 MiB; the container would fail with exit 126 after queueing and starting, so the
    request is refused here with the field and its size.
    """
    for index, arg in enumerate(argv):
        size = len(arg.encode()) + 1
        if size > MAX_ARG_STRLEN:
            raise SpecError(
                f"command[{index}]",
                ByteCount(size),
                f"Linux limits one argument to {kib(MAX_ARG_STRLEN)} (MAX_ARG_STRLEN); "
                "pass large input in a file",
            )
    total = sum(len(a.encode()) + 1 for a in argv)
    for key, value in env.items():
        total += check_env_string(key, value, "pass a large value in a file")
    budget = MAX_EXEC_BYTES - CONTAINER_ENV_ALLOWANCE
    if total > budget:
        raise SpecError(
            "command and env",
            ByteCount(total),
            f"Linux limits the argv and environment of one command to about "
            f"{kib(MAX_EXEC_BYTES)}, so at most {budget:,} bytes are left for yours; "
            "move large values into files",
        )


def _request_bytes(chunks: Sequence[str]) -> int:
    names = [f"{SCRIPT_VAR_PREFIX}{i}" for i in range(len(chunks))]
    sizes = sum(env_string_bytes(n, c) for n, c in zip(names, chunks, strict=True))
    return sizes + env_string_bytes(BOOT_VAR, boot_line(names))


def boot_line(names: Sequence[str]) -> str:
    """The bootstrap line: decode the chunks and run them, failing loudly otherwise.

    Free of `=`, `"`, `\\`, `$(` and `$$` (the server and Kubernetes mangle those); see
    the module docstring for why the trailer replaces `set -o pipefail`.
    """
    trailer = f"echo {BOOT_FAILURE} >&2; exit {BOOT_FAILURE_EXIT_CODE}"
    values = " ".join("$" + n for n in names)
    return f"printf %s {values} | {{ base64 -d; echo; echo '{trailer}'; }} | /bin/sh -s"


def encode_script(script: str) -> list[str]:
    """Base64 without padding (the text is padded to a multiple of 3 bytes first)."""
    raw = script.encode()
    raw += b"\n" * (-len(raw) % 3)
    text = base64.b64encode(raw).decode("ascii")
    return [text[i : i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)]


def _q(value: str) -> str:
    return shlex.quote(value)


# Unset every CANFAR_LAUNCH_<n> and the boot line: the command must not inherit them.
_UNSET_ENVELOPE = [
    "__cf_i=0",
    "while :; do",
    f'  eval "__cf_v=\\${{{SCRIPT_VAR_PREFIX}$__cf_i+x}}"',
    '  [ -n "$__cf_v" ] || break',
    f'  unset "{SCRIPT_VAR_PREFIX}$__cf_i"',
    "  __cf_i=$((__cf_i + 1))",
    "done",
    f"unset {BOOT_VAR} __cf_i __cf_v",
]


def render_stub(script_file: Path) -> str:
    """The small script a request carries when the real one travels as a file."""
    missing = (
        f"canfar-launch: the launch script {script_file} is missing or unreadable "
        "(the session cannot see the state directory)"
    )
    lines = [
        "{",
        *_UNSET_ENVELOPE,
        f"if [ -r {_q(str(script_file))} ]; then exec /bin/sh {_q(str(script_file))}; fi",
        f"echo {_q(missing)} >&2",
        "exit 126",
        "} </dev/null",
        "",
    ]
    return "\n".join(lines)


def launch_file_path(state_dir: str | Path) -> Path:
    """A new, unguessable path for a launch script under `<state_dir>/launch/`."""
    return Path(state_dir) / LAUNCH_SUBDIR / f"{token_hex(16)}.sh"


def write_launch_file(target: Path, script: str) -> Path:
    """Write a launch script to a new 0600 file (its directory made 0700)."""
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(script)
    return target


def render_script(
    argv: Sequence[str],
    env: Mapping[str, str],
    workdir: str | None,
    state_dir: str | None,
    timeout: float | None,
    secrets_file: str | None = None,
    script_file: str | None = None,
) -> str:
    """The POSIX sh script the session runs (see the module docstring)."""
    lines = ["{", *_UNSET_ENVELOPE, "__cf_rc=0"]
    lines += [f"export {key}={_q(value)}" for key, value in env.items()]
    command = " ".join(_q(a) for a in argv)
    secrets_lines: list[str] = []
    if secrets_file is not None:
        missing = f"canfar-launch: the secrets file {secrets_file} is missing or unreadable"
        secrets_lines = [
            f"if [ -r {_q(secrets_file)} ]; then",
            f"  . {_q(secrets_file)}",
            f"  rm -f -- {_q(secrets_file)}",
            "else",
            f"  echo {_q(missing)} >&2",
            "  return 126",
            "fi",
        ]
    # The command runs in its own process group (setsid, when the image has it), so that
    # whatever it leaves behind can be ended before the exit line is printed.
    run_body = [
        *secrets_lines,
        "if command -v setsid >/dev/null 2>&1; then",
        f"  setsid {command} &",
        "  __cf_grp=1",
        "else",
        f"  {command} &",
        "  __cf_grp=0",
        "fi",
        "__cf_pid=$!",
    ]
    if timeout is None:
        run_body += ["wait $__cf_pid", "__cf_r=$?"]
    else:
        limit = f"{timeout:g}"
        run_body += [
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
        ]
    run_body += [
        # What the command left running in its group ends with it, as in a container.
        "[ $__cf_grp -eq 1 ] && kill -KILL -$__cf_pid 2>/dev/null",
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
    marker = f'echo "{MARKER} $__cf_rc session $__cf_id"'
    if state_dir is None:
        lines += [
            '__cf_id="${skaha_sessionid:-unknown}"',
            f"if {cd_line}; then",
            "  __cf_run",
            "  __cf_rc=$?",
            "else",
            f"  {cd_error}",
            "  __cf_rc=126",
            "fi",
            marker,
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
            f'{marker} | tee -a "$__cf_log"',
            'echo $__cf_rc > "$__cf_exit.$$.tmp" && mv -f -- "$__cf_exit.$$.tmp" "$__cf_exit"',
        ]
    if script_file is not None:
        lines.append(f"rm -f -- {_q(script_file)}")
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


def marker_line(exit_code: int, session_id: str) -> str:
    """The exit line the envelope prints last (without its newline)."""
    return f"{MARKER} {exit_code} session {session_id}"


def parse_exit_marker(log_text: str, session_id: str | None = None) -> int | None:
    """The exit code from the envelope's exit line, when it is the log's final line.

    With `session_id` (what a verdict must use), only that session's line counts; without
    it (reading a saved log whose session is not known), any session's. A line anywhere
    but last never counts: the command printed it, or something printed after it.
    """
    text = log_text.rstrip()
    last = text[text.rfind("\n") + 1 :]
    match = _MARKER_RE.search(last)
    if match is None or (session_id is not None and match.group(2) != session_id):
        return None
    return int(match.group(1))
