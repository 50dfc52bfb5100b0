"""Session names and log locations.

A session name becomes the pod's hostname (lower-case, `[a-z0-9-]`, at most 63
characters) and is the only handle that survives an ambiguous create, so every attempt
of every job gets its own name: `smk-<run id>-<rule>-<jobid>-<attempt>`. The run id lets
a person (or `canfar ps`) see which sessions belong to which Snakemake invocation.
Snakemake's own `--jobname` is not used: its default contains dots.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from canfar_core import NAME_MAX_LENGTH, random_token, sanitize

RUN_ID_LENGTH = 6
RULE_CHARS = 24
_UNSAFE_PATH = re.compile(r"[^A-Za-z0-9._=+-]+")


def new_run_id() -> str:
    """A short random id for one Snakemake invocation."""
    return random_token(RUN_ID_LENGTH)


def run_prefix(run_id: str) -> str:
    """The name prefix shared by every session of a run."""
    return f"smk-{run_id}-"


def short_jobid(jobid: int | str) -> str:
    """A job id fit for a name: group jobs have UUIDs, cut to their first 8 hex digits."""
    text = str(jobid)
    return text if text.isdigit() else sanitize(text.replace("-", ""), fallback="g")[:8]


def session_name(run_id: str, rule: str, jobid: int | str, attempt: int) -> str:
    """The session name of one attempt of one job."""
    tail = f"-{short_jobid(jobid)}-{attempt}"
    room = NAME_MAX_LENGTH - len(run_prefix(run_id)) - len(tail)
    stem = sanitize(rule, fallback="job")[: min(RULE_CHARS, room)].strip("-") or "job"
    return f"{run_prefix(run_id)}{stem}{tail}"


def _path_part(text: str) -> str:
    cleaned = _UNSAFE_PATH.sub("_", text).strip("._") or "_"
    return cleaned[:120]


def wildcards_part(wildcards: Mapping[str, object] | None) -> str | None:
    """A single directory name for a job's wildcards, or None without wildcards.

    Values may contain `/` (a wildcard such as `somedir2/subdir`); they are flattened so
    each job's logs stay in one directory.
    """
    if not wildcards:
        return None
    return _path_part(",".join(f"{key}={value}" for key, value in wildcards.items()))


def job_log_path(
    logdir: Path,
    rule: str,
    wildcards: Mapping[str, object] | None,
    jobid: int | str,
    session_id: str,
) -> Path:
    """`<logdir>/<rule>/<wildcards>/<jobid>-<session id>.log`."""
    folder = logdir / _path_part(rule)
    part = wildcards_part(wildcards)
    if part is not None:
        folder = folder / part
    return folder / f"{short_jobid(jobid)}-{session_id}.log"
