"""The CCD reduction as a Prefect flow: each per-frame step runs in its own CANFAR session.

    CANFAR_URL=local python flow.py --frames 6 --out reduction-output

The calibration frames are combined once; every science frame is then calibrated
(1 core, 1 GiB) and searched for sources (2 cores, 2 GiB) in sessions sized per task
with `canfar_options`; the catalogues are merged and plotted in the flow. On CANFAR,
run it from a directory under /arc (sessions must see the files) with an image that has
this project's Python, Prefect and prefect-canfar: `--image images.canfar.net/...`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect_canfar import CanfarTaskRunner, canfar_options

# The step module sits beside this file (shared with the Snakefile).
sys.path.insert(0, str(Path(__file__).resolve().parent))
import reduction


@task
def generate_frames(out: str, frames: int) -> list[str]:
    """Synthetic raw frames; returns the science frame paths."""
    reduction.generate(Path(out) / "raw", frames)
    return [str(Path(out) / "raw" / f"frame{i:02d}.fits") for i in range(frames)]


@task
def combine_bias(out: str) -> str:
    """Master bias from the raw bias frames."""
    target = Path(out) / "calib" / "master_bias.fits"
    reduction.master_bias(sorted((Path(out) / "raw").glob("bias_*.fits")), target)
    return str(target)


@task
def combine_flat(out: str, bias: str) -> str:
    """Normalised master flat."""
    target = Path(out) / "calib" / "master_flat.fits"
    reduction.master_flat(sorted((Path(out) / "raw").glob("flat_*.fits")), Path(bias), target)
    return str(target)


@task
def calibrate_frame(raw: str, bias: str, flat: str) -> str:
    """One calibrated science frame."""
    target = Path(raw).parent.parent / "calibrated" / Path(raw).name
    reduction.calibrate(Path(raw), Path(bias), Path(flat), target)
    return str(target)


@task
def detect_sources(calibrated: str) -> str:
    """One frame's source catalogue."""
    target = Path(calibrated).parent.parent / "catalogs" / (Path(calibrated).stem + ".ecsv")
    found = reduction.detect(Path(calibrated), target)
    get_run_logger().info("%s: %d sources", Path(calibrated).stem, found)
    return str(target)


@flow(name="ccd-reduction", log_prints=True)
def reduce_night(out: str = "reduction-output", frames: int = 6) -> dict[str, float]:
    """Reduce one night of synthetic frames; returns the summary figures."""
    out = str(Path(out).resolve())
    raw = generate_frames.submit(out, frames)
    bias = combine_bias.submit(out, wait_for=[raw])
    flat = combine_flat.submit(out, bias)
    with canfar_options(cores=1, ram=1):
        calibrated = calibrate_frame.map(raw.result(), bias, flat)
    with canfar_options(cores=2, ram=2):
        catalogs = detect_sources.map(calibrated)
    return summarise(out, frames, calibrated.result(), catalogs.result())


def summarise(
    out: str, frames: int, calibrated: list[str], catalogs: list[str]
) -> dict[str, float]:
    """Merge the catalogues, draw the picture, compare with the planted stars (in the flow)."""
    merged = Path(out) / "results" / "merged.ecsv"
    sources = reduction.merge([Path(p) for p in catalogs], merged)
    picture = Path(out) / "results" / "summary.png"
    reduction.summary_plot([Path(p) for p in calibrated], merged, picture)
    summary = {"frames": frames, "sources": sources}
    summary.update(reduction.match_truth(merged, Path(out) / "raw" / "truth.json"))
    print(f"{sources} sources in {frames} frames; picture: {picture}")
    return summary


def runner(image: str | None, max_sessions: int) -> CanfarTaskRunner:
    """The task runner of this flow (the embedded platform when CANFAR_URL=local)."""
    return CanfarTaskRunner(image=image, cores=1, ram=1, max_sessions=max_sessions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="reduction-output")
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--image", default=None, help="session image (required on CANFAR)")
    parser.add_argument("--max-sessions", type=int, default=4)
    args = parser.parse_args()
    configured = reduce_night.with_options(task_runner=runner(args.image, args.max_sessions))
    print(configured(out=args.out, frames=args.frames))


if __name__ == "__main__":
    main()
