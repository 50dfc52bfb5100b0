"""What makes a running session "the same job" as the one this run would submit.

After a killed Snakemake is restarted, adopting a session that still runs the *old*
code would keep the old code's output and never re-run the job: the session's
command only names the targets (`--target-jobs`), and the Snakefile is read inside the
session when it starts. So a session is adopted only when the job's fingerprint,
recorded in the run ledger when it was created, equals this run's: the rule's code
(its shell command, `run:` block or script file contents, as Snakemake's own code
rerun trigger reads them), its params, inputs and outputs, and the session request
(image, cores, RAM, GPUs, runtime). Run-specific details (the run id in the session
name, Snakemake's temporary directory) are left out, so an unchanged job matches.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from snakemake_executor_plugin_canfar.resources import SessionRequest

PLAIN_TYPES = (str, int, float, bool, type(None))


def job_fingerprint(job: Any, request: SessionRequest) -> str:
    """A stable hash of a (group) job's code, inputs, outputs, params and request."""
    members = list(getattr(job, "jobs", None) or [job]) if job.is_group() else [job]
    parts = {
        "request": [
            request.image,
            request.cores,
            request.ram,
            request.gpus,
            request.runtime_minutes,
        ],
        "jobs": sorted((_job_part(member) for member in members), key=json.dumps),
    }
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _job_part(job: Any) -> dict[str, Any]:
    rule = getattr(job, "rule", None)
    return {
        "rule": str(getattr(rule, "name", getattr(job, "name", ""))),
        "code": _code(rule),
        "input": sorted(str(f) for f in getattr(job, "input", ()) or ()),
        "output": sorted(str(f) for f in getattr(job, "output", ()) or ()),
        "params": _params(job),
    }


def _code(rule: Any) -> str | None:
    """The rule's code: its shell command, its `run:` source, or its script's contents."""
    if rule is None:
        return None
    for attribute in ("shellcmd", "run_func_src"):
        value = getattr(rule, attribute, None)
        if value:
            return str(value)
    script = getattr(rule, "script", None)
    if script:
        path = Path(str(script))
        try:
            return f"script {script} sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}"
        except OSError:
            return f"script {script}"
    for attribute in ("wrapper", "notebook"):
        value = getattr(rule, attribute, None)
        if value:
            return f"{attribute} {value}"
    return None


def _params(job: Any) -> list[str]:
    """Params that have a stable text form (objects' reprs carry memory addresses)."""
    params = getattr(job, "params", None)
    if params is None:
        return []
    try:
        items = list(params.items()) if hasattr(params, "items") else list(enumerate(params))
    except TypeError:
        return []
    shown = []
    for key, value in items:
        if isinstance(value, PLAIN_TYPES) or (
            isinstance(value, list | tuple) and all(isinstance(v, PLAIN_TYPES) for v in value)
        ):
            shown.append(f"{key}={value!r}")
        else:
            shown.append(f"{key}=<{type(value).__name__}>")
    return sorted(shown)
