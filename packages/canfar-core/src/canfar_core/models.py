"""Pydantic models of what the Skaha API sends and accepts.

`Session` parses leniently because servers differ: null fields are omitted by current
servers and were the literal string `"<none>"` before 2025.1. `SessionSpec` is strict
because a request the server would mangle (an env value with `=`, a quote that breaks
its YAML) must be refused here, with a sentence, before anything is sent.
"""

from __future__ import annotations

import difflib
import math
import re
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from canfar_core.errors import SpecError
from canfar_core.limits import (
    MAX_FORM_BYTES,
    MAX_REQUEST_ENV_BYTES,
    ByteCount,
    check_env_string,
    kib,
)
from canfar_core.phase import Phase, split_status

SESSION_TYPES = ("headless", "notebook", "desktop", "carta", "contributed", "firefly")
NAME_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
NAME_MAX_LENGTH = 63
ENV_KEY_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LEGACY_NONE = ("<none>", "not-applicable", "")


def _none_if_legacy(value: object) -> object:
    return None if isinstance(value, str) and value.strip() in _LEGACY_NONE else value


def parse_java_time(value: object) -> datetime | None:
    """Parse Java's ISO-8601 forms, including `2026-07-01T12:00Z` (seconds omitted)."""
    value = _none_if_legacy(value)
    if value is None or isinstance(value, datetime):
        return value
    text = str(value).strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    return datetime.fromisoformat(text)


class Session(BaseModel):
    """One session as the server lists it."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")

    id: str
    userid: str | None = None
    run_as_uid: str | None = Field(default=None, alias="runAsUID")
    run_as_gid: str | None = Field(default=None, alias="runAsGID")
    supplemental_groups: list[int] = Field(default_factory=list, alias="supplementalGroups")
    appid: str | None = None
    image: str | None = None
    type: str = "headless"
    status: str = "Unknown"
    name: str | None = None
    start_time: datetime | None = Field(default=None, alias="startTime")
    expiry_time: datetime | None = Field(default=None, alias="expiryTime")
    connect_url: str | None = Field(default=None, alias="connectURL")
    requested_ram: str | None = Field(default=None, alias="requestedRAM")
    requested_cpu_cores: str | None = Field(default=None, alias="requestedCPUCores")
    requested_gpu_cores: str | None = Field(default=None, alias="requestedGPUCores")
    ram_in_use: str | None = Field(default=None, alias="ramInUse")
    cpu_cores_in_use: str | None = Field(default=None, alias="cpuCoresInUse")
    is_fixed_resources: bool | None = Field(default=None, alias="isFixedResources")

    @model_validator(mode="before")
    @classmethod
    def _legacy_nones(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: _none_if_legacy(v) for k, v in data.items()}
        return data

    @field_validator("start_time", "expiry_time", mode="before")
    @classmethod
    def _java_time(cls, value: object) -> datetime | None:
        return parse_java_time(value)

    @field_validator("type", mode="before")
    @classmethod
    def _default_type(cls, value: object) -> str:
        return str(value) if value else "headless"

    @field_validator("status", mode="before")
    @classmethod
    def _default_status(cls, value: object) -> str:
        return str(value) if value else "Unknown"

    @property
    def phase(self) -> Phase:
        """The normalised phase of `status`."""
        return Phase.parse(self.status)

    @property
    def status_reason(self) -> str | None:
        """The reason in a legacy `Failed (Reason)` status, if any."""
        return split_status(self.status)[1]


def parse_sessions(items: object) -> tuple[list[Session], list[str]]:
    """Parse a session listing leniently: (the sessions, a sentence per odd item).

    An item without a string `id` (a foreign object) is skipped. An item whose other
    fields do not parse (a `startTime` in another format, an epoch number) keeps its
    id, status and name, the odd fields dropped: a session that a tracker watches must
    not look vanished because one of its timestamps changed format.
    """
    sessions: list[Session] = []
    problems: list[str] = []
    if not isinstance(items, list):
        raise ValueError(f"a JSON list was expected, not {type(items).__name__}")
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            problems.append(f"item {index} has no session id ({_shorten(item)}); skipped")
            continue
        try:
            sessions.append(Session.model_validate(item))
            continue
        except ValidationError as exc:
            bad = {str(error["loc"][0]) for error in exc.errors() if error.get("loc")}
        kept = {k: v for k, v in item.items() if k not in bad and _field_name(k) not in bad}
        try:
            sessions.append(Session.model_validate(kept))
        except ValidationError:
            problems.append(f"session {item['id']} does not parse ({_shorten(item)}); skipped")
            continue
        fields = ", ".join(f"{k}={item[k]!r}"[:80] for k in sorted(bad) if k in item)
        problems.append(f"session {item['id']}: {fields or 'some fields'} not understood; ignored")
    return sessions, problems


def _field_name(alias: str) -> str:
    for name, info in Session.model_fields.items():
        if info.alias == alias:
            return name
    return alias


def _shorten(value: object, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Event(BaseModel):
    """One row of the `view=events` kubectl table."""

    type: str
    reason: str
    message: str
    first_time: str | None = None
    last_time: str | None = None


class Image(BaseModel):
    """An image the server's cache lists (`GET /v1/image`)."""

    id: str
    types: list[str] = Field(default_factory=list)
    digest: str | None = None


def parse_events(table: str) -> list[Event]:
    """Parse the kubectl table into events (`<none>` or a header alone gives [])."""
    rows: list[Event] = []
    lines = [line for line in table.splitlines() if line.strip()]
    if not lines or lines[0].strip() == "<none>":
        return rows
    for line in lines[1:]:
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) != 5:
            continue
        kind, reason, message, first, last = cells
        rows.append(
            Event(
                type=kind,
                reason=reason,
                message=message,
                first_time=None if first == "<none>" else first,
                last_time=None if last == "<none>" else last,
            )
        )
    return rows


def escape_dollars(value: str) -> str:
    """Escape `$` for Java's `replaceAll` replacement syntax (`$` becomes `\\$`)."""
    return value.replace("$", "\\$")


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _refuse_yaml_breakers(field: str, value: str) -> None:
    # The server splices these into YAML double quotes without escaping (reference §3.1.4).
    for char, what in (('"', "a double quote"), ("\\", "a backslash")):
        if char in value:
            raise SpecError(
                field,
                value,
                f"it contains {what}, which breaks the server's YAML; "
                "carry the command through canfar_core.launch instead",
            )


class SessionSpec(BaseModel):
    """A validated request for one session.

    Validation mirrors what the server does (and what it silently mangles), so a bad
    request fails here with one sentence instead of as a 400 or a dropped variable.
    `env` values must survive the server's `KEY=VALUE` split: use
    `canfar_core.launch.envelope` to carry arbitrary values, argv and a working directory.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    image: str
    kind: str = "headless"
    cores: float | None = None
    ram: float | None = None
    gpus: int | None = None
    cmd: str | None = None
    args: str | None = None
    env: dict[str, str] = Field(default_factory=dict)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            # A pydantic report is several lines about "input" and "type"; the caller
            # gets the same one sentence as for every other refusal.
            raise _spec_error(exc, data) from None
        # Checked after construction so SpecError reaches the caller as itself
        # (pydantic would wrap a ValueError raised inside a validator).
        self._check()

    def _check(self) -> None:
        if not self.name:
            raise SpecError("name", self.name, "a session needs a name")
        if len(self.name) > NAME_MAX_LENGTH:
            raise SpecError("name", self.name, f"names are at most {NAME_MAX_LENGTH} characters")
        if not NAME_PATTERN.match(self.name):
            raise SpecError(
                "name",
                self.name,
                "names use lower-case letters, digits and '-', and start and end with a "
                "letter or digit",
            )
        if not self.image.strip():
            raise SpecError("image", self.image, "an image reference is required")
        if self.kind not in SESSION_TYPES:
            raise SpecError("kind", self.kind, f"one of {', '.join(SESSION_TYPES)}")
        for field, value in (("cores", self.cores), ("ram", self.ram)):
            if value is not None and not math.isfinite(value):
                raise SpecError(field, value, "a finite number of at least 1")
            if value is not None and value < 1:
                raise SpecError(field, value, "the value must be at least 1")
        if self.gpus is not None and self.gpus < 1:
            raise SpecError("gpus", self.gpus, "leave gpus unset for none; otherwise >= 1")
        if self.kind != "headless" and (self.cmd or self.args or self.env):
            raise SpecError("kind", self.kind, "cmd, args and env apply to headless only")
        for field, text in (("cmd", self.cmd), ("args", self.args), ("image", self.image)):
            if text is not None:
                _refuse_yaml_breakers(field, text)
        for key, value in self.env.items():
            if not ENV_KEY_PATTERN.match(key):
                raise SpecError("env key", key, "letters, digits and '_' only")
            if value == "" or "=" in value:
                raise SpecError(
                    f"env[{key}]",
                    value,
                    "the server silently drops empty values and values containing '='; "
                    "carry them through canfar_core.launch instead",
                )
            _refuse_yaml_breakers(f"env[{key}]", value)
        self._check_size()

    def _check_size(self) -> None:
        """Refuse what the real server, Kubernetes or the container's exec would reject.

        None of them says so usefully (reference §7), so the limits of
        `canfar_core.limits` are checked here, before anything is sent.
        """
        total = sum(
            check_env_string(key, value, "the session could not start with it")
            for key, value in self.env.items()
        )
        if total > MAX_REQUEST_ENV_BYTES:
            raise SpecError(
                "env",
                ByteCount(total),
                f"CANFAR holds a session's environment to about {kib(MAX_REQUEST_ENV_BYTES)} "
                "(a Kubernetes object is at most about 1.5 MiB); carry a large script "
                "through canfar_core.launch.envelope with a state_dir",
            )
        form = len(urlencode(self.to_params()))
        if form > MAX_FORM_BYTES:
            raise SpecError(
                "request",
                ByteCount(form),
                f"the server reads at most {kib(MAX_FORM_BYTES)} of form body (past it, it "
                "drops every parameter); make the request smaller",
            )

    def with_env(self, extra: dict[str, str]) -> SessionSpec:
        """A copy with more environment entries (later keys override)."""
        return SessionSpec(**{**self.model_dump(), "env": {**self.env, **extra}})

    def with_name(self, name: str) -> SessionSpec:
        """A copy under another name (validated)."""
        return SessionSpec(**{**self.model_dump(), "name": name})

    def to_params(self) -> list[tuple[str, str]]:
        """The form parameters of `POST /v1/session`, in the order the server reads them.

        `cmd`, `args` and `env` values are escaped for the server's template splice: it
        inserts them with Java's `String.replaceAll`, where `$` starts a group reference
        (`$(VAR)` fails with 400 "Illegal group reference") and `\\$` is a literal `$`.
        So the spec holds what Kubernetes should receive, and the wire carries `\\$`.
        """
        params: list[tuple[str, str]] = [
            ("name", self.name),
            ("image", self.image),
            ("type", self.kind),
        ]
        if self.cores is not None:
            params.append(("cores", _format_number(self.cores)))
        if self.ram is not None:
            params.append(("ram", _format_number(self.ram)))
        if self.gpus is not None:
            params.append(("gpus", str(self.gpus)))
        if self.cmd is not None:
            params.append(("cmd", escape_dollars(self.cmd)))
        if self.args is not None:
            params.append(("args", escape_dollars(self.args)))
        params.extend(("env", f"{key}={escape_dollars(value)}") for key, value in self.env.items())
        return params


# What each SessionSpec field takes, for refusals of a value of the wrong type.
_SPEC_TAKES = {
    "name": "a session name (lower-case letters, digits and '-')",
    "image": "an image reference such as images.canfar.net/<project>/<name>:<tag>",
    "kind": f"one of {', '.join(SESSION_TYPES)}",
    "cores": "a number of cores of at least 1",
    "ram": "a number of GiB of at least 1",
    "gpus": "a whole number of GPUs of at least 1, or None for none",
    "cmd": "a string",
    "args": "a string",
    "env": "a mapping of variable names to string values",
}


# The refusal of a missing field, worded as for an empty one.
_SPEC_REQUIRED = {"name": "a session needs a name", "image": "an image reference is required"}


def _spec_error(exc: ValidationError, data: dict[str, Any]) -> SpecError:
    """The first problem of a pydantic report, as the one-sentence SpecError."""
    error = exc.errors()[0]
    loc = error.get("loc") or ("?",)
    field = str(loc[0])
    if error["type"] == "extra_forbidden":
        fields = list(SessionSpec.model_fields)
        close = difflib.get_close_matches(field, fields, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return SpecError(field, data.get(field), f"SessionSpec takes {', '.join(fields)}{hint}")
    if error["type"] == "missing":
        return SpecError(field, None, _SPEC_REQUIRED.get(field, "a value is required"))
    if field == "env" and len(loc) > 1:
        key = loc[1]
        return SpecError(f"env[{key}]", error.get("input"), "environment values are strings")
    return SpecError(field, error.get("input"), _SPEC_TAKES.get(field, error["msg"]))
