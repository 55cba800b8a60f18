"""Atom-space polish for amorphous carbon: train the position refiner, and measure what it does to structures.

Training (on the training split of the a-C cells, whole cells held out as everywhere else) writes the checkpoint
and a JSON file beside it with the command, data, steps, loss curve and date:

    python benchmarks/carbon_polish.py --train 12000 --out assets/carbon_polish.pt

Evaluation prints (1) how well the refiner denoises held-out real cells (RMS displacement from the clean positions
before and after one step, per noise level; and a held-out cell noised at 0.05 A then polished: its bond-length
spread and RDF distance from the clean cell), and (2) for each file of generated structures, rows as generated and
polished (each ``--noise``/``--steps`` pair): density, sp / sp2 / sp3, mean coordination, singly bonded share, bond
length mean and spread, and the RDF distance from the training cells of the nearest density, beside the held-out
real cells' distance from those same cells:

    python benchmarks/carbon_polish.py --refiner assets/carbon_polish.pt runs/a-C/*.extxyz
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import ase.io
import numpy as np
import torch

from gcd_core.data.amorphous import DEFAULT_ROOT, load_carbon_dataset, split_by_structure
from gcd_core.physics.analysis import (
    bond_lengths,
    coordination_numbers,
    hybridisation,
    mass_density,
    radial_distribution,
    rdf_distance,
)
from gcd_core.polish import POLISH_NOISE, POLISH_STEPS, PositionRefiner, polish
from gcd_core.training.polish import RefinerTrainConfig, denoising_error, train_refiner


def nearest_density_cells(structures: list, cells: list) -> tuple[float, list]:
    """The density (g/cm3, to 0.1) of ``cells`` nearest the structures' mean density, and those cells."""
    density = float(np.mean([mass_density(a) for a in structures]))
    nearest = min({round(a.info["density"], 1) for a in cells}, key=lambda d: abs(d - density))
    return nearest, [a for a in cells if round(a.info["density"], 1) == nearest]


def row(label: str, structures: list, train: list, held_out: list) -> str:
    bonds = bond_lengths(structures)
    h = hybridisation(structures)
    singles = sum(int((coordination_numbers(a) == 1).sum()) for a in structures) / sum(len(a) for a in structures)
    nearest, reference = nearest_density_cells(structures, train)
    reference_rdf = radial_distribution(reference)
    real = [a for a in held_out if round(a.info["density"], 1) == nearest]
    real_distances = ", ".join(f"{rdf_distance(reference_rdf, radial_distribution(a)):.3f}" for a in real) or "-"
    density = np.mean([mass_density(a) for a in structures])
    return (
        f"| {label} | {sum(len(a) for a in structures)} | {density:.2f} | {h.sp:.3f} / {h.sp2:.3f} / {h.sp3:.3f} | "
        f"{h.mean_coordination:.2f} | {singles:.4f} | {bonds.mean():.3f}, {bonds.std():.3f} | "
        f"{rdf_distance(reference_rdf, radial_distribution(structures)):.3f} ({nearest:g}) | {real_distances} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("structures", nargs="*", type=Path, help="files of generated structures (any ASE format)")
    parser.add_argument("--train", type=int, metavar="STEPS", help="train a refiner for STEPS steps (with --out)")
    parser.add_argument("--out", type=Path, help="where --train writes the refiner")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--refiner", type=Path, help="the refiner to evaluate (default: the one --train makes)")
    parser.add_argument("--noise", type=float, nargs="+", default=[POLISH_NOISE], help="starting noise levels (A)")
    parser.add_argument("--steps", type=int, nargs="+", default=[POLISH_STEPS], help="steps, one per --noise")
    parser.add_argument("--data", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if len(args.steps) != len(args.noise):
        raise SystemExit("give one --steps per --noise")
    train, held_out = split_by_structure(load_carbon_dataset(args.data))

    if args.train:
        if args.out is None:
            raise SystemExit("--train needs --out")
        config = RefinerTrainConfig(steps=args.train, seed=args.seed)
        refiner, record = train_refiner(train, config, log_every=500)
        record.update({
            "command": "python " + " ".join(sys.argv),
            "data": f"{'shared/data/a-C' if args.data.resolve() == DEFAULT_ROOT.resolve() else args.data}/train "
                    "(LLNL graphite demo data, MIT): the training side of split_by_structure (whole cells held out)",
            "training_cells": sorted(a.info["name"] for a in train),
            "held_out_cells": sorted(a.info["name"] for a in held_out),
            "held_out_denoising": denoising_error(refiner, held_out),
            "date": datetime.date.today().isoformat(),
        })
        refiner.save(args.out, record)
        args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.out}: {record['steps']} steps in {record['seconds']} s, final loss "
              f"{record['final_loss']:.4f}")
    path = args.refiner or args.out
    if path is None:
        raise SystemExit("give --refiner PATH (or --train with --out)")
    refiner = PositionRefiner.load(path, device="cpu")

    print(f"\nRefiner {path}; held-out cells {', '.join(sorted(a.info['name'] for a in held_out))}\n")
    print("| noise (A) | RMS displacement from clean: noisy | after one refiner step |")
    print("|---|---|---|")
    for sigma, score in denoising_error(refiner, held_out).items():
        print(f"| {sigma:g} | {score['rms_noisy']:.4f} | {score['rms_denoised']:.4f} |")
    rng = np.random.default_rng(args.seed)
    print("\n| held-out cell | bond sd: clean, noised 0.05 A, polished | RDF distance from clean: noised, polished |")
    print("|---|---|---|")
    for atoms in held_out:
        noised = atoms.copy()
        noised.positions += 0.05 * rng.standard_normal(noised.positions.shape)
        polished = polish(noised, refiner, args.noise[0], args.steps[0])[0]
        clean_rdf = radial_distribution(atoms)
        spreads = [bond_lengths(a).std() for a in (atoms, noised, polished)]
        print(f"| {atoms.info['name']} | " + ", ".join(f"{s:.3f}" for s in spreads) + " | "
              f"{rdf_distance(clean_rdf, radial_distribution(noised)):.3f}, "
              f"{rdf_distance(clean_rdf, radial_distribution(polished)):.3f} |")

    if not args.structures:
        return
    print("\n| structures | atoms | density | sp / sp2 / sp3 | mean coord. | sp1 share | bond length (A): mean, sd | "
          "RDF distance (training cells of density) | held-out real cells' RDF distance |")
    print("|---|---|---|---|---|---|---|---|---|")
    for file in args.structures:
        structures = ase.io.read(file, ":")
        print(row(f"{file} as generated", structures, train, held_out))
        for noise, steps in zip(args.noise, args.steps, strict=True):
            began = time.perf_counter()
            polished = polish(structures, refiner, noise, steps)
            seconds = (time.perf_counter() - began) / len(structures)
            print(row(f"polished from {noise:g} A, {steps} steps ({seconds:.1f} s each)", polished, train, held_out))


if __name__ == "__main__":
    main()
