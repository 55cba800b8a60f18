"""Can a crystal model undo a doubled site? Split sites in real crystals, noise them part way, denoise them back.

Samplers' commonest crystal miss is a site doubled over two neighbouring voxels (too many atoms, pairs about a
voxel apart; ``benchmarks/crystal_failures.py``). For each phase, perfect training cells at random translations
are encoded, and in each a random share of the atoms is split (``gcd_core.representation.split_sites``: the
voxel across the nearest face gets a ghost occupancy of 0.3-1, with its offset on that face). Each grid is then
noised to time t (small: the end of a trajectory, where the doubled sites are left), denoised with ancestral steps
conditioned on the phase, decoded and judged (``judge_phase``). The same cells without splits are the control.
A model that learnt to undo doubled sites (``gcd train --split-sites``) restores the split cells as well as the
clean ones; one that did not keeps the ghosts. Seconds per phase on a CPU.

    python benchmarks/crystal_split_repair.py assets/crystal_phases.pt --times 0.05 0.1 0.2 --cells 20
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from gcd_core.data.crystals import conventional_cell, crystal
from gcd_core.device import make_generator
from gcd_core.generate import restore as restore_grid
from gcd_core.model import GCDModel
from gcd_core.physics import judge_phase
from gcd_core.representation import GridStretchWarning, split_sites


def training_cells(model: GCDModel, phase: str, count: int, seed: int) -> list:
    """``count`` copies of the phase's training cell, each at a random continuous translation."""
    lengths = np.array(model.training_cell(phase))
    reps = np.rint(lengths / conventional_cell(phase).cell.lengths()).astype(int)
    rng = np.random.default_rng(seed)
    return [crystal(phase, tuple(int(r) for r in reps), translation=rng.random(3) * lengths) for _ in range(count)]


def restore(model: GCDModel, phase: str, clean: torch.Tensor, start_time: float, steps_per_unit: int, seed: int):
    """Data-space grids noised to ``start_time`` and denoised back, as ``ase.Atoms``."""
    grid = model.grid_for(phase)
    conditioning = model.conditioning_tensors(clean.shape[0], phase, None, None)
    x0 = restore_grid(model, grid.to_model_space(clean), start_time, conditioning, steps_per_unit, seed)
    return grid.decode(grid.to_data_space(x0), tuple(model.training_cell(phase)))


def judged(structures: list, phase: str) -> tuple[int, float]:
    verdicts = [judge_phase(atoms, phase) for atoms in structures]
    return sum(v.perfect for v in verdicts), float(np.mean([abs(v.n_atoms - v.ideal_atoms) for v in verdicts]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--phases", nargs="+", help="only these phases (default: all the model knows)")
    parser.add_argument("--times", nargs="+", type=float, default=[0.05, 0.1, 0.2, 0.3])
    parser.add_argument("--cells", type=int, default=20, help="cells per phase")
    parser.add_argument("--steps", type=int, default=50, help="DDPM steps for the whole way (t = 1 to 0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not all(0 < t <= 1 for t in args.times):
        parser.error("--times must lie in (0, 1]")
    model = GCDModel.load(args.checkpoint, device="cpu")
    model.net.eval()
    phases = [p for p in model.conditioning.labels if not args.phases or p in args.phases]
    if not phases:
        parser.error("the model has no phase labels (or none of --phases)")
    warnings.simplefilter("ignore", GridStretchWarning)
    started = time.perf_counter()
    lines = [
        f"Model {args.checkpoint}; {args.cells} training cells per phase at random translations, each atom split "
        f"with a probability drawn U(0, 1) per cell; DDPM, {args.steps} steps for t = 1 to 0 (proportionally fewer "
        f"from smaller t); seed {args.seed}",
        "",
        "| phase | split input: extra atoms | noised to t | clean input: perfect | split input: perfect | "
        "split input: mean abs. count error |",
        "|---|---|---|---|---|---|",
    ]
    for phase in phases:
        grid = model.grid_for(phase)
        cells = training_cells(model, phase, args.cells, args.seed)
        clean = grid.encode(cells)
        split = split_sites(clean, grid, make_generator(args.seed, "cpu"), structure_probability=1.0)
        lengths = tuple(model.training_cell(phase))
        extra = np.mean([len(a) - len(c) for a, c in zip(grid.decode(split, lengths), cells, strict=True)])
        for start_time in args.times:
            clean_perfect, _ = judged(restore(model, phase, clean, start_time, args.steps, args.seed), phase)
            split_perfect, error = judged(restore(model, phase, split, start_time, args.steps, args.seed), phase)
            lines.append(
                f"| {phase} | {extra:.1f} | {start_time:g} | {clean_perfect}/{args.cells} | "
                f"{split_perfect}/{args.cells} | {error:.2f} |"
            )
            print(lines[-1], flush=True)
    lines += ["", f"Wall time {time.perf_counter() - started:.0f} s"]
    print("\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
