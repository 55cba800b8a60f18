"""Generation from a trained model: a cell in, frames while it anneals, ``ase.Atoms`` out."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms

from gcd_core.device import make_generator
from gcd_core.diffusion.samplers import SAMPLERS, Frame, Inpaint, ddpm, run_to_end
from gcd_core.errors import GCDError
from gcd_core.model import GCDModel
from gcd_core.physics.analysis import DEFAULT_BOND_CUTOFF, coordination_numbers
from gcd_core.representation.grid import GridLayout, GridStretchWarning, VoxelGrid, merge_close_atoms

# Resample only here: in large crystal cells, grains that placed their atoms at different points inside their
# voxels settle on one late in sampling (benchmarks/results/crystal_resample_window_cpu.md); amorphous carbon
# comes closer to its target spectrum (benchmarks/results/carbon_late_resample_cpu.md)
LATE_RESAMPLE_WINDOW = (0.0, 0.25)
# Prune under-bonded sites only here: late enough that the bond network has formed, and ending before the last step
# of a 40-step run, so that the output is the network's (benchmarks/results/carbon_pruning_cpu.md)
PRUNE_WINDOW = (0.05, 0.15)


@dataclass
class GenerationRequest:
    """Everything that decides a batch of samples; the same request and seed give the same structures."""

    cell_lengths: tuple[float, float, float]
    num_samples: int = 1
    # ancestral sampling: its noise lets domain walls heal, which deterministic DDIM cannot (benchmarks/results)
    steps: int = 200
    sampler: str = "ddpm"
    resample: int = 1  # >1 repeats each step with re-noising (a corrector; also harmonises in-painting)
    resample_window: tuple[float, float] = (0.0, 1.0)  # only steps starting at noise times lo <= t <= hi repeat
    seed: int | None = 0
    label: str | int | None = None
    vector: Sequence[float] | None = None
    scalars: dict[str, float] | None = None
    guidance_scale: float = 1.0
    merge_distance: float | None = None  # A; merges doubled atoms, keeping the more occupied one
    # A; while sampling (noise times up to exclusion_below), of two sites closer than this in a clean estimate the
    # fuller one stays and the other voxel is emptied, so the network goes on from one atom where it had split one
    exclusion_distance: float | None = None
    exclusion_below: float = 0.3
    # while sampling (noise times in prune_window), sites with fewer than min_bonds neighbours within bond_cutoff (A)
    # are emptied from the clean estimate and the network goes on without them: dangling chain ends in carbon. 0 turns
    # it off. The default window leaves the last step of a run of more than 20 steps to the network (with 40 it starts
    # at t = 0.025), so that output is not filtered; with 20 or fewer steps the last estimate is pruned too.
    min_bonds: int = 0
    bond_cutoff: float = DEFAULT_BOND_CUTOFF
    prune_window: tuple[float, float] = PRUNE_WINDOW
    # lay the cell on the nearest grid the network takes (slightly stretched voxels) instead of refusing a cell
    # that is not a whole multiple of its stride: for amorphous cells, whose edge follows the density
    fit_to_stride: bool = False

    def validate(self) -> None:
        if self.num_samples < 1:
            raise GCDError(f"num_samples must be at least 1, got {self.num_samples}")
        if self.steps < 1:
            raise GCDError(f"steps must be at least 1, got {self.steps}")
        if self.resample < 1:
            raise GCDError(f"resample must be at least 1, got {self.resample}")
        low, high = self.resample_window
        if not 0 <= low <= high <= 1:
            raise GCDError(f"resample_window must be (lo, hi) with 0 <= lo <= hi <= 1, got {self.resample_window}")
        if self.sampler not in SAMPLERS:
            raise GCDError(f"unknown sampler {self.sampler!r}; choose one of {sorted(SAMPLERS)}")
        if self.guidance_scale < 0:
            raise GCDError(f"guidance_scale must be >= 0, got {self.guidance_scale}")
        if self.exclusion_distance is not None and self.exclusion_distance <= 0:
            raise GCDError(f"exclusion_distance must be positive (A), got {self.exclusion_distance}")
        if not 0 < self.exclusion_below <= 1:
            raise GCDError(f"exclusion_below must lie in (0, 1], got {self.exclusion_below}")
        if self.min_bonds < 0:
            raise GCDError(f"min_bonds cannot be negative, got {self.min_bonds}")
        if self.bond_cutoff <= 0:
            raise GCDError(f"bond_cutoff must be positive (A), got {self.bond_cutoff}")
        low, high = self.prune_window
        if not 0 <= low <= high <= 1:
            raise GCDError(f"prune_window must be (lo, hi) with 0 <= lo <= hi <= 1, got {self.prune_window}")


def grid_layout_for(
    model: GCDModel, cell_lengths: Sequence[float], label: str | int | None = None, fit_to_stride: bool = False
) -> GridLayout:
    """The grid for a cell (of class ``label``), checked against the network's stride (grids must halve
    cleanly at each level), or with ``fit_to_stride`` rounded to the nearest such grid."""
    grid = model.grid_for(label)
    stride = model.net.stride
    if fit_to_stride:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GridStretchWarning)
            return grid.layout(cell_lengths, multiple_of=stride)
    layout = grid.layout(cell_lengths)
    bad = [n for n in layout.shape if n % stride]
    if bad:
        nearest = [
            max(stride, round(n / stride) * stride) * h for n, h in zip(layout.shape, grid.nominal_edges, strict=True)
        ]
        raise GCDError(
            f"cell {list(cell_lengths)} A gives a {layout.shape} grid, but this model needs voxel counts that are "
            f"multiples of {stride}; the nearest such cell is {[round(v, 3) for v in nearest]} A"
        )
    return layout


class LateProjection:
    """A constraint ``(x0, t) -> x0`` on clean estimates (model space) that acts at noise times up to ``below``,
    and on the final estimate whatever its time: with few steps the last estimate may come before ``below``
    (:func:`generate_frames` imposes it there). Subclasses give ``below`` and ``impose``."""

    below: float

    def __call__(self, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x0 if float(t.max()) > self.below else self.impose(x0)

    def impose(self, x0: torch.Tensor) -> torch.Tensor:
        """``x0`` with the constraint met, at any time (idempotent)."""
        raise NotImplementedError


def _sites(grid: VoxelGrid, data: torch.Tensor, cell_lengths: Sequence[float], floor: float) -> tuple[
    torch.Tensor, np.ndarray, Atoms
]:
    """The sites of one data-space grid ``[C, X, Y, Z]`` above occupancy ``floor``, every species, read as the decoder
    reads them: voxel indices ``[N, 3]``, species indices ``[N]``, and the sites as ``Atoms`` (positions; occupancies
    in ``arrays["occupancy"]``, each site's row in ``arrays["site"]``)."""
    if grid.encoding != "sharp":
        raise GCDError("site projections need the sharp occupancy encoding")
    found = [grid.sharp_sites(data, s, floor) for s in range(grid.n_species)]
    index = torch.cat([f[0] for f in found])
    species = np.concatenate([np.full(len(f[0]), s) for s, f in enumerate(found)])
    frac = np.concatenate([f[1] for f in found])
    sites = Atoms(numbers=np.ones(len(index), dtype=int), scaled_positions=frac % 1.0, cell=np.diag(cell_lengths),
                  pbc=True)
    sites.set_array("occupancy", np.concatenate([f[2] for f in found]))
    sites.set_array("site", np.arange(len(index)))
    return index, species, sites


def _empty_sites(grid: VoxelGrid, data: torch.Tensor, index: torch.Tensor, species: np.ndarray,
                 chosen: np.ndarray) -> None:
    """Empty the ``chosen`` sites' voxels of one data-space grid ``[C, X, Y, Z]`` in place."""
    for s in range(grid.n_species):
        i, j, k = index[torch.from_numpy(chosen & (species == s)).to(index.device)].unbind(1)
        data[s, i, j, k] = 0.0
        data[grid.offset_channels(s), i, j, k] = 0.5  # as encode leaves empty voxels


@dataclass
class SiteExclusion(LateProjection):
    """Keeps atoms apart in clean estimates ``(x0, t) -> x0`` (model space) at noise times up to ``below``.

    The sites are read as the decoder reads them (voxel corner plus offset) down to occupancy ``floor``; of two
    closer than ``distance`` (A) the fuller stays and the other's voxel is emptied. A site whose occupancy the
    network split over two neighbouring voxels, each half above the decoder's threshold, would decode as two
    atoms; emptied in the estimate, the next steps start from one and the network places it.
    """

    grid: VoxelGrid
    cell_lengths: tuple[float, float, float]
    distance: float
    below: float
    floor: float = 0.2

    def impose(self, x0: torch.Tensor) -> torch.Tensor:
        """``x0`` with every too-close pair reduced to its fuller site, at any time."""
        data = self.grid.to_data_space(x0)
        for b in range(data.shape[0]):
            index, species, sites = _sites(self.grid, data[b], self.cell_lengths, self.floor)
            removed = np.ones(len(index), dtype=bool)
            removed[merge_close_atoms(sites, self.distance).arrays["site"]] = False
            _empty_sites(self.grid, data[b], index, species, removed)
        return self.grid.to_model_space(data)


@dataclass
class UnderbondedPruning:
    """Empties under-bonded sites from clean estimates ``(x0, t) -> x0`` (model space) at noise times in ``window``.

    The sites are the decoder's (occupancy above the grid's threshold); one with fewer than ``min_bonds`` others
    within ``cutoff`` (A) loses its voxel, and the network goes on from the estimate without it, free to place an atom
    elsewhere. A grand canonical model can drop an atom; a fixed-count one could only move it. In amorphous carbon
    such sites are dangling chain ends, which the training cells do not hold. Unlike a :class:`LateProjection` it is
    not imposed on the final estimate: the estimates of steps after the window are the network's.
    """

    grid: VoxelGrid
    cell_lengths: tuple[float, float, float]
    min_bonds: int
    cutoff: float
    window: tuple[float, float]
    pruned: int = 0  # sites emptied so far, over all calls

    def __call__(self, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        low, high = self.window
        if not low <= float(t.max()) <= high:
            return x0
        data = self.grid.to_data_space(x0)
        for b in range(data.shape[0]):
            index, species, sites = _sites(self.grid, data[b], self.cell_lengths, self.grid.threshold)
            under = coordination_numbers(sites, self.cutoff) < self.min_bonds
            self.pruned += int(under.sum())
            _empty_sites(self.grid, data[b], index, species, under)
        return self.grid.to_model_space(data)


def generate_frames(
    model: GCDModel,
    request: GenerationRequest,
    inpaint: Inpaint | None = None,
    gradient_guidance: Callable[[torch.Tensor], torch.Tensor] | None = None,
    gradient_scale: float = 0.0,
    projection: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    start: torch.Tensor | None = None,
    start_time: float = 1.0,
) -> Iterator[Frame]:
    """Run the sampler, yielding a frame (model-space grids) after every step. ``gradient_guidance``
    (``x0_hat -> loss[B]``, e.g. :func:`gcd_core.guidance.spectrum_guidance`) pushes every step's clean
    estimate downhill, scaled by ``gradient_scale``; ``projection`` maps every clean estimate onto a
    constraint (:class:`gcd_core.diffusion.samplers.Denoiser`; a :class:`LateProjection` is also imposed on the final
    estimate). ``start`` (a clean model-space batch) is noised
    to ``start_time`` and denoised from there in ``request.steps`` steps (partial diffusion, SDEdit) instead of
    sampling from pure noise."""
    request.validate()
    layout = grid_layout_for(model, request.cell_lengths, request.label, request.fit_to_stride)
    device = model.device
    generator = make_generator(request.seed, device)
    shape = (request.num_samples, model.grid.n_channels, *layout.shape)
    x = torch.randn(shape, generator=generator, device=device)
    if start is not None:
        if tuple(start.shape) != shape:
            raise GCDError(f"start grid {tuple(start.shape)} does not match the request's {shape}")
        x = noised_to(model, start.to(device), start_time, x)
    elif start_time != 1.0:
        raise GCDError("start_time < 1 needs a start grid to noise")
    vector = None if request.vector is None else torch.as_tensor(request.vector, dtype=torch.float32)
    conditioning = model.conditioning_tensors(request.num_samples, request.label, vector, request.scalars)
    late = [projection] if isinstance(projection, LateProjection) else []
    if request.exclusion_distance is not None:
        exclusion = SiteExclusion(model.grid_for(request.label), tuple(request.cell_lengths),
                                  request.exclusion_distance, request.exclusion_below)
        late.append(exclusion)
        projection = exclusion if projection is None else _chained(projection, exclusion)
    if request.min_bonds > 0:
        pruning = UnderbondedPruning(model.grid_for(request.label), tuple(request.cell_lengths), request.min_bonds,
                                     request.bond_cutoff, tuple(request.prune_window))
        projection = pruning if projection is None else _chained(projection, pruning)
    denoiser = model.denoiser(
        conditioning,
        guidance_scale=request.guidance_scale,
        gradient_guidance=gradient_guidance,
        gradient_scale=gradient_scale,
        projection=projection,
    )
    sampler = SAMPLERS[request.sampler]
    model.net.eval()
    for frame in sampler(
        denoiser, x, model.schedule, steps=request.steps, generator=generator, inpaint=inpaint,
        resample=request.resample, resample_window=request.resample_window, start_time=start_time,
    ):
        if frame.done:
            for constraint in late:
                frame.x0 = constraint.impose(frame.x0)
        yield frame


def _chained(
    first: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    second: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return lambda x0, t: second(first(x0, t), t)


def decode_frame(model: GCDModel, frame: Frame, request: GenerationRequest) -> list[Atoms]:
    """Structures of a frame's clean prediction."""
    grid = model.grid_for(request.label)
    data = grid.to_data_space(frame.x0.float())
    return grid.decode(data, request.cell_lengths, merge_distance=request.merge_distance)


def generate(
    model: GCDModel,
    request: GenerationRequest,
    inpaint: Inpaint | None = None,
    progress: bool = False,
    gradient_guidance: Callable[[torch.Tensor], torch.Tensor] | None = None,
    gradient_scale: float = 0.0,
    projection: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> list[Atoms]:
    """Generate ``request.num_samples`` structures (guidance and projection as in :func:`generate_frames`)."""
    frames = generate_frames(model, request, inpaint, gradient_guidance, gradient_scale, projection)
    if progress:
        from tqdm.auto import tqdm

        frames = tqdm(frames, total=request.steps, desc="sampling", unit="step")
    last = None
    for last in frames:  # noqa: B007 (only the final frame is wanted)
        pass
    assert last is not None
    return decode_frame(model, last, request)


def noised_to(model: GCDModel, clean: torch.Tensor, start_time: float, noise: torch.Tensor) -> torch.Tensor:
    """``clean`` (model space) noised to time ``start_time`` with ``noise``: where partial diffusion starts."""
    t = torch.full((clean.shape[0],), start_time, dtype=torch.float64, device=clean.device)
    return model.schedule.add_noise(clean, t, noise).to(clean.dtype)


def partial_steps(steps_per_unit: int, start_time: float) -> int:
    """Steps from ``start_time`` when ``steps_per_unit`` would cover t = 1 to 0 (at least 2)."""
    return max(2, round(steps_per_unit * start_time))


def restore(
    model: GCDModel,
    clean: torch.Tensor,
    start_time: float,
    conditioning: dict[str, torch.Tensor] | None = None,
    steps_per_unit: int = 50,
    seed: int = 0,
    guidance_scale: float = 1.0,
) -> torch.Tensor:
    """Noise a clean model-space batch to ``start_time`` and denoise it back with ancestral steps (SDEdit); returns
    the clean model-space estimate. ``steps_per_unit`` steps would cover t = 1 to 0; fewer (at least 2) are taken
    from a smaller ``start_time``. How far a model restores real structures says where along the trajectory it
    loses them (``benchmarks/carbon_restoration.py``, ``benchmarks/crystal_split_repair.py``)."""
    generator = make_generator(seed, clean.device)
    x = noised_to(model, clean, start_time, torch.randn(clean.shape, generator=generator, device=clean.device))
    denoiser = model.denoiser(conditioning, guidance_scale=guidance_scale)
    steps = partial_steps(steps_per_unit, start_time)
    return run_to_end(ddpm(denoiser, x, model.schedule, steps=steps, generator=generator, start_time=start_time))
