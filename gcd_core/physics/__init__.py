"""Physics around the generator: symmetry, structure analysis, spectra, potentials."""

from gcd_core.physics.analysis import mass_density
from gcd_core.physics.phases import STRUCTURE_TYPES, PhaseVerdict, judge_phase, structure_types
from gcd_core.physics.symmetry import DEFAULT_SYMPREC, space_group

__all__ = [
    "DEFAULT_SYMPREC",
    "STRUCTURE_TYPES",
    "PhaseVerdict",
    "judge_phase",
    "mass_density",
    "space_group",
    "structure_types",
]
