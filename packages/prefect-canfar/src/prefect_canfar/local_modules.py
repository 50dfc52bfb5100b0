"""Find the user's own modules a task depends on, to pickle them by value.

A task defined beside the flow (or in `__main__`) often calls a module of the user's
project (`import reduction`) that a session cannot import: it is not installed in the
image, and the session's `sys.path` differs. cloudpickle pickles importable modules
by reference, so such a module must be registered by value. "The user's own" means: a
module with a source file that belongs to no installed distribution (editable
installs of real packages count as installed) and is not in the standard library.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from importlib.metadata import distributions, packages_distributions
from types import ModuleType
from typing import Any


@cache
def _installed_top_levels() -> frozenset[str]:
    """Import names of installed distributions, editable installs included.

    `packages_distributions()` misses editable installs (their files are not in the
    RECORD), so each distribution's own name, normalised (`prefect-canfar` ->
    `prefect_canfar`), counts too.
    """
    names = set(packages_distributions())
    for dist in distributions():
        name = dist.metadata["Name"] or ""
        names.add(re.sub(r"[-.]+", "_", name).lower())
    return frozenset(names)


def is_users_module(module: ModuleType) -> bool:
    """True for a module of the user's project (see the module docstring)."""
    name = module.__name__
    path = getattr(module, "__file__", None)
    if name == "__main__" or not path:
        return False
    top = name.split(".")[0]
    if top in sys.stdlib_module_names or top in _installed_top_levels():
        return False
    return "site-packages" not in path and "dist-packages" not in path


def users_modules(fn: Callable[..., Any]) -> list[ModuleType]:
    """The user's modules reachable from `fn`'s module through its globals."""
    start = sys.modules.get(getattr(fn, "__module__", "") or "")
    found: list[ModuleType] = []
    seen: set[str] = set()
    stack = [start] if start is not None else []
    while stack:
        module = stack.pop()
        if module.__name__ in seen:
            continue
        seen.add(module.__name__)
        if module.__name__ != "__main__":
            if not is_users_module(module):
                continue
            found.append(module)
        for value in list(vars(module).values()):
            target = value if isinstance(value, ModuleType) else None
            if target is None:
                target = sys.modules.get(getattr(value, "__module__", None) or "")
            if target is not None and target.__name__ not in seen:
                stack.append(target)
    return found


# cloudpickle's by-value registry is process-wide: tasks pickled from several threads
# at once must not unregister a module while another thread is still pickling with it.
_REGISTRY_LOCK = threading.Lock()


@contextmanager
def pickled_by_value(fn: Callable[..., Any]) -> Iterator[list[ModuleType]]:
    """Register the user's modules reachable from `fn` for pickling by value.

    Holds a process-wide lock for the duration (pickling a call takes milliseconds).
    """
    import cloudpickle

    with _REGISTRY_LOCK:
        modules = users_modules(fn)
        for module in modules:
            cloudpickle.register_pickle_by_value(module)
        try:
            yield modules
        finally:
            for module in modules:
                cloudpickle.unregister_pickle_by_value(module)
