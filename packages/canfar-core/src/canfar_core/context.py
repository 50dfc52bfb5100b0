"""The server's resource options (`GET /v1/context`) and the choice of allowed values.

Both plugins translate a workflow's request (threads, mem_mb) into the smallest value
the server accepts at or above it; that rule lives here once.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, field_validator

from canfar_core.errors import SpecError


class ResourceOptions(BaseModel):
    """One resource's defaults and allowed values, as `/context` reports them."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")

    default: float | None = None
    default_request: float | None = Field(default=None, alias="defaultRequest")
    default_limit: float | None = Field(default=None, alias="defaultLimit")
    options: list[int] = Field(default_factory=list)

    @field_validator("options", mode="before")
    @classmethod
    def _sorted_ints(cls, value: object) -> list[int]:
        return sorted(int(v) for v in (value or []))  # type: ignore[union-attr]

    @property
    def maximum(self) -> int | None:
        """The largest allowed value, or None when nothing is allowed."""
        return self.options[-1] if self.options else None


class Context(BaseModel):
    """Resource options of a Skaha server (cores, RAM in GiB, GPUs)."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")

    cores: ResourceOptions = Field(default_factory=ResourceOptions)
    memory_gb: ResourceOptions = Field(default_factory=ResourceOptions, alias="memoryGB")
    gpus: ResourceOptions = Field(default_factory=ResourceOptions)
    max_interactive_sessions: int | None = Field(default=None, alias="maxInteractiveSessions")

    @field_validator("max_interactive_sessions", mode="before")
    @classmethod
    def _int_or_string(cls, value: object) -> int | None:
        # File-mode servers render this as a JSON string ("5"); LimitRange mode as an int.
        return None if value in (None, "") else int(value)  # type: ignore[call-overload]

    def options_for(self, resource: str) -> ResourceOptions:
        """The options of `cores`, `ram` or `gpus`."""
        return {"cores": self.cores, "ram": self.memory_gb, "gpus": self.gpus}[resource]

    def smallest_allowed(self, resource: str, at_least: float, *, field: str | None = None) -> int:
        """Return the smallest allowed value of `resource` that is >= `at_least`.

        Raises SpecError naming `field` (default: the resource) and the allowed maximum
        when the request is above every option.
        """
        label = field or resource
        at_least = _number(label, at_least)
        opts = self.options_for(resource).options
        if not opts:
            raise SpecError(label, at_least, f"this server offers no {resource} options")
        for value in opts:
            if value >= at_least:
                return value
        unit = " GiB" if resource == "ram" else ""
        raise SpecError(label, at_least, f"the largest {resource} allowed is {opts[-1]}{unit}")

    def check(self, resource: str, value: float) -> None:
        """Validate a value exactly as the server will: `int(value)` must be an option."""
        value = _number(resource, value)
        opts = self.options_for(resource).options
        if value <= 0 or int(value) not in opts:
            shown = _describe(opts)
            raise SpecError(resource, value, f"allowed values are {shown}")


def _number(field: str, value: object) -> float:
    """`value` as a finite number, or SpecError: a user's "abc" must not become a
    ValueError from `int()` or a TypeError from a comparison."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise SpecError(field, value, "a number")
    try:
        number = float(value)
    except ValueError:
        raise SpecError(field, value, "a number") from None
    if not math.isfinite(number):
        raise SpecError(field, value, "a finite number")
    return number


def _describe(options: list[int]) -> str:
    if not options:
        return "none (this server offers no such resource)"
    if options == list(range(options[0], options[-1] + 1)) and len(options) > 3:
        return f"integers {options[0]} to {options[-1]}"
    return ", ".join(str(o) for o in options)
