"""Per-task session resources: `with canfar_options(cores=8, ram=32): task.submit(...)`.

Mirrors `prefect_ray.context.remote_options`: the options in force when a task is
submitted decide its session's size. Tags such as `canfar:cores=8` on a task
(`task.with_options(tags=[...])`) do the same for code that prefers declarations.

Values are checked where they are written (the `with` line, the runner's constructor),
each refusal one sentence naming the option, the value and what it takes; whether the
server offers that size is checked when a task is submitted, before anything is sent.
`gpus=0` means "no GPUs": it is how a block overrides a runner's default of some.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from canfar_core import SessionResources, SpecError

TAG_PREFIX = "canfar:"
OPTION_NAMES = ("cores", "ram", "gpus", "image")
# What each option takes, in the words of a refusal.
TAKES = {
    "cores": "a number of cores greater than 0",
    "ram": "a number of GiB greater than 0",
    "gpus": "a whole number of GPUs, 0 for none",
    "image": "an image reference such as images.canfar.net/<project>/<name>:<tag>",
}
# The same, in a tag's words (`canfar:cores=abc` is refused as "cores must be ...").
TAG_TAKES = {
    "cores": "a number greater than 0",
    "ram": "a number of GiB greater than 0",
    "gpus": "a whole number, 0 for none",
    "image": "an image reference",
}
# Names users reach for first, mapped to the option they mean.
SYNONYMS = {
    "memory": "ram",
    "mem": "ram",
    "memory_gb": "ram",
    "cpu": "cores",
    "cpus": "cores",
    "threads": "cores",
    "gpu": "gpus",
}


# The task's layer of a session's resources; the layering rule is the core's.
SessionOptions = SessionResources


_NONE_SET = SessionOptions()
_current: ContextVar[SessionOptions | None] = ContextVar("canfar_options", default=None)


def check_option(name: str, value: object) -> None:
    """Raise SpecError unless `value` is something option `name` can take (None: unset)."""
    if value is None:
        return
    if name == "image":
        if not isinstance(value, str) or not value.strip():
            raise SpecError(name, value, TAKES[name])
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(name, value, TAKES[name])
    if name == "gpus":
        if not float(value).is_integer() or value < 0:
            raise SpecError(name, value, TAKES[name])
    elif not math.isfinite(value) or value <= 0:
        raise SpecError(name, value, TAKES[name])


def checked_options(
    *,
    cores: float | None = None,
    ram: float | None = None,
    gpus: int | None = None,
    image: str | None = None,
) -> SessionOptions:
    """SessionOptions whose every set value has the right type and sign."""
    for name, value in (("cores", cores), ("ram", ram), ("gpus", gpus), ("image", image)):
        check_option(name, value)
    return SessionOptions(cores, ram, None if gpus is None else int(gpus), image)


def unknown_option(name: str, value: object) -> SpecError:
    """The refusal of an option that does not exist, with the likely intended one."""
    guess = SYNONYMS.get(name.lower())
    if guess is None:
        close = difflib.get_close_matches(name, OPTION_NAMES, n=1)
        guess = close[0] if close else None
    hint = f" (did you mean {guess}?)" if guess else ""
    return SpecError(name, value, f"canfar_options takes cores, ram (GiB), gpus and image{hint}")


@contextmanager
def canfar_options(
    *,
    cores: float | None = None,
    ram: float | None = None,
    gpus: int | None = None,
    image: str | None = None,
    **unknown: object,
) -> Iterator[SessionOptions]:
    """Set the session resources of tasks submitted inside the block (they nest).

    A misspelt option (`memory=32`) is refused rather than ignored: the task would
    otherwise run with the default RAM and be killed far from the mistake.
    """
    for name, value in unknown.items():
        raise unknown_option(name, value)
    options = checked_options(cores=cores, ram=ram, gpus=gpus, image=image)
    token = _current.set(options.over(current_options()))
    try:
        yield _current.get() or _NONE_SET
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
        if not sep or key not in OPTION_NAMES:
            raise SpecError(
                "tag",
                tag,
                "canfar tags are canfar:cores=N, canfar:ram=GiB, canfar:gpus=N, canfar:image=REF",
            )
        try:
            parsed: object = value if key == "image" else float(value)
            check_option(key, parsed)
        except (ValueError, SpecError):
            raise SpecError("tag", tag, f"{key} must be {TAG_TAKES[key]}") from None
        values[key] = parsed
    return checked_options(**values)  # type: ignore[arg-type]
