"""`python -m canfar_core.dask check`: can a CANFAR session reach this one?

A `CanfarCluster` needs one thing from the platform that its API does not show: that a
headless session may open a TCP connection to the session the cluster was made in (pod-to-
pod traffic, which a Kubernetes network policy can forbid). This command answers it in
one step, the way the cluster will use it: it makes a cluster with one worker, waits
until the worker connects and runs a task, and says what it saw. Exit status 0 when a
task ran, 1 otherwise; the cluster's session is deleted either way.

    python -m canfar_core.dask check --image images.canfar.net/<project>/<image>:<tag>
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from collections.abc import Sequence

from canfar_core.errors import CanfarError

POLL_SECONDS = 0.5


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m canfar_core.dask", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="start one worker session and run a task on it")
    check.add_argument("--image", help="the worker image (needs Python with distributed)")
    check.add_argument("--python", help="the interpreter in the session (default: python)")
    check.add_argument("--url", help="the Skaha server (default: the usual resolution)")
    check.add_argument("--shared-dir", help="a directory shared with the sessions")
    check.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for the worker (600)"
    )
    return parser


def check(args: argparse.Namespace) -> int:
    """Make a one-worker cluster, wait for the worker, run a task; print what happened."""
    from distributed import Client

    from canfar_core.dask.cluster import CanfarCluster

    if not args.timeout > 0:
        print(f"--timeout={args.timeout:g} is not allowed: a number of seconds > 0.")
        return 2
    started = time.monotonic()
    try:
        cluster = CanfarCluster(
            image=args.image,
            python=args.python,
            url=args.url,
            shared_dir=args.shared_dir,
            n_workers=1,
            name="dask-check",
        )
    except CanfarError as exc:
        print(f"Could not start the check: {exc}")
        return 1
    with cluster, Client(cluster) as client:
        address = cluster.scheduler_address
        print(f"Scheduler listening at {address}; worker session(s): {cluster.session_ids}")
        deadline = started + args.timeout
        while time.monotonic() < deadline:
            if cluster.worker_failures:
                _, outcome = cluster.worker_failures[-1]
                print(
                    f"FAILED: the worker session ended before it ran a task: CANFAR "
                    f"{outcome.describe()}.\nLast lines of its output:\n{outcome.log_tail(20)}"
                )
                return 1
            if client.scheduler_info().get("workers"):
                host = client.submit(socket.gethostname, pure=False).result(timeout=120)
                took = time.monotonic() - started
                print(
                    f"OK: a worker in a CANFAR session (host {host}) connected to {address} "
                    f"and ran a task, {took:.0f} s after the request: sessions can open "
                    "connections to this one, and CanfarCluster will work here."
                )
                return 0
            time.sleep(POLL_SECONDS)
        phases = cluster.session_phases()
        waited = time.monotonic() - started
        if any(phase == "Running" for phase in phases.values()):
            print(
                f"FAILED: the worker session {', '.join(phases)} is Running, but its worker "
                f"did not connect to {address} within {waited:.0f} s: connections from "
                "sessions to this session are most likely blocked (pod-to-pod traffic). "
                "Ask CANFAR support whether headless sessions may open TCP connections to "
                "this session's address."
            )
        else:
            print(
                f"INCONCLUSIVE: the worker session {', '.join(phases) or '(none)'} is still "
                f"{'/'.join(sorted(set(phases.values()))) or 'not listed'} after "
                f"{waited:.0f} s (queued, or pulling its image); try again later or with a "
                "longer --timeout."
            )
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check":
        return check(args)
    return 2  # pragma: no cover - argparse refuses other commands


if __name__ == "__main__":
    sys.exit(main())
