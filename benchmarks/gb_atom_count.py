"""Where a generated GB's atom count, and so its [n], comes from; and whether guiding the count steers [n].

    python benchmarks/gb_atom_count.py assets/gb_sigma5.pt cu_sigma5_tilt runs/gb_cu --target-n 0.5 --samples 8 \
        --steps 25 --resample 1 --scales 0 1 4 16 64

1. Round trip: the ``--lowest`` lowest-E_gb windows of the GB search, encoded on the model's voxels and decoded,
   must give back their atom count (else the representation, not the network, loses or doubles atoms).
2. For each gradient-guidance scale (0: plain conditioning on ``--target-n``), ``--samples`` in-painted GBs:
   the soft atom count of the final frame (a sigmoid of the occupancy about 1/2), the atoms decoded from it
   without merging, those left after the decoder's merge of close pairs, the resulting [n] and its mean periodic
   distance from the target. The guidance (an experiment, not part of ``gcd_core``) pushes the slab's soft count
   toward the target [n] with the loss 1 - cos(2 pi ([n]_soft - target)) through the network.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from ase.io import read

from gcd_core.data.bicrystal import OVERLAP_FRACTION, gb_density, gb_system
from gcd_core.data.gb_search import read_gb_table
from gcd_core.data.gb_windows import gb_window, generated_slab, in_generated_slab
from gcd_core.generate import generate_frames
from gcd_core.grain_boundaries import GBRequest, _generation_request, decode_gb, gb_template, inpainting
from gcd_core.model import GCDModel
from gcd_core.representation.grid import merge_close_atoms

SHARPNESS = 12.0  # of the sigmoid that turns an occupancy into a soft atom


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("system")
    parser.add_argument("search", type=Path, help="the gcd gb-search folder of the same GB")
    parser.add_argument("--lowest", type=int, default=8, help="search windows in the round trip")
    parser.add_argument("--target-n", type=float, default=0.5)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--resample", type=int, default=1)
    parser.add_argument("--scales", type=float, nargs="*", default=[0.0, 1.0, 4.0],
                        help="guidance scales; none: the round trip only")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    model = GCDModel.load(args.model)
    grid = model.grid_for(args.system)
    merge = OVERLAP_FRACTION * gb_system(args.system).nearest_neighbour

    rows = sorted(read_gb_table(args.search), key=lambda r: float(r["e_gb"]))[: args.lowest]
    print(f"Round trip of the {len(rows)} lowest-E_gb windows of {args.search} (atoms in, decoded, after merging):")
    for row in rows:
        window = gb_window(read(args.search / "structures" / f"{row['seed']}.extxyz"))
        decoded = grid.decode(grid.encode(window), window.cell.lengths())[0]
        print(f"  seed {row['seed']:>5} E_gb {float(row['e_gb']):.3f}: {len(window)} -> {len(decoded)} -> "
              f"{len(merge_close_atoms(decoded, merge))}")

    if not args.scales:
        return 0
    request = GBRequest(args.system, num_samples=args.samples, steps=args.steps, resample=args.resample, seed=0,
                        target_n=args.target_n)
    template = gb_template(model, request)
    window, inpaint = inpainting(model, template, args.samples)
    generation = _generation_request(model, request, window)
    per_plane = int(template.info["atoms_per_plane"])
    start, stop = generated_slab(args.system)
    fixed = len(template) - int(in_generated_slab(args.system, window.positions[:, 2]).sum())

    def soft_count(x0: torch.Tensor) -> torch.Tensor:
        occupancy = grid.to_data_space(x0)[:, grid.occupancy_channels, :, :, start:stop]
        return fixed + torch.sigmoid(SHARPNESS * (occupancy - 0.5)).sum(dim=tuple(range(1, occupancy.dim())))

    def count_loss(x0: torch.Tensor) -> torch.Tensor:
        return 1 - torch.cos(2 * math.pi * (soft_count(x0) / per_plane - args.target_n))

    print(f"\n{args.system}: target [n] {args.target_n}, {args.samples} samples, DDPM {args.steps} x resample "
          f"{args.resample}, seed 0; {per_plane} atoms per plane")
    for scale in args.scales:
        began = time.process_time()
        last = None
        frames = generate_frames(model, generation, inpaint=inpaint,
                                 gradient_guidance=count_loss if scale else None, gradient_scale=scale)
        for last in frames:  # noqa: B007 (only the final frame is wanted)
            pass
        seconds = (time.process_time() - began) / args.samples
        merged = decode_gb(model, last, generation, template)
        unmerged = decode_gb(model, last, dataclasses.replace(generation, merge_distance=None), template)
        with torch.no_grad():
            soft = soft_count(last.x0.float()).tolist()
        densities = [gb_density(atoms) for atoms in merged]
        error = np.mean([min(abs(n - args.target_n), 1 - abs(n - args.target_n)) for n in densities])
        print(f"scale {scale:g}: {seconds:.1f} CPU s per sample; mean |[n] - target| {error:.3f}")
        print(f"  soft count  {[round(v) for v in soft]}")
        print(f"  decoded     {[len(a) for a in unmerged]}")
        print(f"  merged      {[len(a) for a in merged]}")
        print(f"  [n]         {[round(n, 3) for n in densities]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
