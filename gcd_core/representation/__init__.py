"""Atoms <-> voxel grids: encoding, decoding, symmetry augmentation and density views."""

from gcd_core.representation.augment import (
    GridSymmetry,
    apply_symmetry_to_atoms,
    apply_symmetry_to_grid,
    grid_symmetries,
    random_augment,
    split_sites,
    translate_atoms,
    translate_grid,
)
from gcd_core.representation.density import density_view
from gcd_core.representation.grid import (
    ENCODINGS,
    GridLayout,
    GridStretchWarning,
    VoxelGrid,
    cell_lengths_of,
    largest_safe_voxel_size,
    merge_close_atoms,
)

__all__ = [
    "ENCODINGS",
    "GridLayout",
    "GridStretchWarning",
    "GridSymmetry",
    "VoxelGrid",
    "apply_symmetry_to_atoms",
    "apply_symmetry_to_grid",
    "cell_lengths_of",
    "density_view",
    "grid_symmetries",
    "largest_safe_voxel_size",
    "merge_close_atoms",
    "random_augment",
    "split_sites",
    "translate_atoms",
    "translate_grid",
]
