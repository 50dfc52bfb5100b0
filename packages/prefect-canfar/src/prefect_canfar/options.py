"""Per-task session resources: `with canfar_options(cores=8, ram=32): task.submit(...)`.

Mirrors `prefect_ray.context.remote_options`: the options in force when a task is
submitted decide its session's size. Tags such as `canfar:cores=8` on a task
(`task.with_options(tags=[...])`) do the same for code that prefers declarations.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, fields, replace

from canfar_core.errors import SpecError

TAG_PREFIX = "canfar:"


@dataclass(frozen=True)
class SessionOptions:
    """Resources and image of a task's session; None means "not set here"."""

    cores: float | None = None
    ram: float | None = None
    gpus: int | None = None
    image: str | None = None

    def over(self, base: SessionOptions) -> SessionOptions:
        """These options, with unset fields taken from `base`."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return replace(base, **{k: v for k, v in values.items() if v is not None})


_NONE_SET = SessionOptions()
_current: ContextVar[SessionOptions | None] = ContextVar("canfar_options", default=None)


@contextmanager
def canfar_options(
    *,
    cores: float | None = None,
    ram: float | None = None,
    gpus: int | None = None,
    image: str | None = None,
) -> Iterator[SessionOptions]:
    """Set the session resources of tasks submitted inside the block (they nest)."""
    options = SessionOptions(cores, ram, gpus, image).over(current_options())
    token = _current.set(options)
    try:
        yield options
    finally:
        _current.reset(token)


def current_options() -> SessionOptions:
    """The options in force in this context."""
    return _current.get() or _NONE_SET


def options_from_tags(tags: Iterable[str]) -> SessionOptions:
    """Read `canfar:cores=8`, `canfar:ram=32`, `canfar:gpus=1`, `canfar:image=...` tags."""
    values: dict[str, object] = {}
    for tag in tags:
        if not tag.startswith(TAG_PREFIX):
            continue
        key, sep, value = tag[len(TAG_PREFIX) :].partition("=")
        if not sep or key not in ("cores", "ram", "gpus", "image"):
            raise SpecError(
                "tag",
                tag,
                "canfar tags are canfar:cores=N, canfar:ram=GiB, canfar:gpus=N, canfar:image=REF",
            )
        try:
            values[key] = (
                value if key == "image" else (int(value) if key == "gpus" else float(value))
            )
        except ValueError:
            raise SpecError("tag", tag, f"{key} must be a number") from None
    return SessionOptions(**values)  # type: ignore[arg-type]
