"""The command line of `canfar-run`, checked before anything is sent.

argparse reads the words; every value is then checked here, so a typo is refused in
one sentence naming the option, the value and what is allowed (exit code 2), never
as a Python traceback and never after a session was submitted. Checks that need the
server (allowed sizes, image registries) are in `plan.py`.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from canfar_core.config import url_problem
from canfar_core.models import ENV_KEY_PATTERN, NAME_MAX_LENGTH, NAME_PATTERN

PROG = "canfar-run"
# The official client sets these itself (reference §10.4); a user value would be lost.
RESERVED_ENV = ("REPLICA_ID", "REPLICA_COUNT")
_DURATION = re.compile(r"^\s*(?P<number>[0-9]*\.?[0-9]+)\s*(?P<unit>[smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
# `-<random token>` that canfar-run appends to every session name (see `naming`).
NAME_SUFFIX_LENGTH = 7


class UsageError(Exception):
    """A refused command line: the message is the one sentence to print."""


@dataclass(frozen=True)
class RunOptions:
    """Everything `canfar-run` was asked to do, checked."""

    command: tuple[str, ...] = ()
    image: str | None = None
    cores: float | None = None
    ram: float | None = None
    gpus: int | None = None
    name: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    timeout: float | None = None
    pending_timeout: float | None = None
    replicas: int = 1
    max_running: int | None = None
    retries: int = 0
    state_dir: Path | None = None
    detach: bool = False
    attach: tuple[str, ...] = ()
    json: bool = False
    url: str | None = None


class _Parser(argparse.ArgumentParser):
    """argparse, with its refusals worded as one `canfar-run:` sentence."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}; see `{PROG} --help`.")


def build_parser() -> argparse.ArgumentParser:
    """The options, named as the official `canfar create` names them where it has them."""
    parser = _Parser(
        prog=PROG,
        allow_abbrev=False,  # `--rep 3` must not quietly mean --replicas
        usage=f"{PROG} [options] -- COMMAND [ARG...]\n       {PROG} --attach ID [ID...]",
        description=(
            "Run a command in CANFAR headless sessions and wait for it, like srun: its "
            "output streams to this terminal and its exit code becomes this command's. "
            "Ctrl-C deletes the sessions."
        ),
        epilog=(
            "Exit codes: the command's own (the highest over replicas, as srun does); 2 for "
            "a refused command line; 124 when --timeout stopped it; 125 when the session "
            "ended without recording an exit code or CANFAR could not run it; 130 (143) "
            "after Ctrl-C (SIGTERM), with the sessions deleted."
        ),
    )
    add = parser.add_argument
    add("--image", "-i", help="container image, e.g. images.canfar.net/<project>/<name>:<tag>")
    add("--cores", "--cpu", "-c", metavar="N", help="CPU cores (default: the server's)")
    add("--ram", "--memory", "-m", metavar="GiB", help="RAM in GiB (default: the server's)")
    add("--gpus", "--gpu", "-g", metavar="N", help="GPUs (default: none)")
    add("--name", "-n", help="session name stem ([a-z0-9-]); a random suffix is appended")
    add(
        "--env",
        "-e",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment variable (repeatable); KEY alone copies it from this environment",
    )
    add("--workdir", "-w", metavar="DIR", help="working directory inside the session")
    add("--timeout", "-t", metavar="DURATION", help="runtime limit (90, 90s, 30m, 2h): exit 124")
    add("--pending-timeout", metavar="DURATION", help="delete a session Pending this long")
    add("--replicas", "-r", metavar="N", default="1", help="run N copies (REPLICA_ID=1..N)")
    add("--max-running", metavar="M", help="at most M replicas at once (default: all)")
    add("--retries", metavar="K", default="0", help="re-run a failed replica up to K times")
    add("--state-dir", metavar="DIR", help="a directory both sides see (e.g. on /arc)")
    add("--detach", action="store_true", help="print the session ids and return")
    add("--attach", nargs="+", metavar="ID", default=[], help="wait for existing sessions")
    add("--json", action="store_true", help="print the final report as JSON on stdout")
    add("--url", help="Skaha URL, or 'local' for the embedded platform (default: CANFAR_URL)")
    add("command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def parse_options(argv: Sequence[str], *, environ: Mapping[str, str] | None = None) -> RunOptions:
    """Read and check the command line (raises UsageError)."""
    argv = list(argv)
    command: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1 :]
    ns = build_parser().parse_args(argv)
    if not command:
        command = list(ns.command)
        if command and command[0] == "--":
            command = command[1:]
    env = os.environ if environ is None else environ
    attach = tuple(ns.attach)
    options = RunOptions(
        command=tuple(command),
        image=_text("--image", ns.image),
        cores=_number("--cores", ns.cores, "a number of cores of at least 1"),
        ram=_number("--ram", ns.ram, "a number of GiB of at least 1"),
        gpus=_gpus(ns.gpus),
        name=_name(ns.name),
        env=_environment(ns.env, env),
        workdir=_text("--workdir", ns.workdir),
        timeout=duration("--timeout", ns.timeout),
        pending_timeout=duration("--pending-timeout", ns.pending_timeout),
        replicas=_whole("--replicas", ns.replicas, 1),
        max_running=_whole("--max-running", ns.max_running, 1),
        retries=_whole("--retries", ns.retries, 0),
        state_dir=_state_dir(ns.state_dir),
        detach=ns.detach,
        attach=attach,
        json=ns.json,
        url=_url(ns.url),
    )
    _check_combinations(options, ns)
    return options


def _check_combinations(options: RunOptions, ns: argparse.Namespace) -> None:
    if options.attach:
        given = [
            flag
            for flag, value in (
                ("--image", ns.image),
                ("--cores", ns.cores),
                ("--ram", ns.ram),
                ("--gpus", ns.gpus),
                ("--name", ns.name),
                ("--env", ns.env),
                ("--workdir", ns.workdir),
                ("--timeout", ns.timeout),
                ("--max-running", ns.max_running),
                ("--detach", ns.detach),
            )
            if value
        ]
        if options.replicas != 1:
            given.append("--replicas")
        if options.retries:
            given.append("--retries")
        if options.command:
            given.append("a command")
        if given:
            raise UsageError(
                f"{given[0]} is not allowed with --attach: --attach waits for sessions "
                "that already exist (it takes --state-dir, --pending-timeout, --json and --url)."
            )
        for session_id in options.attach:
            if not re.fullmatch(r"[A-Za-z0-9-]+", session_id):
                raise UsageError(
                    f"--attach={session_id!r} is not allowed: a session id "
                    "(letters and digits, as `canfar ps` or --detach prints them)."
                )
        return
    if not options.command:
        raise UsageError(
            f"a command is required: {PROG} [options] -- COMMAND [ARG...] "
            f"(or {PROG} --attach ID...)."
        )
    if options.detach:
        if options.retries:
            raise UsageError(
                f"--retries={options.retries} is not allowed with --detach: nothing stays "
                "to re-run a failed replica (use 0, or drop --detach)."
            )
        if options.max_running is not None and options.max_running < options.replicas:
            raise UsageError(
                f"--max-running={options.max_running} is not allowed with --detach: every "
                f"replica is created at once (use at least --replicas={options.replicas}, "
                "or drop --detach)."
            )
    longest_stem = max_stem_length(options.replicas)
    if options.name is not None and len(options.name) > longest_stem:
        raise UsageError(
            f"--name={options.name!r} is not allowed: with --replicas={options.replicas} "
            f"names are at most {longest_stem} characters (session names are at most "
            f"{NAME_MAX_LENGTH}, including the random suffix and the replica number)."
        )


def max_stem_length(replicas: int) -> int:
    """The longest `--name` that fits `<name>-<random>-<replica>` in a session name."""
    replica_suffix = len(f"-{replicas}") if replicas > 1 else 0
    return NAME_MAX_LENGTH - NAME_SUFFIX_LENGTH - replica_suffix


def duration(option: str, text: str | None) -> float | None:
    """Seconds from `90`, `90s`, `1.5m`, `2h` or `1d`; None when not given."""
    if text is None:
        return None
    match = _DURATION.match(text)
    seconds = float(match.group("number")) * _UNIT_SECONDS[match.group("unit")] if match else 0.0
    if not match or not math.isfinite(seconds) or seconds <= 0:
        raise UsageError(
            f"{option}={text!r} is not allowed: a duration greater than 0, in seconds "
            "or with a unit (90, 90s, 30m, 2h, 1d)."
        )
    return seconds


def _text(option: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not value.strip():
        raise UsageError(f"{option}={value!r} is not allowed: it must not be empty.")
    return value


def _number(option: str, text: str | None, allowed: str) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 1:
        raise UsageError(f"{option}={text!r} is not allowed: {allowed}.")
    return value


def _url(text: str | None) -> str | None:
    text = _text("--url", text)
    problem = url_problem(text.strip().rstrip("/")) if text is not None else None
    if problem is not None:
        raise UsageError(f"--url={text!r} is not allowed: {problem}.")
    return text


def _gpus(text: str | None) -> int | None:
    if text is None:
        return None
    value = _whole("--gpus", text, 0)
    return value or None  # 0 means none, which is what leaving gpus unset asks for


def _whole(option: str, text: str | None, minimum: int) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise UsageError(f"{option}={text!r} is not allowed: a whole number of at least {minimum}.")
    return value


def _name(text: str | None) -> str | None:
    if text is None:
        return None
    if not NAME_PATTERN.match(text):
        raise UsageError(
            f"--name={text!r} is not allowed: session names use lower-case letters, digits "
            "and '-', and start and end with a letter or digit."
        )
    return text


def _environment(items: Sequence[str], environ: Mapping[str, str]) -> dict[str, str]:
    """`KEY=VALUE` split on the first `=` (values keep theirs); `KEY` alone is copied.

    Copying lets a secret reach the session without being typed on a command line that
    `ps` and the shell history show; the value is never printed.
    """
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not ENV_KEY_PATTERN.match(key):
            shown = key if sep else item
            raise UsageError(
                f"--env key {shown!r} is not allowed: KEY=VALUE with a KEY of letters, "
                "digits and '_', not starting with a digit."
            )
        if key in RESERVED_ENV:
            raise UsageError(
                f"--env key {key!r} is not allowed: {PROG} sets {' and '.join(RESERVED_ENV)} "
                "itself (1 to --replicas)."
            )
        if not sep:
            if key not in environ:
                raise UsageError(
                    f"--env {key} is not allowed: {key} is not set in this environment "
                    f"(export it, or give --env {key}=VALUE)."
                )
            value = environ[key]
        env[key] = value
    return env


def _state_dir(text: str | None) -> Path | None:
    if text is None:
        return None
    path = Path(text).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
        writable = os.access(path, os.W_OK)
    except OSError:
        writable = False
    if not writable:
        raise UsageError(
            f"--state-dir={text!r} is not allowed: a directory this machine can create and "
            "write, on a filesystem the sessions see too (e.g. under /arc)."
        )
    return path
