"""Request parameters the way cadc-rest's ``SyncInput`` sees them.

Names are case-insensitive; a repeated name keeps every value, and ``get`` returns the first.
GET, HEAD and DELETE read the query string.  Any other method reads parameters only when the
body is form-encoded (``application/x-www-form-urlencoded`` or multipart), and then from the
query string and the body together; otherwise the request has no parameters at all, which is
why a POST without that content type fails with ``Missing parameter 'image'``.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web

URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/"


class Params:
    """Case-insensitive multi-valued parameters."""

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self._values: dict[str, list[str]] = {}
        for name, value in pairs:
            self._values.setdefault(name.lower(), []).append(value)

    def get(self, name: str) -> str | None:
        """The first value of ``name``, or None when absent."""
        values = self._values.get(name.lower())
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` in request order."""
        return list(self._values.get(name.lower(), []))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values


async def read_params(request: web.Request, max_form_bytes: int | None = None) -> Params:
    """Collect a request's parameters with cadc-rest's rules.

    A form body over `max_form_bytes` (Tomcat's maxPostSize) yields no parameters at all,
    which is how the real server comes to answer `Missing parameter 'image'`.
    """
    pairs: list[tuple[str, str]] = list(request.query.items())
    if request.method in ("GET", "HEAD", "DELETE"):
        return Params(pairs)
    content_type = (request.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
    length = request.content_length
    too_big = max_form_bytes is not None and length is not None and length > max_form_bytes
    if too_big and (content_type == URLENCODED or content_type.startswith(MULTIPART)):
        await request.read()  # drain the body, as Tomcat swallows it
        return Params()
    if content_type == URLENCODED:
        form = await request.post()
        pairs.extend((k, v) for k, v in form.items() if isinstance(v, str))
        return Params(pairs)
    if content_type.startswith(MULTIPART):
        form = await request.post()
        pairs.extend((k, v) for k, v in form.items() if isinstance(v, str))
        return Params(pairs)
    return Params()
