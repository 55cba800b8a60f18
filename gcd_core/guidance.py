"""Guidance on the voxel grid: toward a target XANES spectrum, an sp3 fraction, sp / sp2 / sp3 fractions, or a
crystal's Bragg reflections.

The sampler's clean estimate is read as weighted candidate sites (every voxel at its corner plus its offset,
weighted by its occupancy). For a spectrum, the forward model gives their weighted-mean spectrum, and the relative
spectral error ``||A(x0) - y|| / ||y||`` is the loss whose gradient the ``Denoiser`` follows (the norm rather than
its square, as in posterior-sampling guidance, so the push does not fade as the spectrum gets close). For sp3, a
soft count of four-bonded sites is the loss's (``sp3_guidance``), and for the whole bonding the distance of the
soft sp / sp2 / sp3 fractions from a target's (``bonding_guidance``); ``EstimateRefinement`` also moves late clean
estimates down a loss directly; Bragg guidance (``bragg_guidance``, ``bragg_refinement``) is such a refinement
toward the single-crystal structure factors of a phase. The carbon losses are weighted by the box volume
(``box_weight``), so a scale means the same in any box; ``steering`` builds the whole set from a target and its
scales.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms

from gcd_core.errors import GCDError
from gcd_core.physics.analysis import DEFAULT_BOND_CUTOFF
from gcd_core.physics.diffraction import (
    BRAGG_MAX_WAVENUMBER,
    bragg_reflections,
    check_commensurate,
    normalised_amplitudes,
)
from gcd_core.physics.spectra import ENERGY_GRID, estimated_bonding, estimated_sp3, normalise
from gcd_core.physics.xanes import XanesForwardModel, periodic_pairs, switch
from gcd_core.representation.grid import VoxelGrid

# Voxels below this occupancy are left out of the guiding spectrum: early estimates are blurred over many
# voxels, and the forward model's pair and bond-angle search grows with the square of the candidates.
GUIDANCE_MIN_OCCUPANCY = 0.3
# At most this many candidate sites per A^3 enter the guiding spectrum (the most occupied ones): 1.25 x the
# number density of diamond, the densest carbon, so a blurred early estimate cannot blow up the pair search.
MAX_SITES_PER_A3 = 1.25 * 0.176
# Guidance scales are quoted for a box of this edge (A), the one they were measured in
# (benchmarks/carbon_steering.py). The losses are intensive (a fraction, a site-mean spectrum), so each voxel's
# share of the gradient falls as 1 / volume; every loss is weighted by its box's volume over this one's
# (``box_weight``) so that a scale pushes each voxel alike in a box of any size.
REFERENCE_BOX_EDGE = 12.264
# The soft bond counts of the carbon losses fade a bond out over this width (A), centred on the bond cutoff.
BOND_FADE = 0.3
# sp3 guidance fades over twice that (1.55-2.15 A about 1.85): in dense samples under the 0.3 A fade, the missing
# fourth neighbour of a three-bonded carbon sat at 2.02-2.26 A (median 2.13), beyond 2.0, and felt no pull
# (benchmarks/results/carbon_sp3_fade_cpu.md)
SP3_BOND_FADE = 0.6


def box_weight(cell_lengths: Sequence[float]) -> float:
    """A guidance loss's weight in a box of ``cell_lengths``: its volume over the reference box's."""
    return float(np.prod([float(c) for c in cell_lengths])) / REFERENCE_BOX_EDGE**3


def grid_sites(
    grid: VoxelGrid, x0_model_space: torch.Tensor, cell_lengths: Sequence[float], species: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable candidate sites of a sharp-encoded batch ``[B, C, X, Y, Z]``: positions ``[B, V, 3]``
    (A, voxel corner plus offset) and occupancies ``[B, V]`` for species ``species``."""
    if grid.encoding != "sharp":
        raise GCDError("spectrum guidance needs the sharp (occupancy + offset) encoding")
    data = grid.to_data_space(x0_model_space)
    shape = data.shape[2:]
    occupancy = data[:, species].clamp(0, 1).reshape(data.shape[0], -1)
    offsets = data[:, grid.offset_channels(species)].clamp(0, 1)  # [B, 3, X, Y, Z]
    axes = [torch.arange(n, device=data.device, dtype=data.dtype) for n in shape]
    corner = torch.stack(torch.meshgrid(*axes, indexing="ij"))  # [3, X, Y, Z]
    edges = torch.tensor([float(c) / n for c, n in zip(cell_lengths, shape, strict=True)], device=data.device)
    positions = ((corner + offsets) * edges.view(1, 3, 1, 1, 1).to(data.dtype)).reshape(data.shape[0], 3, -1)
    return positions.transpose(1, 2), occupancy


def spectrum_guidance(
    grid: VoxelGrid,
    forward_model: XanesForwardModel,
    target: np.ndarray | Sequence[float],
    cell_lengths: Sequence[float],
    min_occupancy: float = GUIDANCE_MIN_OCCUPANCY,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x0_hat (model space) -> loss [B]``: the relative error of the grid's spectrum against ``target``
    (100 values on :data:`ENERGY_GRID`, any area), times :func:`box_weight`, for ``Denoiser(gradient_guidance=...)``."""
    target_values = np.asarray(target, dtype=float).reshape(-1)
    if target_values.size != len(ENERGY_GRID):
        raise GCDError(
            f"the target spectrum needs {len(ENERGY_GRID)} values on the model grid, got {target_values.size}"
        )
    goal = torch.as_tensor(normalise(target_values), dtype=torch.float32)
    max_sites = _max_sites(cell_lengths)
    weight = box_weight(cell_lengths)

    def loss(x0: torch.Tensor) -> torch.Tensor:
        model_device = next(forward_model.parameters()).device
        positions, occupancy = grid_sites(grid, x0.float(), cell_lengths)
        wanted = goal.to(model_device)
        losses = []
        for b in range(x0.shape[0]):
            sites, weights = _fullest(positions[b], occupancy[b], max_sites)
            sites, weights = sites.to(model_device), weights.to(model_device)
            if not bool((weights > min_occupancy).any()):
                losses.append(x0[b].sum() * 0.0)  # nothing placed yet: no push
                continue
            spectrum = forward_model.weighted_spectrum(sites, weights, cell_lengths, min_occupancy)
            losses.append((weight * (spectrum - wanted).norm() / wanted.norm()).to(x0.device))
        return torch.stack(losses)

    return loss


def _soft_coordination(
    grid: VoxelGrid,
    x0: torch.Tensor,
    cell_lengths: Sequence[float],
    bond_cutoff: float,
    min_occupancy: float,
    fade: float = BOND_FADE,
) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
    """Per sample of a batch: (soft coordination, occupancy) of its candidate sites above ``min_occupancy``, or
    None when it has none. A site's coordination is the occupancy-weighted count of sites within ``bond_cutoff``,
    faded over ``fade`` (A) centred on it, so positions have gradients."""
    positions, occupancy = grid_sites(grid, x0.float(), cell_lengths)
    lengths = torch.as_tensor(cell_lengths, dtype=torch.float32)
    outer = bond_cutoff + fade / 2
    found: list[tuple[torch.Tensor, torch.Tensor] | None] = []
    for b in range(x0.shape[0]):
        sites, weights = _fullest(positions[b], occupancy[b], _max_sites(cell_lengths))
        candidates = weights > min_occupancy
        if not bool(candidates.any()):
            found.append(None)
            continue
        i, j, vectors = periodic_pairs(sites, lengths.to(sites.device), outer, candidates)
        bonds = weights[j] * switch(vectors.norm(dim=-1), outer, fade)
        coordination = torch.zeros(len(sites), device=sites.device, dtype=sites.dtype).index_add(0, i, bonds)
        found.append((coordination[candidates], weights[candidates]))
    return found


def sp3_guidance(
    grid: VoxelGrid,
    target_sp3: float,
    cell_lengths: Sequence[float],
    bond_cutoff: float = DEFAULT_BOND_CUTOFF,
    min_occupancy: float = GUIDANCE_MIN_OCCUPANCY,
    fade: float = SP3_BOND_FADE,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x0_hat (model space) -> loss [B]``: how far the grid's soft sp3 fraction lies below ``target_sp3``, times
    :func:`box_weight`.

    It raises sp3, never lowers it: pushed down, the bond count fell to chains and loose atoms rather than to sp2
    (at the 1.5 g/cm3 target, ``benchmarks/results/carbon_sp3_guidance_cpu.md``); sparse targets get their low
    sp3 from the spectrum conditioning.

    Coordination as in :func:`_soft_coordination`, bonds faded over ``fade`` (A) about ``bond_cutoff``; a site's
    sp3 share is a smooth bump around four bonds, scaled so that exactly four full bonds count 1; the fraction is
    the occupancy-weighted mean over candidate sites.
    """
    if not 0 <= target_sp3 <= 1:
        raise GCDError(f"target_sp3 must lie in [0, 1], got {target_sp3}")
    if fade <= 0:
        raise GCDError(f"fade must be positive (A), got {fade}")
    full_sp3 = float(_four_bonds(torch.tensor(4.0)))
    weight = box_weight(cell_lengths)

    def loss(x0: torch.Tensor) -> torch.Tensor:
        losses = []
        for found in _soft_coordination(grid, x0, cell_lengths, bond_cutoff, min_occupancy, fade):
            if found is None:
                losses.append(x0.sum() * 0.0)  # nothing placed yet: no push
                continue
            coordination, w = found
            fraction = (w * _four_bonds(coordination)).sum() / (w.sum() * full_sp3)
            losses.append(weight * torch.relu(target_sp3 - fraction))
        return torch.stack(losses)

    return loss


def bonding_guidance(
    grid: VoxelGrid,
    target_fractions: Sequence[float],
    cell_lengths: Sequence[float],
    bond_cutoff: float = DEFAULT_BOND_CUTOFF,
    min_occupancy: float = GUIDANCE_MIN_OCCUPANCY,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x0_hat (model space) -> loss [B]``: the L1 distance of the grid's soft fractions of sites with at most
    two, three, four and more bonds from ``target_fractions`` (sp, sp2, sp3) and none over-bonded, times
    :func:`box_weight`.

    The carbon model makes too many two-bonded carbons, most with a third atom just outside bonding range
    (``benchmarks/results/carbon_bonding_cpu.md``); this pulls them in. Unlike sp3 guidance it pushes both ways,
    on the whole histogram (sigmoids at 2.5, 3.5 and 4.5 bonds), so bonds pulled in cannot pile up past four, and
    a push down in sp3 has sp2 to go to rather than loose atoms. Coordination as in :func:`_soft_coordination`.
    """
    goal = [float(f) for f in target_fractions]
    if len(goal) != 3 or any(not 0 <= f <= 1 for f in goal) or abs(sum(goal) - 1) > 0.02:
        raise GCDError(
            f"target_fractions must be (sp, sp2, sp3), each in [0, 1], adding up to 1; got {target_fractions}"
        )
    weight = box_weight(cell_lengths)

    def loss(x0: torch.Tensor) -> torch.Tensor:
        losses = []
        for found in _soft_coordination(grid, x0, cell_lengths, bond_cutoff, min_occupancy):
            if found is None:
                losses.append(x0.sum() * 0.0)
                continue
            coordination, w = found
            two, three, four = (torch.sigmoid((coordination - n) / 0.15) for n in (2.5, 3.5, 4.5))  # above n
            shares = (1 - two, two * (1 - three), two * three * (1 - four), two * three * four)  # they sum to 1
            fractions = [(w * share).sum() / w.sum() for share in shares]
            losses.append(weight * sum((f - g).abs() for f, g in zip(fractions, (*goal, 0.0), strict=True)))
        return torch.stack(losses)

    return loss


def _bragg_loss(
    reference: Atoms, cell_lengths: Sequence[float], max_wavenumber: float
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``(positions [B, V, 3], weights [B, V]) -> [B]``: the mean squared difference of the normalised structure
    factors at the reference's strong reflections from the reference's own."""
    check_commensurate(reference, cell_lengths)
    reflections = bragg_reflections(reference, max_wavenumber)
    vectors, amplitudes = (torch.as_tensor(v, dtype=torch.float32) for v in reflections)

    def loss(positions: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        shown = normalised_amplitudes(positions, weights, vectors.to(positions))
        return ((shown - amplitudes.to(positions)) ** 2).mean(-1)

    return loss


def bragg_guidance(
    grid: VoxelGrid,
    reference: Atoms,
    cell_lengths: Sequence[float],
    max_wavenumber: float = BRAGG_MAX_WAVENUMBER,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x0_hat (model space) -> loss [B]``: how far the grid's normalised structure factors at the reference
    crystal's strong reflections are from the reference's (mean squared difference; ``physics.diffraction``).
    Zero for one grain of the reference lattice at any translation and with any vacancies, so it leaves the
    atom count and the lattice's place to the model and only pulls grains out of register into one. The cell
    must hold whole reference cells, in the reference's orientation."""
    species = _only_species(grid)
    core = _bragg_loss(reference, cell_lengths, max_wavenumber)
    return lambda x0: core(*grid_sites(grid, x0.float(), cell_lengths, species=species))


def bragg_position_loss(
    reference: Atoms, cell_lengths: Sequence[float], max_wavenumber: float = BRAGG_MAX_WAVENUMBER
) -> Callable[[torch.Tensor], torch.Tensor]:
    """:func:`bragg_guidance` on atom positions ``[B, N, 3]`` (A) instead of a voxel grid, every atom weighted
    1: the same loss for the point-cloud baseline's sampler."""
    core = _bragg_loss(reference, cell_lengths, max_wavenumber)
    return lambda positions: core(positions, torch.ones_like(positions[..., 0]))


def _only_species(grid: VoxelGrid) -> int:
    if len(grid.species) != 1:
        raise GCDError(f"Bragg guidance takes one-element grids, this one holds {', '.join(grid.species)}")
    return 0


def _max_sites(cell_lengths: Sequence[float]) -> int:
    return max(1, int(MAX_SITES_PER_A3 * float(np.prod(cell_lengths))))


def _fullest(positions: torch.Tensor, occupancy: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``count`` most occupied candidate sites of one grid: positions and occupancies."""
    top = torch.topk(occupancy, min(count, occupancy.shape[0])).indices
    return positions[top], occupancy[top]


def _four_bonds(coordination: torch.Tensor) -> torch.Tensor:
    """A smooth bump: about 1 for a coordination of four, about 0 for three or five."""
    return torch.sigmoid((coordination - 3.5) / 0.15) * torch.sigmoid((4.5 - coordination) / 0.15)


def combined(
    *terms: tuple[Callable[[torch.Tensor], torch.Tensor] | None, float],
) -> tuple[Callable[[torch.Tensor], torch.Tensor] | None, float]:
    """Several guidance losses as one ``(loss, gradient_scale)`` for the ``Denoiser``: the sum of each loss times
    its scale, at scale 1 (terms that are None or at scale 0 left out; a single term keeps its own scale)."""
    active = [(loss, float(scale)) for loss, scale in terms if loss is not None and scale > 0]
    if len(active) < 2:
        return active[0] if active else (None, 0.0)
    return (lambda x0: sum(scale * loss(x0) for loss, scale in active)), 1.0


# The sp3 recipe measured on the 3.5 g/cm3 target (benchmarks/results/carbon_sp3_guidance_cpu.md): each clean
# estimate at noise times up to 0.5 takes 20 Adam steps of the sp3 loss, beside gradient guidance at scale 200
SP3_REFINE_STEPS = 20
SP3_REFINE_BELOW = 0.5
# Bragg guidance is measured as a refinement of every clean estimate above noise time 0.1 (10 Adam steps; gradient
# guidance through the network at scale 10 did nothing). The last steps are the network's own: Adam's steps keep
# their size however small the gradient, and to the end they left FCC at 3x in a smooth pattern of shifts under
# 0.05 A that spglib reads as P-1 (benchmarks/results/crystal_bragg_guidance_cpu.md)
BRAGG_REFINE_STEPS = 10
BRAGG_REFINE_ABOVE = 0.1
# Bonding guidance is measured at scale 100 without refinement: refining toward the bonding loss left 2.2 % singly
# bonded carbons at the 1.5 g/cm3 target, and did not help at 3.5 (benchmarks/results/carbon_bonding_guidance_cpu.md)
BONDING_SCALE = 100.0


@dataclass
class EstimateRefinement:
    """A projection ``(x0, t) -> x0`` for :func:`gcd_core.generate.generate_frames`: at noise times above ``above``
    and up to ``below`` each clean estimate takes ``iterations`` Adam steps (``lr``, in the estimate's units) down
    ``loss`` itself, without the network in the loop. Gradient guidance through the network pushes the noisy grid;
    this moves the estimate the sampler steps toward, so late, local geometry (bond lengths, a fourth neighbour)
    follows the loss directly."""

    loss: Callable[[torch.Tensor], torch.Tensor]
    iterations: int = 10
    lr: float = 0.02
    below: float = 0.3
    bounds: tuple[float, float] | None = (-1.0, 1.0)  # the model space's; None for positions
    above: float = 0.0

    def __post_init__(self) -> None:
        if self.iterations < 0 or self.lr <= 0 or not 0 <= self.above < self.below <= 1:
            raise GCDError(f"refinement needs iterations >= 0, lr > 0 and 0 <= above < below <= 1, got {self}")

    def __call__(self, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.iterations == 0 or not self.above < float(t.max()) <= self.below:
            return x0
        x = x0.detach().clone().requires_grad_(True)
        optimiser = torch.optim.Adam([x], lr=self.lr)
        with torch.enable_grad():
            for _ in range(self.iterations):
                optimiser.zero_grad()
                self.loss(x).sum().backward()
                optimiser.step()
        return x.detach() if self.bounds is None else x.detach().clamp(*self.bounds)


def bragg_refinement(
    grid: VoxelGrid, reference: Atoms, cell_lengths: Sequence[float], iterations: int = BRAGG_REFINE_STEPS
) -> EstimateRefinement:
    """The measured Bragg recipe as a projection for :func:`gcd_core.generate.generate_frames`: every clean
    estimate above noise time 0.1 takes ``iterations`` Adam steps of :func:`bragg_guidance` toward ``reference``'s
    reflections."""
    loss = bragg_guidance(grid, reference, cell_lengths)
    return EstimateRefinement(loss, iterations=iterations, below=1.0, above=BRAGG_REFINE_ABOVE)


# Adam's step (A) for the baseline's positions: of 0.003, 0.01, 0.03, 0.1 and 0.3 A, 0.1 left the baseline's FCC
# cells the most ordered (benchmarks/results/crystal_bragg_guidance_cpu.md)
BRAGG_POSITION_LR = 0.1


def bragg_refinement_of_positions(
    reference: Atoms, cell_lengths: Sequence[float], iterations: int = BRAGG_REFINE_STEPS
) -> EstimateRefinement:
    """The Bragg recipe for clean estimates of atom positions ``[B, N, 3]`` (the point-cloud baseline's):
    ``iterations`` Adam steps of :func:`bragg_position_loss` above noise time 0.1."""
    loss = bragg_position_loss(reference, cell_lengths)
    return EstimateRefinement(
        loss, iterations=iterations, lr=BRAGG_POSITION_LR, below=1.0, bounds=None, above=BRAGG_REFINE_ABOVE
    )


def relative_error(spectrum: np.ndarray, target: np.ndarray) -> float:
    """``||s - y|| / ||y||`` of two spectra, each first normalised to unit area."""
    goal = normalise(np.asarray(target, dtype=float))
    return float(np.linalg.norm(normalise(np.asarray(spectrum, dtype=float)) - goal) / np.linalg.norm(goal))


def spectral_error(forward_model: XanesForwardModel, structures: Sequence, target: np.ndarray) -> list[float]:
    """Relative L2 error of each structure's forward-model spectrum against ``target`` (nan for empty cells)."""
    return [relative_error(forward_model.spectrum(a), target) if len(a) else float("nan") for a in structures]


@dataclass(frozen=True)
class Steering:
    """XANES steering as ``generate`` takes it: ``gradient_guidance`` with its ``gradient_scale``, and a
    ``projection`` (an :class:`EstimateRefinement`, or None). ``target_sp3`` is the sp3 fraction guided to and
    ``target_bonding`` the (sp, sp2, sp3) fractions, where those guidances are on."""

    gradient_guidance: Callable[[torch.Tensor], torch.Tensor] | None = None
    gradient_scale: float = 0.0
    projection: EstimateRefinement | None = None
    target_sp3: float | None = None
    target_bonding: tuple[float, float, float] | None = None


def steering(
    grid: VoxelGrid,
    cell_lengths: Sequence[float],
    target: np.ndarray | Sequence[float] | None = None,
    forward_model: XanesForwardModel | None = None,
    spectrum_scale: float = 0.0,
    sp3_scale: float = 0.0,
    sp3_refine: int = 0,
    target_sp3: float | None = None,
    refine_below: float = SP3_REFINE_BELOW,
    bonding_scale: float = 0.0,
    target_bonding: Sequence[float] | None = None,
    bonding_refine: int = 0,
) -> Steering:
    """Gradient guidance toward ``target`` (a spectrum on :data:`ENERGY_GRID`) through ``forward_model`` at
    ``spectrum_scale``, toward an sp3 fraction at ``sp3_scale`` (``target_sp3``, else the one the target's pi*
    peak indicates) with ``sp3_refine`` Adam steps on each clean estimate below ``refine_below``, and toward
    (sp, sp2, sp3) fractions at ``bonding_scale`` (``target_bonding``, else those the target's spectrum indicates,
    :func:`~gcd_core.physics.spectra.estimated_bonding`) with ``bonding_refine`` Adam steps likewise (with both
    refinements on, each step follows the sum of the two losses); 0 turns a part off. The CLI, the dashboard and
    the benchmarks all build their steering here."""
    if min(spectrum_scale, sp3_scale, sp3_refine, bonding_scale, bonding_refine) < 0:
        raise GCDError("guidance scales and refinement steps cannot be negative")
    spectrum_loss = sp3_loss = bonding_loss = refinement = None
    if spectrum_scale > 0:
        if target is None or forward_model is None:
            raise GCDError("spectrum guidance needs a target spectrum and the XANES forward model")
        spectrum_loss = spectrum_guidance(grid, forward_model, target, cell_lengths)
    if sp3_scale > 0 or sp3_refine > 0:
        if target_sp3 is None:
            if target is None:
                raise GCDError("sp3 guidance needs a target sp3 fraction, or a target spectrum to read it from")
            target_sp3 = estimated_sp3(np.asarray(target, dtype=float))
        sp3_loss = sp3_guidance(grid, target_sp3, cell_lengths)
    if bonding_scale > 0 or bonding_refine > 0:
        if target_bonding is None:
            if target is None:
                raise GCDError("bonding guidance needs target (sp, sp2, sp3) fractions, or a target spectrum")
            target_bonding = estimated_bonding(np.asarray(target, dtype=float))
        target_bonding = tuple(float(f) for f in target_bonding)
        bonding_loss = bonding_guidance(grid, target_bonding, cell_lengths)
    refined, _ = combined((sp3_loss, float(sp3_refine > 0)), (bonding_loss, float(bonding_refine > 0)))
    if refined is not None:
        refinement = EstimateRefinement(refined, max(sp3_refine, bonding_refine), below=refine_below)
    loss, scale = combined((spectrum_loss, spectrum_scale), (sp3_loss, sp3_scale), (bonding_loss, bonding_scale))
    return Steering(
        loss, scale, refinement, target_sp3 if sp3_loss is not None else None,
        target_bonding if bonding_loss is not None else None,
    )
