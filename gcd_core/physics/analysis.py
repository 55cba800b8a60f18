"""Structure analysis shared by tests, benchmarks, the CLI and the app.

Periodic and vectorised: every pair quantity comes from one ``ase.neighborlist.neighbor_list`` call (all periodic
images, so cells smaller than twice the cutoff work), then numpy. Functions take one ``ase.Atoms`` or a list of
them (statistics pooled over the list, weighted by atoms).

Carbon conventions: a site's hybridisation is read from its coordination within ``cutoff`` (default 1.85 A,
between the C-C bond lengths, 1.2-1.6 A, and the second shell, 2.4-2.5 A): 2 neighbours sp, 3 sp2, 4 sp3.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list
from ase.units import _amu

from gcd_core.errors import GCDError

_CM3_PER_A3 = 1e-24
DEFAULT_BOND_CUTOFF = 1.85  # A, carbon
# g/cm3: a generated carbon cell denser than this (diamond is 3.52) holds overlapping atoms, a failed sample
MAX_CARBON_DENSITY = 4.0


def _as_list(structures: Atoms | Sequence[Atoms]) -> list[Atoms]:
    out = [structures] if isinstance(structures, Atoms) else list(structures)
    if not out:
        raise GCDError("no structures to analyse")
    for index, atoms in enumerate(out):
        if not all(atoms.pbc) or atoms.get_volume() <= 0:
            raise GCDError(f"structure {index} must be periodic in x, y and z with a non-empty cell")
    return out


def mass_density(atoms: Atoms) -> float:
    """Mass density in g/cm3 of a periodic cell (0 for an empty one)."""
    volume = atoms.get_volume()
    if len(atoms) == 0 or volume <= 0:
        return 0.0
    return float(atoms.get_masses().sum() * _amu * 1e3 / (volume * _CM3_PER_A3))


# -------------------------------------------------------------------------------------------------------- RDF
@dataclass(frozen=True)
class RadialDistribution:
    """g(r) on bin centres ``r`` (A); 1 for an ideal gas of the same density."""

    r: np.ndarray
    g: np.ndarray
    bin_width: float

    def first_peak(self, min_height: float = 1.5) -> float:
        """Position (A) of the first maximum of g(r) that rises above ``min_height``."""
        above = np.nonzero(self.g > min_height)[0]
        if not len(above):
            raise GCDError(f"g(r) never rises above {min_height}: no first peak")
        start = above[0]
        end = start
        while end + 1 < len(self.g) and self.g[end + 1] >= self.g[end]:
            end += 1
        return float(self.r[end])


def radial_distribution(
    structures: Atoms | Sequence[Atoms], r_max: float = 6.0, bin_width: float = 0.02
) -> RadialDistribution:
    """The radial distribution function g(r) up to ``r_max``, pooled over the structures."""
    if not 0 < bin_width < r_max:
        raise GCDError(f"need 0 < bin_width < r_max, got {bin_width} and {r_max}")
    edges = np.arange(0.0, r_max + 0.5 * bin_width, bin_width)
    counts = np.zeros(len(edges) - 1)
    ideal_pairs = 0.0
    for atoms in _as_list(structures):
        if len(atoms) < 2:
            continue
        distances = neighbor_list("d", atoms, r_max)
        counts += np.histogram(distances, bins=edges)[0]
        ideal_pairs += len(atoms) * len(atoms) / atoms.get_volume()  # atoms x number density
    shells = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    g = counts / (ideal_pairs * shells) if ideal_pairs > 0 else counts
    return RadialDistribution(0.5 * (edges[1:] + edges[:-1]), g, bin_width)


def rdf_distance(first: RadialDistribution, second: RadialDistribution) -> float:
    """Root-mean-square difference of two g(r) on the same bins, over their common range (dimensionless)."""
    if first.r.shape != second.r.shape or not np.allclose(first.r, second.r):
        raise GCDError("the two g(r) must share their bins (same r_max and bin_width)")
    return float(np.sqrt(np.mean((first.g - second.g) ** 2)))


# ------------------------------------------------------------------------------------- coordination, angles
def coordination_numbers(atoms: Atoms, cutoff: float = DEFAULT_BOND_CUTOFF) -> np.ndarray:
    """Neighbours of each atom within ``cutoff`` (A), periodic images included."""
    first = neighbor_list("i", atoms, cutoff)
    return np.bincount(first, minlength=len(atoms))


def coordination_histogram(
    structures: Atoms | Sequence[Atoms], cutoff: float = DEFAULT_BOND_CUTOFF, max_coordination: int = 6
) -> np.ndarray:
    """Fraction of atoms with 0, 1, ..., ``max_coordination`` neighbours (the last bin holds all higher)."""
    counts = np.zeros(max_coordination + 1)
    for atoms in _as_list(structures):
        numbers = np.minimum(coordination_numbers(atoms, cutoff), max_coordination)
        counts += np.bincount(numbers, minlength=max_coordination + 1)
    total = counts.sum()
    return counts / total if total else counts


@dataclass(frozen=True)
class Hybridisation:
    """Fractions of carbon sites by coordination: sp (2), sp2 (3), sp3 (4), under-bonded (0-1), over (5+)."""

    sp: float
    sp2: float
    sp3: float
    under: float
    over: float
    mean_coordination: float

    def as_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in ("sp", "sp2", "sp3", "under", "over", "mean_coordination")}


def hybridisation(structures: Atoms | Sequence[Atoms], cutoff: float = DEFAULT_BOND_CUTOFF) -> Hybridisation:
    """sp / sp2 / sp3 fractions from coordination within ``cutoff`` (A), pooled over the structures."""
    fractions = coordination_histogram(structures, cutoff, max_coordination=5)
    mean = float(np.dot(fractions, np.arange(len(fractions))))
    return Hybridisation(
        sp=float(fractions[2]),
        sp2=float(fractions[3]),
        sp3=float(fractions[4]),
        under=float(fractions[0] + fractions[1]),
        over=float(fractions[5]),
        mean_coordination=mean,
    )


def bond_lengths(structures: Atoms | Sequence[Atoms], cutoff: float = DEFAULT_BOND_CUTOFF) -> np.ndarray:
    """Every bond's length (A), pooled over the structures: neighbours within ``cutoff``, each bond seen from both
    ends (so the mean and spread are the bonds')."""
    lengths = [neighbor_list("d", atoms, cutoff) for atoms in _as_list(structures)]
    return np.concatenate(lengths) if lengths else np.zeros(0)


def bond_angles(atoms: Atoms, cutoff: float = DEFAULT_BOND_CUTOFF) -> np.ndarray:
    """Every angle (degrees) between two bonds of the same atom, bonds being neighbours within ``cutoff``."""
    first, vectors = neighbor_list("iD", atoms, cutoff)
    if not len(first):
        return np.zeros(0)
    order = np.argsort(first, kind="stable")
    first, vectors = first[order], vectors[order]
    units = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    starts = np.searchsorted(first, np.arange(len(atoms)))
    counts = np.bincount(first, minlength=len(atoms))
    angles = []
    for k in np.unique(counts[counts > 1]):  # atoms with k bonds at once: a [n, k, k] batch of cosines
        centres = np.nonzero(counts == k)[0]
        bonds = units[starts[centres][:, None] + np.arange(k)]
        cosines = np.einsum("nid,njd->nij", bonds, bonds)
        upper = np.triu_indices(k, 1)
        angles.append(cosines[:, upper[0], upper[1]].ravel())
    if not angles:
        return np.zeros(0)
    return np.degrees(np.arccos(np.clip(np.concatenate(angles), -1.0, 1.0)))


def bond_angle_distribution(
    structures: Atoms | Sequence[Atoms], cutoff: float = DEFAULT_BOND_CUTOFF, bin_width: float = 2.0
) -> tuple[np.ndarray, np.ndarray]:
    """(bin centres in degrees, probability density per degree) of bond angles pooled over the structures."""
    edges = np.arange(0.0, 180.0 + 0.5 * bin_width, bin_width)
    values = np.concatenate([bond_angles(atoms, cutoff) for atoms in _as_list(structures)])
    density, _ = np.histogram(values, bins=edges, density=bool(len(values)))
    return 0.5 * (edges[1:] + edges[:-1]), density


# ---------------------------------------------------------------------------------------------------- summary
def carbon_summary(atoms: Atoms, cutoff: float = DEFAULT_BOND_CUTOFF) -> dict[str, float]:
    """Density, atom count and hybridisation of one structure, as one flat dict (tables, the app)."""
    return {"atoms": len(atoms), "density": mass_density(atoms), **hybridisation(atoms, cutoff).as_dict()}
