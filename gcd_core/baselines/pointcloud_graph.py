"""BASELINE support: a vectorised periodic radius graph in torch for orthorhombic cells.

Part of the point-cloud BASELINE (``gcd_core.baselines``), not of the voxel model. All pairs within ``cutoff``
among every periodic image, so cells smaller than twice the cutoff work (a pair may then appear several times,
once per image, and an atom may neighbour its own images). All-pairs distances are computed in row chunks, which
is fine for small-to-moderate structures (up to a few thousand atoms per structure).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gcd_core.errors import GCDError

# elements (pairs x images x 3) per chunk of the all-pairs distance tensor; bounds memory to ~16 MiB of float32
_CHUNK_ELEMENTS = 1 << 22


@dataclass
class PeriodicGraph:
    """Directed edges ``src -> dst`` of a periodic radius graph (BASELINE helper).

    ``shift`` is the cartesian image offset, so the edge vector is ``positions[dst] - positions[src] + shift``
    (pointing from the centre atom ``src`` to its neighbour). Every pair appears in both directions.
    """

    src: torch.Tensor  # (E,) long
    dst: torch.Tensor  # (E,) long
    shift: torch.Tensor  # (E, 3) float

    def vectors(self, positions: torch.Tensor) -> torch.Tensor:
        """Edge vectors from ``positions``; differentiable in ``positions`` (the indices are fixed)."""
        return positions[self.dst] - positions[self.src] + self.shift

    @property
    def num_edges(self) -> int:
        return int(self.src.numel())


def _as_lengths(cell_lengths: torch.Tensor | list | tuple, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    lengths = torch.as_tensor(cell_lengths, dtype=dtype, device=device).reshape(-1, 3)
    if not torch.isfinite(lengths).all() or (lengths <= 0).any():
        raise GCDError(f"cell lengths must be positive and finite, got {lengths.tolist()}")
    return lengths


def periodic_radius_graph(
    positions: torch.Tensor,
    cell_lengths: torch.Tensor | list | tuple,
    cutoff: float,
    batch: torch.Tensor | None = None,
) -> PeriodicGraph:
    """All ordered pairs (i, j, image) closer than ``cutoff`` in orthorhombic periodic cells (BASELINE helper).

    ``positions`` (M, 3) in A, the atoms of B structures concatenated; ``batch`` (M,) the structure of each atom,
    sorted (None: one structure); ``cell_lengths`` (B, 3) or (3,) edges of each cell. Positions need not be
    wrapped. The indices carry no gradient; take vectors with :meth:`PeriodicGraph.vectors`.
    """
    if not cutoff > 0:
        raise GCDError(f"the graph cutoff must be positive, got {cutoff}")
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise GCDError(f"positions must have shape (atoms, 3), got {tuple(positions.shape)}")
    device, dtype = positions.device, positions.dtype
    lengths = _as_lengths(cell_lengths, device, dtype)
    n_structures = lengths.shape[0]
    m = positions.shape[0]
    if batch is None:
        if n_structures != 1:
            raise GCDError("several cells need a batch index saying which structure each atom belongs to")
        batch = torch.zeros(m, dtype=torch.long, device=device)
    batch = batch.to(device=device, dtype=torch.long)
    empty = PeriodicGraph(
        torch.zeros(0, dtype=torch.long, device=device),
        torch.zeros(0, dtype=torch.long, device=device),
        torch.zeros(0, 3, dtype=dtype, device=device),
    )
    if m == 0:
        return empty
    if batch.shape != (m,) or int(batch.min()) < 0 or int(batch.max()) >= n_structures:
        raise GCDError(f"batch must hold one structure index in [0, {n_structures}) per atom")
    if (batch[1:] < batch[:-1]).any():
        raise GCDError("batch must be sorted: the atoms of each structure consecutive")

    with torch.no_grad():
        x = positions.detach()
        counts = torch.bincount(batch, minlength=n_structures)
        ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        local = torch.arange(m, device=device) - ptr[batch]
        n_max = int(counts.max())
        padded = x.new_zeros(n_structures, n_max, 3)
        padded[batch, local] = x
        valid = torch.zeros(n_structures, n_max, dtype=torch.bool, device=device)
        valid[batch, local] = True

        # minimum-image components lie in [-L/2, L/2], so image s along an axis is at least (|s| - 1/2) L away:
        # images up to |s| <= floor(cutoff / L + 1/2) can be within the cutoff
        reach = [int(math.floor(cutoff / float(lengths[:, k].min()) + 0.5)) for k in range(3)]
        axes = [torch.arange(-r, r + 1, device=device, dtype=dtype) for r in reach]
        shifts = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)  # (S, 3)
        zero_shift = int(((shifts == 0).all(dim=1)).nonzero()[0, 0])
        n_shifts = shifts.shape[0]

        box = lengths[:, None, None, :]  # (B, 1, 1, 3)
        rows_per_chunk = max(1, _CHUNK_ELEMENTS // max(1, n_structures * n_max * n_shifts * 3))
        src_parts, dst_parts, shift_parts = [], [], []
        for start in range(0, n_max, rows_per_chunk):
            stop = min(n_max, start + rows_per_chunk)
            raw = padded[:, None, :, :] - padded[:, start:stop, None, :]  # (B, c, N, 3): x_j - x_i
            wrap = torch.round(raw / box)
            base = raw - wrap * box
            images = base[:, :, :, None, :] + shifts[None, None, None] * lengths[:, None, None, None, :]
            close = (images * images).sum(-1) < cutoff * cutoff  # (B, c, N, S)
            close &= valid[:, start:stop, None, None] & valid[:, None, :, None]
            rows = torch.arange(start, stop, device=device)
            close[:, rows - start, rows, zero_shift] = False  # an atom is not its own neighbour
            b, i, j, s = close.nonzero(as_tuple=True)
            src_parts.append(ptr[b] + start + i)
            dst_parts.append(ptr[b] + j)
            # image offset in cartesian A: whole cells, so vectors recomputed from positions match exactly
            shift_parts.append((shifts[s] - wrap[b, i, j]) * lengths[b])
        if not src_parts:
            return empty
        return PeriodicGraph(torch.cat(src_parts), torch.cat(dst_parts), torch.cat(shift_parts))
