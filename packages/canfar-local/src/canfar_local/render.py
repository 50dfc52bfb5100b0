"""Byte-exact renderings of what the Java server writes.

Gson (pretty, HTML escaping off, nulls omitted) for sessions and stats; org.json (compact)
for ``/context`` and ``/repository``; ``OffsetDateTime``/``Instant`` ``toString`` for times;
Java ``%.2f``/``%.3f`` (half-up on the shortest decimal) for quantities; the kubectl
custom-columns table for events; VOSI XML for capabilities and availability.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from typing import Any

from .config import PlatformConfig
from .store import FINISHED, LAUNCHED, PULL_BACKOFF, QUEUED, RUNNING, SessionRecord

GIB = 1024**3


def java_offset_datetime(epoch_seconds: int) -> str:
    """``OffsetDateTime.toString()`` in UTC: seconds are omitted when they are zero."""
    tm = time.gmtime(epoch_seconds)
    text = time.strftime("%Y-%m-%dT%H:%M", tm)
    if tm.tm_sec:
        text += f":{tm.tm_sec:02d}"
    return text + "Z"


def java_instant(epoch_seconds: int) -> str:
    """``Instant.toString()``: seconds are always written."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_seconds))


def rfc3339(epoch_seconds: float) -> str:
    """Kubernetes' metav1.Time as kubectl prints it."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(epoch_seconds)))


def java_fixed(value: float, decimals: int) -> str:
    """Java ``String.format("%.Nf")``: half-up rounding of the shortest decimal form."""
    quantum = Decimal(1).scaleb(-decimals)
    return str(Decimal(repr(float(value))).quantize(quantum, rounding=ROUND_HALF_UP))


def decimal_format(value: float) -> str:
    """Java ``new DecimalFormat("#.###")`` (half-even, no trailing zeros)."""
    quantized = Decimal(repr(float(value))).quantize(Decimal("0.001"), rounding=ROUND_HALF_EVEN)
    text = format(quantized, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def gson(value: Any) -> str:
    """Gson pretty printing with HTML escaping disabled (nulls already removed)."""
    text = json.dumps(value, indent=2, ensure_ascii=False)
    # Gson escapes the two JavaScript line terminators even with HTML escaping off.
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def compact_json(value: Any) -> str:
    """org.json ``toString()``: compact, no spaces."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def memory_gb(byte_count: float) -> str:
    """A memory quantity as decimal GB with two decimals (``8Gi`` gives ``8.59``)."""
    return java_fixed(byte_count / 1e9, 2)


def cpu_cores(cores: float) -> str:
    """A CPU quantity as the server prints it: whole cores bare, millicores with 3 decimals."""
    if float(cores).is_integer():
        return str(int(cores))
    millis = math.ceil(round(cores * 1000, 6))
    return java_fixed(millis / 1000, 3)


def job_name(record: SessionRecord) -> str:
    """``skaha-<type>-<user>-<id>`` with characters Kubernetes rejects replaced by ``-``."""
    user = "".join(c if c.isascii() and (c.isalnum() or c == "-") else "-" for c in record.userid)
    return f"skaha-{record.type}-{user}-{record.id}".lower()


def pod_name(record: SessionRecord) -> str:
    """A stable pod name: the Job name plus a 5-character suffix derived from the id."""
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    seed = sum((i + 1) * ord(c) for i, c in enumerate(record.id))
    suffix = ""
    for _ in range(5):
        suffix += alphabet[seed % len(alphabet)]
        seed //= len(alphabet)
    return f"{job_name(record)}-{suffix}"


def connect_url(record: SessionRecord, config: PlatformConfig, sessions_host: str) -> str:
    """``SessionDAO.getConnectURL``: empty for headless, per-type URL for interactive kinds."""
    sid = record.id
    base = f"https://{sessions_host}/session"
    if record.type == "desktop":
        return f"{base}/desktop/{sid}/?password={sid}&path=session/desktop/{sid}/"
    if record.type == "carta":
        return f"{base}/carta/{sid}/"
    if record.type == "notebook":
        return f"{base}/notebook/{sid}/lab/tree/{config.home_base}/{record.userid}?token={sid}"
    if record.type == "contributed":
        return f"{base}/contrib/{sid}/"
    if record.type == "firefly":
        return f"{base}/firefly/{sid}/firefly/"
    return ""


def session_object(
    record: SessionRecord, config: PlatformConfig, sessions_host: str
) -> dict[str, Any]:
    """The Session JSON object, fields in Gson declaration order, nulls omitted."""
    obj: dict[str, Any] = {
        "id": record.id,
        "userid": record.userid,
        "runAsUID": str(config.uid),
        "runAsGID": str(config.uid),
        "supplementalGroups": [],
        "image": record.image,
        "type": record.type,
        "status": record.status,
        "name": record.name,
    }
    if record.start_time is not None:
        obj["startTime"] = java_offset_datetime(record.start_time)
        obj["expiryTime"] = java_instant(record.start_time + record.deadline_seconds)
    obj["connectURL"] = connect_url(record, config, sessions_host)
    if record.fixed:
        obj["requestedRAM"] = memory_gb(record.ram_request_gib * GIB)
        obj["requestedCPUCores"] = cpu_cores(record.cores_request)
    obj["requestedGPUCores"] = str(record.gpus) if record.gpus > 0 else "0"
    if record.phase == RUNNING and record.ram_in_use is not None:
        obj["ramInUse"] = memory_gb(record.ram_in_use)
    if record.phase == RUNNING and record.cpu_in_use is not None:
        obj["cpuCoresInUse"] = java_fixed(record.cpu_in_use, 3)
    obj["isFixedResources"] = record.fixed
    return obj


def public_session_object(record: SessionRecord) -> dict[str, Any]:
    """``PublicSession``: the four fields ``view=all`` exposes about anyone's sessions."""
    obj: dict[str, Any] = {"userid": record.userid, "type": record.type, "status": record.status}
    if record.start_time is not None:
        obj["startTime"] = java_offset_datetime(record.start_time)
    return obj


def stats_object(config: PlatformConfig, allocated_cores: float, allocated_ram_gib: float) -> dict:
    """``ResourceStats``: allocation and capacity of the platform, and the per-session max."""
    return {
        "cores": {
            "requestedCPUCores": float(allocated_cores),
            "cpuCoresAvailable": float(config.cores),
            "maxCPUCores": {
                "cpuCores": float(config.max_cores),
                "withRam": decimal_format(config.max_ram_gib) + "G",
            },
        },
        "ram": {
            "requestedRAM": decimal_format(allocated_ram_gib * GIB / 1e9) + "G",
            "ramAvailable": decimal_format(config.ram_gib * GIB / 1e9) + "G",
            "maxRAM": {
                "ram": decimal_format(config.max_ram_gib) + "G",
                "withCPUCores": float(config.max_cores),
            },
        },
    }


def context_object(config: PlatformConfig) -> dict[str, Any]:
    """``/context``: default == defaultRequest; options 1..max (LimitRange) or the file's list."""
    gpus = list(range(1, config.max_gpus + 1)) if config.max_gpus > 0 else []
    return {
        "cores": {
            "default": config.default_request_cores,
            "defaultRequest": config.default_request_cores,
            "defaultLimit": config.default_limit_cores,
            "options": config.cores_allowed(),
        },
        "memoryGB": {
            "default": config.default_request_ram_gib,
            "defaultRequest": config.default_request_ram_gib,
            "defaultLimit": config.default_limit_ram_gib,
            "options": config.ram_allowed(),
        },
        "gpus": {"options": gpus},
        "maxInteractiveSessions": config.max_interactive_sessions,
    }


def events_rows(record: SessionRecord) -> list[tuple[str, str, str, str, str]]:
    """The pod events a kubelet would have recorded so far for this session."""
    if record.phase == QUEUED or record.start_time is None:
        return []
    pod = pod_name(record)
    container = job_name(record)
    first = rfc3339(record.start_time)
    rows = [
        (
            "Normal",
            "Scheduled",
            f"Successfully assigned skaha-workload/{pod} to local",
            "<none>",
            "<none>",
        ),
        ("Normal", "Pulling", f'Pulling image "{record.image}"', first, first),
        (
            "Normal",
            "Pulled",
            f'Successfully pulled image "{record.image}" in 0s (0s including waiting)',
            first,
            first,
        ),
    ]
    if record.phase == PULL_BACKOFF:
        del rows[2]  # never pulled
        reason = f'Failed to pull image "{record.image}": manifest unknown'
        rows += [
            ("Warning", "Failed", reason, first, first),
            ("Warning", "Failed", "Error: ErrImagePull", first, first),
            ("Normal", "BackOff", f'Back-off pulling image "{record.image}"', first, first),
            ("Warning", "Failed", "Error: ImagePullBackOff", first, first),
        ]
        return rows
    if record.reason == "StartError":
        when = rfc3339(record.end_time or record.start_time)
        rows.append(("Warning", "Failed", f"Error: {record.message or 'StartError'}", when, when))
        return rows
    if record.phase == LAUNCHED:
        return rows
    started = rfc3339(record.run_time or record.start_time)
    rows.append(("Normal", "Created", f"Created container: {container}", started, started))
    rows.append(("Normal", "Started", f"Started container {container}", started, started))
    if record.phase == FINISHED and record.reason == "DeadlineExceeded":
        when = rfc3339(record.end_time or record.start_time)
        rows.append(("Normal", "Killing", f"Stopping container {container}", when, when))
    return rows


def kubectl_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """kubectl's tabwriter layout: min width 10, padding 3, last column unpadded."""
    all_rows = [list(header), *[list(r) for r in rows]]
    widths = [max(10, max(len(r[i]) for r in all_rows) + 3) for i in range(len(header) - 1)]
    lines = []
    for row in all_rows:
        cells = [row[i].ljust(widths[i]) for i in range(len(header) - 1)]
        lines.append("".join(cells) + row[-1])
    return "\n".join(lines)


def events_text(record: SessionRecord) -> str:
    """The events view body: the table, or ``<none>``, then a newline."""
    rows = events_rows(record)
    if not rows:
        return "<none>\n"
    header = ("TYPE", "REASON", "MESSAGE", "FIRST-TIME", "LAST-TIME")
    return kubectl_table(header, rows) + "\n"


def capabilities_xml(base_url: str) -> str:
    """VOSI capabilities listing the platform standards with the three security methods."""
    security = (
        '<securityMethod standardID="ivo://ivoa.net/sso#cookie"/>',
        '<securityMethod standardID="ivo://ivoa.net/sso#tls-with-certificate"/>',
        '<securityMethod standardID="ivo://ivoa.net/sso#token"/>',
    )

    def capability(standard: str, url: str, use: str = "base") -> str:
        interfaces = "".join(
            f'\n    <interface xsi:type="vs:ParamHTTP" role="std" version="1.0">'
            f'\n      <accessURL use="{use}">{url}</accessURL>'
            f"\n      {method}"
            f"\n    </interface>"
            for method in security
        )
        return f'\n  <capability standardID="{standard}">{interfaces}\n  </capability>'

    caps = [
        capability("ivo://ivoa.net/std/VOSI#capabilities", f"{base_url}/capabilities", "full"),
        capability("ivo://ivoa.net/std/VOSI#availability", f"{base_url}/availability", "full"),
        capability("http://www.opencadc.org/std/platform#session-1", f"{base_url}/v1/session"),
        capability("http://www.opencadc.org/std/platform#context-1", f"{base_url}/v1/context"),
        capability("http://www.opencadc.org/std/platform#image-1", f"{base_url}/v1/image"),
        capability(
            "http://www.opencadc.org/std/platform#repository-1", f"{base_url}/v1/repository"
        ),
    ]
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<vosi:capabilities xmlns:vosi="http://www.ivoa.net/xml/VOSICapabilities/v1.0" '
        'xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        + "".join(caps)
        + "\n</vosi:capabilities>\n"
    )


def availability_xml() -> str:
    """VOSI availability: always available while the server answers."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<vosi:availability xmlns:vosi="http://www.ivoa.net/xml/VOSIAvailability/v1.0">\n'
        "  <vosi:available>true</vosi:available>\n"
        "  <vosi:note>Skaha Service Available. (embedded CANFAR platform)</vosi:note>\n"
        "</vosi:availability>\n"
    )


def image_objects(images: Iterable[Mapping[str, object]], kind: str | None) -> list[dict]:
    """``/image`` entries, optionally only those labelled with ``kind``."""
    result = []
    for image in images:
        types = list(image.get("types", []))  # type: ignore[call-overload]
        if kind is None or kind in types:
            result.append({"id": image["id"], "types": types, "digest": image.get("digest", "")})
    return result
