"""Grain-boundary generation by in-painting: the two grains are known voxels, the GB slab between them is
generated, so the number of atoms in the boundary (its density [n]) comes out of sampling.

A GB model is a voxel model trained on windows around relaxed GBs (``gcd_core.data.gb_windows``), conditioned on
the GB system (one class per system, each on its own voxels). Generation builds the bicrystal ``template`` (the
grains at a relative translation: by default the one the model's lowest-energy training GB relaxed to), encodes
its window, in-paints the GB slab and pastes the result back into the bicrystal, ready to relax
(``gcd_core.data.gb_search.relax_gb``).

A target [n] is imposed (``SlabCount``): late in sampling every clean estimate keeps, of the slab's sites as
the decoder reads them, a number of atoms of the wanted [n]; how many whole planes the slab holds stays the
model's choice. Conditioning the network on [n] alone did not steer it (README, Grain boundaries).

A relaxed GB can also be varied (``refine_relaxed_gbs``): its own grains are the known voxels and its GB slab,
noised part way (``REFINE_START_TIME``), is in-painted back, so the model proposes a nearby boundary rather than
one from scratch. ``evolve_gbs`` iterates that on the lowest-energy GBs so far: a search driven by the model alone.
``survey_gbs`` does it over every [n] at once: each [n] bin gets its own samples and variations, and variations of
the lowest GB outside a bin made at the bin's [n] (the model inserts or removes the atoms) carry a good boundary
across [n], as the GB search's insertions and removals do.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from ase import Atoms
from ase.data import atomic_numbers

from gcd_core.data.bicrystal import OVERLAP_FRACTION, atoms_per_plane, bicrystal, gb_density, gb_system
from gcd_core.data.gb_windows import (
    gb_window,
    generated_slab,
    in_generated_slab,
    paste_window,
    window_bottom,
    window_spec,
)
from gcd_core.diffusion.samplers import Frame, Inpaint
from gcd_core.errors import GCDError
from gcd_core.generate import GenerationRequest, LateProjection, decode_frame, generate_frames, partial_steps
from gcd_core.model import GCDModel
from gcd_core.representation.grid import VoxelGrid, merge_close_atoms

if TYPE_CHECKING:
    from gcd_core.data.gb_search import GBSearchSettings

GB_DENSITY_SCALARS = ("gb_n_cos", "gb_n_sin")  # [n] is periodic: conditioned on its angle on the unit circle
DEFAULT_THICKNESS = 16.0  # A per grain, as the GB search builds them
# noise time a relaxed GB's slab is taken back to for a variation of it: from 0.2-0.3 the model mostly gives the
# GB back, from 0.6 on what it makes from pure noise (W restorations, benchmarks/results/gb_refine_session17_cpu.md)
REFINE_START_TIME = 0.4
IMPOSE_N_BELOW = 0.3  # noise time below which [n] is imposed (0.15-1 gave similar Cu energies, later is cheaper:
# benchmarks/results/gb_impose_n_session16_cpu.md)


def gb_density_scalars(n: float) -> dict[str, float]:
    angle = 2 * np.pi * float(n)
    return dict(zip(GB_DENSITY_SCALARS, (float(np.cos(angle)), float(np.sin(angle))), strict=True))


@dataclass
class GBRequest:
    """One batch of in-painted GBs; the same request and seed give the same structures."""

    system: str
    num_samples: int = 4
    steps: int = 50
    sampler: str = "ddpm"
    resample: int = 2  # RePaint-style re-noising: lets the generated slab agree with the known grains
    seed: int | None = 0
    shift: Sequence[float] | None = None  # upper grain's translation (A); None: the model's reference
    target_n: float | None = None  # [n] to generate: imposed, and conditioned on by models trained with it
    impose_n_below: float | None = IMPOSE_N_BELOW  # noise time to impose target_n from; None: condition only
    guidance_scale: float = 1.0
    thickness: float = DEFAULT_THICKNESS


def reference_shift(model: GCDModel, system: str) -> tuple[float, float, float]:
    """The translation of the upper grain that the model's lowest-energy training GB of ``system`` relaxed to."""
    shifts = model.metadata.get("data", {}).get("gb_shifts", {})
    if system not in shifts:
        raise GCDError(f"the model records no reference translation for {system!r}; give one (shift=...)")
    return tuple(float(v) for v in shifts[system])  # type: ignore[return-value]


def gb_template(model: GCDModel, request: GBRequest) -> Atoms:
    """The bicrystal whose grains the request keeps: the window spec's in-plane supercell, grains translated."""
    gb_system(request.system)
    if request.system not in model.conditioning.labels:
        raise GCDError(f"this model knows the GBs {model.conditioning.labels or 'none'}, not {request.system!r}")
    shift = reference_shift(model, request.system) if request.shift is None else tuple(request.shift)
    return bicrystal(request.system, window_spec(request.system).repeat, request.thickness, shift=shift)


def inpainting(model: GCDModel, template: Atoms, num_samples: int) -> tuple[Atoms, Inpaint]:
    """The template's window and the in-painting constraint: every voxel outside the GB slab known."""
    system = str(template.info["gb_system"])
    window = gb_window(template)
    grid = model.grid_for(system)
    known = grid.to_model_space(grid.encode(window, device=model.device))
    mask = torch.ones_like(known)
    start, stop = generated_slab(system)
    mask[..., start:stop] = 0
    expand = (num_samples, *known.shape[1:])
    return window, Inpaint(known.expand(expand).contiguous(), mask.expand(expand).contiguous())


def _generation_request(model: GCDModel, request: GBRequest, window: Atoms) -> GenerationRequest:
    scalars = None
    if request.target_n is not None:
        if not 0 <= request.target_n < 1:
            raise GCDError(f"target [n] must lie in [0, 1), got {request.target_n}")
        conditioned = set(GB_DENSITY_SCALARS) <= set(model.conditioning.scalars)
        if request.impose_n_below is None and not conditioned:
            raise GCDError("this GB model was not trained with [n] conditioning; impose target_n or leave it unset")
        if request.impose_n_below is not None and not 0 < request.impose_n_below <= 1:
            raise GCDError(f"impose_n_below is a noise time in (0, 1], got {request.impose_n_below}")
        if conditioned:
            scalars = gb_density_scalars(request.target_n)
    return GenerationRequest(
        tuple(float(v) for v in window.cell.lengths()), num_samples=request.num_samples, steps=request.steps,
        sampler=request.sampler, resample=request.resample, seed=request.seed, label=request.system,
        scalars=scalars, guidance_scale=request.guidance_scale,
        # atoms closer than this are one atom, as the bicrystal builder merges them across a fresh GB
        merge_distance=OVERLAP_FRACTION * gb_system(request.system).nearest_neighbour,
    )


@dataclass
class SlabCount(LateProjection):
    """Imposes a GB's [n] on clean estimates ``(x0, t) -> x0`` (model space) at noise times up to ``below``.

    The slab's sites are read as the decoder reads them (occupancy, voxel corner plus offset; of two sites
    closer than ``merge_distance`` the fuller one, and none near a known atom), and the ``count`` fullest are set
    full, every other slab voxel empty. ``count`` is the number of slab atoms congruent to ``residue`` modulo
    ``per_plane`` nearest to what the estimate holds, so the [n] is fixed and the number of whole planes free.
    """

    system: str
    grid: VoxelGrid
    slab: tuple[int, int]  # voxel layers along z
    known: Atoms  # the window's atoms outside the slab (its cell is the window's)
    per_plane: int
    residue: int
    merge_distance: float
    below: float

    CANDIDATE_FLOOR = 0.01  # occupancy under which a voxel is no candidate site

    @classmethod
    def for_request(cls, model: GCDModel, request: GBRequest, template: Atoms, window: Atoms,
                    merge_distance: float) -> SlabCount:
        system = request.system
        grid = model.grid_for(system)
        if grid.encoding != "sharp" or grid.n_species != 1:
            raise GCDError("imposing [n] needs a one-species model with the sharp encoding")
        per_plane = int(template.info["atoms_per_plane"])
        outside_slab = int((~in_generated_slab(system, template.positions[:, 2] - window_bottom(template))).sum())
        return cls(system, grid, generated_slab(system), window[~in_generated_slab(system, window.positions[:, 2])],
                   per_plane, (int(round(request.target_n * per_plane)) - outside_slab) % per_plane, merge_distance,
                   float(request.impose_n_below))

    def impose(self, x0: torch.Tensor) -> torch.Tensor:
        """``x0`` with the [n] imposed, at any time (idempotent)."""
        data = self.grid.to_data_space(x0)
        for b in range(data.shape[0]):
            data[b, 0, :, :, self.slab[0]:self.slab[1]] = self._slab_occupancy(data[b])
        return self.grid.to_model_space(data)

    def count_for(self, present: int) -> int:
        """The slab's atom count for an estimate holding ``present``: the nearest with the wanted [n]."""
        return self.residue + self.per_plane * round((present - self.residue) / self.per_plane)

    def _slab_occupancy(self, grid: torch.Tensor) -> torch.Tensor:
        start, stop = self.slab
        in_slab = grid[:1].clone()
        in_slab[:, :, :, :start] = 0
        in_slab[:, :, :, stop:] = 0
        index, frac, occupancy = self.grid.sharp_sites(torch.cat([in_slab, grid[1:]]), 0, self.CANDIDATE_FLOOR)
        # an offset of 1 puts a site on the slab's top face, where pasting counts it as the grain's
        inside = in_generated_slab(self.system, frac[:, 2] * self.known.cell.lengths()[2])
        index, frac, occupancy = index[torch.from_numpy(inside)], frac[inside], occupancy[inside]
        candidates = Atoms(numbers=np.full(len(index), atomic_numbers[self.grid.species[0]]),
                           scaled_positions=frac % 1.0, cell=self.known.cell, pbc=True)
        candidates.set_array("occupancy", occupancy)
        candidates.set_array("site", np.arange(len(index)))
        known = self.known.copy()
        known.set_array("occupancy", np.full(len(known), 2.0))  # known atoms win every merge
        known.set_array("site", np.full(len(known), -1))
        kept = merge_close_atoms(known + candidates, self.merge_distance)
        sites = kept.arrays["site"][kept.arrays["site"] >= 0]
        sites = sites[np.argsort(-occupancy[sites], kind="stable")]
        count = self.count_for(int((occupancy[sites] > self.grid.threshold).sum()))
        while count > len(sites):
            count -= self.per_plane
        chosen = index[torch.as_tensor(sites[: max(count, 0)], dtype=torch.long)]
        slab = torch.zeros_like(grid[0, :, :, start:stop])
        slab[chosen[:, 0], chosen[:, 1], chosen[:, 2] - start] = 1.0
        return slab


def gb_frames(
    model: GCDModel, request: GBRequest, parent: Atoms | None = None, start_time: float = 1.0
) -> Iterator[tuple[Frame, GenerationRequest, Atoms]]:
    """The in-painting sampler's frames, each with the generation request and the template (for decoding).
    With a ``parent`` (a bicrystal, e.g. a relaxed GB) its grains are the known voxels and its own GB slab, noised
    to ``start_time``, is where sampling starts (partial diffusion: a variation of the parent's GB)."""
    if parent is None:
        template = gb_template(model, request)
    elif parent.info.get("gb_system") != request.system:
        raise GCDError(f"the parent is a {parent.info.get('gb_system')!r} GB, the request asks for {request.system!r}")
    else:
        template = parent
    window, inpaint = inpainting(model, template, request.num_samples)
    generation = _generation_request(model, request, window)
    projection = None
    if request.target_n is not None and request.impose_n_below is not None:
        projection = SlabCount.for_request(model, request, template, window, generation.merge_distance)
    start = None if parent is None else inpaint.known
    frames = generate_frames(model, generation, inpaint=inpaint, projection=projection, start=start,
                             start_time=start_time)
    for frame in frames:
        yield frame, generation, template


def decode_gb(model: GCDModel, frame: Frame, generation: GenerationRequest, template: Atoms) -> list[Atoms]:
    """The full bicrystals of a frame: its decoded windows pasted into the template."""
    structures = []
    for window in decode_frame(model, frame, generation):
        window.info.update(template.info)
        gb = paste_window(template, window)
        gb.info.update(template.info)
        structures.append(gb)
    return structures


def generate_gb(
    model: GCDModel, request: GBRequest, parent: Atoms | None = None, start_time: float = 1.0
) -> list[Atoms]:
    """``request.num_samples`` bicrystals with generated GBs, unrelaxed (``parent``, ``start_time``: a variation of
    the parent's GB, as in :func:`gb_frames`)."""
    last = None
    for last in gb_frames(model, request, parent, start_time):  # noqa: B007 (only the final frame is wanted)
        pass
    if last is None:
        raise GCDError("the sampler produced no frames")
    return decode_gb(model, *last)


def _relaxed_rows(
    structures: Sequence[Atoms], settings: GBSearchSettings, first: int, sampling: float, parent: int = -1
) -> list[tuple[Atoms, dict[str, float]]]:
    """Each structure relaxed and scored as the GB search does, with its CPU time (its share of the sampling
    plus its own relaxation)."""
    from gcd_core.data.gb_search import relax_gb

    results = []
    for offset, atoms in enumerate(structures):
        started = time.process_time()
        try:
            relaxed, energy = relax_gb(atoms, settings)
        except GCDError:  # LAMMPS refused the sample (a crowd of atoms): it counts, as a failure
            relaxed, energy = atoms, float("nan")
        row = {"sample": first + offset, "n": gb_density(relaxed), "n_atoms": len(relaxed), "e_gb": energy,
               "cpu_seconds": sampling + time.process_time() - started, "sampling_seconds": sampling,
               "parent": parent}
        relaxed.info.update(row)
        results.append((relaxed, row))
    return results


def generate_relaxed_gbs(
    model: GCDModel, request: GBRequest, batch: int = 8, progress: Callable[[int], None] | None = None
) -> list[tuple[Atoms, dict[str, float]]]:
    """``request.num_samples`` GBs in batches of ``batch``, each relaxed as the GB search relaxes its samples and
    scored: (relaxed bicrystal, {sample, n, n_atoms, e_gb, cpu_seconds, sampling_seconds, parent}); a sample's CPU
    time is its share of its batch's sampling (``sampling_seconds``) plus its own relaxation; ``parent`` is -1
    (from noise)."""
    from gcd_core.data.gb_search import GBSearchSettings

    settings = GBSearchSettings(request.system, thickness=request.thickness)
    results: list[tuple[Atoms, dict[str, float]]] = []
    for first in range(0, request.num_samples, batch):
        count = min(batch, request.num_samples - first)
        seed = None if request.seed is None else request.seed + first
        part = dataclasses.replace(request, num_samples=count, seed=seed)
        started = time.process_time()
        structures = generate_gb(model, part)
        results += _relaxed_rows(structures, settings, first, (time.process_time() - started) / count)
        if progress is not None:
            progress(first + count)
    return results


def _check_start_time(start_time: float) -> None:
    if not 0 < start_time <= 1:
        raise GCDError(f"start_time must lie in (0, 1], got {start_time}")


def refine_relaxed_gbs(
    model: GCDModel, parent: Atoms, request: GBRequest, start_time: float = REFINE_START_TIME, first: int = 0
) -> list[tuple[Atoms, dict[str, float]]]:
    """``request.num_samples`` variations of a relaxed GB, relaxed and scored as :func:`generate_relaxed_gbs`
    scores its samples (numbered from ``first``; ``parent`` is the parent's ``info["sample"]``): its GB slab is
    noised to ``start_time`` and in-painted back between its own grains (partial diffusion, after SDEdit and
    RFdiffusion's partial diffusion), with ``request.target_n`` imposed or, if None, the atom count free.
    ``request.steps`` is the step count for the whole way from pure noise; the part from ``start_time`` takes
    that share of it."""
    from gcd_core.data.gb_search import GBSearchSettings

    _check_start_time(start_time)
    steps = partial_steps(request.steps, start_time)
    started = time.process_time()
    structures = generate_gb(model, dataclasses.replace(request, steps=steps), parent, start_time)
    sampling = (time.process_time() - started) / request.num_samples
    settings = GBSearchSettings(request.system, thickness=request.thickness)
    return _relaxed_rows(structures, settings, first, sampling, int(parent.info.get("sample", -1)))


def lowest_gbs(
    results: Sequence[tuple[Atoms, dict[str, float]]], count: int, one_per_n: bool = True
) -> list[tuple[Atoms, dict[str, float]]]:
    """The ``count`` lowest-E_gb results (failed relaxations left out); ``one_per_n``: only the lowest of each
    [n], so that copies of one boundary do not take every place."""
    ranked = sorted((item for item in results if np.isfinite(item[1]["e_gb"])), key=lambda item: item[1]["e_gb"])
    if one_per_n:
        lowest: dict[float, tuple[Atoms, dict[str, float]]] = {}
        for item in ranked:
            lowest.setdefault(round(float(item[1]["n"]), 6), item)
        ranked = list(lowest.values())
    return ranked[:count]


def evolve_gbs(
    model: GCDModel,
    request: GBRequest,
    rounds: int,
    parents: int = 2,
    children: int = 2,
    start_time: float = REFINE_START_TIME,
    batch: int = 8,
    progress: Callable[[int], None] | None = None,
) -> list[tuple[Atoms, dict[str, float]]]:
    """A search driven by the model alone: ``request.num_samples`` GBs from noise, then ``rounds`` rounds in which
    the lowest-E_gb GB of each of the ``parents`` [n] values with the lowest E_gb so far gets ``children``
    variations (:func:`refine_relaxed_gbs`), its atom count free, so the population can move to the [n] of lower
    E_gb (grand canonical). With a ``request.target_n`` every GB has that [n] and the parents are the ``parents``
    lowest GBs. Returns every GB in the order made."""
    if rounds < 0 or parents < 1 or children < 1:
        raise GCDError(f"rounds must be >= 0 and parents, children >= 1; got {rounds}, {parents}, {children}")
    _check_start_time(start_time)  # before any sampling, not after the first batch
    results = generate_relaxed_gbs(model, request, batch)
    for round_index in range(rounds):
        chosen = lowest_gbs(results, parents, one_per_n=request.target_n is None)
        for rank, (parent, _) in enumerate(chosen):
            seed = None if request.seed is None else request.seed + 10_000 * (round_index + 1) + 100 * rank
            part = dataclasses.replace(request, num_samples=children, seed=seed)
            results += refine_relaxed_gbs(model, parent, part, start_time, first=len(results))
        if progress is not None:
            progress(round_index + 1)
    return results


def bin_values(index: int, bins: int, per_plane: int) -> list[float]:
    """The [n] values (whole atoms of a plane of ``per_plane``) in bin ``index`` of ``bins`` equal bins."""
    from gcd_core.data.gb_search import n_bin

    return [count / per_plane for count in range(per_plane) if n_bin(count / per_plane, bins) == index]


def lowest_bins(results: Sequence[tuple[Atoms, dict]], bins: int, count: int) -> list[int]:
    """The ``count`` bins (by ``target_bin``) of lowest E_gb so far, in index order; bins with no finite E_gb
    last."""
    lowest = dict.fromkeys(range(bins), np.inf)
    for _, row in results:
        if np.isfinite(row["e_gb"]):
            lowest[row["target_bin"]] = min(lowest[row["target_bin"]], row["e_gb"])
    return sorted(sorted(range(bins), key=lowest.__getitem__)[:count])


def survey_gbs(
    model: GCDModel,
    request: GBRequest,
    bins: int,
    rounds: int = 1,
    refine: int = 0,
    parents: int = 2,
    children: int = 2,
    hops: int = 0,
    focus: int | None = None,
    spread: bool = True,
    start_time: float = REFINE_START_TIME,
    batch: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> list[tuple[Atoms, dict[str, float]]]:
    """GBs over the whole [n] range, bin by bin: ``rounds`` rounds in which each of ``bins`` equal [n] bins gets
    ``request.num_samples`` GBs from noise at its [n] values in turn (``spread``: sample by sample; else one value
    per round), then ``refine`` rounds in which the lowest GB of each of the bin's ``parents`` lowest [n] values
    gets ``children`` variations at its own [n], and the lowest GB outside the bin ``hops`` variations at the
    bin's [n] values in turn (cross-[n] moves). ``focus``: refine only that many bins, those of lowest E_gb so far
    (a hunt for the ground state). Every row carries its ``target_bin``; samples are numbered in the order made,
    and seeds depend only on ``request.seed``, the round, the bin and the rank. With ``request.impose_n_below``
    None (models trained with [n] conditioning) each bin's samples are conditioned on its centre and not refined.
    ``progress(rounds done, samples so far)``."""
    if bins < 1 or rounds < 1 or refine < 0 or parents < 1 or children < 1 or hops < 0:
        raise GCDError(f"bins and rounds must be >= 1, refine and hops >= 0, parents and children >= 1; got {bins}, "
                       f"{rounds}, {refine}, {hops}, {parents}, {children}")
    if request.target_n is not None:
        raise GCDError("a survey sets each sample's [n] from its bin; leave target_n unset")
    if focus is not None and not 1 <= focus <= bins:
        raise GCDError(f"focus must be between 1 and the {bins} bins, got {focus}")
    condition_only = request.impose_n_below is None
    if condition_only and refine:
        raise GCDError("a survey refines with [n] imposed; conditioning only takes no refinement rounds")
    if spread and not condition_only and request.num_samples > 50:
        raise GCDError("a spread survey takes at most 50 samples per bin and round (one seed each)")
    _check_start_time(start_time)
    gb_template(model, request)  # an unknown system or missing reference translation fails before any sampling
    per_plane = atoms_per_plane(gb_system(request.system), window_spec(request.system).repeat)
    values_of = [bin_values(index, bins, per_plane) for index in range(bins)]

    def seeded(offset: int) -> int | None:
        return None if request.seed is None else request.seed + offset

    results: list[tuple[Atoms, dict[str, float]]] = []

    def keep(made: list[tuple[Atoms, dict[str, float]]], index: int) -> None:
        for atoms, row in made:
            row = {**row, "sample": len(results), "target_bin": index}
            atoms.info.update(row)  # a parent's info names it as the table does
            results.append((atoms, row))

    for round_index in range(rounds):  # every bin gets its turn in each round, so all bins progress together
        for index, values in enumerate(values_of):
            if condition_only:
                targets = [(index + 0.5) / bins]
            elif spread:
                targets = [values[(round_index * request.num_samples + i) % len(values)]
                           for i in range(request.num_samples)]
            else:
                targets = [values[round_index % len(values)]]
            for i, target in enumerate(targets):
                part = dataclasses.replace(
                    request, num_samples=request.num_samples // len(targets), target_n=target,
                    seed=seeded(1000 * round_index + (index if len(targets) == 1 else 50 * index + i)))
                keep(generate_relaxed_gbs(model, part, batch), index)
        if progress is not None:
            progress(round_index + 1, len(results))
    for round_index in range(refine):
        offset = 100_000 * (round_index + 1)
        for index in lowest_bins(results, bins, focus) if focus else range(bins):
            in_bin = [item for item in results if item[1]["target_bin"] == index]
            for rank, (parent, row) in enumerate(lowest_gbs(in_bin, parents)):
                part = dataclasses.replace(request, num_samples=children, target_n=float(row["n"]),
                                           seed=seeded(offset + 1000 * index + rank))
                keep(refine_relaxed_gbs(model, parent, part, start_time), index)
            outside = lowest_gbs([item for item in results if item[1]["target_bin"] != index], 1)
            values = values_of[index]
            for hop, (parent, _) in enumerate(outside * hops):
                part = dataclasses.replace(request, num_samples=1,
                                           target_n=values[(round_index * hops + hop) % len(values)],
                                           seed=seeded(offset + 1000 * index + 500 + hop))
                keep(refine_relaxed_gbs(model, parent, part, start_time), index)
        if progress is not None:
            progress(rounds + round_index + 1, len(results))
    return results


def plot_gb_energies(
    search: Sequence[dict], generated: Sequence[dict], title: str, path: str | Path
) -> None:
    """PNG of E_gb against [n]: the GB search's samples and the generator's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
    if search:
        axes.scatter([r["n"] for r in search], [r["e_gb"] for r in search], s=8, alpha=0.4, label="GB search")
    if generated:
        axes.scatter([r["n"] for r in generated], [r["e_gb"] for r in generated], s=16, marker="x",
                     label="generator (in-painted, relaxed)")
    energies = [float(r["e_gb"]) for r in [*search, *generated]]
    if energies:
        axes.set_ylim(min(energies) - 0.05, min(energies) + 1.5)  # the low-energy end is what matters
    axes.set_xlim(0, 1)
    axes.set_xlabel("[n] (fraction of a bulk plane)")
    axes.set_ylabel("E_gb (J/m$^2$)")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
