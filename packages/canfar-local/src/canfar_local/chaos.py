"""A fault-injecting HTTP proxy: put a flaky network between a client and a Skaha server.

``ChaosProxy.start(upstream, FaultRates(...))`` listens on a loopback port and forwards
each request to ``upstream``, except that, at the configured rates, it

- answers ``500`` with the servlet's ``unexpected exception`` body, without forwarding;
- answers ``503`` with ``Retry-After``, without forwarding (an overloaded ingress);
- resets the connection before the request reaches the server (nothing happened);
- forwards the request, lets the server act on it, then resets the connection (the
  response is lost: the classic ambiguous create);
- holds the request for a latency spike before forwarding it.

Besides the random faults, two deliberate distortions of what the server says:
``corrupt_list(kind, count)`` damages the next session-list answers (an ``html`` error
page with status 200, a ``truncated`` body, an ``empty`` one, or ``odd-items``: foreign
items without an id and timestamps in other formats mixed into the real list), and
``hold_phase(session_id, status)`` makes a session's status read ``Terminating`` (or
whatever is given) in every list and lookup, as a pod stuck terminating would.

Unlike the platform's own one-shot faults (``LocalPlatform.inject_fault``), these are
random and continuous, the way a shared platform misbehaves over a night, and they work
in front of any server.  Draws come from a seeded generator so a failing run can be
replayed.  The proxy speaks plain HTTP/1.1 with keep-alive on both sides; an HTTPS
upstream is reached with ``verify=False`` and no client certificate, so use bearer
tokens through it.  ``canfar-local chaos`` runs it from the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

import httpx

from .errors import PlatformError

SERVER_ERROR_BODY = "unexpected exception: java.lang.RuntimeException: injected by the proxy\n"
UNAVAILABLE_BODY = "temporarily unavailable: injected by the proxy\n"
MAX_HEAD_BYTES = 1024 * 1024
# Hop-by-hop headers (RFC 9110 §7.6.1) and the framing headers the proxy recomputes.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "host",
    }
)
FAULT_KINDS = ("server_error", "unavailable", "reset_before", "reset_after", "latency")
CORRUPTIONS = ("html", "truncated", "empty", "odd-items")
HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
    b"<body><h1>Bad Gateway</h1><p>The proxy server received an invalid response "
    b"from an upstream server.</p></body></html>\n"
)
# Items a list may carry that are not sessions as this client knows them.
ODD_ITEMS: tuple[dict[str, object], ...] = (
    {"kind": "Status", "apiVersion": "v1", "message": "not a session"},
    {"id": "oddepoch1", "status": "Running", "type": "headless", "startTime": 1767225600},
    {"id": "oddformat", "status": "Pending", "type": "headless", "startTime": "07/01/2026 12:00"},
)


@dataclass(frozen=True)
class FaultRates:
    """Per-request probabilities of each fault; at most one fault hits a request.

    The five rates must each be within [0, 1] and sum to at most 1. ``retry_after`` is
    the seconds a 503 asks the client to wait; a latency spike lasts a uniform draw from
    ``latency_seconds``.
    """

    server_error: float = 0.0
    unavailable: float = 0.0
    reset_before: float = 0.0
    reset_after: float = 0.0
    latency: float = 0.0
    latency_seconds: tuple[float, float] = (0.5, 2.0)
    retry_after: int = 1
    seed: int | None = None

    def __post_init__(self) -> None:
        for kind in FAULT_KINDS:
            rate = getattr(self, kind)
            if not 0.0 <= rate <= 1.0:
                raise PlatformError(f"{kind}={rate!r} is not allowed: a rate is within 0 and 1.")
        total = sum(getattr(self, kind) for kind in FAULT_KINDS)
        if total > 1.0 + 1e-9:
            raise PlatformError(
                f"the fault rates sum to {total:g}, which is not allowed: at most 1."
            )
        low, high = self.latency_seconds
        if not 0 <= low <= high:
            raise PlatformError(
                f"latency_seconds={self.latency_seconds!r} is not allowed: 0 <= low <= high."
            )
        if self.retry_after < 0:
            raise PlatformError(
                f"retry_after={self.retry_after!r} is not allowed: a number of seconds >= 0."
            )

    def total(self) -> float:
        """The probability that a request meets some fault."""
        return sum(getattr(self, kind) for kind in FAULT_KINDS)


NO_FAULTS = FaultRates()


@dataclass
class _Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    @property
    def keep_alive(self) -> bool:
        connection = (self.header("connection") or "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection


class ChaosProxy:
    """A running fault-injecting proxy (its event loop lives in a daemon thread)."""

    def __init__(self, upstream: str, rates: FaultRates, host: str = "127.0.0.1") -> None:
        parts = urlsplit(upstream)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise PlatformError(
                f"upstream={upstream!r} is not allowed: an http:// or https:// URL."
            )
        self.upstream = upstream.rstrip("/")
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._path = parts.path.rstrip("/")
        self.host = host
        self.port = 0
        self._rates = rates
        self._random = random.Random(rates.seed)
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._http: httpx.AsyncClient | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        # Open client connections: stop() ends them before the loop closes, so no task
        # is destroyed while pending (Python 3.11's wait_closed does not wait for them).
        self._connections: set[asyncio.Task[None]] = set()
        self._corruption: tuple[str, int | None] | None = None
        self._held: dict[str, str] = {}

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def start(
        cls, upstream: str, rates: FaultRates = NO_FAULTS, host: str = "127.0.0.1", port: int = 0
    ) -> ChaosProxy:
        """Start a proxy in front of ``upstream`` and return once it accepts connections."""
        proxy = cls(upstream, rates, host)
        proxy._thread = threading.Thread(
            target=proxy._serve, args=(port,), name="canfar-chaos-proxy", daemon=True
        )
        proxy._thread.start()
        proxy._ready.wait()
        if proxy._error is not None:
            raise PlatformError(f"the proxy could not start: {proxy._error}") from None
        return proxy

    def _serve(self, port: int) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self._http = httpx.AsyncClient(
                base_url=self._origin,
                timeout=httpx.Timeout(300.0, connect=10.0),
                verify=False,
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            )
            self._server = loop.run_until_complete(
                asyncio.start_server(self._connection, self.host, port, limit=MAX_HEAD_BYTES)
            )
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def stop(self) -> None:
        """Stop listening, drop open connections and end the thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._server.wait_closed(), 2)
            for task in self._connections:
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            if self._http is not None:
                await self._http.aclose()
            loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> ChaosProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- control and figures ---------------------------------------------------------------

    @property
    def url(self) -> str:
        """The upstream URL with the proxy's origin: give this to the client."""
        return f"http://{self.host}:{self.port}{self._path}"

    @property
    def rates(self) -> FaultRates:
        """The rates in force."""
        return self._rates

    def set_rates(self, rates: FaultRates) -> None:
        """Change the rates (``NO_FAULTS`` calms the network) for the next requests."""
        with self._lock:
            self._rates = rates
            if rates.seed is not None:
                self._random = random.Random(rates.seed)

    def corrupt_list(self, kind: str, count: int | None = 1) -> None:
        """Damage the next `count` session-list answers (None: until `calm_list`).

        `kind` is one of ``html`` (an error page with status 200), ``truncated`` (the
        JSON cut in half), ``empty`` (no body) or ``odd-items`` (foreign items and
        timestamps in other formats mixed in, the real sessions kept, the first one's
        `startTime` turned into an epoch number).
        """
        if kind not in CORRUPTIONS:
            raise PlatformError(f"kind={kind!r} is not allowed: one of {', '.join(CORRUPTIONS)}.")
        if count is not None and count < 1:
            raise PlatformError(f"count={count!r} is not allowed: at least 1, or None.")
        with self._lock:
            self._corruption = (kind, count)

    def calm_list(self) -> None:
        """Stop damaging list answers."""
        with self._lock:
            self._corruption = None

    def hold_phase(self, session_id: str, status: str | None = "Terminating") -> None:
        """Show `status` for a session in every answer from now on (None: stop)."""
        with self._lock:
            if status is None:
                self._held.pop(session_id, None)
            else:
                self._held[session_id] = status

    def _rewrite(
        self, request: _Request, status: int, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[list[tuple[str, str]], bytes]:
        """Apply the deliberate distortions to one forwarded answer."""
        parts = urlsplit(request.target)
        path = parts.path.rstrip("/")
        listing = request.method == "GET" and path.endswith("/v1/session")
        listing = listing and "view=" not in parts.query
        lookup = request.method == "GET" and "/v1/session/" in path and not parts.query
        with self._lock:
            held = dict(self._held)
            corruption = self._corruption
            if listing and corruption is not None and status == 200:
                kind, left = corruption
                if left is not None:
                    left -= 1
                self._corruption = (kind, left) if left is None or left > 0 else None
                self._counts[f"corrupt {kind}"] += 1
            else:
                corruption = None
        if held and status == 200 and (listing or lookup):
            body = _hold(body, held)
        if corruption is None:
            return headers, body
        kind = corruption[0]
        if kind == "html":
            kept = [(k, v) for k, v in headers if k.lower() != "content-type"]
            return [*kept, ("Content-Type", "text/html")], HTML_PAGE
        if kind == "truncated":
            return headers, body[: len(body) // 2]
        if kind == "empty":
            return headers, b""
        return headers, _odd_items(body)

    def counts(self) -> dict[str, int]:
        """``requests``, ``forwarded``, each fault kind, and ``<kind> <METHOD>`` breakdowns."""
        with self._lock:
            counts = dict(self._counts)
        for key in ("requests", "forwarded", *FAULT_KINDS):
            counts.setdefault(key, 0)
        return counts

    def faults_injected(self) -> int:
        """How many requests met a fault so far."""
        counts = self.counts()
        return sum(counts[kind] for kind in FAULT_KINDS)

    def _draw(self, method: str) -> tuple[str | None, float, int]:
        """The fault for one request (or None), its latency spike and its Retry-After."""
        with self._lock:
            rates = self._rates
            self._counts["requests"] += 1
            roll = self._random.random()
            spike = self._random.uniform(*rates.latency_seconds)
            threshold = 0.0
            chosen = None
            for kind in FAULT_KINDS:
                threshold += getattr(rates, kind)
                if roll < threshold:
                    chosen = kind
                    break
            if chosen is not None:
                self._counts[chosen] += 1
                self._counts[f"{chosen} {method}"] += 1
        return chosen, spike, rates.retry_after

    def _count(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    # -- one connection --------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                if not await self._answer(request, writer):
                    return
                if not request.keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        except ValueError:  # a malformed request: answer 400 and close
            with contextlib.suppress(ConnectionError):
                writer.write(_response_bytes(400, [], b"malformed request\n", keep_alive=False))
                await writer.drain()
        finally:
            if task is not None:
                self._connections.discard(task)
            if not writer.transport.is_closing():
                writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, request: _Request, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the connection must not be used again."""
        fault, spike, retry_after = self._draw(request.method)
        keep = request.keep_alive
        if fault == "reset_before":
            _reset(writer)
            return False
        if fault == "server_error":
            writer.write(_response_bytes(500, [], SERVER_ERROR_BODY.encode(), keep_alive=keep))
            await writer.drain()
            return True
        if fault == "unavailable":
            headers = [("Retry-After", str(retry_after))]
            writer.write(_response_bytes(503, headers, UNAVAILABLE_BODY.encode(), keep_alive=keep))
            await writer.drain()
            return True
        if fault == "latency":
            await asyncio.sleep(spike)
        try:
            status, headers, body = await self._forward(request)
        except httpx.HTTPError as exc:
            self._count("upstream_errors")
            message = f"proxy: upstream unreachable: {exc.__class__.__name__}\n".encode()
            writer.write(_response_bytes(502, [], message, keep_alive=keep))
            await writer.drain()
            return True
        self._count("forwarded")
        if fault == "reset_after":
            _reset(writer)
            return False
        headers, body = self._rewrite(request, status, headers, body)
        writer.write(_response_bytes(status, headers, body, keep_alive=keep))
        await writer.drain()
        return True

    async def _forward(self, request: _Request) -> tuple[int, list[tuple[str, str]], bytes]:
        assert self._http is not None
        headers = [(k, v) for k, v in request.headers if k.lower() not in _HOP_BY_HOP]
        response = await self._http.request(
            request.method, request.target, headers=headers, content=request.body or None
        )
        kept = [
            (k, v)
            for k, v in response.headers.multi_items()
            if k.lower() not in _HOP_BY_HOP and k.lower() != "content-encoding"
        ]
        return response.status_code, kept, response.content


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    """One HTTP/1.1 request (Content-Length or chunked body), or None at a clean EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ", 2)
    except ValueError:
        raise ValueError(f"bad request line {lines[0]!r}") from None
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"bad header line {line!r}")
        headers.append((name.strip(), value.strip()))
    request = _Request(method.upper(), target, version, headers, b"")
    if (request.header("transfer-encoding") or "").lower() == "chunked":
        request.body = await _read_chunked(reader)
    else:
        length = int(request.header("content-length") or 0)
        request.body = await reader.readexactly(length) if length else b""
    return request


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers are dropped
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)


def _hold(body: bytes, held: dict[str, str]) -> bytes:
    """Rewrite the status of held sessions in a list or lookup answer."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    items = data if isinstance(data, list) else [data]
    for item in items:
        if isinstance(item, dict) and item.get("id") in held:
            item["status"] = held[str(item["id"])]
    return json.dumps(data, indent=2).encode()


def _odd_items(body: bytes) -> bytes:
    """The list with foreign items mixed in and the first session's startTime an epoch."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if not isinstance(data, list):
        return body
    if data and isinstance(data[0], dict) and "startTime" in data[0]:
        data[0]["startTime"] = 1767225600
    mixed = [ODD_ITEMS[0], *data[:1], ODD_ITEMS[1], *data[1:], ODD_ITEMS[2]]
    return json.dumps(mixed, indent=2).encode()


def _response_bytes(
    status: int, headers: list[tuple[str, str]], body: bytes, *, keep_alive: bool
) -> bytes:
    reason = _REASONS.get(status, "Status")
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if not any(k.lower() == "content-type" for k, _ in headers):
        lines.append("Content-Type: text/plain")
    lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a crashed middlebox would."""
    sock: Any = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def rates_from(values: dict[str, Any]) -> FaultRates:
    """FaultRates from a mapping, refusing unknown names with the list of known ones."""
    known = {f.name for f in fields(FaultRates)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise PlatformError(
            f"{unknown[0]!r} is not a fault setting; known: {', '.join(sorted(known))}."
        )
    return FaultRates(**values)
