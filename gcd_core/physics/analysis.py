"""Structure analysis shared by tests, benchmarks, the CLI and the app."""

from __future__ import annotations

from ase import Atoms
from ase.units import _amu

_CM3_PER_A3 = 1e-24


def mass_density(atoms: Atoms) -> float:
    """Mass density in g/cm3 of a periodic cell (0 for an empty one)."""
    volume = atoms.get_volume()
    if len(atoms) == 0 or volume <= 0:
        return 0.0
    return float(atoms.get_masses().sum() * _amu * 1e3 / (volume * _CM3_PER_A3))
