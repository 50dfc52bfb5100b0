"""Running real `snakemake --executor canfar` processes against the embedded platform.

The token travels in `SNAKEMAKE_CANFAR_TOKEN`, never on the command line. A loopback
platform URL makes the plugin use this interpreter inside sessions, so no image or
`--canfar-python` is needed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from canfar_local import LocalPlatform

SNAKEMAKE_TIMEOUT = 180


@dataclass
class Workflow:
    """A workflow directory and how to run Snakemake in it against one platform."""

    path: Path
    platform: LocalPlatform
    url: str | None = None  # what Snakemake is told (a proxy's URL); default the platform's

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("CANFAR_URL", None)
        env["SNAKEMAKE_CANFAR_TOKEN"] = self.platform.token
        env.update(extra)
        return env

    def argv(self, *args: str, jobs: int = 4) -> list[str]:
        return [
            sys.executable,
            "-m",
            "snakemake",
            "--executor",
            "canfar",
            "--canfar-url",
            self.url or self.platform.url,
            "--jobs",
            str(jobs),
            "--seconds-between-status-checks",
            "1",
            "--nocolor",
            *args,
        ]

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run Snakemake to completion; stdout and stderr are merged."""
        return subprocess.run(
            self.argv(*args),
            cwd=self.path,
            env=env or self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=SNAKEMAKE_TIMEOUT,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        """Start Snakemake in the background (output to `snakemake.out`)."""
        return self.start_with(self.env(), *args)

    def start_with(self, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
        """Start Snakemake in the background with this environment.

        SIGINT gets its default disposition in the child, as in a user's terminal: a
        test run started in the background of a non-interactive shell inherits SIGINT
        ignored, and Snakemake would then never see the Ctrl-C these tests send.
        """
        out = open(self.path / "snakemake.out", "w")  # noqa: SIM115 - closed by the child's exit
        return subprocess.Popen(
            self.argv(*args),
            cwd=self.path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=_default_sigint,
        )

    def sessions(self) -> list[dict[str, Any]]:
        """The platform's headless sessions, as the API lists them."""
        with httpx.Client(
            base_url=self.platform.url,
            headers={"Authorization": f"Bearer {self.platform.token}"},
            timeout=30,
        ) as http:
            response = http.get("session", params={"type": "headless"})
            response.raise_for_status()
            return response.json()

    def logs(self) -> list[Path]:
        """Every saved job log."""
        return sorted((self.path / ".snakemake" / "canfar" / "logs").rglob("*.log"))


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def workflow(tmp_path: Path, platform: LocalPlatform) -> Callable[[str], Workflow]:
    """`workflow(snakefile_text)` → a Workflow in a fresh directory on the shared platform."""

    def make(snakefile: str, platform_: LocalPlatform | None = None) -> Workflow:
        path = tmp_path / f"wf{len(list(tmp_path.glob('wf*')))}"
        path.mkdir()
        (path / "Snakefile").write_text(textwrap.dedent(snakefile))
        return Workflow(path, platform_ or platform)

    return make


def processes_mentioning(text: str) -> list[int]:
    """Live pids (other than ours) whose command line contains `text`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if text.encode() in cmdline and state not in (b"Z", b"X"):
            found.append(int(entry))
    return found
