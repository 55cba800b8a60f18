"""gcd: grand canonical diffusion of atomic structures on periodic voxel grids."""

__version__ = "0.1.0"
