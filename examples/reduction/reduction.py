"""A small CCD reduction, step by step: the code both the Snakefile and the Prefect flow run.

Each function is one pipeline step that reads files and writes files, so a workflow engine
can run each as its own CANFAR session. The raw data are synthetic, made by `generate`:
bias frames (a bias level plus read noise), flat frames (an illumination pattern), and
science frames (stars as Gaussian point sources on a sky, seen through the same
illumination, plus bias and noise). The planted stars are written beside the frames, so a
test can check what the pipeline recovers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    pass

# astropy and scipy are imported inside the steps that use them: every Snakemake job
# re-reads the Snakefile (which imports this module), and a job should not pay ~1 s of
# imports it does not need.

SHAPE = (256, 256)
BIAS_LEVEL = 1000.0
READ_NOISE = 5.0
FLAT_LEVEL = 20000.0
SKY_LEVEL = 100.0
PSF_SIGMA = 1.5
STARS_PER_FRAME = 25
DETECTION_SIGMA = 5.0
APERTURE_RADIUS = 5.0
CENTROID_HALF_WIDTH = 3


def illumination(shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """A vignetting pattern: 1 at the centre, falling to ~0.7 in the corners."""
    y, x = np.indices(shape, dtype=float)
    cy, cx = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    r2 = ((x - cx) / shape[1]) ** 2 + ((y - cy) / shape[0]) ** 2
    return 1.0 - 0.6 * r2


def _write(path: Path, data: np.ndarray, **header: object) -> None:
    from astropy.io import fits

    path.parent.mkdir(parents=True, exist_ok=True)
    hdu = fits.PrimaryHDU(data.astype(np.float32))
    for key, value in header.items():
        hdu.header[key] = value
    hdu.writeto(path, overwrite=True)


def _stars(rng: np.random.Generator, n: int) -> list[dict[str, float]]:
    margin = 12
    return [
        {
            "x": float(rng.uniform(margin, SHAPE[1] - margin)),
            "y": float(rng.uniform(margin, SHAPE[0] - margin)),
            "flux": float(10 ** rng.uniform(3.3, 5.0)),
        }
        for _ in range(n)
    ]


def _render(stars: Sequence[dict[str, float]]) -> np.ndarray:
    y, x = np.indices(SHAPE, dtype=float)
    image = np.zeros(SHAPE)
    norm = 1.0 / (2 * np.pi * PSF_SIGMA**2)
    for star in stars:
        image += (
            star["flux"]
            * norm
            * np.exp(-((x - star["x"]) ** 2 + (y - star["y"]) ** 2) / (2 * PSF_SIGMA**2))
        )
    return image


def generate(
    raw_dir: Path, frames: int, *, n_bias: int = 5, n_flat: int = 5, seed: int = 42
) -> None:
    """Write bias, flat and science frames and the planted stars (`truth.json`)."""

    rng = np.random.default_rng(seed)
    raw_dir = Path(raw_dir)
    light = illumination()
    for i in range(n_bias):
        noise = rng.normal(0, READ_NOISE, SHAPE)
        _write(raw_dir / f"bias_{i}.fits", BIAS_LEVEL + noise, IMAGETYP="bias")
    for i in range(n_flat):
        signal = rng.poisson(FLAT_LEVEL * light)
        _write(
            raw_dir / f"flat_{i}.fits",
            BIAS_LEVEL + signal + rng.normal(0, READ_NOISE, SHAPE),
            IMAGETYP="flat",
        )
    truth: dict[str, list[dict[str, float]]] = {}
    for f in range(frames):
        stars = _stars(rng, STARS_PER_FRAME)
        truth[f"frame{f:02d}"] = stars
        electrons = rng.poisson((SKY_LEVEL + _render(stars)) * light)
        data = BIAS_LEVEL + electrons + rng.normal(0, READ_NOISE, SHAPE)
        _write(raw_dir / f"frame{f:02d}.fits", data, IMAGETYP="object", FRAME=f)
    (raw_dir / "truth.json").write_text(json.dumps(truth, indent=1))


def master_bias(bias_files: Sequence[Path], out: Path) -> None:
    """Median-combine the bias frames."""
    from astropy.io import fits

    stack = np.stack([fits.getdata(p).astype(float) for p in bias_files])
    _write(Path(out), np.median(stack, axis=0), IMAGETYP="masterbias", NCOMBINE=len(bias_files))


def master_flat(flat_files: Sequence[Path], bias_file: Path, out: Path) -> None:
    """Bias-subtract, median-combine and normalise the flats to a median of 1."""
    from astropy.io import fits

    bias = fits.getdata(bias_file).astype(float)
    stack = np.stack([fits.getdata(p).astype(float) - bias for p in flat_files])
    flat = np.median(stack, axis=0)
    _write(Path(out), flat / np.median(flat), IMAGETYP="masterflat", NCOMBINE=len(flat_files))


def calibrate(raw: Path, bias_file: Path, flat_file: Path, out: Path) -> None:
    """(raw - bias) / flat."""
    from astropy.io import fits

    data = fits.getdata(raw).astype(float)
    bias = fits.getdata(bias_file).astype(float)
    flat = fits.getdata(flat_file).astype(float)
    _write(Path(out), (data - bias) / flat, IMAGETYP="calibrated")


def _background(data: np.ndarray) -> tuple[float, float]:
    """Sky level and noise from the median and the median absolute deviation."""
    median = float(np.median(data))
    sigma = float(1.4826 * np.median(np.abs(data - median)))
    return median, sigma


def detect(calibrated: Path, out: Path) -> int:
    """Find stars above DETECTION_SIGMA and measure centroid and aperture flux (ECSV)."""
    from astropy.io import fits
    from astropy.table import Table
    from scipy import ndimage

    data = fits.getdata(calibrated).astype(float)
    sky, sigma = _background(data)
    smoothed = ndimage.gaussian_filter(data - sky, PSF_SIGMA)
    smooth_sigma = sigma / (2 * np.sqrt(np.pi) * PSF_SIGMA)
    # Peaks of the smoothed image, not threshold islands: islands join neighbouring stars.
    peaks = (smoothed == ndimage.maximum_filter(smoothed, size=5)) & (
        smoothed > DETECTION_SIGMA * smooth_sigma
    )
    y, x = np.indices(data.shape, dtype=float)
    half = CENTROID_HALF_WIDTH
    rows = []
    for py, px in zip(*np.nonzero(peaks), strict=True):
        if not (half <= py < data.shape[0] - half and half <= px < data.shape[1] - half):
            continue
        box = (slice(py - half, py + half + 1), slice(px - half, px + half + 1))
        weights = np.clip(data[box] - sky, 0, None)
        total = weights.sum()
        if total <= 0:
            continue
        cx = float((weights * x[box]).sum() / total)
        cy = float((weights * y[box]).sum() / total)
        aperture = (x - cx) ** 2 + (y - cy) ** 2 <= APERTURE_RADIUS**2
        flux = float(np.sum(data[aperture] - sky))
        rows.append((cx, cy, flux, float(data[py, px] - sky)))
    table = Table(
        rows=rows or None, names=("x", "y", "flux", "peak"), dtype=(float, float, float, float)
    )
    table.meta["frame"] = Path(calibrated).stem
    table.meta["sky"] = sky
    table.meta["noise"] = sigma
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    table.write(out, format="ascii.ecsv", overwrite=True)
    return len(table)


def merge(catalogs: Sequence[Path], out: Path) -> int:
    """Concatenate the per-frame catalogues, with a `frame` column (ECSV)."""
    from astropy.table import Table, vstack

    tables = []
    for path in catalogs:
        table = Table.read(path, format="ascii.ecsv")
        table.meta.clear()
        table["frame"] = [Path(path).stem] * len(table)
        tables.append(table)
    merged = vstack(tables) if tables else Table(names=("x", "y", "flux", "peak", "frame"))
    merged.meta = {"frames": len(tables)}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    merged.write(out, format="ascii.ecsv", overwrite=True)
    return len(merged)


def summary_plot(calibrated: Sequence[Path], merged_catalog: Path, out: Path) -> None:
    """A PNG: calibrated frames with detected sources circled, and a histogram of fluxes."""
    import matplotlib
    from astropy.io import fits
    from astropy.table import Table

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    catalog = Table.read(merged_catalog, format="ascii.ecsv")
    shown = list(calibrated)[:4]
    fig, axes = plt.subplots(1, len(shown) + 1, figsize=(4 * (len(shown) + 1), 4.2))
    axes = np.atleast_1d(axes)
    for ax, path in zip(axes, shown, strict=False):
        data = fits.getdata(path)
        lo, hi = np.percentile(data, [5, 99.5])
        ax.imshow(data, origin="lower", cmap="gray", vmin=lo, vmax=hi)
        found = catalog[catalog["frame"] == Path(path).stem]
        ax.scatter(
            found["x"],
            found["y"],
            s=120,
            facecolors="none",
            edgecolors="tab:orange",
            linewidths=1.2,
        )
        ax.set_title(f"{Path(path).stem}: {len(found)} sources")
        ax.set_xticks([])
        ax.set_yticks([])
    hist = axes[-1]
    fluxes = np.asarray(catalog["flux"], dtype=float)
    fluxes = fluxes[fluxes > 0]
    if len(fluxes):
        hist.hist(np.log10(fluxes), bins=20, color="tab:blue", edgecolor="white")
    hist.set_xlabel("log10 aperture flux (e-)")
    hist.set_ylabel("sources")
    hist.set_title(f"{len(catalog)} sources in {len(set(catalog['frame']))} frames")
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)


def match_truth(
    merged_catalog: Path, truth_file: Path, *, min_flux: float = 20000.0, isolation: float = 8.0
) -> dict[str, float]:
    """Compare detections with the bright, isolated planted stars.

    A star counts when it is brighter than `min_flux` and no other planted star lies
    within `isolation` pixels (blends are not a fair test of centroiding). Returns how
    many such stars were planted, how many were recovered within one pixel, and the
    largest offset among those recovered.
    """
    from astropy.table import Table

    catalog = Table.read(merged_catalog, format="ascii.ecsv")
    truth = json.loads(Path(truth_file).read_text())
    planted = recovered = 0
    worst = 0.0
    for frame, stars in truth.items():
        found = catalog[catalog["frame"] == frame]
        xs = np.array([s["x"] for s in stars])
        ys = np.array([s["y"] for s in stars])
        for star in stars:
            neighbours = np.hypot(xs - star["x"], ys - star["y"])
            if star["flux"] < min_flux or np.sum(neighbours < isolation) > 1:
                continue
            planted += 1
            if not len(found):
                continue
            offsets = np.hypot(
                np.asarray(found["x"]) - star["x"], np.asarray(found["y"]) - star["y"]
            )
            best = float(offsets.min())
            if best <= 1.0:
                recovered += 1
                worst = max(worst, best)
    return {"planted": planted, "recovered": recovered, "worst_offset": worst}
