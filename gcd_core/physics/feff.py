"""Independent check of carbon K-edge XANES with FEFF10 full multiple scattering (the ``feff10-rs`` wheel).

A site's spectrum: cut a spherical cluster out of the periodic cell around the absorber (periodic images
included), write a ``feff.inp`` (absorber at the origin as potential 0, the other atoms by element), run FEFF10
(self-consistent muffin-tin potentials, screened core hole, full multiple scattering XANES) in a temporary work
directory, read ``xmu.dat`` and bring ``mu(omega)`` onto :data:`~gcd_core.physics.spectra.ENERGY_GRID` at unit
area, like every spectrum in the project.

**Energy alignment.** FEFF's absolute energies are not calibrated. The rule here is one constant:
``E = omega + settings.energy_shift``, where ``omega`` is FEFF's absolute photon energy (``xmu.dat`` column 1)
and :data:`DEFAULT_ENERGY_SHIFT` was chosen once so that the pi* peak of crystalline graphite (mean of its two
sites, default settings) sits at 285.4 eV, the measured graphite pi* energy. One shift for every site keeps
FEFF's own site-to-site edge shifts (sp2 vs sp3 core levels) instead of aligning each onset away. It was
calibrated for the default radii; other settings may need their own shift.

Runs are cached on disk as ``<sha256 of the input text and feff10 version>.npy`` holding FEFF's raw
``(omega, mu)``; alignment and broadening happen after the cache, so changing them never reruns FEFF.
Each run takes seconds to a minute on one CPU core: fine for sampled sites of a structure, too slow for
interactive use.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from gcd_core.errors import GCDError
from gcd_core.physics.spectra import ENERGY_GRID, normalise, resample

# eV added to FEFF's omega: puts graphite's FEFF pi* peak (default settings) at the measured 285.4 eV.
# Calibrated by `benchmarks/feff_trends.py --calibrate` (see the module docstring).
DEFAULT_ENERGY_SHIFT = 5.74
# A: atoms closer than this overlap (carbon bonds are 1.2-1.6 A); FEFF's potential stage crashes when such a pair
# sits inside the SCF sphere (seen on a failed generated sample: a pair 0.5 A apart, 1.5 A from the absorber)
MIN_SEPARATION = 1.0
GRAPHITE_PI_STAR_EV = 285.4  # measured graphite pi* energy (the calibration target)
CORE_HOLES = ("RPA", "FSR", "none")


@dataclass(frozen=True)
class FeffSettings:
    """FEFF10 settings for one carbon K-edge site. The defaults are cheap but sane (about 5-25 s per site on one
    core: graphite-like sites fastest, diamond-like slowest); the reference-quality settings of the stack notes
    are ``cluster_radius=7.0, scf_radius=4.0, fms_radius=5.0`` (30-80 s per site)."""

    cluster_radius: float = 5.0  # A: atoms listed in ATOMS; must reach the SCF and FMS radii
    scf_radius: float = 3.0  # A: SCF card; first and second shells make the self-consistent potentials
    fms_radius: float = 4.0  # A: FMS card; full multiple scattering cost grows with the cube of the atom count
    core_hole: str = "RPA"  # COREHOLE card: RPA (screened, FEFF10's best for light K-edges), FSR or none
    xkmax: float = 3.5  # 1/A, XANES card: the grid reaches ~47 eV above the Fermi level (the window needs ~35)
    edge: str = "K"
    energy_shift: float = DEFAULT_ENERGY_SHIFT  # eV added to FEFF's omega (after the cache)
    broadening: float = 1.0  # eV, FWHM of a Gaussian applied after FEFF (its grid is coarse high above the edge)

    def __post_init__(self) -> None:
        if not 0 < self.scf_radius <= self.cluster_radius or not 0 < self.fms_radius <= self.cluster_radius:
            raise GCDError(
                f"FEFF radii must be positive and the SCF ({self.scf_radius} A) and FMS ({self.fms_radius} A) "
                f"radii no larger than the cluster radius ({self.cluster_radius} A)"
            )
        if self.core_hole not in CORE_HOLES:
            raise GCDError(f"core_hole must be one of {', '.join(CORE_HOLES)}, not {self.core_hole!r}")
        if self.xkmax <= 0 or self.broadening < 0:
            raise GCDError("xkmax must be positive and broadening non-negative")


def _import_feff10() -> ModuleType:
    try:
        import feff10
    except ImportError:
        raise GCDError("FEFF checks need the feff10 package: pip install feff10-rs") from None
    return feff10


def feff10_missing() -> str:
    """Why FEFF checks cannot run in this Python ('' when they can)."""
    try:
        _import_feff10()
    except GCDError as exc:
        return str(exc)
    return ""


def _cluster(atoms: Atoms, site: int, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """(vectors from the absorber, atomic numbers) of every other atom and periodic image within ``radius``,
    in a canonical order (distance, then x, y, z, all rounded), so equivalent sites give identical input text
    and share one cache entry."""
    cell = atoms.cell.array
    # images needed along axis k: the radius over the spacing of the lattice planes (1 / |reciprocal vector|)
    reciprocal = np.linalg.pinv(cell).T
    reach = [int(np.ceil(radius * np.linalg.norm(reciprocal[k]))) if atoms.pbc[k] else 0 for k in range(3)]
    shifts = np.stack(np.meshgrid(*[np.arange(-m, m + 1) for m in reach], indexing="ij"), -1).reshape(-1, 3) @ cell
    relative = atoms.positions - atoms.positions[site]
    vectors = (relative[None, :, :] + shifts[:, None, :]).reshape(-1, 3)
    numbers = np.tile(atoms.numbers, len(shifts))
    distance = np.linalg.norm(vectors, axis=1)
    keep = (distance <= radius) & (distance > 1e-6)  # drops the absorber itself (it goes at the origin)
    vectors = np.round(vectors[keep], 4) + 0.0  # + 0.0 turns -0.0 into 0.0 so the text is canonical
    numbers, distance = numbers[keep], np.round(distance[keep], 4)
    order = np.lexsort((vectors[:, 2], vectors[:, 1], vectors[:, 0], distance))
    return vectors[order], numbers[order]


def feff_input(atoms: Atoms, site: int, settings: FeffSettings | None = None) -> str:
    """The ``feff.inp`` text for absorber ``site`` of a periodic cell: the cluster of periodic images within
    ``settings.cluster_radius``, absorber at the origin as potential 0, the other atoms one potential per element."""
    settings = settings or FeffSettings()
    if not -len(atoms) <= site < len(atoms):
        raise GCDError(f"site {site} is outside the structure's {len(atoms)} atoms")
    site = site % len(atoms)
    vectors, numbers = _cluster(atoms, site, settings.cluster_radius)
    if not len(vectors):
        raise GCDError(f"no atom lies within {settings.cluster_radius} A of site {site}: nothing to scatter from")
    _refuse_overlaps(vectors, site, settings.scf_radius)
    elements = sorted(set(numbers.tolist()))
    potential = {z: index + 1 for index, z in enumerate(elements)}
    absorber = int(atoms.numbers[site])
    lines = [
        "TITLE gcd: carbon K-edge XANES of one site",
        f"EDGE {settings.edge}",
        "S02 1.0",
        "CONTROL 1 1 1 1 1 1",
        "PRINT 0 0 0 0 0 0",
        f"COREHOLE {settings.core_hole}",
        f"SCF {settings.scf_radius:g}",
        f"FMS {settings.fms_radius:g}",
        f"XANES {settings.xkmax:g}",
        "",
        "POTENTIALS",
        f"  0 {absorber} {chemical_symbols[absorber]}",
        *(f"  {potential[z]} {z} {chemical_symbols[z]}" for z in elements),
        "",
        "ATOMS",
        f"  {0.0:10.4f} {0.0:10.4f} {0.0:10.4f} 0 {chemical_symbols[absorber]}0 {0.0:8.4f}",
    ]
    for (x, y, z), number in zip(vectors, numbers, strict=True):
        r = float(np.sqrt(x * x + y * y + z * z))
        lines.append(f"  {x:10.4f} {y:10.4f} {z:10.4f} {potential[int(number)]} {chemical_symbols[number]} {r:8.4f}")
    lines.append("END")
    return "\n".join(lines) + "\n"


def _refuse_overlaps(vectors: np.ndarray, site: int, scf_radius: float) -> None:
    """A clear error instead of FEFF's crash when two atoms of the SCF sphere (absorber included) overlap."""
    inner = np.vstack([np.zeros(3), vectors[np.linalg.norm(vectors, axis=1) <= scf_radius]])
    separation = np.linalg.norm(inner[:, None, :] - inner[None, :, :], axis=-1)
    separation[np.diag_indices(len(inner))] = np.inf
    closest = float(separation.min())
    if closest < MIN_SEPARATION:
        raise GCDError(
            f"site {site}: two atoms {closest:.2f} A apart within {scf_radius:g} A of it overlap (under "
            f"{MIN_SEPARATION} A), and FEFF cannot build potentials for them"
        )


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors, so FEFF's worker processes too) to ``path``:
    FEFF prints every module's log, which would drown a benchmark's own output."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # so text Python buffered before the switch still reaches the real output
    saved = [os.dup(1), os.dup(2)]
    with open(path, "wb") as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def _run_feff(text: str) -> np.ndarray:
    """Run FEFF10 on ``text`` in a temporary directory; FEFF's ``[2, n]`` (omega in eV, mu) from ``xmu.dat``."""
    feff10 = _import_feff10()
    with tempfile.TemporaryDirectory(prefix="gcd-feff-") as work:
        log = Path(work) / "feff_output.txt"
        try:
            with _output_to(log):
                feff10.run(text, work)
        except feff10.FeffError as error:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise GCDError(f"FEFF failed: {error}; last output: {' | '.join(tail)}") from None
        xmu = Path(work) / "xmu.dat"
        if not xmu.is_file():
            raise GCDError("FEFF finished without writing xmu.dat")
        table = np.loadtxt(xmu, comments="#", ndmin=2)  # columns: omega, e, k, mu, mu0, chi
    return np.stack([table[:, 0], table[:, 3]])


def _cache_key(text: str) -> str:
    version = getattr(_import_feff10(), "__version__", "?")
    return hashlib.sha256(f"feff10 {version}\n{text}".encode()).hexdigest()[:32]


def feff_raw_spectrum(
    atoms: Atoms, site: int, settings: FeffSettings | None = None, cache_dir: str | Path | None = None
) -> np.ndarray:
    """FEFF's unaligned ``[2, n]`` (omega in eV, mu) for one site, from ``cache_dir`` when it was computed before."""
    text = feff_input(atoms, site, settings)
    path = Path(cache_dir) / f"{_cache_key(text)}.npy" if cache_dir is not None else None
    if path is not None and path.is_file():
        return np.load(path)
    raw = _run_feff(text)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(temporary, raw)
        temporary.replace(path)  # atomic, so a run killed mid-write leaves no broken cache entry
    return raw


def align(raw: np.ndarray, settings: FeffSettings | None = None, grid: np.ndarray = ENERGY_GRID) -> np.ndarray:
    """FEFF's raw ``(omega, mu)`` on ``grid``: shifted by ``settings.energy_shift``, Gaussian-broadened,
    resampled, unit area."""
    settings = settings or FeffSettings()
    energies, mu = raw[0] + settings.energy_shift, np.clip(raw[1], 0.0, None)
    # a fine uniform grid first, so the broadening and the 0.4 eV target grid do not alias FEFF's uneven points
    step = 0.05
    fine = np.arange(energies[0], energies[-1] + step, step)
    values = np.interp(fine, energies, mu)
    if settings.broadening > 0:
        sigma = settings.broadening / (2 * np.sqrt(2 * np.log(2)))
        half = int(np.ceil(4 * sigma / step))
        kernel = np.exp(-0.5 * (np.arange(-half, half + 1) * step / sigma) ** 2)
        values = np.convolve(np.pad(values, half, mode="edge"), kernel / kernel.sum(), mode="valid")
    return normalise(resample(fine, values, grid), grid)


def feff_site_spectrum(
    atoms: Atoms, site: int, settings: FeffSettings | None = None, cache_dir: str | Path | None = None
) -> np.ndarray:
    """One site's FEFF10 K-edge spectrum on :data:`ENERGY_GRID` (100 values, unit area, aligned by
    ``settings.energy_shift``); cached in ``cache_dir`` when given."""
    settings = settings or FeffSettings()
    return align(feff_raw_spectrum(atoms, site, settings, cache_dir), settings)


def feff_structure_spectrum(
    atoms: Atoms,
    sites: int | Sequence[int],
    settings: FeffSettings | None = None,
    cache_dir: str | Path | None = None,
    seed: int = 0,
    skip_failed: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean spectrum, ``[k, 100]`` site spectra, site indices) over sampled sites: ``sites`` is a count (a random
    sample without replacement, reproducible by ``seed``) or explicit indices. With ``skip_failed`` a site FEFF
    cannot do (e.g. overlapping atoms near it) is left out of all three, with a warning; it fails only when every
    site does."""
    indices = chosen_sites(atoms, sites, seed)
    spectra, done, failures = [], [], []
    for index in indices:
        try:
            spectra.append(feff_site_spectrum(atoms, int(index), settings, cache_dir))
            done.append(index)
        except GCDError as exc:
            if not skip_failed:
                raise
            failures.append(str(exc))
    if failures:
        if not done:
            raise GCDError(f"FEFF failed on every sampled site; the first: {failures[0]}")
        warnings.warn(f"FEFF left out {len(failures)} of {len(indices)} sites: {'; '.join(failures)}", stacklevel=2)
    stacked = np.stack(spectra)
    return stacked.mean(axis=0), stacked, np.asarray(done, dtype=int)


def chosen_sites(atoms: Atoms, sites: int | Sequence[int], seed: int = 0) -> np.ndarray:
    """Sorted site indices: ``sites`` is a count (a random sample without replacement, reproducible by ``seed``;
    every site when the structure holds fewer) or explicit indices, which are checked."""
    if isinstance(sites, (int, np.integer)):
        if sites <= 0:
            raise GCDError(f"need at least one site to sample, got {sites}")
        if not len(atoms):
            raise GCDError("the structure holds no atoms: there is no site to compute")
        rng = np.random.default_rng(seed)
        return np.sort(rng.choice(len(atoms), size=min(int(sites), len(atoms)), replace=False))
    indices = np.asarray(list(sites), dtype=int)
    if not len(indices) or indices.min() < 0 or indices.max() >= len(atoms):
        raise GCDError(f"site indices must be a non-empty list within 0-{len(atoms) - 1}")
    return indices
