"""How the embedded platform scales with live sessions.

Starts ``canfar-local serve`` in a subprocess (so that its resident memory is its own), with
the capacity raised so that every session is admitted, then for 10, 100 and 1000 live
sessions (each running ``sleep``) measures the latency of ``GET /v1/session`` (p50, p95)
and the server's resident memory.  Ends with machine-readable ``name: value`` lines.

    uv run python bench/platform_scale.py [--sizes 10,100,1000] [--requests 50]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

IMAGE = "images.canfar.net/skaha/base:latest"


def start_server(root: Path) -> tuple[subprocess.Popen[str], str, str]:
    cli = Path(sys.executable).with_name("canfar-local")
    command = [str(cli)] if cli.exists() else [sys.executable, "-m", "canfar_local.cli"]
    process = subprocess.Popen(
        [
            *command,
            "serve",
            "--root",
            str(root),
            "--cores",
            "1000000",
            "--ram",
            "100000000",
            "--kill-on-exit",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    url = process.stdout.readline().strip().split("=", 1)[1]
    token = process.stdout.readline().strip().split("=", 1)[1]
    return process, url, token


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def create_many(client: httpx.Client, count: int) -> None:
    def one(i: int) -> None:
        response = client.post(
            "/session",
            data={"image": IMAGE, "name": f"bench-{i}", "cmd": "sleep", "args": "86400"},
        )
        response.raise_for_status()

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, range(count)))


def wait_all_running(client: httpx.Client, expected: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while True:
        sessions = client.get("/session").json()
        running = sum(1 for s in sessions if s["status"] == "Running")
        if len(sessions) == expected and running == expected:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"only {running}/{expected} sessions running after {timeout}s")
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="canfar-bench-") as directory:
        process, url, token = start_server(Path(directory) / "root")
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/x-www-form-urlencoded",
        }
        try:
            with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
                live = 0
                for size in sizes:
                    started = time.monotonic()
                    create_many(client, size - live)
                    live = size
                    wait_all_running(client, live)
                    ready = time.monotonic() - started
                    for _ in range(3):  # warm up
                        client.get("/session")
                    latencies = []
                    for _ in range(args.requests):
                        t0 = time.perf_counter()
                        response = client.get("/session")
                        latencies.append((time.perf_counter() - t0) * 1000)
                        assert len(response.json()) == live
                    p50 = statistics.median(latencies)
                    p95 = percentile(latencies, 0.95)
                    rss = rss_mib(process.pid)
                    print(
                        f"{size:5d} live sessions: list p50 {p50:8.2f} ms  p95 {p95:8.2f} ms  "
                        f"server RSS {rss:7.1f} MiB  (created+running in {ready:.1f} s)",
                        flush=True,
                    )
                    results[f"list_p50_ms_{size}"] = p50
                    results[f"list_p95_ms_{size}"] = p95
                    results[f"server_rss_mib_{size}"] = rss
                    results[f"startup_s_{size}"] = ready
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=120)
    print()
    for name, value in results.items():
        print(f"{name}: {value:.2f}")
    print(f"cpus: {os.cpu_count()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
