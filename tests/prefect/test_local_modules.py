"""The user's own modules travel by value, also when many tasks are pickled at once."""

from __future__ import annotations

import sys
import threading
import types

import cloudpickle
from prefect_canfar.local_modules import pickled_by_value, users_modules


def make_user_module(tmp_path) -> types.ModuleType:
    source = tmp_path / "night_steps.py"
    source.write_text("def scale(x):\n    return 2 * x\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import night_steps  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    return night_steps


def test_a_module_beside_the_flow_is_found_and_installed_ones_are_not(tmp_path) -> None:
    module = make_user_module(tmp_path)
    task_module = types.ModuleType("flow_like")
    task_module.night_steps = module  # type: ignore[attr-defined]
    task_module.cloudpickle = cloudpickle  # type: ignore[attr-defined]
    sys.modules["flow_like"] = task_module
    task_module.__file__ = str(tmp_path / "flow_like.py")

    def fn() -> int:
        return 1

    fn.__module__ = "flow_like"
    try:
        found = {m.__name__ for m in users_modules(fn)}
    finally:
        del sys.modules["flow_like"]
    assert "night_steps" in found
    assert "cloudpickle" not in found and "prefect_canfar" not in found


def test_concurrent_pickling_keeps_modules_by_value(tmp_path) -> None:
    module = make_user_module(tmp_path)
    errors: list[BaseException] = []
    payloads: list[bytes] = []

    start = threading.Barrier(8)

    def pickle_one() -> None:
        start.wait()
        try:
            for _ in range(200):
                with pickled_by_value(module.scale):
                    payloads.append(cloudpickle.dumps(module.scale))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=pickle_one) for _ in range(8)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads constantly, so interleavings happen
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    del sys.modules["night_steps"]  # as in a session that cannot import it
    assert all(cloudpickle.loads(p)(21) == 42 for p in payloads)
