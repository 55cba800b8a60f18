"""Amorphous carbon in boxes larger than the training cells: time, atom count and structure statistics.

For each box edge, one sample (conditioned on a held-out cell's spectrum with ``--target``, else unconditional)
is generated and compared with the training cells nearest in density: RDF distance, sp/sp2/sp3 fractions, mean
coordination and the share of singly coordinated carbons. The training cells are 10.7-14.2 A, so 24.5 A and
49 A are about 2x and 4x their edge.

    python benchmarks/carbon_large_cells.py assets/carbon_xanes.pt --edges 24.528 49.056 --device cpu
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from gcd_core.data.amorphous import DEFAULT_ROOT, load_carbon_dataset, split_by_structure, structure_spectrum
from gcd_core.generate import GenerationRequest, generate
from gcd_core.model import GCDModel
from gcd_core.physics.analysis import (
    coordination_numbers,
    hybridisation,
    mass_density,
    radial_distribution,
    rdf_distance,
)
from gcd_core.physics.spectra import conditioning_vector
from gcd_core.representation.grid import GridStretchWarning


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--edges", type=float, nargs="+", default=[24.528, 49.056], help="cubic box edges (A)")
    parser.add_argument("--target", help="name of the cell whose mean spectrum conditions the samples")
    parser.add_argument("--cfg", type=float, default=1.0, help="classifier-free scale with --target")
    parser.add_argument("--data", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="CPU threads")
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args()
    warnings.simplefilter("ignore", GridStretchWarning)
    if args.threads:
        torch.set_num_threads(args.threads)

    model = GCDModel.load(args.checkpoint, device=args.device)
    everything = load_carbon_dataset(args.data)
    train, _ = split_by_structure(everything)
    vector = None
    if args.target:
        chosen = [a for a in everything if a.info["name"] == args.target]
        if not chosen:
            raise SystemExit(f"no cell named {args.target!r} in {args.data}")
        vector = conditioning_vector(structure_spectrum(chosen[0]))
    condition = f"target {args.target}, cfg {args.cfg:g}" if args.target else "unconditional"
    hardware = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{torch.get_num_threads()} threads"
    lines = [
        f"Model {args.checkpoint}; {condition}; {args.sampler.upper()} {args.steps} steps; seed {args.seed}; "
        f"device {args.device} ({hardware})",
        "",
        "| box (A) | grid | atoms | seconds | density | sp / sp2 / sp3 | mean coord. | sp1 share | "
        "same-density training cells: density, sp / sp2 / sp3, mean coord. | RDF distance |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for edge in args.edges:
        request = GenerationRequest(
            (edge,) * 3, steps=args.steps, sampler=args.sampler, seed=args.seed, vector=vector,
            guidance_scale=args.cfg if vector is not None else 1.0, fit_to_stride=True,
        )
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        began = time.perf_counter()
        atoms = generate(model, request)[0]
        seconds = time.perf_counter() - began
        shape = model.grid.layout((edge,) * 3, warn=False, multiple_of=model.net.stride).shape
        density = mass_density(atoms)
        nearest = min({round(a.info["density"], 1) for a in train}, key=lambda d: abs(d - density))
        reference = [a for a in train if round(a.info["density"], 1) == nearest]
        h, ref_h = hybridisation(atoms), hybridisation(reference)
        distance = rdf_distance(radial_distribution(reference), radial_distribution(atoms))
        singles = float(np.mean(coordination_numbers(atoms) == 1))
        lines.append(
            f"| {edge:g} | {shape[0]}^3 | {len(atoms)} | {seconds:.1f} | {density:.2f} | "
            f"{h.sp:.3f} / {h.sp2:.3f} / {h.sp3:.3f} | {h.mean_coordination:.2f} | {singles:.4f} | "
            f"{nearest:.1f} ({len(reference)} cells): {ref_h.sp:.3f} / {ref_h.sp2:.3f} / {ref_h.sp3:.3f}, "
            f"{ref_h.mean_coordination:.2f} | {distance:.3f} |"
        )
        print(lines[-1], flush=True)
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
