"""Amorphous carbon cells with per-site carbon K-edge XANES spectra (``../shared/data/a-C``).

Each structure comes back as ``ase.Atoms`` with the site spectra in ``atoms.arrays["xanes"]`` (``[n_atoms, 100]``
on :data:`gcd_core.physics.spectra.ENERGY_GRID`, normalised to unit area) and its mass density, sp3 fraction
and source file in ``atoms.info``. Splits are by structure, never by atom.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms

from gcd_core.errors import GCDError
from gcd_core.physics.analysis import hybridisation, mass_density
from gcd_core.physics.spectra import ENERGY_GRID, normalise

DEFAULT_ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "a-C"
# Carbons with fewer bonds (within 1.85 A) are dangling chain ends, which no training cell holds: sampling prunes
# them at late noise times (``GenerationRequest.min_bonds``; benchmarks/results/carbon_pruning_cpu.md)
DANGLING_MIN_BONDS = 2


def _read_site_spectra(path: Path) -> np.ndarray:
    if path.suffix == ".csv":  # the reference files: a header row of column indices
        return np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    return np.loadtxt(path, ndmin=2)


def load_structure(structure_path: str | Path) -> Atoms:
    """One cell and its per-site spectra (``NAME.vasp`` beside ``NAME.xanes.txt`` or ``NAME.xanes.csv``)."""
    path = Path(structure_path)
    atoms = ase.io.read(path, format="vasp")
    candidates = (path.with_suffix(".xanes.txt"), path.with_suffix(".xanes.csv"))
    spectra_path = next((p for p in candidates if p.exists()), None)
    if spectra_path is not None:
        spectra = _read_site_spectra(spectra_path)
        if spectra.shape != (len(atoms), len(ENERGY_GRID)):
            raise GCDError(f"{spectra_path} holds {spectra.shape} values; expected ({len(atoms)}, {len(ENERGY_GRID)})")
        atoms.arrays["xanes"] = normalise(spectra)
    atoms.info.update(
        name=path.stem, density=round(mass_density(atoms), 4), sp3=round(hybridisation(atoms).sp3, 4), source=str(path)
    )
    return atoms


def load_carbon_dataset(root: str | Path | None = None, subset: str = "train") -> list[Atoms]:
    """Every structure of ``root/subset`` (``train`` or ``reference``), sorted by name."""
    folder = Path(root or DEFAULT_ROOT) / subset
    if not folder.is_dir():
        raise GCDError(f"no carbon data at {folder}; pass the a-C folder (with train/ and reference/)")
    paths = sorted(folder.glob("*.vasp"))
    if not paths:
        raise GCDError(f"{folder} holds no .vasp structures")
    return [load_structure(p) for p in paths]


def structure_spectrum(atoms: Atoms) -> np.ndarray:
    """The structure's spectrum: the mean of its site spectra."""
    if "xanes" not in atoms.arrays:
        raise GCDError(f"structure {atoms.info.get('name', '')!r} carries no site spectra")
    return atoms.arrays["xanes"].mean(axis=0)


def split_by_structure(
    structures: Sequence[Atoms], validation_fraction: float = 0.2, seed: int = 0
) -> tuple[list[Atoms], list[Atoms]]:
    """(training, validation) structures, stratified by density so every density keeps a held-out cell where it
    has at least two; whole cells are held out, never single atoms. Copies of one cell (the same structure
    spectrum; the shared set holds one such pair) stay on the same side."""
    rng = np.random.default_rng(seed)
    families: list[list[int]] = []
    for index, atoms in enumerate(structures):
        spectrum = structure_spectrum(atoms) if "xanes" in atoms.arrays else None
        for family in families:
            other = structures[family[0]]
            known = spectrum is not None and "xanes" in other.arrays
            if known and np.abs(structure_spectrum(other) - spectrum).max() < 1e-9:
                family.append(index)
                break
        else:
            families.append([index])
    by_density: dict[float, list[int]] = {}
    for number, family in enumerate(families):
        density = float(structures[family[0]].info.get("density", mass_density(structures[family[0]])))
        by_density.setdefault(round(density * 2) / 2, []).append(number)
    held: set[int] = set()
    for members in by_density.values():
        if len(members) >= 2:
            count = max(1, round(validation_fraction * len(members)))
            for number in rng.choice(members, size=count, replace=False):
                held.update(families[int(number)])
    train = [a for i, a in enumerate(structures) if i not in held]
    validation = [a for i, a in enumerate(structures) if i in held]
    return train, validation


def density_balanced_weights(structures: Sequence[Atoms], bin_width: float = 0.5) -> list[float]:
    """Draw weights that give every density bin (``bin_width`` g/cm3) the same share of training batches: each
    cell weighs 1 / (cells in its bin). The shared training split holds ten 1.5 g/cm3 cells for two at 3.5, so
    equal draws spend five times the steps on the sparsest carbon as on the densest."""
    if bin_width <= 0:
        raise GCDError(f"the density bin width must be positive, got {bin_width}")
    bins = [round(float(a.info.get("density", mass_density(a))) / bin_width) for a in structures]
    counts = {b: bins.count(b) for b in bins}
    return [1.0 / counts[b] for b in bins]
