"""Carbon K-edge XANES forward model: a site's spectrum from its neighbourhood, a structure's as the site mean.

Each site is described by smooth, rotation-invariant functions of its neighbourhood: a Gaussian-smeared radial
distribution of neighbours out to 4 A, a smeared distribution of the angles between its bonds (bonds fade out
over 1.75-2.05 A) and its soft coordination. A small MLP maps that descriptor to a 100-point spectrum on
:data:`~gcd_core.physics.spectra.ENERGY_GRID` (softplus, normalised to unit area).

Everything is torch and differentiable in the positions *and in per-site weights*, so the same model scores
``ase.Atoms`` (weights 1) and a voxel grid while it diffuses: every voxel is a candidate site at its corner plus
offset, weighted by its occupancy, and the structure's spectrum is the occupancy-weighted site mean. Its
gradient with respect to the grid is what gradient guidance follows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from torch import nn

from gcd_core.checkpoint import read_checkpoint, write_checkpoint
from gcd_core.device import resolve_device
from gcd_core.errors import GCDError
from gcd_core.physics.spectra import ENERGY_GRID

CHECKPOINT_FORMAT = "gcd-xanes-forward"
CHECKPOINT_VERSION = 1


def switch(r: torch.Tensor, cutoff: float, width: float) -> torch.Tensor:
    """1 below ``cutoff - width``, a cosine down to 0 at ``cutoff`` (smooth, so positions have gradients)."""
    x = ((r - (cutoff - width)) / width).clamp(0.0, 1.0)
    return 0.5 * (torch.cos(math.pi * x) + 1.0)


# Above this many sites the pair search bins them (ASE's neighbour list, linear in the sites) instead of comparing
# every pair (quadratic: 3 x 10^8 distances per call for a 49 A box of 3 g/cm3 carbon): 12x faster there, 2x at
# 2,200 sites, slower at 300 (benchmarks/pair_search.py, results/pair_search_cpu.md).
DENSE_PAIR_LIMIT = 1500


def periodic_pairs(
    positions: torch.Tensor, cell_lengths: torch.Tensor, cutoff: float, candidates: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(i, j, vector j - i) for all ordered pairs closer than ``cutoff`` in an orthorhombic periodic cell, by the
    minimum image convention (so ``cutoff`` must be under half the shortest edge). Differentiable in positions.

    ``candidates`` (boolean ``[N]``) limits both ends of the pairs to those sites. Up to
    :data:`DENSE_PAIR_LIMIT` sites, every pair is compared (in chunks of rows); above it, ASE's neighbour list finds
    the pairs and only their vectors are computed here.
    """
    if cutoff >= 0.5 * float(cell_lengths.min()):
        raise GCDError(f"the cell ({cell_lengths.tolist()} A) must be over twice the {cutoff} A cutoff on each edge")
    index = torch.arange(len(positions), device=positions.device)
    if candidates is not None:
        index = index[candidates]
    points = positions[index]
    if len(points) > DENSE_PAIR_LIMIT:
        return _binned_pairs(points, index, cell_lengths, cutoff)
    firsts, seconds, vectors = [], [], []
    chunk = max(1, 4_000_000 // max(1, len(points)))
    for start in range(0, len(points), chunk):
        delta = points[None, :, :] - points[start : start + chunk, None, :]
        delta = delta - cell_lengths * torch.round(delta / cell_lengths)
        with torch.no_grad():
            distance = delta.norm(dim=-1)
            a, b = torch.nonzero((distance < cutoff) & (distance > 1e-6), as_tuple=True)
        firsts.append(index[start + a])
        seconds.append(index[b])
        vectors.append(delta[a, b])
    return torch.cat(firsts), torch.cat(seconds), torch.cat(vectors)


def _binned_pairs(
    points: torch.Tensor, index: torch.Tensor, cell_lengths: torch.Tensor, cutoff: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from ase.neighborlist import primitive_neighbor_list

    lengths = cell_lengths.to(points.dtype)
    with torch.no_grad():
        wrapped = (points - lengths * torch.floor(points / lengths)).double().cpu().numpy()
        a, b, distance = primitive_neighbor_list(
            "ijd", (True, True, True), np.diag(lengths.double().cpu().numpy()), wrapped, cutoff
        )
    keep = distance > 1e-6  # the dense path's rule for coincident sites
    a = torch.as_tensor(a[keep], device=points.device)
    b = torch.as_tensor(b[keep], device=points.device)
    # the vector from the differentiable positions, brought to the minimum image (cutoff < half an edge)
    delta = points[b] - points[a]
    delta = delta - lengths * torch.round(delta / lengths)
    return index[a], index[b], delta


class XanesForwardModel(nn.Module):
    """Site descriptor + MLP: ``[N sites] -> [N, 100]`` spectra; see the module docstring."""

    def __init__(
        self,
        radial_cutoff: float = 4.0,
        radial_bins: int = 32,
        radial_width: float = 0.12,
        bond_cutoff: float = 2.05,  # bonds fade out over 1.75-2.05 A (the usual 1.85 A cutoff in between)
        angle_bins: int = 18,
        angle_width: float = 8.0,
        hidden: int = 128,
        num_energies: int = len(ENERGY_GRID),
    ) -> None:
        super().__init__()
        self.config = {
            "radial_cutoff": float(radial_cutoff),
            "radial_bins": int(radial_bins),
            "radial_width": float(radial_width),
            "bond_cutoff": float(bond_cutoff),
            "angle_bins": int(angle_bins),
            "angle_width": float(angle_width),
            "hidden": int(hidden),
            "num_energies": int(num_energies),
        }
        self.register_buffer("radial_centres", torch.linspace(0.9, radial_cutoff, radial_bins), persistent=False)
        self.register_buffer("angle_centres", torch.linspace(50.0, 180.0, angle_bins), persistent=False)
        size = radial_bins + angle_bins + 1
        self.register_buffer("feature_mean", torch.zeros(size))
        self.register_buffer("feature_std", torch.ones(size))
        self.mlp = nn.Sequential(
            nn.Linear(size, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, num_energies)
        )
        self.register_buffer("energies", torch.as_tensor(ENERGY_GRID, dtype=torch.float32), persistent=False)

    @property
    def descriptor_size(self) -> int:
        return self.config["radial_bins"] + self.config["angle_bins"] + 1

    # ------------------------------------------------------------------------------------------- descriptor
    def descriptors(
        self,
        positions: torch.Tensor,
        cell_lengths: torch.Tensor | Sequence[float],
        weights: torch.Tensor | None = None,
        candidates: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``[N, D]`` site descriptors; ``weights`` (``[N]``, default 1) scale each site's presence."""
        c = self.config
        positions = positions.float()
        lengths = torch.as_tensor(cell_lengths, dtype=positions.dtype, device=positions.device)
        n = len(positions)
        weights = torch.ones(n, device=positions.device) if weights is None else weights.float()
        i, j, vectors = periodic_pairs(positions, lengths, c["radial_cutoff"], candidates)
        r = vectors.norm(dim=-1)
        pair_weight = weights[j] * switch(r, c["radial_cutoff"], 0.5)
        smear = torch.exp(-0.5 * ((r[:, None] - self.radial_centres) / c["radial_width"]) ** 2)
        radial = torch.zeros(n, c["radial_bins"], device=positions.device).index_add(0, i, pair_weight[:, None] * smear)

        bonded = r < c["bond_cutoff"]
        bi, bj, bvec, br = i[bonded], j[bonded], vectors[bonded], r[bonded]
        bond_weight = weights[bj] * switch(br, c["bond_cutoff"], 0.3)
        coordination = torch.zeros(n, device=positions.device).index_add(0, bi, bond_weight)
        angles = torch.zeros(n, c["angle_bins"], device=positions.device)
        if len(bi) > 1:
            order = torch.argsort(bi, stable=True)
            bi, bvec, br, bond_weight = bi[order], bvec[order], br[order], bond_weight[order]
            counts = torch.bincount(bi, minlength=n)
            starts = torch.cumsum(counts, 0) - counts
            per_edge = counts[bi]  # triplets: every ordered pair of two different bonds of one atom
            first = torch.repeat_interleave(torch.arange(len(bi), device=bi.device), per_edge)
            offset = torch.arange(len(first), device=bi.device) - torch.repeat_interleave(
                torch.cumsum(per_edge, 0) - per_edge, per_edge
            )
            second = starts[bi[first]] + offset
            keep = second != first
            first, second = first[keep], second[keep]
            cosine = (bvec[first] * bvec[second]).sum(-1) / (br[first] * br[second])
            theta = torch.rad2deg(torch.acos(cosine.clamp(-1 + 1e-6, 1 - 1e-6)))
            w = 0.5 * bond_weight[first] * bond_weight[second]  # each unordered pair counted twice
            smear = torch.exp(-0.5 * ((theta[:, None] - self.angle_centres) / c["angle_width"]) ** 2)
            angles = angles.index_add(0, bi[first], w[:, None] * smear)
        features = torch.cat([radial, angles, coordination[:, None]], dim=1)
        return (features - self.feature_mean) / self.feature_std

    # ------------------------------------------------------------------------------------------- spectra
    def site_spectra_from_descriptors(self, descriptors: torch.Tensor) -> torch.Tensor:
        raw = nn.functional.softplus(self.mlp(descriptors))
        area = torch.trapezoid(raw, self.energies, dim=-1)
        return raw / area[:, None].clamp_min(1e-12)

    def forward(
        self, positions: torch.Tensor, cell_lengths: torch.Tensor | Sequence[float], weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``[N, E]`` unit-area site spectra."""
        return self.site_spectra_from_descriptors(self.descriptors(positions, cell_lengths, weights))

    def site_spectra(self, atoms: Atoms) -> np.ndarray:
        """Each carbon site's predicted spectrum, ``[n_atoms, 100]``."""
        self._check_cell(atoms)
        device = self.feature_mean.device
        with torch.no_grad():
            positions = torch.as_tensor(atoms.get_positions(wrap=True), dtype=torch.float32, device=device)
            return self(positions, atoms.cell.lengths()).cpu().numpy()

    def spectrum(self, atoms: Atoms) -> np.ndarray:
        """The structure's predicted spectrum: the mean over its sites."""
        return self.site_spectra(atoms).mean(axis=0)

    def weighted_spectrum(
        self,
        positions: torch.Tensor,
        weights: torch.Tensor,
        cell_lengths: torch.Tensor | Sequence[float],
        min_weight: float = 0.05,
    ) -> torch.Tensor:
        """Differentiable spectrum of weighted candidate sites (voxels with their occupancy): the weighted mean
        of site spectra. Sites below ``min_weight`` are left out entirely (they carry almost nothing, and the
        pair search is quadratic)."""
        candidates = weights > min_weight
        if not bool(candidates.any()):
            raise GCDError("no site is occupied: the grid holds no atoms to compute a spectrum for")
        descriptors = self.descriptors(positions, cell_lengths, weights, candidates)[candidates]
        spectra = self.site_spectra_from_descriptors(descriptors)
        w = weights[candidates]
        return (w[:, None] * spectra).sum(0) / w.sum()

    @staticmethod
    def _check_cell(atoms: Atoms) -> None:
        cell = np.asarray(atoms.cell)
        if not np.allclose(cell, np.diag(np.diag(cell)), atol=1e-6) or not all(atoms.pbc):
            raise GCDError("the XANES model needs a periodic orthorhombic cell with axes along x, y, z")

    # --------------------------------------------------------------------------------------------- files
    def save(self, path: str | Path, metadata: dict[str, Any] | None = None) -> None:
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        checkpoint = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config": dict(self.config),
            "model": state,
            "metadata": dict(metadata or {}),
        }
        write_checkpoint(path, checkpoint)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None) -> XanesForwardModel:
        checkpoint = read_checkpoint(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, kind="XANES forward model")
        model = cls(**checkpoint["config"])
        model.load_state_dict(checkpoint["model"])
        model.metadata = checkpoint.get("metadata", {})
        model.eval()
        return model.to(resolve_device(device))
