"""Run three sessions on the embedded platform and report what became of them.

This is what `make demo` runs until the reduction pipeline example lands: it starts the
embedded CANFAR platform in-process, launches sessions through the launch envelope (one
succeeds, one exits 3, one is stopped by its runtime limit) and prints each outcome.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile

from canfar_core import AsyncCanfarClient, SessionTracker, envelope, unique_name

IMAGE = "images.canfar.net/skaha/astroml:latest"


async def main() -> int:
    state = tempfile.mkdtemp(prefix="canfar-demo-")
    jobs = {
        "hello": envelope([sys.executable, "-c", "print('hello from a session')"], state_dir=state),
        "fails": envelope("echo 'about to fail' >&2; exit 3", state_dir=state),
        "too-slow": envelope(["sleep", "30"], timeout=1, state_dir=state),
    }
    async with AsyncCanfarClient(url="local") as client:
        tracker = SessionTracker(client, min_interval=0.2)
        ids = {}
        for label, job in jobs.items():
            spec = job.spec(name=unique_name("demo", label), image=IMAGE, cores=1, ram=1)
            ids[label] = await client.create(spec)
        outcomes = {
            label: await tracker.watch(session_id, state_dir=state)
            for label, session_id in ids.items()
        }
        await tracker.aclose()
        for session_id in ids.values():
            await client.delete(session_id)
    print(f"{'job':10} {'session':10} {'outcome':18} exit  reason")
    for label, outcome in outcomes.items():
        print(
            f"{label:10} {outcome.session_id:10} {outcome.kind.value:18} "
            f"{outcome.exit_code!s:5} {outcome.reason or ''}"
        )
    print(f"\nlogs and exit codes: {state}")
    expected = {"hello": 0, "fails": 3, "too-slow": 124}
    return 0 if all(outcomes[k].exit_code == v for k, v in expected.items()) else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
