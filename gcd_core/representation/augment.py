"""Augmentations that keep the physics: grid symmetries (axis permutations and flips) and translations.

Each has a grid form and an atoms form; for clean grids, augmenting the grid and decoding gives the same
structure as transforming the atoms, encoding and decoding (tested).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms

from gcd_core.errors import GCDError
from gcd_core.representation.grid import VoxelGrid, cell_lengths_of

_SPATIAL = (2, 3, 4)  # spatial dims of a [B, C, X, Y, Z] grid


@dataclass(frozen=True)
class GridSymmetry:
    """``r'_k = r_{perm[k]}``, then ``r'_k -> L'_k - r'_k`` where ``flips[k]``."""

    perm: tuple[int, int, int]
    flips: tuple[bool, bool, bool]

    @property
    def is_identity(self) -> bool:
        return self.perm == (0, 1, 2) and not any(self.flips)


def grid_symmetries(shape: Sequence[int], cell_lengths: Sequence[float] | None = None) -> list[GridSymmetry]:
    """The axis permutations and flips that map the grid (and cell) onto itself: 48 for a cubic grid."""
    shape = tuple(int(v) for v in shape)
    lengths = tuple(cell_lengths) if cell_lengths is not None else shape
    ops = []
    for perm in itertools.permutations(range(3)):
        if any(shape[perm[k]] != shape[k] for k in range(3)):
            continue
        if any(not np.isclose(lengths[perm[k]], lengths[k], rtol=1e-6) for k in range(3)):
            continue
        for flips in itertools.product((False, True), repeat=3):
            ops.append(GridSymmetry(perm, flips))  # type: ignore[arg-type]
    return ops


def apply_symmetry_to_grid(grid: torch.Tensor, op: GridSymmetry, voxel_grid: VoxelGrid) -> torch.Tensor:
    """Apply ``op`` to a data-space grid ``[B, C, X, Y, Z]``; offsets are permuted and mirrored with it."""
    if grid.dim() != 5:
        raise GCDError(f"expected a grid [B, C, X, Y, Z], got {tuple(grid.shape)}")
    out = grid.permute(0, 1, *(2 + p for p in op.perm))
    flip_dims = [2 + k for k in range(3) if op.flips[k]]
    if flip_dims:
        out = torch.flip(out, flip_dims)
    if voxel_grid.encoding == "sharp":
        out = out.clone()
        for s in range(voxel_grid.n_species):
            channels = voxel_grid.offset_channels(s)
            offsets = out[:, channels][:, list(op.perm)]
            # a mirrored axis maps voxel i -> n-1-i and offset f -> 1-f, i.e. position x -> L - x
            for k in range(3):
                if op.flips[k]:
                    offsets[:, k] = 1 - offsets[:, k]
            out[:, channels] = offsets
    return out


def apply_symmetry_to_atoms(atoms: Atoms, op: GridSymmetry) -> Atoms:
    """The same operation on an orthorhombic structure."""
    lengths = np.array(cell_lengths_of(atoms))
    positions = atoms.positions[:, list(op.perm)].copy()
    new_lengths = lengths[list(op.perm)]
    for k in range(3):
        if op.flips[k]:
            positions[:, k] = new_lengths[k] - positions[:, k]
    out = atoms.copy()
    out.set_cell(np.diag(new_lengths))
    out.positions = positions
    out.wrap()
    return out


def translate_atoms(atoms: Atoms, shift_voxels: Sequence[float], voxel_grid: VoxelGrid) -> Atoms:
    """Translate by ``shift_voxels`` voxels along each axis (whole or fractional), wrapping into the cell."""
    layout = voxel_grid.layout(cell_lengths_of(atoms), warn=False)
    out = atoms.copy()
    out.positions = out.positions + np.asarray(shift_voxels, dtype=np.float64) * np.array(layout.voxel_edges)
    out.wrap()
    return out


def translate_grid(
    grid: torch.Tensor, shift_voxels: Sequence[float], voxel_grid: VoxelGrid, cell_lengths: Sequence[float]
) -> torch.Tensor:
    """Translate a data-space grid ``[B, C, X, Y, Z]`` by ``shift_voxels`` voxels per axis.

    Whole-voxel shifts are a periodic roll and hold for any grid, noisy ones too. A fractional remainder moves
    atoms across voxel borders, which only a clean grid defines: it is applied to the decoded atoms, which are
    encoded again.
    """
    shift = np.asarray(shift_voxels, dtype=np.float64)
    whole = np.floor(shift).astype(int)
    out = torch.roll(grid, shifts=tuple(int(v) for v in whole), dims=_SPATIAL)
    fraction = shift - whole
    if np.any(fraction > 0):
        structures = voxel_grid.decode(out, cell_lengths)
        moved = [translate_atoms(a, fraction, voxel_grid) for a in structures]
        out = voxel_grid.encode(moved, device=grid.device, dtype=grid.dtype)
    return out


def random_augment(
    atoms: Atoms,
    voxel_grid: VoxelGrid,
    generator: np.random.Generator,
    symmetry: bool = True,
    fixed_axes: Sequence[int] = (),
) -> tuple[Atoms, GridSymmetry]:
    """A random continuous translation and, if ``symmetry``, a random grid symmetry of the structure.

    ``fixed_axes`` are neither translated, flipped nor permuted (a grain-boundary window keeps its GB in the
    middle and its grains on their sides). Training data are augmented on the atoms (cheap, exact), then encoded.
    """
    lengths = cell_lengths_of(atoms)
    out = atoms.copy()
    moving = np.ones(3)
    moving[list(fixed_axes)] = 0
    out.positions = out.positions + generator.random(3) * np.array(lengths) * moving
    out.wrap()
    op = GridSymmetry((0, 1, 2), (False, False, False))
    if symmetry:
        layout = voxel_grid.layout(lengths, warn=False)
        ops = [
            o for o in grid_symmetries(layout.shape, lengths)
            if all(o.perm[k] == k and not o.flips[k] for k in fixed_axes)
        ]
        op = ops[int(generator.integers(len(ops)))]
        out = apply_symmetry_to_atoms(out, op)
    return out, op


def split_sites(
    grid: torch.Tensor,
    voxels: VoxelGrid,
    generator: torch.Generator | None = None,
    structure_probability: float = 0.5,
    ghost_occupancy: tuple[float, float] = (0.3, 1.0),
) -> torch.Tensor:
    """A corrupted copy of a clean data-space grid ``[B, C, X, Y, Z]`` (sharp encoding) in which some atoms are
    *split*: the empty voxel across the face nearest the atom gets a ghost occupancy, with its offset on that
    face, and the atom's own occupancy drops to U(0.5, 1).

    This is the state a sampler ends in when it doubles a site over two voxels (too many atoms, pairs ~1 voxel
    apart). Clean training grids never show it, so a network has never learnt to undo it; trained to map the
    corrupted grid back to the clean one, it does (``diffusion_loss(corrupt=...)``). A structure is corrupted
    with ``structure_probability``, and then each of its atoms with a probability drawn U(0, 1) per structure,
    so that both a stray split and a whole doubled lattice are seen. Ghost occupancies are drawn uniformly from
    ``ghost_occupancy``.
    """
    if voxels.encoding != "sharp":
        raise GCDError("split_sites needs the sharp encoding (occupancy and offset channels)")
    if grid.dim() != 5 or grid.shape[1] != voxels.n_channels:
        raise GCDError(f"expected a grid [B, {voxels.n_channels}, X, Y, Z], got {tuple(grid.shape)}")
    if not 0 <= structure_probability <= 1:
        raise GCDError(f"structure_probability must lie in [0, 1], got {structure_probability}")
    low, high = ghost_occupancy
    if not 0 <= low <= high <= 1:
        raise GCDError(f"ghost_occupancy must be a range within [0, 1], got {ghost_occupancy}")
    out = grid.clone()
    batch, device, dtype = grid.shape[0], grid.device, grid.dtype

    def uniform(shape: Sequence[int]) -> torch.Tensor:
        return torch.rand(tuple(shape), device=device, dtype=dtype, generator=generator)

    per_structure = torch.where(
        uniform([batch]) < structure_probability, uniform([batch]), torch.zeros(batch, device=device, dtype=dtype)
    )
    spatial = grid.shape[2:]
    for s in range(voxels.n_species):
        channels = voxels.offset_channels(s)
        occupancy, offsets = grid[:, s], grid[:, channels]
        to_face = torch.minimum(offsets, 1 - offsets)  # [B, 3, X, Y, Z]: distance to the nearer face per axis
        axis = to_face.argmin(dim=1)
        upward = torch.gather(offsets, 1, axis[:, None])[:, 0] >= 0.5
        chosen = (occupancy > 0.5) & (uniform([batch, *spatial]) < per_structure.view(-1, 1, 1, 1))
        taken = occupancy > 0.5  # a ghost only goes into an empty voxel, and one per voxel
        ghost_level = low + (high - low) * uniform([batch, *spatial])
        kept_level = 0.5 + 0.5 * uniform([batch, *spatial])
        for a in range(3):
            for step, side in ((1, upward), (-1, ~upward)):
                source = chosen & (axis == a) & side
                target = torch.roll(source, step, dims=a + 1) & ~taken
                source = torch.roll(target, -step, dims=a + 1)  # only the splits that found room
                if not source.any():
                    continue
                taken |= target
                out[:, s] = torch.where(target, ghost_level, out[:, s])
                out[:, s] = torch.where(source, kept_level, out[:, s])
                ghost_offsets = torch.roll(offsets, step, dims=a + 2).clone()
                ghost_offsets[:, a] = 0.0 if step == 1 else 1.0  # on the shared face, seen from the ghost's side
                out[:, channels] = torch.where(target[:, None], ghost_offsets, out[:, channels])
    return out
