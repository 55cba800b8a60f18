"""Periodic supercells of simple crystals, orthorhombic so that they fit a voxel grid."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.build import bulk

from gcd_core.errors import GCDError


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
