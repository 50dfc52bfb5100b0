"""The reduction example, end to end, as a user runs it: real Snakemake, real sessions."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from canfar_core.launch import parse_exit_marker
from canfar_local.testing import processes_mentioning

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "reduction"
sys.path.insert(0, str(EXAMPLE))
import reduction  # noqa: E402


def test_snakemake_reduction_recovers_the_planted_stars(tmp_path: Path) -> None:
    workdir = tmp_path / "night"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CANFAR_", "SNAKEMAKE_"))}
    env["CANFAR_LOCAL_ROOT"] = str(tmp_path / "platform")
    result = subprocess.run(
        [
            sys.executable, "-m", "snakemake",
            "--snakefile", str(EXAMPLE / "Snakefile"), "--directory", str(workdir),
            "--executor", "canfar", "--canfar-url", "local", "--jobs", "4",
            "--config", "frames=2", "bias_frames=3", "flat_frames=3",
        ],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]

    match = reduction.match_truth(
        workdir / "results" / "merged.ecsv", workdir / "raw" / "truth.json"
    )
    assert match["planted"] >= 10
    assert match["recovered"] == match["planted"], match
    assert match["worst_offset"] < 1.0
    picture = workdir / "results" / "summary.png"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.stat().st_size > 20_000

    logs = list((workdir / ".snakemake" / "canfar" / "logs").rglob("*.log"))
    # generate, master_bias, master_flat, 2 x calibrate, 2 x detect, merge, plot
    assert len(logs) == 9
    assert {parse_exit_marker(p.read_text()) for p in logs} == {0}
    assert processes_mentioning(str(tmp_path / "platform")) == [], "no session left running"
