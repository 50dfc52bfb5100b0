"""Two users on one platform never see or touch each other's sessions (issue 9, item 6).

Alice and Bob hold their own tokens. Each user's listing, lookups, logs, events,
deletes and renewals are checked against the other's session, including one with the
same name; then the same through the three packages: the client's adoption after an
ambiguous create, a Snakemake run cancelled while the other user's runs, and the Prefect
worker asked to kill the other user's session.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

import httpx
import pytest
from canfar_core import AsyncCanfarClient, RetryPolicy
from canfar_core.errors import InvalidRequestError, SessionNotFoundError
from canfar_core.launch import envelope
from canfar_core.tracker import SessionTracker
from canfar_local import LocalPlatform
from prefect.exceptions import InfrastructureNotFound
from prefect_canfar import CanfarWorker
from prefect_canfar.configuration import CanfarWorkerJobConfiguration

from tests.prefect.conftest import IMAGE, PrefectServer
from tests.reliability.conftest import sessions_at
from tests.snakemake.conftest import Workflow

FAST = RetryPolicy(attempts=4, base_delay=0.05, max_delay=0.2, total_seconds=10)


def sleeper(name: str) -> object:
    return envelope(["sleep", "60"]).spec(name=name, image=IMAGE)


async def test_users_see_and_touch_only_their_own_sessions(platform: LocalPlatform) -> None:
    alice_token, bob_token = platform.add_user("alice"), platform.add_user("bob")
    async with (
        AsyncCanfarClient(url=platform.url, token=alice_token, retry=FAST) as alice,
        AsyncCanfarClient(url=platform.url, token=bob_token, retry=FAST) as bob,
    ):
        mine = await alice.create(sleeper("same-name"))  # type: ignore[arg-type]
        theirs = await bob.create(sleeper("same-name"))  # type: ignore[arg-type]

        assert [s.id for s in await alice.list_sessions()] == [mine]
        assert [s.id for s in await bob.list_sessions()] == [theirs]
        with pytest.raises(SessionNotFoundError) as lookup:
            await bob.get(mine)
        assert lookup.value.reason == f"session {mine} not found"
        with pytest.raises(SessionNotFoundError) as events:
            await bob.events_table(mine)
        assert events.value.reason == f"session {mine} not found."
        assert await bob.logs(mine) == ""  # Skaha answers 200 with nothing (§3.4)
        with pytest.raises(InvalidRequestError) as renew:
            await bob.renew(mine)
        # The server names the caller's Java principal (§3.7): Bob, not Alice.
        assert renew.value.reason.startswith("No active job for user PosixPrincipal")
        assert renew.value.reason.endswith(f",bob] with session {mine}")
        await bob.delete(mine)  # Skaha answers 200 whatever the id (§3.6) ...
        assert (await alice.get(mine)).status in ("Pending", "Running")  # ... and does nothing

        # The all-users view shows that others exist, never their ids or names.
        everyone = httpx.get(
            f"{platform.url}/session",
            params={"view": "all"},
            headers={"Authorization": f"Bearer {bob_token}"},
        ).json()
        assert sorted(s["userid"] for s in everyone) == ["alice", "bob"]
        assert all(set(s) == {"userid", "type", "status", "startTime"} for s in everyone)

        # An ambiguous create (answer lost) is adopted from the caller's own sessions only,
        # even though Alice holds a session of that very name.
        platform.inject_fault(method="POST", route="/v1/session", drop_after_handling=True)
        adopted = await bob.create(sleeper("same-name"))  # type: ignore[arg-type]
        assert adopted not in (mine, theirs)
        assert {s.id for s in await bob.list_sessions()} == {theirs, adopted}
        assert [s.id for s in await alice.list_sessions()] == [mine]

        tracker = SessionTracker(alice, min_interval=0.2, max_interval=0.5)
        await tracker.cancel(mine)
        await tracker.aclose()
        assert {s.id for s in await bob.list_sessions()} == {theirs, adopted}


def test_cancelling_one_users_workflow_leaves_the_others_running(
    workflow: Callable[..., Workflow],
    platform: LocalPlatform,
    wait_for: Callable[..., object],
) -> None:
    snakefile = """
        rule all:
            input: expand("slow/{i}.txt", i=range(2))

        rule slow:
            output: "slow/{i}.txt"
            shell: "sleep 300; touch {output}"
        """
    alice, bob = workflow(snakefile), workflow(snakefile)
    alice_token, bob_token = platform.add_user("alice"), platform.add_user("bob")
    alice_env = alice.env(SNAKEMAKE_CANFAR_TOKEN=alice_token)
    bob_env = bob.env(SNAKEMAKE_CANFAR_TOKEN=bob_token)

    def running(token: str) -> int:
        return len([s for s in sessions_at(platform, token) if s["status"] == "Running"])

    first = alice.start_with(alice_env)
    second = bob.start_with(bob_env)
    try:
        wait_for(lambda: running(alice_token) == 2 and running(bob_token) == 2, timeout=90)
        first.send_signal(signal.SIGINT)
        first.wait(timeout=90)
        assert sessions_at(platform, alice_token) == []
        assert running(bob_token) == 2, "Alice's Ctrl-C must not touch Bob's sessions"
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                process.wait(timeout=90)
    assert sessions_at(platform, bob_token) == []


async def test_the_worker_cannot_kill_another_users_session(
    prefect_api: PrefectServer, platform: LocalPlatform
) -> None:
    alice_token, bob_token = platform.add_user("alice"), platform.add_user("bob")
    async with AsyncCanfarClient(url=platform.url, token=bob_token, retry=FAST) as bob:
        theirs = await bob.create(sleeper("bobs-job"))  # type: ignore[arg-type]
        configuration = await CanfarWorkerJobConfiguration.from_template_and_values(
            CanfarWorker.get_default_base_job_template(),
            {"image": IMAGE, "credentials": {"url": platform.url, "token": alice_token}},
        )
        async with CanfarWorker(work_pool_name="isolation") as worker:
            with pytest.raises(InfrastructureNotFound, match=f"CANFAR session {theirs} does not"):
                await worker.kill_infrastructure(theirs, configuration)
        assert (await bob.get(theirs)).status in ("Pending", "Running")
        await bob.delete(theirs)
