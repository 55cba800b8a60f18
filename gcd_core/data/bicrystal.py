"""Bicrystals for grain-boundary (GB) work: two grains given by their crystal directions along x, y, z (GRIP's
form), periodic in the GB plane (x, y) and finite along the normal z, with the GB between them.

The lower grain fills ``0 <= z < h_lower``, the upper grain sits one bulk interplanar spacing above it. Both grains
are built from whole atomic planes parallel to the GB, so a bicrystal of ideal grains holds a whole number of
planes and the GB atom density ``[n]`` (atoms relative to a full bulk plane, modulo 1) is zero until atoms are
removed from or inserted into the GB plane (``set_gb_density``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.lattice.cubic import BodyCenteredCubic, FaceCenteredCubic
from ase.neighborlist import neighbor_list

from gcd_core.errors import GCDError

Direction = tuple[int, int, int]
Directions = tuple[Direction, Direction, Direction]

LOWER, UPPER = 0, 1  # values of the "grain" array
OVERLAP_FRACTION = 0.6  # of the bulk nearest-neighbour distance: closer atoms are one atom too many
# GB energies leave out the atoms this close (A) to a free surface: the GB search's 4 A boundary slabs hold bulk
# positions, so the surface excess stays in them and the next 2 A (measured: under 1 meV per atom beyond 4 A)
SURFACE_MARGIN = 6.0


@dataclass(frozen=True)
class GBSystem:
    """A grain boundary: the element, its cubic lattice and each grain's crystal directions along x, y, z."""

    key: str
    title: str
    element: str
    lattice: str  # "bcc" or "fcc"
    a: float  # lattice constant of the potential used for its energies (A)
    upper: Directions
    lower: Directions
    melting_point: float  # K, experimental: sets the GB search's anneal temperatures

    @property
    def nearest_neighbour(self) -> float:
        return self.a * (np.sqrt(3) / 2 if self.lattice == "bcc" else 1 / np.sqrt(2))


GB_SYSTEMS: dict[str, GBSystem] = {
    "w_sigma5_twist": GBSystem(
        "w_sigma5_twist", "W Sigma5 (001) twist", "W", "bcc", 3.164849,
        upper=((3, 1, 0), (-1, 3, 0), (0, 0, 1)), lower=((3, -1, 0), (1, 3, 0), (0, 0, 1)), melting_point=3695.0,
    ),
    "cu_sigma5_tilt": GBSystem(
        "cu_sigma5_tilt", "Cu Sigma5 (210) [001] tilt", "Cu", "fcc", 3.615,
        upper=((2, 1, 0), (0, 0, -1), (-1, 2, 0)), lower=((2, -1, 0), (0, 0, -1), (1, 2, 0)), melting_point=1358.0,
    ),
}


def gb_system(key: str) -> GBSystem:
    if key not in GB_SYSTEMS:
        raise GCDError(f"unknown grain boundary {key!r}; choose one of {sorted(GB_SYSTEMS)}")
    return GB_SYSTEMS[key]


def orientation(directions: Directions) -> np.ndarray:
    """Rows: the grain's crystal directions along x, y, z as unit vectors (a right-handed rotation)."""
    rows = np.asarray(directions, dtype=float)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    if not np.allclose(rows @ rows.T, np.eye(3), atol=1e-9) or np.linalg.det(rows) < 0:
        raise GCDError(f"directions {directions} are not mutually perpendicular and right-handed")
    return rows


def misorientation(system: GBSystem) -> tuple[float, np.ndarray]:
    """Angle (degrees) and crystal axis of the rotation taking the lower grain's lattice to the upper one's,
    the smallest over the cubic symmetries (the disorientation)."""
    relative = orientation(system.upper).T @ orientation(system.lower)
    best_angle, best_axis = 360.0, np.zeros(3)
    for symmetry in _cubic_rotations():
        rotation = relative @ symmetry
        angle = np.degrees(np.arccos(np.clip((np.trace(rotation) - 1) / 2, -1, 1)))
        if angle < best_angle - 1e-9:
            axis = np.array([rotation[2, 1] - rotation[1, 2], rotation[0, 2] - rotation[2, 0],
                             rotation[1, 0] - rotation[0, 1]])
            best_angle, best_axis = angle, axis / (np.linalg.norm(axis) or 1.0)
    return float(best_angle), best_axis


def _cubic_rotations() -> list[np.ndarray]:
    rotations = []
    for perm in ([0, 1, 2], [1, 2, 0], [2, 0, 1], [1, 0, 2], [0, 2, 1], [2, 1, 0]):
        for signs in np.ndindex(2, 2, 2):
            matrix = np.zeros((3, 3))
            matrix[range(3), perm] = [1 - 2 * s for s in signs]
            if np.linalg.det(matrix) > 0:
                rotations.append(matrix)
    return rotations


def grain(system: GBSystem, directions: Directions, size: Sequence[int]) -> Atoms:
    """One grain: the system's crystal with these directions along x, y, z, ``size`` periods along each."""
    builder = BodyCenteredCubic if system.lattice == "bcc" else FaceCenteredCubic
    atoms = builder(directions=[list(d) for d in directions], size=tuple(size), symbol=system.element,
                    latticeconstant=system.a, pbc=True)
    return atoms


@functools.cache
def plane_spacing(system: GBSystem) -> float:
    """Distance between neighbouring atomic planes parallel to the GB (equal in both grains for these systems)."""
    heights, period = _plane_heights(system)
    return period / len(heights)  # planes parallel to a lattice plane are evenly spaced


@functools.cache
def _atoms_per_period_plane(system: GBSystem) -> int:
    heights, _ = _plane_heights(system)
    return len(grain(system, system.lower, (1, 1, 1))) // len(heights)


def atoms_per_plane(system: GBSystem, repeat: Sequence[int] = (1, 1)) -> int:
    """Atoms in one full bulk plane parallel to the GB, for ``repeat`` in-plane periods."""
    return _atoms_per_period_plane(system) * int(repeat[0]) * int(repeat[1])


@functools.cache
def _plane_heights(system: GBSystem) -> tuple[np.ndarray, float]:
    """Heights of the distinct atomic planes in one period of the lower grain along z, and that period."""
    one = grain(system, system.lower, (1, 1, 1))
    period = float(one.cell[2, 2])
    heights = np.round(one.positions[:, 2] % period, 4) % round(period, 4)  # an atom on the top face is at 0
    return np.unique(heights), period


def bicrystal(
    system: GBSystem | str,
    repeat: Sequence[int] = (1, 1),
    thickness: float = 16.0,
    shift: Sequence[float] = (0.0, 0.0),
    overlap_fraction: float = OVERLAP_FRACTION,
) -> Atoms:
    """The bicrystal: ``repeat`` in-plane periods, each grain at least ``thickness`` A thick (whole periods), the
    upper grain translated by ``shift`` (A): in-plane (x, y), and optionally away from the GB (z, an expansion).
    Atoms across the GB closer than ``overlap_fraction`` of the bulk nearest-neighbour distance are merged (the
    upper one removed), so no two atoms overlap.

    Cell: the in-plane periods along x, y and the total height along z, with ``pbc = (True, True, False)``: open
    along the normal. Arrays: ``grain`` (0 lower, 1 upper). ``info``: ``gb_system``, ``gb_z`` (height of the GB
    plane, half a bulk plane spacing above the lower grain), ``atoms_per_plane``, ``plane_spacing``, ``repeat``,
    ``gb_area`` (A^2).
    """
    system = gb_system(system) if isinstance(system, str) else system
    if len(repeat) != 2 or min(repeat) < 1:
        raise GCDError(f"repeat takes two positive in-plane periods, got {tuple(repeat)}")
    if len(shift) not in (2, 3):
        raise GCDError(f"shift takes two or three components (A), got {tuple(shift)}")
    if not thickness > 0:
        raise GCDError(f"grain thickness must be positive, got {thickness}")
    period = grain(system, system.lower, (1, 1, 1)).cell.lengths()
    upper_period = grain(system, system.upper, (1, 1, 1)).cell.lengths()
    if not np.allclose(period[:2], upper_period[:2], atol=1e-6):
        raise GCDError(f"{system.title}: the grains' in-plane periods differ ({period[:2]} vs {upper_period[:2]})")
    layers = max(1, int(np.ceil(thickness / period[2] - 1e-9)))
    lower = grain(system, system.lower, (repeat[0], repeat[1], layers))
    upper = grain(system, system.upper, (repeat[0], repeat[1], layers))
    spacing = plane_spacing(system)
    lower_height = lower.cell[2, 2]
    upper.positions[:, 2] += lower_height
    translation = np.zeros(3)
    translation[: len(shift)] = shift
    upper.positions += translation
    lengths = np.array([lower.cell[0, 0], lower.cell[1, 1], lower_height + upper.cell[2, 2] + translation[2]])
    atoms = Atoms(system.element * (len(lower) + len(upper)), cell=np.diag(lengths), pbc=(True, True, False),
                  positions=np.vstack([lower.positions, upper.positions]))
    atoms.wrap()
    atoms.set_array("grain", np.array([LOWER] * len(lower) + [UPPER] * len(upper)))
    # the upper grain's first plane sits at lower_height; its bulk spacing from the lower grain's top plane
    atoms.info.update(
        gb_system=system.key,
        gb_z=float(lower_height - spacing / 2),  # tied to the lower grain, so a window's grains keep their voxels
        atoms_per_plane=atoms_per_plane(system, repeat),
        plane_spacing=spacing,
        repeat=[int(r) for r in repeat],
        gb_area=float(lengths[0] * lengths[1]),
    )
    return remove_overlaps(atoms, overlap_fraction * system.nearest_neighbour)


def remove_overlaps(atoms: Atoms, distance: float) -> Atoms:
    """Drop atoms of the upper grain closer than ``distance`` to another atom (one of each close pair)."""
    first, second = neighbor_list("ij", atoms, distance)
    grains = atoms.get_array("grain") if "grain" in atoms.arrays else np.zeros(len(atoms), int)
    doomed: set[int] = set()
    for i, j in zip(first, second, strict=True):
        if i in doomed or j in doomed:
            continue
        doomed.add(int(i) if grains[i] >= grains[j] else int(j))
    if doomed:
        atoms = atoms.copy()
        del atoms[sorted(doomed)]
    return atoms


def gb_density(atoms: Atoms) -> float:
    """The GB atom density [n]: the atom count relative to a full bulk plane, modulo 1 (grains of whole planes)."""
    per_plane = int(atoms.info["atoms_per_plane"])
    return float((len(atoms) % per_plane) / per_plane)


def gb_plane_atoms(atoms: Atoms) -> np.ndarray:
    """Indices of the two atomic planes facing each other across the GB: the atoms the GB search may remove."""
    spacing = float(atoms.info["plane_spacing"])
    return np.flatnonzero(np.abs(atoms.positions[:, 2] - float(atoms.info["gb_z"])) < spacing)


def set_gb_density(atoms: Atoms, n: float, rng: np.random.Generator, insert: bool = False) -> Atoms:
    """A copy with [n] set to ``n`` (rounded to whole atoms): by removing random atoms of the two planes facing
    each other across the GB, or (``insert``) by adding atoms at random in-plane positions on the GB plane, as
    far as possible from the others (the relaxation sorts out the rest)."""
    if not 0 <= n < 1:
        raise GCDError(f"[n] is a fraction of a plane in [0, 1), got {n}")
    per_plane = int(atoms.info["atoms_per_plane"])
    current = len(atoms) % per_plane
    wanted = int(round(n * per_plane)) % per_plane
    atoms = atoms.copy()
    if insert:
        count = (wanted - current) % per_plane
        for _ in range(count):
            atoms = _insert_on_gb_plane(atoms, rng)
    else:
        count = (current - wanted) % per_plane
        plane = gb_plane_atoms(atoms)
        if count > len(plane):
            raise GCDError(f"cannot remove {count} atoms from a GB plane of {len(plane)}")
        del atoms[sorted(rng.choice(plane, size=count, replace=False))]
    return atoms


def _insert_on_gb_plane(atoms: Atoms, rng: np.random.Generator, candidates: int = 64) -> Atoms:
    lengths = atoms.cell.lengths()
    trial = np.column_stack([rng.uniform(0, lengths[0], candidates), rng.uniform(0, lengths[1], candidates),
                             np.full(candidates, float(atoms.info["gb_z"]))])
    delta = trial[:, None, :] - atoms.positions[None, :, :]
    delta[..., :2] -= np.round(delta[..., :2] / lengths[:2]) * lengths[:2]  # periodic in-plane only
    nearest = np.linalg.norm(delta, axis=-1).min(axis=1)
    grains = atoms.get_array("grain")
    atoms = atoms + Atoms(atoms.get_chemical_symbols()[:1], positions=[trial[int(np.argmax(nearest))]])
    atoms.set_array("grain", np.append(grains, UPPER))
    return atoms


def gb_energy(
    atoms: Atoms, energies: np.ndarray, cohesive_energy: float, surface_margin: float = SURFACE_MARGIN
) -> float:
    """GB energy in J/m^2: ``(E_region - N_region * E_coh) / A`` over every atom farther than ``surface_margin``
    A from both free surfaces (the lowest and the highest atom), where ``energies`` are per-atom potential
    energies (eV).

    The region is the whole interior, not a band about the nominal GB plane ``info["gb_z"]``: a boundary that
    migrated (an anneal, or a generated slab that grew one grain) would leave part of its excess outside a band
    and score too low. Interior atoms away from the boundary are bulk and add nothing."""
    z = atoms.positions[:, 2]
    region = (z >= z.min() + surface_margin) & (z <= z.max() - surface_margin)
    excess = float(np.sum(np.asarray(energies)[region]) - region.sum() * cohesive_energy)
    return excess / float(atoms.info["gb_area"]) * EV_PER_A2_IN_J_PER_M2


EV_PER_A2_IN_J_PER_M2 = 16.021766
