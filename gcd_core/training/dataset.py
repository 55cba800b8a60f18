"""Training batches from a list of structures: augmented on the atoms, encoded, grouped by grid shape."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms

from gcd_core.errors import GCDError
from gcd_core.representation.augment import random_augment
from gcd_core.representation.grid import GridStretchWarning, VoxelGrid, cell_lengths_of, largest_safe_voxel_size


class VoxelDataset:
    """Structures with optional per-structure conditioning, served as augmented model-space batches.

    Every batch holds structures of one grid shape (cells of several sizes train one fully convolutional
    model). Augmentation: a uniformly random continuous translation and a random symmetry of the grid.

    ``structure_grids`` gives structures their own grid (a class's voxel edge and species, see
    ``Conditioning.label_grids``); all must have the same channels. With ``equal_voxels`` a batch of a larger
    grid holds proportionally fewer structures (``batch_size`` applies to the smallest grid), so every step
    costs about the same whatever the cell.

    ``fit_to_stride`` lays each cell on the nearest grid whose sides are multiples of ``stride`` (stretching the
    voxels a little) instead of refusing cells that are not: for data with many cell sizes (amorphous cells of
    several densities), where no one voxel edge fits them all.

    ``weights`` make some structures drawn more often (a phase the model learns more slowly): a grid shape is
    drawn with the summed weight of its structures, then a structure within it by weight. Default: all equal.
    ``fixed_axes`` are left out of the augmentation (grain-boundary windows: the normal, z).
    """

    def __init__(
        self,
        structures: Sequence[Atoms],
        grid: VoxelGrid,
        labels: Sequence[int] | None = None,
        vectors: np.ndarray | Sequence[Sequence[float]] | None = None,
        scalars: np.ndarray | Sequence[Sequence[float]] | None = None,
        augment: bool = True,
        stride: int = 1,
        structure_grids: Sequence[VoxelGrid] | None = None,
        equal_voxels: bool = False,
        fit_to_stride: bool = False,
        weights: Sequence[float] | None = None,
        fixed_axes: Sequence[int] = (),
    ) -> None:
        self.structures = list(structures)
        if not self.structures:
            raise GCDError("the training set is empty")
        self.grid = grid
        self.augment = augment
        self.fixed_axes = tuple(fixed_axes)
        self.equal_voxels = equal_voxels
        self.multiple_of = stride if fit_to_stride else 1
        n = len(self.structures)
        self.grids = [grid] * n if structure_grids is None else list(structure_grids)
        if len(self.grids) != n:
            raise GCDError(f"structure_grids has {len(self.grids)} entries for {n} structures")
        if any(g.n_channels != grid.n_channels for g in self.grids):
            raise GCDError("every structure's grid must have the model grid's channels")
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.vectors = None if vectors is None else np.asarray(vectors, dtype=np.float32)
        self.scalars = None if scalars is None else np.asarray(scalars, dtype=np.float32)
        self.weights = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
        if not np.all(np.isfinite(self.weights)) or np.any(self.weights <= 0):
            raise GCDError("structure weights must be positive and finite")
        for name, values in (
            ("labels", self.labels), ("vectors", self.vectors), ("scalars", self.scalars), ("weights", self.weights)
        ):
            if values is not None and len(values) != n:
                raise GCDError(f"{name} has {len(values)} entries for {n} structures")
        self.buckets: dict[tuple[int, int, int], list[int]] = {}
        for index, atoms in enumerate(self.structures):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", GridStretchWarning)
                layout = self.grids[index].layout(cell_lengths_of(atoms), multiple_of=self.multiple_of)
            if any(v % stride for v in layout.shape):
                raise GCDError(
                    f"structure {index} gives a {layout.shape} grid; the network needs multiples of {stride} "
                    f"voxels per axis: choose a cell or voxel size that fits"
                )
            if augment and len(atoms) > 1:
                safe = largest_safe_voxel_size(atoms)
                if max(layout.voxel_edges) >= safe:
                    raise GCDError(
                        f"structure {index}: voxels of {max(layout.voxel_edges):.4f} A can hold two atoms once "
                        f"the structure is translated; use a voxel edge below {safe:.4f} A"
                    )
            self.buckets.setdefault(layout.shape, []).append(index)
        self._shapes = list(self.buckets)
        self._weights = np.array([self.weights[self.buckets[s]].sum() for s in self._shapes])
        self._weights /= self._weights.sum()
        self._smallest_voxels = min(int(np.prod(s)) for s in self._shapes)

    def batch_size_for(self, shape: tuple[int, int, int], batch_size: int) -> int:
        """Structures per batch of grids of ``shape`` (fewer for larger grids with ``equal_voxels``)."""
        if not self.equal_voxels:
            return batch_size
        return max(1, round(batch_size * self._smallest_voxels / int(np.prod(shape))))

    def __len__(self) -> int:
        return len(self.structures)

    @property
    def cell_lengths(self) -> list[tuple[float, float, float]]:
        return sorted({tuple(round(v, 6) for v in cell_lengths_of(a)) for a in self.structures})

    def batch(
        self, batch_size: int, rng: np.random.Generator, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """A random batch: data-space grids ``[B, C, X, Y, Z]`` and the network's conditioning kwargs."""
        shape = self._shapes[int(rng.choice(len(self._shapes), p=self._weights))]
        members = self.buckets[shape]
        size = self.batch_size_for(shape, batch_size)
        weights = self.weights[members]
        within = None if np.all(weights == weights[0]) else weights / weights.sum()  # None: the same draws as before
        chosen = rng.choice(members, size=size, replace=len(members) < size, p=within)
        by_grid: dict[int, list[int]] = {}  # structures sharing a grid are encoded in one call
        augmented = []
        for position, index in enumerate(chosen):
            atoms, grid = self.structures[int(index)], self.grids[int(index)]
            if self.augment:
                atoms, _ = random_augment(atoms, grid, rng, fixed_axes=self.fixed_axes)
            augmented.append(atoms)
            by_grid.setdefault(id(grid), []).append(position)
        grids = torch.empty((size, self.grid.n_channels, *shape), device=device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GridStretchWarning)
            for positions in by_grid.values():
                grid = self.grids[int(chosen[positions[0]])]
                grids[positions] = grid.encode(
                    [augmented[p] for p in positions], device=device, multiple_of=self.multiple_of
                )
        conditioning: dict[str, torch.Tensor] = {}
        if self.labels is not None:
            conditioning["label"] = torch.as_tensor(self.labels[chosen], device=device)
        if self.vectors is not None:
            conditioning["vector"] = torch.as_tensor(self.vectors[chosen], device=device)
        if self.scalars is not None:
            conditioning["scalars"] = torch.as_tensor(self.scalars[chosen], device=device)
        return grids, conditioning
