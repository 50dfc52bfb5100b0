"""`python -m canfar_core.dask check`: does a session reach this one? (embedded platform)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from canfar_core.dask.__main__ import main

from tests.dask.conftest import IMAGE, listed


def test_the_check_says_sessions_reach_this_process(platform, cluster_kwargs, capsys) -> None:
    argv = ["check", "--image", IMAGE, "--python", sys.executable, "--timeout", "120"]
    assert main([*argv, "--shared-dir", cluster_kwargs["shared_dir"]]) == 0
    out = capsys.readouterr().out
    assert "OK: a worker in a CANFAR session" in out and "tls://127.0.0.1:" in out
    assert listed(platform) == []


@pytest.mark.parametrize(
    ("script", "sentence"),
    [
        # An image without a working Python: the worker session ends at once.
        ("exit 3", "FAILED: the worker session ended before it ran a task"),
        # Traffic between sessions blocked (stood in for by a worker that never dials).
        ("exec sleep 60", "most likely blocked (pod-to-pod traffic)"),
    ],
)
def test_the_check_says_what_went_wrong(
    platform, cluster_kwargs, capsys, tmp_path: Path, script: str, sentence: str
) -> None:
    fake_python = tmp_path / "python"
    fake_python.write_text(f"#!/bin/sh\n{script}\n")
    fake_python.chmod(0o755)
    argv = ["check", "--image", IMAGE, "--python", str(fake_python), "--timeout", "4"]
    assert main([*argv, "--shared-dir", cluster_kwargs["shared_dir"]]) == 1
    assert sentence in capsys.readouterr().out
    assert listed(platform) == []


def test_importing_canfar_core_does_not_import_dask() -> None:
    code = "import sys, canfar_core; print(sorted({'dask', 'distributed'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
