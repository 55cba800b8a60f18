"""What goes wrong in the imperfect samples of one phase: one line per imperfect sample.

    python benchmarks/crystal_failures.py assets/crystal_phases.pt hcp --size 1 --samples 20 --steps 50 --resample 2

Generates ``--samples`` cells of ``phase`` in one batch (seed ``--seed``, the same call as
``benchmarks/crystal_success.py --batch N``), judges each with ``judge_phase`` and prints, for every imperfect one:
its atom count against the ideal; the spglib space group at symprec 0.05-0.4 A (a group that becomes the phase's at
a looser tolerance means slightly misplaced atoms, not a defect); the fraction of atoms of the phase's structure
type (stacking errors and domain walls lower it); its Bragg order (``gcd_core.physics.diffraction.bragg_order``: 1
for one grain of the lattice, vacancies or not; grains out of register with each other lower it); the closest pair
of atoms against the bulk nearest-neighbour distance (an atom doubled across neighbouring voxels shows as a pair
well under it); and the decoded occupancies of the atoms in such pairs (closer than 0.75 of that distance) against
the lowest of the rest (a site whose occupancy the model split over two voxels shows as two halves just over the
0.5 threshold).
Last, over all samples, where the lattice sits inside its voxels: every atom of an ideal crystal shares one offset
from its voxel's centre, and the training cells are translated at random, so each axis's |offset| averages 0.25
voxel there; near 0.5 a site lies on a voxel face, between two voxels.

``--bragg-refine N`` samples with Bragg guidance (N Adam steps per clean estimate toward the phase's reflections).
``--without-estimate`` samples a self-conditioned model (``gcd train --self-condition``) with its previous-estimate
input held at zero, as in the half of its training batches that have none: what reading its own estimate adds.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from ase.neighborlist import neighbor_list

from gcd_core.data.crystals import bond_length, phase_reference
from gcd_core.generate import GenerationRequest, generate
from gcd_core.guidance import bragg_refinement
from gcd_core.model import GCDModel
from gcd_core.physics import judge_phase
from gcd_core.physics.diffraction import bragg_order
from gcd_core.physics.symmetry import space_group
from gcd_core.representation import GridStretchWarning

SYMPRECS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("phase")
    parser.add_argument("--size", type=int, default=1, help="multiple of the phase's training cell edge")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--resample", type=int, default=2)
    parser.add_argument(
        "--resample-window", type=float, nargs=2, default=(0.0, 1.0), metavar=("LO", "HI"),
        help="repeat only the steps that start at noise times LO <= t <= HI",
    )
    parser.add_argument("--guidance-scale", type=float, default=1.0, help="classifier-free guidance on the phase")
    parser.add_argument(
        "--exclusion", type=float, metavar="F",
        help="site exclusion while sampling: of two sites closer than F x the bond length, the fuller stays",
    )
    parser.add_argument("--exclusion-below", type=float, default=0.3, help="... at noise times t <= this")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bragg-refine", type=int, default=0, metavar="N", help="Bragg guidance: N Adam steps")
    parser.add_argument(
        "--without-estimate",
        action="store_true",
        help="a self-conditioned model sampled without its previous estimate (zeros at every step): an ablation",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", GridStretchWarning)

    model = GCDModel.load(args.checkpoint)
    if args.without_estimate:
        if not model.net.self_condition:
            parser.error(f"{args.checkpoint} is not self-conditioned; --without-estimate changes nothing")
        plain_denoiser = model.denoiser
        model.denoiser = lambda conditioning=None, **kwargs: plain_denoiser(  # type: ignore[method-assign]
            conditioning, **{**kwargs, "self_condition": False}
        )
    cell = tuple(edge * args.size for edge in model.training_cell(args.phase))
    request = GenerationRequest(cell, num_samples=args.samples, steps=args.steps, sampler="ddpm",
                                resample=args.resample, resample_window=tuple(args.resample_window),
                                seed=args.seed, label=args.phase,
                                guidance_scale=args.guidance_scale,
                                exclusion_distance=args.exclusion and args.exclusion * bond_length(args.phase),
                                exclusion_below=args.exclusion_below)
    grid = model.grid_for(args.phase)
    reference = phase_reference(args.phase, grid)
    projection = bragg_refinement(grid, reference, cell, args.bragg_refine) if args.bragg_refine else None
    began = time.perf_counter()
    structures = generate(model, request, projection=projection)
    seconds = (time.perf_counter() - began) / args.samples
    estimate = ", without its estimate" if args.without_estimate else ""
    if args.bragg_refine:
        estimate += f", Bragg guidance ({args.bragg_refine} Adam steps per estimate)"
    if args.exclusion:
        estimate += f", site exclusion {args.exclusion:g} x bond below t = {args.exclusion_below:g}"
    window = "" if tuple(args.resample_window) == (0.0, 1.0) else " for t in [{:g}, {:g}]".format(*args.resample_window)
    print(f"{args.phase} {args.size}x, DDPM {args.steps} x resample {args.resample}{window}, "
          f"cfg {args.guidance_scale:g}, seed {args.seed}{estimate}: {seconds:.2f} s per sample (one thread)")
    bulk_distance = bond_length(args.phase)
    voxel_edges = model.grid_for(args.phase).nominal_edges
    print(f"{'sample':>6} {'atoms':>9} {'groups at symprec ' + ' / '.join(f'{s:g}' for s in SYMPRECS):>40} "
          f"{'phase type':>10} {'Bragg order':>11} {'closest pair (A)':>16} {'occupancy: paired / rest':>25}")
    perfect, count_errors, offsets = 0, [], []
    for index, atoms in enumerate(structures):
        verdict = judge_phase(atoms, args.phase)
        offsets.append(_lattice_offset(atoms, voxel_edges))
        count_errors.append(abs(len(atoms) - round(verdict.ideal_atoms)))
        if verdict.perfect:
            perfect += 1
            continue
        groups = " / ".join(str(space_group(atoms, s)[0]) for s in SYMPRECS)
        first, distances = neighbor_list("id", atoms, 4.0)
        closest = float(distances.min()) if len(distances) else float("nan")
        occupancies = _occupancies(atoms, first, distances, bulk_distance)
        order = bragg_order(atoms, reference)
        print(f"{index:6d} {len(atoms):4d} / {round(verdict.ideal_atoms):<4d} {groups:>40} "
              f"{verdict.target_fraction:10.2f} {order:11.2f} {closest:16.2f} {occupancies:>25}")
    print(f"perfect {perfect}/{args.samples}; mean abs. count error {np.mean(count_errors):.2f}")
    located = [o for o in offsets if o is not None]
    mean_offset = " / ".join(f"{v:.2f}" for v in np.abs(located).mean(axis=0)) if located else "-"
    print(f"lattice offset from the voxel centre, mean |x| / |y| / |z| (voxels) over the {len(located)} samples "
          f"with an atom of occupancy > 0.9: {mean_offset}")
    return 0


def _occupancies(atoms, first: np.ndarray, distances: np.ndarray, bulk_distance: float) -> str:
    """'lo-hi / min': decoded occupancies of atoms in too-close pairs, and the lowest of the other atoms."""
    occupancy = atoms.arrays["occupancy"]
    paired = np.zeros(len(atoms), dtype=bool)
    paired[first[distances < 0.75 * bulk_distance]] = True
    rest = f"{occupancy[~paired].min():.2f}" if (~paired).any() else "-"
    if not paired.any():
        return f"- / {rest}"
    return f"{occupancy[paired].min():.2f}-{occupancy[paired].max():.2f} / {rest}"


def _lattice_offset(atoms, voxel_edges) -> np.ndarray | None:
    """The offset (voxels, per axis, in [-0.5, 0.5)) of the sure atoms (occupancy > 0.9) from their voxels'
    centres: a circular mean, since offsets of -0.5 and 0.5 are the same place."""
    sure = atoms.arrays["occupancy"] > 0.9
    if not sure.any():
        return None
    phase = 2 * np.pi * (atoms.positions[sure] / np.asarray(voxel_edges))
    return (np.angle(np.exp(1j * phase).mean(axis=0)) / (2 * np.pi)) % 1.0 - 0.5  # voxel centres at 0.5


if __name__ == "__main__":
    raise SystemExit(main())
