"""The job variables of a `canfar` work pool: its form in the UI and its JSON schema.

Names and types are the pool's public interface: `image` is called so because
`flow.deploy(image=...)` only works with pools that have a variable of that name, and
the resource names follow the Skaha API (`cores`, `ram` in GiB, `gpus`).

Prefect's schema drops `additionalProperties`, so a misspelt variable (`memory` for
`ram`) is silently ignored everywhere. This schema names the allowed variables in
`propertyNames`, so the Prefect server refuses a deployment or flow run that uses
another name, with a message listing the known ones; the worker checks again
(`check_variable_names`) for pools whose template predates this.
"""

from __future__ import annotations

import difflib
import posixpath
from collections.abc import Iterable, Mapping
from typing import Any

from canfar_core import SpecError
from prefect.workers.base import BaseVariables
from pydantic import Field

from prefect_canfar.credentials import CanfarCredentials, CanfarRegistryCredentials

DEFAULT_PENDING_TIMEOUT_SECONDS = 900
# Variables whose dotted form (`env.FOO`) Prefect expands into a nested value.
DICT_VARIABLES = ("env", "labels")
# The order of the pool's form: what to run, then where, then how to watch it.
FORM_ORDER = (
    "image",
    "cores",
    "ram",
    "gpus",
    "env",
    "name",
    "command",
    "url",
    "credentials",
    "registry_credentials",
    "pending_timeout_seconds",
    "job_timeout_seconds",
    "stream_output",
    "delete_session_on_completion",
    "state_dir",
    "labels",
)
# Names users reach for first, mapped to the variable they mean.
SYNONYMS = {
    "memory": "ram",
    "mem": "ram",
    "memory_gb": "ram",
    "cpu": "cores",
    "cpus": "cores",
    "gpu": "gpus",
    "image_name": "image",
    "timeout": "job_timeout_seconds",
    "timeout_seconds": "job_timeout_seconds",
}


class CanfarWorkerVariables(BaseVariables):
    """What a deployment or flow run may set for its CANFAR session."""

    image: str = Field(
        title="Image",
        description="The session's container image, e.g. "
        "images.canfar.net/<project>/<name>:<tag>. It must provide Python with prefect "
        "installed (the session runs `python -m prefect.engine`).",
        examples=["images.canfar.net/skaha/astroml:latest"],
    )
    cores: int = Field(
        default=1,
        ge=1,
        title="Cores",
        description="CPU cores requested for the session.",
    )
    ram: int = Field(
        default=4,
        ge=1,
        title="RAM (GiB)",
        description="Memory requested for the session, in GiB; a session that uses more is killed.",
    )
    gpus: int | None = Field(
        default=None,
        ge=0,
        title="GPUs",
        description="GPUs requested for the session; empty or 0 for none.",
    )
    name: str | None = Field(
        default=None,
        title="Session name",
        description="Template of the session name, e.g. `reduce-{{ ctx.flow_run.name }}`; "
        "defaults to `prefect-<flow run name>`. It is lower-cased, reduced to letters, "
        "digits and '-', and given a random suffix so every attempt is unique.",
    )
    command: str | None = Field(
        default=None,
        title="Command",
        description="The shell command the session runs; leave empty for the Prefect "
        "engine alone, `python -m prefect.engine` (one interpreter per flow run).",
    )
    url: str | None = Field(
        default=None,
        title="CANFAR API URL",
        description="The Skaha API URL, e.g. https://ws-uv.canfar.net/skaha/v1, or `local` "
        "to run sessions on the worker's machine through the embedded platform. Empty: "
        "the credentials block's URL, else the worker's CANFAR_URL or `canfar login` "
        "configuration.",
    )
    credentials: CanfarCredentials | None = Field(
        default=None,
        title="CANFAR credentials",
        description="A CANFAR Credentials block (token or certificate, and server URL); "
        "empty: the worker's own CANFAR login.",
    )
    registry_credentials: CanfarRegistryCredentials | None = Field(
        default=None,
        title="Registry credentials",
        description="A CANFAR Registry Credentials block, needed for private images.",
    )
    pending_timeout_seconds: int | None = Field(
        default=DEFAULT_PENDING_TIMEOUT_SECONDS,
        gt=0,
        title="Pending timeout (seconds)",
        description="How long a session may stay Pending (queued, or an image that "
        "cannot be pulled) before it is deleted and the run crashes with its events; "
        "empty for no limit.",
    )
    job_timeout_seconds: int | None = Field(
        default=None,
        gt=0,
        title="Job timeout (seconds)",
        description="Wall-clock limit of the command; when exceeded the session is "
        "stopped and deleted and the run crashes with status 124. Empty for no limit.",
    )
    stream_output: bool = Field(
        default=False,
        title="Stream output",
        description="Print the session's output to the worker's standard output while it runs.",
    )
    delete_session_on_completion: bool = Field(
        default=False,
        title="Delete session on completion",
        description="Delete the session when it ends instead of leaving it listed (CANFAR "
        "removes finished sessions after an hour anyway).",
    )
    state_dir: str | None = Field(
        default=None,
        title="State directory",
        description="A directory both the worker and the sessions can read and write "
        "(e.g. under /arc/home/<user>); each session's output and exit code are kept "
        "there, so they survive the session's removal and cost no API requests; the "
        "Prefect API key is handed over there in a 0600 file the session deletes, instead "
        "of in the session's environment.",
    )

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Prefect's schema, plus `propertyNames` so unknown variables are refused."""
        schema = super().model_json_schema(*args, **kwargs)
        properties = schema.get("properties", {})
        ordered = [name for name in FORM_ORDER if name in properties]
        ordered += [name for name in properties if name not in ordered]
        schema["properties"] = {name: properties[name] for name in ordered}
        schema["propertyNames"] = property_names_schema(schema.get("properties", {}))
        return schema


def property_names_schema(properties: Iterable[str]) -> dict[str, Any]:
    """Allow the known names and Prefect's dotted `env.KEY` / `labels.KEY` overrides."""
    dotted = "|".join(DICT_VARIABLES)
    return {
        "if": {"pattern": rf"^({dotted})\."},
        "then": True,
        "else": {"enum": sorted(properties)},
    }


def unknown_variables(values: Mapping[str, Any], known: Iterable[str]) -> list[str]:
    """The names in `values` that are not job variables (dotted names by their head)."""
    allowed = set(known)
    unknown = []
    for key in values:
        head, dot, _ = key.partition(".")
        if key in allowed or (dot and head in DICT_VARIABLES and head in allowed):
            continue
        unknown.append(key)
    return unknown


def check_variable_names(values: Mapping[str, Any], known: Iterable[str]) -> None:
    """Raise ValueError naming each unknown job variable and listing the known ones.

    Then refuse the values the pool's schema lets through but that cannot work
    (`check_variable_values`): this is the worker's one look at the job variables
    before it builds the session.
    """
    known = sorted(known)
    unknown = unknown_variables(values, known)
    if not unknown:
        check_variable_values(values)
        return
    hints = []
    for name in unknown:
        guess = SYNONYMS.get(name.lower())
        if guess is None or guess not in known:
            close = difflib.get_close_matches(name, known, n=1)
            guess = close[0] if close else None
        hints.append(f"{name!r} (did you mean {guess!r}?)" if guess else repr(name))
    noun = "variable" if len(unknown) == 1 else "variables"
    raise ValueError(
        f"Unknown job {noun} {', '.join(hints)} for a CANFAR work pool; the known job "
        f"variables are {', '.join(known)}."
    )


def check_variable_values(values: Mapping[str, Any]) -> None:
    """Raise SpecError for job variable values that are well-typed but cannot work.

    `state_dir` must be absolute: the worker resolves a relative path against its own
    working directory and the session against its home, so each would look in a
    different place and the session's output and exit code would never be found.
    Templated values (`{{ ... }}`) are left alone: only Prefect's rendering knows them.
    """
    state_dir = values.get("state_dir")
    if not isinstance(state_dir, str) or not state_dir or "{{" in state_dir:
        return
    if not posixpath.isabs(state_dir):
        raise SpecError(
            "state_dir",
            state_dir,
            "use an absolute path that both the worker and the sessions can read and "
            "write, e.g. /arc/home/<user>/prefect-state",
        )
