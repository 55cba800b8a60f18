"""Periodic supercells of simple crystals, orthorhombic so that they fit a voxel grid."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.build import bulk

from gcd_core.errors import GCDError
from gcd_core.representation.grid import VoxelGrid


@dataclass(frozen=True)
class Phase:
    name: str
    element: str
    a: float
    c: float | None  # HCP only
    space_group: int  # spglib number of the ideal crystal
    atoms_per_cell: int  # in the orthorhombic conventional cell built here


PHASES: dict[str, Phase] = {
    "sc": Phase("sc", "Po", 3.35, None, 221, 1),
    "bcc": Phase("bcc", "W", 3.165, None, 229, 2),
    "fcc": Phase("fcc", "Cu", 3.615, None, 225, 4),
    "hcp": Phase("hcp", "Mg", 3.21, 5.21, 194, 4),
    "diamond": Phase("diamond", "C", 3.567, None, 227, 8),
}


def conventional_cell(phase: str, element: str | None = None, a: float | None = None, c: float | None = None) -> Atoms:
    """The orthorhombic conventional cell of ``phase`` (HCP: a x sqrt(3) a x c, 4 atoms)."""
    if phase not in PHASES:
        raise GCDError(f"unknown phase {phase!r}; choose one of {sorted(PHASES)}")
    spec = PHASES[phase]
    element = element or spec.element
    a = float(a or spec.a)
    if phase == "sc":
        return Atoms(element, positions=[[0, 0, 0]], cell=[a, a, a], pbc=True)
    if phase == "hcp":
        c = float(c or spec.c)
        return bulk(element, "hcp", a=a, c=c, orthorhombic=True)
    return bulk(element, phase, a=a, cubic=True)


# Site exclusion distance for crystal sampling, in bond lengths: the README crystal table is measured with it
# (benchmarks/crystal_success.py --exclusion); the dashboard's checkbox and the shipped-model test use it.
SITE_EXCLUSION_BONDS = 0.65


def bond_length(phase: str, element: str | None = None, a: float | None = None, c: float | None = None) -> float:
    """The nearest-neighbour distance (A) of the ideal ``phase``."""
    from ase.neighborlist import neighbor_list

    cell = conventional_cell(phase, element, a, c)
    return float(neighbor_list("d", cell, 1.01 * float(cell.cell.lengths().max())).min())


def crystal(
    phase: str,
    supercell: int | Sequence[int] = 2,
    element: str | None = None,
    a: float | None = None,
    c: float | None = None,
    translation: Sequence[float] | None = None,
) -> Atoms:
    """A periodic supercell of ``phase``, optionally translated by ``translation`` (A), wrapped into the cell."""
    reps = (supercell,) * 3 if isinstance(supercell, int) else tuple(supercell)
    if len(reps) != 3 or min(reps) < 1:
        raise GCDError(f"supercell must be a positive integer or three of them, got {supercell}")
    atoms = conventional_cell(phase, element, a, c).repeat(reps)
    if translation is not None:
        atoms.positions += np.asarray(translation, dtype=float)
        atoms.wrap()
    atoms.info["phase"] = phase
    return atoms


def ideal_atom_count(
    phase: str, cell_lengths: Sequence[float], a: float | None = None, c: float | None = None
) -> float:
    """Atoms the ideal crystal puts in a cell of these edges (a whole number for commensurate cells)."""
    cell = conventional_cell(phase, a=a, c=c)
    return float(len(cell) * np.prod(np.asarray(cell_lengths) / cell.cell.lengths()))


# ------------------------------------------------------------------------------------- voxel grids per phase
# Voxels per conventional cell and the training supercell. The cubic phases and diamond train on an 8^3 grid
# (small enough for CPU training) with voxel edges of 0.45-0.90 A, and no two atoms can share a voxel:
# cubic phases get 4 voxels per edge (0.79-0.90 A); diamond 8 (0.446 A: at 4 its bonded neighbours sit exactly
# one voxel edge apart on every axis, the collision limit), so its training cell is one conventional cell.
# HCP's a x sqrt(3) a x c cell gets 4 x 6 x 4 voxels (0.80 x 0.93 x 1.30 A): its B layer sits at y = 1/3 and
# 5/6, so y needs a multiple of 6 voxels for every atom to sit at the same place inside its voxel (with 8, the
# B layer sat a third of a voxel off and the model placed it badly). Along c, 4 voxels (not 8) let the 8-voxel
# training grid hold four layers (A B A B) instead of two: two periodic layers are always A B, so that 1x cell
# never showed a stacking error (benchmarks/results/crystal_hcp_voxels_cpu.md). Grids must be multiples of the
# network's stride (8): the training supercell is 2 x 4 x 2 (8 x 24 x 8).
VOXELS_PER_CELL: dict[str, tuple[int, int, int]] = {
    "sc": (4, 4, 4),
    "bcc": (4, 4, 4),
    "fcc": (4, 4, 4),
    "hcp": (4, 6, 4),
    "diamond": (8, 8, 8),
}
TRAINING_SUPERCELL: dict[str, tuple[int, int, int]] = {
    "sc": (2, 2, 2),
    "bcc": (2, 2, 2),
    "fcc": (2, 2, 2),
    "hcp": (2, 4, 2),
    "diamond": (1, 1, 1),
}


def phase_voxel_size(phase: str, a: float | None = None, c: float | None = None) -> tuple[float, float, float]:
    """The voxel edges (x, y, z in A) of ``phase``: its conventional cell over ``VOXELS_PER_CELL``."""
    lengths = conventional_cell(phase, a=a, c=c).cell.lengths()
    return tuple(float(v / n) for v, n in zip(lengths, VOXELS_PER_CELL[phase], strict=True))  # type: ignore


def phase_reference(phase: str, grid: VoxelGrid) -> Atoms:
    """The conventional cell of ``phase`` that ``grid``'s voxels were laid on (``VOXELS_PER_CELL`` of them per
    cell edge, its element): a model class's reference crystal, for Bragg guidance."""
    if phase not in PHASES:
        raise GCDError(f"Bragg guidance needs a crystal phase label, one of {sorted(PHASES)}; got {phase!r}")
    lengths = [float(e) * n for e, n in zip(grid.nominal_edges, VOXELS_PER_CELL[phase], strict=True)]
    return conventional_cell(phase, grid.species[0], a=lengths[0], c=lengths[2] if phase == "hcp" else None)


def training_supercell(phase: str, multiple: int = 1) -> tuple[int, int, int]:
    """The supercell of the phase's training cell, ``multiple`` times larger along every edge."""
    if phase not in PHASES:
        raise GCDError(f"unknown phase {phase!r}; choose one of {sorted(PHASES)}")
    if multiple < 1:
        raise GCDError(f"the cell multiple must be a positive integer, got {multiple}")
    return tuple(n * multiple for n in TRAINING_SUPERCELL[phase])  # type: ignore[return-value]
