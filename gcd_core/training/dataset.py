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
    ) -> None:
        self.structures = list(structures)
        if not self.structures:
            raise GCDError("the training set is empty")
        self.grid = grid
        self.augment = augment
        n = len(self.structures)
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.vectors = None if vectors is None else np.asarray(vectors, dtype=np.float32)
        self.scalars = None if scalars is None else np.asarray(scalars, dtype=np.float32)
        for name, values in (("labels", self.labels), ("vectors", self.vectors), ("scalars", self.scalars)):
            if values is not None and len(values) != n:
                raise GCDError(f"{name} has {len(values)} entries for {n} structures")
        self.buckets: dict[tuple[int, int, int], list[int]] = {}
        for index, atoms in enumerate(self.structures):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", GridStretchWarning)
                layout = grid.layout(cell_lengths_of(atoms))
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
        self._weights = np.array([len(self.buckets[s]) for s in self._shapes], dtype=np.float64)
        self._weights /= self._weights.sum()

    def __len__(self) -> int:
        return len(self.structures)

    @property
    def cell_lengths(self) -> list[tuple[float, float, float]]:
        return sorted({tuple(round(v, 6) for v in cell_lengths_of(a)) for a in self.structures})

    def batch(
        self, batch_size: int, rng: np.random.Generator, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """A random batch: model-space grids ``[B, C, X, Y, Z]`` and the network's conditioning kwargs."""
        shape = self._shapes[int(rng.choice(len(self._shapes), p=self._weights))]
        members = self.buckets[shape]
        chosen = rng.choice(members, size=batch_size, replace=len(members) < batch_size)
        augmented = []
        for index in chosen:
            atoms = self.structures[int(index)]
            if self.augment:
                atoms, _ = random_augment(atoms, self.grid, rng)
            augmented.append(atoms)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GridStretchWarning)
            grids = self.grid.encode(augmented, device=device)
        conditioning: dict[str, torch.Tensor] = {}
        if self.labels is not None:
            conditioning["label"] = torch.as_tensor(self.labels[chosen], device=device)
        if self.vectors is not None:
            conditioning["vector"] = torch.as_tensor(self.vectors[chosen], device=device)
        if self.scalars is not None:
            conditioning["scalars"] = torch.as_tensor(self.scalars[chosen], device=device)
        return grids, conditioning
