"""CanfarCluster on the embedded platform: real sessions running real `dask worker`s."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from canfar_core.dask import CanfarCluster
from canfar_local.testing import skaha_client
from distributed import Client, Security, wait

from tests.dask.conftest import listed, live

GIB = 1024**3


def square(x: int) -> int:
    return x * x


def slow_where(x: int, marks: str) -> str:
    """Mark the attempt with the session it runs in, take a while, return the session."""
    session = os.environ["skaha_sessionid"]  # noqa: SIM112 (the server's name)
    Path(marks, f"{x}-{session}").touch()
    time.sleep(1.5)
    return session


def secret_texts(cluster: CanfarCluster) -> list[str]:
    """The cluster's private key and certificate bodies (what must never leak)."""
    tls = cluster.security.get_tls_config_for_role("worker")
    key_body = tls["key"].splitlines()[1]
    cert_body = tls["cert"].splitlines()[1]
    return [key_body, cert_body]


def session_output(platform, session_id: str) -> str:
    """The session's output as the API serves it (`view=logs`)."""
    with skaha_client(platform) as http:
        return http.get(f"/session/{session_id}", params={"view": "logs"}).text


def test_a_cluster_computes_scales_as_sessions_and_leaves_none(
    platform, cluster_kwargs, cluster_log, wait_for
) -> None:
    kwargs = {**cluster_kwargs, "cores": 1.5, "ram": 1}
    with CanfarCluster(**kwargs, n_workers=1) as cluster:
        prefix = cluster.name
        with Client(cluster) as client:
            client.wait_for_workers(1, timeout=60)
            futures = client.map(square, range(20))
            assert client.submit(sum, futures).result(timeout=60) == sum(x * x for x in range(20))

            # The worker is the session the server granted: 1.5 cores became 2 threads.
            (info,) = client.scheduler_info()["workers"].values()
            assert (info["nthreads"], info["memory_limit"]) == (2, 1 * GIB)
            (session,) = live(platform, prefix)
            assert session["requestedCPUCores"] == "2"
            assert session["name"] == info["name"]

            # Secure by default: TLS with the cluster's own credentials, which reached
            # the session through a file it consumed, never through the request or a log.
            address = cluster.scheduler_address
            assert address.startswith("tls://127.0.0.1:")
            with pytest.raises(OSError):
                Client(address, security=Security.temporary(), timeout="3s")
            with pytest.raises(OSError):
                Client(address.replace("tls://", "tcp://"), timeout="3s")
            state = platform.session_state(session["id"])
            request = repr((state["argv"], state["env"]))
            output = session_output(platform, session["id"])
            assert "Registered to:" in output  # the worker's own log, read as a user would
            for text in secret_texts(cluster):
                assert text not in request
                assert text not in cluster_log.text
                assert text not in output
            assert list((cluster.directory / "secrets").iterdir()) == []

            cluster.scale(3)
            wait_for(lambda: len(live(platform, prefix)) == 3, timeout=30, what="3 sessions")
            client.wait_for_workers(3, timeout=90)
            cluster.scale(1)
            wait_for(
                lambda: len([s for s in listed(platform) if s["name"].startswith(prefix)]) == 1,
                timeout=60,
                what="scale-down to one session",
            )
            wait_for(lambda: len(client.scheduler_info()["workers"]) == 1, timeout=30)
            assert client.submit(square, 7).result(timeout=60) == 49
        directory = cluster.directory
    assert listed(platform) == []
    assert not directory.exists()


def test_a_killed_worker_session_is_reported_and_its_tasks_rerun(
    platform, cluster_kwargs, cluster_log, tmp_path, wait_for
) -> None:
    marks = tmp_path / "attempts"
    marks.mkdir()
    with CanfarCluster(**cluster_kwargs, n_workers=2) as cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        futures = client.map(slow_where, range(8), marks=str(marks), pure=False)
        first = wait_for(lambda: sorted(marks.iterdir()), timeout=60, what="a task started")
        victim = first[0].name.split("-", 1)[1]
        # A node failure: the session's whole process tree dies at once.
        os.killpg(platform.session_state(victim)["child_pid"], signal.SIGKILL)

        wait(futures, timeout=120)
        results = client.gather(futures)
        assert victim not in results, "every result comes from a surviving worker"
        started_on_victim = {p.name.split("-", 1)[0] for p in marks.glob(f"*-{victim}")}
        rerun = {x for x in started_on_victim if len(list(marks.glob(f"{x}-*"))) > 1}
        assert rerun, "a task the killed worker had started ran again elsewhere"

        (report,) = wait_for(
            lambda: [r for r in cluster_log.records if "ended unexpectedly" in r.getMessage()],
            timeout=30,
            what="the failure report",
        )
        assert report.levelname == "WARNING"
        assert f"CANFAR session {victim} (failed" in report.getMessage()
        # Replaced by a new session; the killed one is deleted.
        wait_for(
            lambda: (
                {s["id"] for s in listed(platform)} == set(cluster.session_ids)
                and len(cluster.session_ids) == 2
                and victim not in cluster.session_ids
            ),
            timeout=60,
            what="a replacement session",
        )
        client.wait_for_workers(2, timeout=60)
    assert listed(platform) == []


def test_the_scheduler_can_run_in_a_session_of_its_own(platform, cluster_kwargs) -> None:
    with (
        CanfarCluster(**cluster_kwargs, scheduler="session", n_workers=1) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(1, timeout=90)
        assert client.submit(square, 6).result(timeout=60) == 36
        names = sorted(s["name"] for s in live(platform, cluster.name))
        assert names == [f"{cluster.name}-0", f"{cluster.name}-scheduler"]
        assert cluster.scheduler_address.startswith("tls://")
        with pytest.raises(OSError):
            Client(cluster.scheduler_address, security=Security.temporary(), timeout="3s")
    assert listed(platform) == []
