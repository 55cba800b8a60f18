"""Symmetry through spglib."""

from __future__ import annotations

import os

from ase import Atoms

# spglib prints C-level warnings ("Primitive lattice cleaning is incomplete") for every noisy sample; the
# caller gets the space group it found either way
os.environ.setdefault("SPGLIB_WARNING", "OFF")
import spglib  # noqa: E402

DEFAULT_SYMPREC = 0.1  # A; generated positions carry a little noise


def space_group(atoms: Atoms, symprec: float = DEFAULT_SYMPREC) -> tuple[int, str]:
    """(number, international symbol) of the space group; (0, "") when spglib finds none."""
    if len(atoms) == 0:
        return 0, ""
    cell = (atoms.cell[:], atoms.get_scaled_positions(wrap=True), atoms.numbers)
    dataset = spglib.get_symmetry_dataset(cell, symprec=symprec)
    if dataset is None:
        return 0, ""
    return int(dataset.number), str(dataset.international)
