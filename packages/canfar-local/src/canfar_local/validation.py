"""Validation of ``POST /v1/session`` in the server's order with its exact sentences.

The order matters because a request with several problems gets only the first error
(reference §3.1.2): image present; type resolved; image registry prefix; type valid;
cores; ram; name present; name pattern; interactive cap; gpus.  Later steps (registry auth,
the YAML bundle, ``kubectl create``) run when the session is built.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .config import PlatformConfig
from .errors import BadRequest
from .params import Params

SESSION_TYPES = (
    "carta",
    "contributed",
    "desktop",
    "notebook",
    "headless",
    "desktop-app",
    "firefly",
)
NAME_PATTERN = re.compile(r"[A-Za-z0-9\-]+")
_JAVA_DOUBLE = re.compile(
    r"[+-]?(NaN|Infinity|((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)|"
    r"(0[xX]([0-9a-fA-F]+\.?|[0-9a-fA-F]*\.[0-9a-fA-F]+)[pP][+-]?\d+))[fFdD]?"
)
_JAVA_INT = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class CreateRequest:
    """A validated request: what to run and with which resources."""

    type: str
    image: str
    name: str
    cores_request: float
    cores_limit: float
    ram_request_gib: float
    ram_limit_gib: float
    fixed: bool
    gpus: int
    cmd: str | None
    args: str | None
    env: list[str]
    registry_auth: tuple[str, str] | None


def has_text(value: str | None) -> bool:
    """cadc-util ``StringUtil.hasText``: not null and not only whitespace."""
    return value is not None and value.strip() != ""


def java_parse_double(text: str) -> float:
    """``Double.valueOf``: Java's literal syntax (surrounding whitespace allowed)."""
    stripped = text.strip(" \t\n\r\x0b\x0c\x00")
    if not _JAVA_DOUBLE.fullmatch(stripped):
        raise ValueError(text)
    body = stripped.rstrip("fFdD") if not stripped.endswith("Infinity") else stripped
    sign = -1.0 if body.startswith("-") else 1.0
    core = body.lstrip("+-")
    if core == "NaN":
        return math.nan
    if core == "Infinity":
        return sign * math.inf
    if core[:2].lower() == "0x":
        return sign * float.fromhex(core)
    return sign * float(core)


def java_int(value: float) -> int:
    """A Java ``(int)`` cast of a double: NaN is 0, out-of-range values saturate."""
    if math.isnan(value):
        return 0
    if value >= 2**31 - 1:
        return 2**31 - 1
    if value <= -(2**31):
        return -(2**31)
    return int(value)


def requested_type(params: Params) -> str:
    """``getRequestedSessionType``: trimmed, lower-cased, headless when absent or blank."""
    value = params.get("type")
    if not has_text(value):
        return "headless"
    assert value is not None
    return value.strip().lower()


def _resource(params: Params, name: str, options: Sequence[int]) -> float | None:
    value = params.get(name)
    if not has_text(value):
        return None
    assert value is not None
    try:
        number = java_parse_double(value)
    except ValueError:
        raise BadRequest(f"Invalid value for '{name}': {value}") from None
    if java_int(number) not in options:
        raise BadRequest(f"Invalid value for '{name}': {value}")
    return number


def registry_credentials(header: str | None) -> tuple[str, str] | None:
    """Decode ``x-skaha-registry-auth`` (base64 ``username:secret``)."""
    if header is None:
        return None
    try:
        decoded = base64.b64decode(header.strip(), validate=False).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise BadRequest("Invalid input.  Must be in form of username:secret") from None
    parts = decoded.split(":")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise BadRequest("Invalid input.  Must be in form of username:secret")
    return parts[0], parts[1]


def validate_create(
    params: Params,
    config: PlatformConfig,
    username: str,
    active_interactive: Callable[[], int],
    registry_auth_header: str | None,
) -> CreateRequest:
    """Check a create request in the server's order; raise the server's first error."""
    image = params.get("image")
    if image is None:
        raise BadRequest("Missing parameter 'image'")
    session_type = requested_type(params)
    if not has_text(image):
        raise BadRequest("image is required")
    if not any(image.startswith(host) for host in config.registries):
        hosts = ", ".join(config.registries)
        raise BadRequest(f"session image '{image}' must come from one of [{hosts}]")
    if session_type not in SESSION_TYPES:
        raise BadRequest(f"Invalid session type: {params.get('type')}")

    cores = _resource(params, "cores", config.cores_allowed())
    ram = _resource(params, "ram", config.ram_allowed())

    name = params.get("name")
    if not has_text(name):
        raise BadRequest("Missing parameter 'name'")
    assert name is not None
    if not NAME_PATTERN.fullmatch(name):
        raise BadRequest("name can only contain alpha-numeric chars and '-'")

    if session_type != "headless":
        limit = config.max_interactive_sessions
        if active_interactive() >= limit:
            raise BadRequest(f"User {username} has reached the maximum of {limit} active sessions.")

    gpus = 0
    gpus_param = params.get("gpus")
    if has_text(gpus_param):
        assert gpus_param is not None
        if not _JAVA_INT.fullmatch(gpus_param) or int(gpus_param) not in range(
            1, config.max_gpus + 1
        ):
            raise BadRequest(f"Invalid value for 'gpus': {gpus_param}")
        gpus = int(gpus_param)

    auth: tuple[str, str] | None = None
    if config.public_images is not None and image not in config.public_images:
        if registry_auth_header is None:
            raise BadRequest(
                "No authentication provided for unknown or private image.  Use "
                "x-skaha-registry-auth request header with base64Encode(username:secret)."
            )
        auth = registry_credentials(registry_auth_header)

    return CreateRequest(
        type=session_type,
        image=image,
        name=name,
        cores_request=cores if cores is not None else float(config.default_request_cores),
        cores_limit=cores if cores is not None else float(config.default_limit_cores),
        ram_request_gib=ram if ram is not None else float(config.default_request_ram_gib),
        ram_limit_gib=ram if ram is not None else float(config.default_limit_ram_gib),
        fixed=ram is not None,
        gpus=gpus,
        cmd=params.get("cmd"),
        args=params.get("args"),
        env=params.get_all("env"),
        registry_auth=auth,
    )
