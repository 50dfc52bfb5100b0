"""`make demo`: the reduction pipeline on the embedded CANFAR platform, twice.

1. Snakemake: `snakemake --executor canfar --canfar-url local --jobs 4` runs every rule
   as a headless session.
2. Prefect: a Prefect server is started for the run; the flow's per-frame tasks run as
   sessions through `CanfarTaskRunner`; the server is stopped afterwards.

Then it prints what happened: frames, sources, sessions and their exit codes, and where
the outputs, logs and picture are. Outputs go to `demo-output/` (replaced on each run).
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from canfar_core.launch import parse_exit_marker

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "reduction"
OUT = ROOT / "demo-output"
FRAMES = 6

sys.path.insert(0, str(EXAMPLE))
import reduction  # noqa: E402


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without CANFAR/Prefect settings that could point elsewhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CANFAR_", "PREFECT_"))}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra)
    return env


def run_snakemake(workdir: Path) -> float:
    """Run the Snakefile with the canfar executor on the embedded platform."""
    command = [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(EXAMPLE / "Snakefile"),
        "--directory", str(workdir),
        "--executor", "canfar", "--canfar-url", "local",
        "--jobs", "4", "--config", f"frames={FRAMES}", "--quiet", "rules",
    ]  # fmt: skip
    print(f"$ snakemake --executor canfar --canfar-url local --jobs 4  (in {workdir})", flush=True)
    start = time.monotonic()
    subprocess.run(command, check=True, env=clean_env())
    return time.monotonic() - start


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def prefect_server(home: Path):
    """`prefect server start` on SQLite and a free loopback port, for the block's duration."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = clean_env(
        PREFECT_HOME=str(home),
        PREFECT_UI_ENABLED="false",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
    )
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "server.log", "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
             "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise SystemExit(f"prefect server exited; see {home / 'server.log'}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("prefect server did not become healthy in 120 s")
            time.sleep(0.25)
        yield api
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def run_prefect(workdir: Path, home: Path) -> tuple[float, dict[str, int]]:
    """Run the flow against a fresh Prefect server; count its task runs by final state."""
    with prefect_server(home) as api:
        print(
            "$ python examples/reduction/flow.py  (CanfarTaskRunner, CANFAR_URL=local)", flush=True
        )
        env = clean_env(
            PREFECT_API_URL=api, PREFECT_HOME=str(home), CANFAR_URL="local",
            CANFAR_LOCAL_ROOT=str(OUT / "platform-prefect"),
        )  # fmt: skip
        start = time.monotonic()
        subprocess.run(
            [sys.executable, str(EXAMPLE / "flow.py"), "--out", str(workdir),
             "--frames", str(FRAMES)],
            check=True, env=env, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        elapsed = time.monotonic() - start
        runs = httpx.post(f"{api}/task_runs/filter", json={"limit": 200}).json()
    states = collections.Counter(run["state"]["type"] for run in runs)
    return elapsed, dict(states)


def snakemake_sessions(workdir: Path) -> collections.Counter[int | None]:
    """Exit codes of the run's sessions, from the envelope's last line in each saved log."""
    codes: collections.Counter[int | None] = collections.Counter()
    for path in (workdir / ".snakemake" / "canfar" / "logs").rglob("*.log"):
        codes[parse_exit_marker(path.read_text(errors="replace"))] += 1
    return codes


def describe(workdir: Path) -> str:
    merged = workdir / "results" / "merged.ecsv"
    truth = reduction.match_truth(merged, workdir / "raw" / "truth.json")
    sources = sum(1 for line in merged.read_text().splitlines() if line and line[0] not in "#x")
    return (
        f"{FRAMES} frames, {sources} sources; bright isolated stars recovered within 1 px: "
        f"{truth['recovered']}/{truth['planted']}"
    )


def main() -> int:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    smk_dir, pf_dir = OUT / "snakemake", OUT / "prefect"
    smk_dir.mkdir()
    smk_seconds = run_snakemake(smk_dir)
    codes = snakemake_sessions(smk_dir)
    pf_seconds, states = run_prefect(pf_dir, OUT / "prefect-home")

    print("\n=== CANFAR workflows demo (embedded platform) ===")
    print(f"Snakemake  {smk_seconds:5.1f} s  {describe(smk_dir)}")
    shown = ", ".join(f"exit {c}: {n}" for c, n in sorted(codes.items(), key=str))
    print(f"           {sum(codes.values())} sessions ({shown})")
    print(f"           picture  {smk_dir / 'results' / 'summary.png'}")
    print(f"           catalog  {smk_dir / 'results' / 'merged.ecsv'}")
    print(f"           logs     {smk_dir / '.snakemake' / 'canfar' / 'logs'}")
    print(f"Prefect    {pf_seconds:5.1f} s  {describe(pf_dir)}")
    shown = ", ".join(f"{state}: {n}" for state, n in sorted(states.items()))
    print(f"           {sum(states.values())} task runs ({shown}); per-frame tasks ran as sessions")
    print(f"           picture  {pf_dir / 'results' / 'summary.png'}")
    ok = set(codes) == {0} and set(states) == {"COMPLETED"}
    print("All sessions succeeded." if ok else "Some sessions failed: see the logs above.")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
