"""Single-crystal structure factors: a crystal's Bragg reflections and how strongly a structure shows them.

A perfect crystal scatters every atom in phase at its reciprocal lattice vectors G, so the normalised structure
factor ``|sum_j w_j exp(i G . r_j)| / sum_j w_j`` equals the reference cell's ``|F(G)| / N`` there, whatever the
crystal's translation and however many vacancies it has. Grains of one lattice out of register with each other
(domain walls, stacking faults) scatter out of phase and lower it. :func:`bragg_order` is that figure for a
structure; ``gcd_core.guidance.bragg_guidance`` is its differentiable form on the voxel grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms

from gcd_core.errors import GCDError

# |G| up to this (1/A) reaches the first few shells of reflections of every phase here (with a >= 3.2 A); fewer
# reflections would leave some directions of the lattice unconstrained, more would only add weak, sharp ones
BRAGG_MAX_WAVENUMBER = 4.0
# reflections whose |F| / N in the reference is below this are left out: they vanish or nearly vanish
# (systematic absences), and a structure's share there says little about its order
BRAGG_MIN_AMPLITUDE = 0.3


def bragg_reflections(
    reference: Atoms,
    max_wavenumber: float = BRAGG_MAX_WAVENUMBER,
    min_amplitude: float = BRAGG_MIN_AMPLITUDE,
) -> tuple[np.ndarray, np.ndarray]:
    """The reference crystal's strong reflections: reciprocal lattice vectors ``G`` ``[P, 3]`` (1/A, one of each
    +-G pair) with ``0 < |G| <= max_wavenumber``, and their normalised amplitudes ``|F(G)| / N`` ``[P]``."""
    if len(reference) == 0 or not reference.pbc.all():
        raise GCDError("Bragg reflections need a periodic reference crystal with atoms")
    reciprocal = 2 * np.pi * np.linalg.inv(reference.cell.array).T  # rows b_i with a_i . b_j = 2 pi delta_ij
    reach = [int(np.ceil(max_wavenumber / np.linalg.norm(b))) for b in reciprocal]
    grids = np.meshgrid(*[np.arange(-n, n + 1) for n in reach], indexing="ij")
    hkl = np.stack([g.ravel() for g in grids], axis=1)
    # one of each +-G pair (|F(-G)| = |F(G)|): the first non-zero index positive
    first = np.array([row[np.flatnonzero(row)[0]] if row.any() else 0 for row in hkl])
    hkl = hkl[first > 0]
    vectors = hkl @ reciprocal
    vectors = vectors[np.linalg.norm(vectors, axis=1) <= max_wavenumber]
    amplitudes = np.abs(np.exp(1j * reference.positions @ vectors.T).sum(axis=0)) / len(reference)
    strong = amplitudes >= min_amplitude
    if not strong.any():
        raise GCDError(f"the reference has no reflection with |F|/N >= {min_amplitude} within |G| <= {max_wavenumber}")
    return vectors[strong], amplitudes[strong]


def check_commensurate(reference: Atoms, cell_lengths: Sequence[float]) -> None:
    """Refuse an orthorhombic cell that does not hold a whole number of reference cells along each edge (the
    reference's reflections would not be reciprocal vectors of the cell)."""
    reference_lengths = reference.cell.lengths()
    if not np.allclose(reference.cell.angles(), 90.0, atol=1e-6):
        raise GCDError("Bragg guidance needs an orthorhombic reference cell")
    ratios = np.asarray(cell_lengths, dtype=float) / reference_lengths
    if ratios.shape != (3,) or np.any(np.abs(ratios - np.round(ratios)) > 1e-3) or np.any(np.round(ratios) < 1):
        raise GCDError(
            "Bragg guidance needs a cell of whole reference cells: "
            f"{' x '.join(f'{v:.4g}' for v in cell_lengths)} A over the reference's "
            f"{' x '.join(f'{v:.4g}' for v in reference_lengths)} A is {' x '.join(f'{r:.3g}' for r in ratios)}"
        )


def normalised_amplitudes(positions: torch.Tensor, weights: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """``|sum_j w_j exp(i G . r_j)| / sum_j w_j`` for every G: positions ``[..., V, 3]``, weights ``[..., V]``,
    vectors ``[P, 3]`` -> ``[..., P]``; differentiable in positions and weights."""
    phase = positions @ vectors.T
    real = (weights[..., None] * torch.cos(phase)).sum(-2)
    imaginary = (weights[..., None] * torch.sin(phase)).sum(-2)
    # the small floor keeps the gradient of the modulus finite where a reflection is exactly extinct
    return torch.sqrt(real**2 + imaginary**2 + 1e-12) / weights.sum(-1, keepdim=True).clamp(min=1e-6)


def bragg_order(atoms: Atoms, reference: Atoms, max_wavenumber: float = BRAGG_MAX_WAVENUMBER) -> float:
    """How much of the reference crystal's scattering a structure shows at its strong reflections: the mean of
    ``|S(G)| / N`` over ``|F(G)| / N_ref``, 1 for the reference lattice at any translation (vacancies included),
    lower where grains are out of register; the structure's cell must hold whole reference cells."""
    check_commensurate(reference, atoms.cell.lengths())
    if len(atoms) == 0:
        return 0.0
    vectors, amplitudes = bragg_reflections(reference, max_wavenumber)
    shown = normalised_amplitudes(
        torch.as_tensor(atoms.positions, dtype=torch.float64),
        torch.ones(len(atoms), dtype=torch.float64),
        torch.as_tensor(vectors, dtype=torch.float64),
    ).numpy()
    return float(np.mean(shown / amplitudes))
