"""Amorphous carbon in boxes larger than the training cells: time, atom count and structure statistics.

For each box edge, ``--samples`` samples (conditioned on a held-out cell's spectrum with ``--target``, else
unconditional; optionally steered toward it by gradient guidance, ``--gradient`` and ``--sp3``, as in
``carbon_steering.py``) are generated and compared with the training cells nearest in density: RDF distance,
sp/sp2/sp3 fractions, mean coordination and the share of singly coordinated carbons. For scale, the last column
gives the RDF distance of each held-out cell of that density from the same training cells (real cells, one each).
The training cells are 10.7-14.2 A, so 24.5 A and 49 A are about 2x and 4x their edge; put the steering benchmark's
12.264 A among the edges to see what the size alone changes. ``--polish REFINER`` adds a row per box with positions
polished by the atom-space refiner (``gcd_core.polish``).

    python benchmarks/carbon_large_cells.py assets/carbon_xanes.pt --edges 24.528 49.056 --device cpu
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import ase.io
import numpy as np
import torch

from gcd_core.data.amorphous import DEFAULT_ROOT, load_carbon_dataset, split_by_structure, structure_spectrum
from gcd_core.generate import PRUNE_WINDOW, GenerationRequest, generate
from gcd_core.guidance import spectral_error, steering
from gcd_core.model import GCDModel
from gcd_core.physics.analysis import (
    coordination_numbers,
    hybridisation,
    mass_density,
    radial_distribution,
    rdf_distance,
)
from gcd_core.physics.spectra import conditioning_vector
from gcd_core.physics.xanes import XanesForwardModel
from gcd_core.polish import PositionRefiner, polish
from gcd_core.representation.grid import GridStretchWarning


def row(structures: list, train: list, held_out: list, forward: XanesForwardModel | None, target) -> str:
    """The table's columns from density on: the structures against the training cells nearest their density."""
    density = float(np.mean([mass_density(a) for a in structures]))
    nearest = min({round(a.info["density"], 1) for a in train}, key=lambda d: abs(d - density))
    reference = [a for a in train if round(a.info["density"], 1) == nearest]
    h, ref_h = hybridisation(structures), hybridisation(reference)
    reference_rdf = radial_distribution(reference)
    distance = rdf_distance(reference_rdf, radial_distribution(structures))
    # the yardstick: how far real cells of that density, held out of training, lie from the training cells
    yardstick = [rdf_distance(reference_rdf, radial_distribution(a)) for a in held_out
                 if round(a.info["density"], 1) == nearest]
    singles = float(np.mean(np.concatenate([coordination_numbers(a) == 1 for a in structures])))
    error = f"{np.mean(spectral_error(forward, structures, target)):.3f}" if target is not None else "-"
    return (
        f"{density:.2f} | {h.sp:.3f} / {h.sp2:.3f} / {h.sp3:.3f} | "
        f"{h.mean_coordination:.2f} | {singles:.4f} | {error} | {nearest:.1f} ({len(reference)} cells): {ref_h.sp:.3f} "
        f"/ {ref_h.sp2:.3f} / {ref_h.sp3:.3f}, {ref_h.mean_coordination:.2f} | {distance:.3f} | "
        f"{', '.join(f'{v:.3f}' for v in yardstick) or '-'} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--edges", type=float, nargs="+", default=[24.528, 49.056], help="cubic box edges (A)")
    parser.add_argument("--target", help="name of the cell whose mean spectrum conditions the samples")
    parser.add_argument("--cfg", type=float, default=1.0, help="classifier-free scale with --target")
    parser.add_argument("--gradient", type=float, default=0.0, help="spectrum-guidance scale with --target")
    parser.add_argument("--sp3", type=float, default=0.0, help="sp3-guidance scale with --target")
    parser.add_argument("--sp3-refine", type=int, default=0, metavar="N", help="with --sp3, Adam steps per estimate")
    parser.add_argument("--sp3-refine-below", type=float, default=0.5, metavar="T")
    parser.add_argument(
        "--bonding", type=float, default=0.0, help="with --target, guidance toward its sp / sp2 / sp3 fractions"
    )
    parser.add_argument("--bonding-refine", type=int, default=0, metavar="N", help="with --bonding, Adam steps")
    parser.add_argument("--xanes", type=Path, default=Path("assets/xanes_forward.pt"))
    parser.add_argument("--data", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--samples", type=int, default=1, help="samples per box (statistics pooled)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--resample", type=int, default=1, help="repeat each step this often (with re-noising)")
    parser.add_argument(
        "--resample-window", type=float, nargs=2, default=(0.0, 1.0), metavar=("LO", "HI"),
        help="only steps starting at noise times LO <= t <= HI repeat",
    )
    parser.add_argument(
        "--min-bonds", type=int, default=0, metavar="N",
        help=f"prune sites with fewer than N bonds from clean estimates at noise times {PRUNE_WINDOW} (0: off)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="CPU threads")
    parser.add_argument("--out", type=Path, help="also write the table here")
    parser.add_argument("--save", type=Path, metavar="DIR", help="also write each box's samples here (extxyz)")
    parser.add_argument(
        "--polish", type=Path, metavar="REFINER",
        help="also give each box polished by this atom-space position refiner (assets/carbon_polish.pt)",
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore", GridStretchWarning)
    if args.threads:
        torch.set_num_threads(args.threads)

    model = GCDModel.load(args.checkpoint, device=args.device)
    refiner = PositionRefiner.load(args.polish, device=args.device) if args.polish else None
    everything = load_carbon_dataset(args.data)
    train, held_out = split_by_structure(everything)
    target = vector = forward = None
    if args.target:
        chosen = [a for a in everything if a.info["name"] == args.target]
        if not chosen:
            raise SystemExit(f"no cell named {args.target!r} in {args.data}")
        target = structure_spectrum(chosen[0])
        vector = conditioning_vector(target)
        forward = XanesForwardModel.load(args.xanes, device=args.device)
        forward.eval()
    elif args.gradient or args.sp3 or args.bonding:
        raise SystemExit("--gradient, --sp3 and --bonding steer toward a --target")
    condition = "unconditional"
    if args.target:
        condition = f"target {args.target}, cfg {args.cfg:g}, spectrum gradient {args.gradient:g}, sp3 gradient "
        condition += f"{args.sp3:g}" + (f" with {args.sp3_refine} refinement steps" if args.sp3 else "")
        condition += f", bonding gradient {args.bonding:g}" + (
            f" with {args.bonding_refine} refinement steps" if args.bonding and args.bonding_refine else ""
        )
    sampler = f"{args.sampler.upper()} {args.steps} steps"
    if args.resample > 1:
        sampler += f", steps at t in [{args.resample_window[0]:g}, {args.resample_window[1]:g}] x {args.resample}"
    if args.min_bonds:
        sampler += f", sites with under {args.min_bonds} bonds pruned at t in {list(PRUNE_WINDOW)}"
    hardware = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{torch.get_num_threads()} threads"
    lines = [
        f"Model {args.checkpoint}; {condition}; {sampler}; {args.samples} sample(s) per box; seed {args.seed}; "
        f"device {args.device} ({hardware})",
        "",
        "| box (A) | grid | atoms | seconds | density | sp / sp2 / sp3 | mean coord. | sp1 share | spectral error | "
        "same-density training cells: density, sp / sp2 / sp3, mean coord. | RDF distance | held-out cells' RDF "
        "distance |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for edge in args.edges:
        cell = (edge,) * 3
        request = GenerationRequest(
            cell, num_samples=args.samples, steps=args.steps, sampler=args.sampler, seed=args.seed,
            resample=args.resample, resample_window=tuple(args.resample_window), min_bonds=args.min_bonds,
            vector=vector, guidance_scale=args.cfg if vector is not None else 1.0, fit_to_stride=True,
        )
        steer = steering(
            model.grid, cell, target, forward, spectrum_scale=args.gradient, sp3_scale=args.sp3,
            sp3_refine=args.sp3_refine if args.sp3 else 0, refine_below=args.sp3_refine_below,
            bonding_scale=args.bonding, bonding_refine=args.bonding_refine if args.bonding else 0,
        )
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        began = time.perf_counter()
        structures = generate(model, request, gradient_guidance=steer.gradient_guidance,
                              gradient_scale=steer.gradient_scale, projection=steer.projection)
        seconds = (time.perf_counter() - began) / args.samples
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            ase.io.write(args.save / f"box_{edge:g}.extxyz", structures)
        shape = model.grid.layout(cell, warn=False, multiple_of=model.net.stride).shape
        versions = [("", structures)]
        if refiner is not None:
            began = time.perf_counter()
            versions.append((" polished", polish(structures, refiner)))
            print(f"polished in {(time.perf_counter() - began) / args.samples:.1f} s per sample", flush=True)
        for suffix, shown in versions:
            atoms = np.mean([len(a) for a in shown])
            lines.append(f"| {edge:g}{suffix} | {shape[0]}^3 | {atoms:.0f} | {seconds:.1f} | "
                         + row(shown, train, held_out, forward, target))
            print(lines[-1], flush=True)
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
