"""The CCD reduction with its per-frame steps on Dask workers that are CANFAR sessions.

    CANFAR_URL=local python flow_dask.py --frames 6 --out reduction-output

The variant of `flow.py` for many small, same-shaped steps: instead of a session per
step, a `CanfarCluster` keeps a few worker sessions (2 cores, 2 GiB each; between one and
`--workers`, as the load asks) and `DaskTaskRunner` sends every calibrate and detect step
to them, so each step costs a function call, not a session start. The steps are the same
tasks as in `flow.py`, running the same `reduction.py`. The calibration frames are
combined, and the catalogues merged and plotted, in the flow itself.

On CANFAR, run it from a CANFAR session (a notebook or a headless session: the workers
connect back to the scheduler in this process; `python -m canfar_core.dask check` tells
whether they can), in a directory under /arc, with an image that has this project's
Python with Prefect, prefect-dask and distributed: `--image images.canfar.net/...`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from prefect import flow, unmapped

# The steps sit beside this file; the workers run in this directory, where they import
# them too (Prefect sends them a task by reference to its module).
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import flow as steps  # noqa: E402


@flow(name="ccd-reduction-dask", log_prints=True)
def reduce_night_dask(out: str = "reduction-output", frames: int = 6) -> dict[str, float]:
    """Reduce one night of synthetic frames, per-frame steps on Dask; the summary figures."""
    out = str(Path(out).resolve())
    raw = steps.generate_frames(out, frames)
    bias = steps.combine_bias(out)
    flat = steps.combine_flat(out, bias)
    calibrated = steps.calibrate_frame.map(raw, unmapped(bias), unmapped(flat))
    catalogs = steps.detect_sources.map(calibrated)
    return steps.summarise(out, frames, calibrated.result(), catalogs.result())


def runner(image: str | None, workers: int, **cluster: Any) -> Any:
    """DaskTaskRunner on a CanfarCluster of 1..`workers` sessions (local: CANFAR_URL=local)."""
    from canfar_core.dask import CanfarCluster
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(
        cluster_class=CanfarCluster,
        cluster_kwargs={"image": image, "cores": 2, "ram": 2, "workdir": str(HERE), **cluster},
        adapt_kwargs={"minimum": 1, "maximum": workers},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="reduction-output")
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--image", default=None, help="worker image (required on CANFAR)")
    parser.add_argument("--workers", type=int, default=2, help="at most this many workers")
    args = parser.parse_args()
    configured = reduce_night_dask.with_options(task_runner=runner(args.image, args.workers))
    print(configured(out=args.out, frames=args.frames))


if __name__ == "__main__":
    main()
