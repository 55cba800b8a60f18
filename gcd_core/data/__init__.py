"""Dataset builders."""

from gcd_core.data.crystals import PHASES, Phase, conventional_cell, crystal, ideal_atom_count

__all__ = ["PHASES", "Phase", "conventional_cell", "crystal", "ideal_atom_count"]
