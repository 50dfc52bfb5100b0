"""Session names that are unique per attempt.

Names are the only handle that survives an ambiguous create (the server assigns the id),
and the server neither checks uniqueness nor preserves case, so every attempt gets a
fresh lower-case name carrying a run id.
"""

from __future__ import annotations

import re
import secrets
import string

from canfar_core.models import NAME_MAX_LENGTH

_ALPHABET = string.ascii_lowercase + string.digits
_UNSAFE = re.compile(r"[^a-z0-9-]+")


def random_token(length: int = 6) -> str:
    """A random lower-case alphanumeric token."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def sanitize(text: str, *, fallback: str = "session") -> str:
    """Lower-case `text` and squeeze anything outside `[a-z0-9-]` into single dashes."""
    cleaned = _UNSAFE.sub("-", text.lower()).strip("-")
    return re.sub("-{2,}", "-", cleaned) or fallback


def unique_name(*parts: str, max_length: int = NAME_MAX_LENGTH) -> str:
    """`<parts...>-<random>`, sanitised and cut so the whole fits `max_length`."""
    suffix = random_token()
    stem = sanitize("-".join(p for p in parts if p))
    stem = stem[: max_length - len(suffix) - 1].rstrip("-") or "s"
    return f"{stem}-{suffix}"
