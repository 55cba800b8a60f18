"""Atom-space polish: a small denoiser on atom positions that finishes what the voxel model decides.

The voxel model settles which atoms exist (the grand canonical part: count, topology), but each atom's place
inside its voxel is one regressed offset, and for amorphous carbon on 0.438 A voxels that leaves the bond lengths
spread 0.11-0.13 A where real cells hold 0.085 A (``benchmarks/results/carbon_polish_cpu.md``). Re-applying the
voxel network at small noise times does not narrow them. The continuous end of the diffusion is better done on
the atoms themselves: :class:`PositionRefiner` is a denoising score model on positions at small noise
(sigma = 0.01-0.25 A), a rotation-equivariant message-passing network (displacements are sums of bond
directions weighted by invariant features) trained on the same real cells as the voxel model.
:func:`polish` runs it as a short deterministic annealed denoiser from a starting noise level, keeping every atom:
the count is the voxel model's, only positions move.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list
from torch import nn

from gcd_core.checkpoint import read_checkpoint, write_checkpoint
from gcd_core.device import resolve_device
from gcd_core.errors import GCDError
from gcd_core.physics.xanes import periodic_pairs, switch

CHECKPOINT_FORMAT = "gcd-position-refiner"
CHECKPOINT_VERSION = 1
# the noise levels (A) the refiner is trained on; polish starts inside this range
SIGMA_RANGE = (0.01, 0.25)
# where polish starts and how many steps it takes by default: generated bonds spread about 0.11 A against real
# cells' 0.085, an excess of about 0.05 A per atom and axis (benchmarks/results/carbon_polish_cpu.md)
POLISH_NOISE = 0.05
POLISH_STEPS = 6
# atoms with a neighbour this close (A) stay where they are: no training cell holds a pair under 1.19 A, so the
# refiner has never seen one (a generated sample can hold a doubled atom, two sites a fraction of a bond apart)
UNSEEN_PAIR_DISTANCE = 1.0


class PositionRefiner(nn.Module):
    """``(positions [N, 3] A, cell lengths [3] A, sigma A) -> displacement [N, 3] A`` toward the clean structure.

    Invariant node features are updated by ``layers`` rounds of messages over pairs within ``cutoff`` (radial basis
    of the distance, smoothly cut off); the output displacement of atom i is ``sum_j w_ij (r_j - r_i) / |r_ij|``
    with ``w_ij`` from the two atoms' features and their distance, so it rotates with the structure. One species.
    """

    def __init__(
        self, species: str = "C", cutoff: float = 3.2, hidden: int = 64, layers: int = 3, radial_basis: int = 24
    ) -> None:
        super().__init__()
        self.config = {"species": str(species), "cutoff": float(cutoff), "hidden": int(hidden), "layers": int(layers),
                       "radial_basis": int(radial_basis)}
        self.register_buffer("centres", torch.linspace(0.8, cutoff, radial_basis), persistent=False)
        self.width = (cutoff - 0.8) / radial_basis
        self.noise_embedding = nn.Sequential(nn.Linear(1, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.messages = nn.ModuleList(
            nn.Sequential(nn.Linear(2 * hidden + radial_basis, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
            for _ in range(layers)
        )
        self.updates = nn.ModuleList(
            nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden)) for _ in range(layers)
        )
        self.weights = nn.Sequential(nn.Linear(2 * hidden + radial_basis, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, positions: torch.Tensor, cell_lengths: torch.Tensor, sigma: float) -> torch.Tensor:
        cutoff = self.config["cutoff"]
        first, second, vectors = periodic_pairs(positions, cell_lengths, cutoff)
        distance = vectors.norm(dim=-1).clamp_min(1e-6)
        fade = switch(distance, cutoff, 0.5)[:, None]
        radial = torch.exp(-(((distance[:, None] - self.centres) / self.width) ** 2)) * fade
        level = torch.full((1, 1), math.log(sigma / SIGMA_RANGE[1]), device=positions.device)
        h = self.noise_embedding(level).expand(len(positions), -1)
        norm = 1.0 / 8.0  # about the neighbours within the cutoff: keeps sums of order one
        for message, update in zip(self.messages, self.updates, strict=True):
            m = message(torch.cat([h[first], h[second], radial], dim=-1)) * fade
            pooled = torch.zeros_like(h).index_add_(0, first, m) * norm
            h = h + update(torch.cat([h, pooled], dim=-1))
        w = self.weights(torch.cat([h[first], h[second], radial], dim=-1)) * fade
        step = torch.zeros_like(positions).index_add_(0, first, w * vectors / distance[:, None])
        return step * sigma

    def check_species(self, symbols: Sequence[str], holder: str = "this structure also holds") -> None:
        """Refuse, by name, elements other than the one the refiner was trained on."""
        other = sorted(set(symbols) - {self.config["species"]})
        if other:
            raise GCDError(f"the position refiner was trained on {self.config['species']} only; {holder} "
                           f"{', '.join(other)}")

    # ----------------------------------------------------------------------------------------------- files
    def save(self, path: str | Path, metadata: dict[str, Any] | None = None) -> None:
        write_checkpoint(path, {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config": dict(self.config),
            "model": {k: v.detach().cpu() for k, v in self.state_dict().items()},
            "metadata": dict(metadata or {}),
        })

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None) -> PositionRefiner:
        checkpoint = read_checkpoint(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, kind="position refiner")
        model = cls(**checkpoint["config"])
        model.load_state_dict(checkpoint["model"])
        model.metadata = checkpoint.get("metadata", {})
        model.eval()
        return model.to(resolve_device(device))


def noise_levels(start: float, steps: int, end: float = SIGMA_RANGE[0]) -> list[float]:
    """``steps`` noise levels (A) falling geometrically from ``start`` to ``end``."""
    if not SIGMA_RANGE[0] <= end <= start <= SIGMA_RANGE[1]:
        raise GCDError(f"polish noise must fall within the trained {SIGMA_RANGE} A, got {start} -> {end}")
    if steps < 1:
        raise GCDError(f"polish needs at least one step, got {steps}")
    return np.geomspace(start, end, steps).tolist()


def polish(
    structures: Atoms | Sequence[Atoms],
    refiner: PositionRefiner,
    start: float = POLISH_NOISE,
    steps: int = POLISH_STEPS,
) -> list[Atoms]:
    """Copies of ``structures`` with positions denoised from noise level ``start`` (A) down to 0.01 A in ``steps``
    deterministic steps (DDIM-like: each step moves to the clean estimate and keeps the remaining noise's share of
    the way back). Atoms are neither added nor removed, and those with a neighbour closer than
    :data:`UNSEEN_PAIR_DISTANCE` are not moved; cells must be orthorhombic, periodic and over twice the refiner's
    cutoff on each edge."""
    levels = noise_levels(start, steps)
    device = next(refiner.parameters()).device
    out = []
    for atoms in [structures] if isinstance(structures, Atoms) else structures:
        cell = np.asarray(atoms.cell)
        if not np.allclose(cell, np.diag(np.diag(cell)), atol=1e-6) or not all(atoms.pbc):
            raise GCDError("polish needs a periodic orthorhombic cell with axes along x, y, z")
        refiner.check_species(atoms.get_chemical_symbols())
        polished = atoms.copy()
        if len(atoms) > 1:
            lengths = torch.as_tensor(atoms.cell.lengths(), dtype=torch.float32, device=device)
            x = torch.as_tensor(atoms.get_positions(), dtype=torch.float32, device=device)
            movable = torch.ones(len(atoms), 1, device=device)
            close = neighbor_list("i", atoms, UNSEEN_PAIR_DISTANCE)
            movable[torch.as_tensor(close, dtype=torch.long, device=device)] = 0.0
            with torch.no_grad():
                for k, sigma in enumerate(levels):
                    clean = x + movable * refiner(x, lengths, sigma)
                    after = levels[k + 1] if k + 1 < len(levels) else 0.0
                    x = clean + (after / sigma) * (x - clean)
            polished.set_positions(x.double().cpu().numpy())
            polished.wrap()
        out.append(polished)
    return out
