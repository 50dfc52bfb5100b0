"""The size limits a session request meets on its way, checked before anything is sent.

None of these is reported by the API in a useful way (reference §7): past Tomcat's form
limit the server drops *every* parameter and answers a misleading 400 `Missing parameter
'image'`; past the Kubernetes object limit the create fails inside the server; and an
environment string past Linux's limit makes the container's exec fail with `Argument list
too long` (exit 126) after the session was queued and started. So the client refuses
such a request itself, in one sentence naming what is too large and what to do instead.
"""

from __future__ import annotations

from canfar_core.errors import SpecError

# Linux: one argv or environment string, terminating NUL included (MAX_ARG_STRLEN, 32 pages).
MAX_ARG_STRLEN = 128 * 1024
# Linux: argv plus environment of one exec, a quarter of the usual 8 MiB stack limit.
MAX_EXEC_BYTES = 2 * 1024 * 1024
# Room the command's exec leaves for what the container adds (PATH, HOME, skaha_*, ...).
CONTAINER_ENV_ALLOWANCE = 64 * 1024
# Tomcat's default maxPostSize: the form body of `POST /session`.
MAX_FORM_BYTES = 2 * 1024 * 1024
# Kubernetes (etcd) object size, about 1.5 MiB; the Job, its Pod and the Kueue Workload
# each carry the environment, and the rest of the Job spec needs room too.
MAX_OBJECT_BYTES = 1536 * 1024
JOB_TEMPLATE_ALLOWANCE = 64 * 1024
MAX_REQUEST_ENV_BYTES = MAX_OBJECT_BYTES - JOB_TEMPLATE_ALLOWANCE


class ByteCount(int):
    """A size that prints as `123,456 bytes` in a refusal (never the value itself)."""

    def __repr__(self) -> str:
        return f"{int(self):,} bytes"


def env_string_bytes(key: str, value: str) -> int:
    """What `KEY=value` costs in a process's environment (the NUL included)."""
    return len(key.encode()) + 1 + len(value.encode()) + 1


def check_env_string(key: str, value: str, hint: str) -> int:
    """The size of `KEY=value`; SpecError (naming the key and `hint`) when over the limit."""
    size = env_string_bytes(key, value)
    if size > MAX_ARG_STRLEN:
        raise SpecError(
            f"env[{key}]",
            ByteCount(size),
            f"Linux limits one environment string to {kib(MAX_ARG_STRLEN)} "
            f"(MAX_ARG_STRLEN); {hint}",
        )
    return size


def kib(count: int) -> str:
    """`128 KiB`, `1.4 MiB`: a limit as a user reads it."""
    if count >= 1024 * 1024:
        return f"{count / (1024 * 1024):.1f} MiB"
    return f"{count // 1024} KiB"
