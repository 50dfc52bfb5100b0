"""How odd list answers surface (unit tests on httpx.MockTransport, beside the chaos-proxy
test in test_verdicts_e2e.py), and the bounded head and tail kept of a log."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from canfar_core import AsyncCanfarClient, CanfarTransportError, RetryPolicy
from canfar_core.logtail import HEAD_BYTES, TailBuffer, read_file
from canfar_core.models import parse_sessions

ONCE = RetryPolicy(attempts=1)


def client(answer: httpx.Response) -> AsyncCanfarClient:
    return AsyncCanfarClient(
        url="http://canfar.test/skaha/v1",
        token="t",
        retry=ONCE,
        transport=httpx.MockTransport(lambda request: answer),
    )


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"<html><body>502 Bad Gateway</body></html>", "the body is not JSON"),
        (b'[{"id": "abc", "sta', "the body is not JSON"),
        (b"", "the body is not JSON"),
        (b'{"id": "abc"}', "a JSON list was expected, not dict"),
    ],
)
async def test_an_unreadable_list_is_a_transport_error(body: bytes, why: str) -> None:
    answer = httpx.Response(200, content=body, headers={"Content-Type": "text/html"})
    async with client(answer) as c:
        with pytest.raises(
            CanfarTransportError, match="answered HTTP 200 that cannot be read"
        ) as e:
            await c.list_sessions()
    assert why in str(e.value) and f"{len(body)} bytes" in str(e.value)


async def test_odd_items_are_skipped_or_salvaged_with_one_warning_each(caplog) -> None:
    items = [
        {"kind": "Status"},
        {"id": "good", "status": "Running", "startTime": "2026-07-01T12:00Z"},
        {"id": "epoch", "status": "Completed", "startTime": 1767225600},
        {"id": "other", "status": "Pending", "startTime": "07/01/2026"},
        "not an object",
    ]
    caplog.set_level(logging.WARNING)
    async with client(httpx.Response(200, json=items)) as c:
        first = await c.list_sessions()
        second = await c.list_sessions()
    assert [s.id for s in first] == ["good", "epoch", "other"] == [s.id for s in second]
    assert first[1].status == "Completed" and first[1].start_time is None
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 4, warnings  # once each, not once per listing


def test_parse_sessions_refuses_what_is_not_a_list() -> None:
    with pytest.raises(ValueError, match="a JSON list was expected"):
        parse_sessions({"id": "x"})


def test_a_tail_buffer_keeps_the_head_and_a_bounded_tail(tmp_path: Path) -> None:
    buffer = TailBuffer(2048, path=tmp_path / "whole.log")
    lines = [f"line {i:05d}\n".encode() for i in range(5000)]
    for start in range(0, len(lines), 7):
        buffer.write(b"".join(lines[start : start + 7]))
    capture = buffer.capture()
    assert capture.truncated and capture.size == sum(len(line) for line in lines)
    assert len(capture.tail.encode()) <= 2048
    assert capture.tail.endswith("line 04999\n") and capture.tail.startswith("line ")
    assert capture.head.startswith("line 00000\n") and len(capture.head) == HEAD_BYTES
    assert (tmp_path / "whole.log").stat().st_size == capture.size
    read = read_file(tmp_path / "whole.log", 2048)
    assert read is not None and read.tail == capture.tail and read.head == capture.head
    small = TailBuffer(2048)
    small.write(b"short\n")
    assert small.capture().tail == "short\n" and not small.capture().truncated
    assert read_file(tmp_path / "missing.log") is None
