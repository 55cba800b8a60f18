"""Physics around the generator: symmetry, structure analysis, spectra, potentials."""

from gcd_core.physics.analysis import (
    DEFAULT_BOND_CUTOFF,
    Hybridisation,
    RadialDistribution,
    bond_angle_distribution,
    bond_angles,
    bond_lengths,
    carbon_summary,
    coordination_histogram,
    coordination_numbers,
    hybridisation,
    mass_density,
    radial_distribution,
    rdf_distance,
)
from gcd_core.physics.phases import STRUCTURE_TYPES, PhaseVerdict, judge_phase, structure_types
from gcd_core.physics.symmetry import DEFAULT_SYMPREC, space_group

__all__ = [
    "DEFAULT_BOND_CUTOFF",
    "DEFAULT_SYMPREC",
    "STRUCTURE_TYPES",
    "Hybridisation",
    "PhaseVerdict",
    "RadialDistribution",
    "bond_angle_distribution",
    "bond_angles",
    "bond_lengths",
    "carbon_summary",
    "coordination_histogram",
    "coordination_numbers",
    "hybridisation",
    "judge_phase",
    "mass_density",
    "radial_distribution",
    "rdf_distance",
    "space_group",
    "structure_types",
]
