"""Carbon K-edge XANES spectra on the model's energy grid: reading user files, resampling, normalising.

The training spectra (``../shared/data/a-C``) hold 100 intensities per site on an energy grid that is not stored;
from the source's plots it is 100 evenly spaced points over 274.5-314.5 eV (``ENERGY_GRID``). A target spectrum
from a user (two columns: energy in eV, intensity) is linearly resampled onto that grid, zero below its first
energy (the pre-edge is empty), and normalised to unit area like every spectrum here, so that only its shape counts.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np

from gcd_core.errors import GCDError

ENERGY_GRID = np.linspace(274.5, 314.5, 100)  # eV
SPECTRUM_VECTOR_NAME = "xanes"  # Conditioning.vector_name of models conditioned on conditioning_vector()
MAX_FILE_BYTES = 1_000_000
MIN_POINTS = 10
MIN_COVERAGE = 0.6  # a file must span at least this fraction of the grid's energy range


class SpectrumFileError(GCDError):
    """A spectrum file that cannot be used, with the reason in the message."""


def normalise(intensity: np.ndarray, energies: np.ndarray = ENERGY_GRID) -> np.ndarray:
    """Scale to unit area over ``energies`` (trapezoid rule); works on one spectrum or a stack ``[..., E]``."""
    intensity = np.asarray(intensity, dtype=float)
    area = np.trapezoid(intensity, energies, axis=-1)
    if np.any(area <= 0):
        raise GCDError("a spectrum with no positive area cannot be normalised")
    return intensity / np.expand_dims(area, -1)


PI_STAR_WINDOW = (285.0, 286.5)  # eV: graphite's pi* sits at 285.4-285.8 eV in the a-C data
SIGMA_STAR_WINDOW = (289.0, 305.0)  # eV: above the pi* region, through the sigma* resonances


def _window(window: tuple[float, float], energies: np.ndarray) -> np.ndarray:
    return np.nonzero((energies >= window[0]) & (energies <= window[1]))[0]


def pi_star_intensity(spectrum: np.ndarray, energies: np.ndarray = ENERGY_GRID) -> float:
    """Mean intensity over the pi* window (falls as sp2 carbon gives way to sp3)."""
    return float(np.asarray(spectrum)[_window(PI_STAR_WINDOW, energies)].mean())


def sigma_star_maximum(spectrum: np.ndarray, energies: np.ndarray = ENERGY_GRID) -> float:
    """Energy (eV) of the largest intensity in the sigma* window."""
    inside = _window(SIGMA_STAR_WINDOW, energies)
    return float(energies[inside[np.argmax(np.asarray(spectrum)[inside])]])


# sp3 fraction = intercept + slope * pi* intensity (unit-area spectrum): a least-squares line through the 19 a-C
# training cells of ``split_by_structure`` (largest error 0.10 there, 0.07 on the 6 held-out cells;
# tests/test_spectra.py refits it from the data). Reading sp2 from the pi* peak is the usual way to analyse a
# measured carbon K edge; here it sets the target of sp3 guidance (``gcd_core.guidance.sp3_guidance``).
SP3_FROM_PI_STAR = (1.0078, -31.414)


def estimated_sp3(spectrum: np.ndarray, energies: np.ndarray = ENERGY_GRID) -> float:
    """The sp3 fraction a carbon K-edge spectrum (any area) indicates, from its pi* intensity, in [0, 1]."""
    intercept, slope = SP3_FROM_PI_STAR
    return float(np.clip(intercept + slope * pi_star_intensity(normalise(spectrum, energies), energies), 0.0, 1.0))


# (sp3, sp) of the a-C training cells of ``split_by_structure``, averaged over each density (1.5, 2.0, 2.5, 3.0 and
# 3.5 g/cm3; tests/test_spectra.py recomputes them from the data). Two-bonded carbons go with sparse, sp2-rich
# carbon, so the sp fraction a spectrum indicates is read off its sp3 estimate along these points.
SP_ALONG_SP3 = ((0.030, 0.323), (0.113, 0.118), (0.279, 0.017), (0.657, 0.0), (0.940, 0.0))


def estimated_bonding(spectrum: np.ndarray, energies: np.ndarray = ENERGY_GRID) -> tuple[float, float, float]:
    """The (sp, sp2, sp3) fractions a carbon K-edge spectrum (any area) indicates: sp3 from its pi* peak
    (:func:`estimated_sp3`), sp interpolated along :data:`SP_ALONG_SP3`, sp2 the rest."""
    sp3 = estimated_sp3(spectrum, energies)
    along_sp3, sp_values = zip(*SP_ALONG_SP3, strict=True)
    sp = float(np.interp(sp3, along_sp3, sp_values))
    return sp, max(0.0, 1.0 - sp - sp3), sp3


def conditioning_vector(intensity: np.ndarray, energies: np.ndarray = ENERGY_GRID) -> np.ndarray:
    """A spectrum as a network conditions on it: unit area times the energy span, so its mean is about 1
    (unit-area values are ~1/40 per eV, too small for an MLP's input)."""
    return normalise(intensity, energies) * float(energies[-1] - energies[0])


def resample(energies: np.ndarray, intensity: np.ndarray, grid: np.ndarray = ENERGY_GRID) -> np.ndarray:
    """Linear resampling onto ``grid``: zero below the first energy, the last value held above the last."""
    return np.interp(grid, energies, intensity, left=0.0, right=float(intensity[-1]))


def _parse_table(text: str, name: str) -> np.ndarray:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "%", "//")):
            continue
        fields = [f for f in re.split(r"[,;\s]+", stripped) if f]
        try:
            values = [float(f) for f in fields]
        except ValueError:
            if not rows:
                continue  # a header row before the data
            raise SpectrumFileError(f"{name}, line {number}: {stripped[:60]!r} is not numbers") from None
        if len(values) != 2:
            raise SpectrumFileError(
                f"{name}, line {number}: expected 2 columns (energy in eV, intensity), found {len(values)}"
            )
        rows.append(values)
    if not rows:
        raise SpectrumFileError(f"{name} holds no numeric rows; expected two columns: energy (eV), intensity")
    return np.array(rows)


def read_spectrum(
    source: str | Path | bytes | io.IOBase, grid: np.ndarray = ENERGY_GRID, name: str | None = None
) -> np.ndarray:
    """A target spectrum from a two-column text or CSV file (a path, bytes or a file object), resampled onto
    ``grid`` and normalised to unit area; raises :class:`SpectrumFileError` naming what is wrong."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        name = name or path.name
        if not path.is_file():
            raise SpectrumFileError(f"{path} does not exist")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise SpectrumFileError(f"{name} is {path.stat().st_size / 1e6:.1f} MB; spectra files must be under 1 MB")
        raw = path.read_bytes()
    elif isinstance(source, bytes):
        raw = source
    else:
        raw = source.read(MAX_FILE_BYTES + 1)
        raw = raw.encode() if isinstance(raw, str) else raw
    name = name or "the spectrum file"
    if len(raw) > MAX_FILE_BYTES:
        raise SpectrumFileError(f"{name} is larger than 1 MB; a spectrum needs only two columns of numbers")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SpectrumFileError(f"{name} is not a text file (expected two columns: energy in eV, intensity)") from None
    table = _parse_table(text, name)
    if not np.all(np.isfinite(table)):
        bad = int(np.nonzero(~np.isfinite(table).all(axis=1))[0][0]) + 1
        raise SpectrumFileError(f"{name}: data row {bad} holds NaN or infinity")
    if len(table) < MIN_POINTS:
        raise SpectrumFileError(f"{name} has {len(table)} points; at least {MIN_POINTS} are needed")
    energies, intensity = table[:, 0], table[:, 1]
    order = np.argsort(energies, kind="stable")
    energies, intensity = energies[order], intensity[order]
    if np.any(np.diff(energies) == 0):
        raise SpectrumFileError(f"{name} lists the same energy twice")
    low, high = float(grid[0]), float(grid[-1])
    overlap = min(high, energies[-1]) - max(low, energies[0])
    if overlap < MIN_COVERAGE * (high - low):
        hint = " (keV? give energies in eV)" if energies[-1] < 1 else ""
        raise SpectrumFileError(
            f"{name} spans {energies[0]:g}-{energies[-1]:g} eV{hint}; it must cover at least "
            f"{100 * MIN_COVERAGE:.0f} % of the model's {low:g}-{high:g} eV carbon K-edge window"
        )
    if intensity.min() < -0.05 * max(abs(intensity).max(), 1e-300):
        raise SpectrumFileError(
            f"{name} has negative intensities (down to {intensity.min():g}); subtract less background"
        )
    resampled = np.clip(resample(energies, intensity, grid), 0.0, None)
    if resampled.max() <= 0:
        raise SpectrumFileError(f"{name} has no positive intensity inside {low:g}-{high:g} eV")
    return normalise(resampled, grid)


def spectrum_error(spectrum: np.ndarray, target: np.ndarray) -> float:
    """Mean squared difference of two unit-area spectra on the same grid (the figure the benchmarks report)."""
    spectrum, target = np.asarray(spectrum, dtype=float), np.asarray(target, dtype=float)
    if spectrum.shape != target.shape:
        raise GCDError(f"spectra on different grids: {spectrum.shape} and {target.shape}")
    return float(np.mean((spectrum - target) ** 2))
