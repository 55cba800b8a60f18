"""Physics around the generator: symmetry, structure analysis, spectra, potentials."""

from gcd_core.physics.symmetry import DEFAULT_SYMPREC, space_group

__all__ = ["DEFAULT_SYMPREC", "space_group"]
