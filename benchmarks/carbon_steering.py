"""Spectrum-steered amorphous carbon: does the structure (and its density) follow the target spectrum?

For the mean spectrum of each held-out a-C cell (whole cells held out by ``split_by_structure``), generate
samples in one fixed box, so the atom count, and with it the density, is the model's choice, and report per
guidance setting: the forward model's spectral error against the target (relative L2), the density and the sp3
fraction beside the target's, and the share of singly coordinated carbons. Settings are classifier-free
guidance scales (``--cfg``; 0 is the unconditional model), gradient guidance through the forward model on
the voxel grid (``--gradient``), gradient guidance toward the sp3 fraction the target's pi* peak indicates
(``--sp3``; ``gcd_core.physics.spectra.estimated_sp3``) and toward the sp / sp2 / sp3 fractions it indicates
(``--bonding``; ``estimated_bonding``), alone and combined. Each row also gives the samples' density range and
lowest sp3 (a goal may be per sample), their pooled sp / sp2 / sp3 fractions and share of over-bonded (five or
more bonds) carbons, and their RDF distance from the training cells of the target's density. Also prints unguided
statistics against all training cells (RDF distance, coordination fractions). With ``--polish REFINER`` every row
is given twice: as decoded, and with positions polished by the atom-space refiner (``gcd_core.polish``).

    python benchmarks/carbon_steering.py assets/carbon_xanes.pt --samples 8 --cfg 0 1 3 --gradient 0 30 \
        --device cuda
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from gcd_core.data.amorphous import DEFAULT_ROOT, load_carbon_dataset, split_by_structure, structure_spectrum
from gcd_core.generate import PRUNE_WINDOW, GenerationRequest, generate
from gcd_core.guidance import spectral_error, steering
from gcd_core.model import GCDModel
from gcd_core.physics.analysis import (
    MAX_CARBON_DENSITY,
    coordination_numbers,
    hybridisation,
    mass_density,
    radial_distribution,
    rdf_distance,
)
from gcd_core.physics.spectra import conditioning_vector, estimated_sp3
from gcd_core.physics.xanes import XanesForwardModel
from gcd_core.polish import PositionRefiner, polish
from gcd_core.representation.grid import GridStretchWarning


def plausible(structures: list) -> list:
    """Samples worth analysing; the rest (overlapping atoms, or next to none) are counted as failed."""
    return [a for a in structures if len(a) > 8 and mass_density(a) < MAX_CARBON_DENSITY]


def summarise(
    structures: list, forward: XanesForwardModel, target: np.ndarray, reference: list
) -> dict[str, float]:
    """Row figures of one setting; ``reference``: the training cells of the target's density."""
    kept = plausible(structures)
    bonding = hybridisation(kept) if kept else None
    densities = [mass_density(a) for a in kept]
    sp3 = [hybridisation(a).sp3 for a in kept]
    singles = [float(np.mean(coordination_numbers(a) == 1)) for a in kept]
    errors = spectral_error(forward, kept, target)
    return {
        "failed": len(structures) - len(kept),
        "atoms": float(np.mean([len(a) for a in kept])) if kept else float("nan"),
        "density": float(np.mean(densities)) if kept else float("nan"),
        "density_sd": float(np.std(densities)) if kept else float("nan"),
        "density_range": f"{min(densities):.2f}-{max(densities):.2f}" if kept else "-",
        "sp3": float(np.mean(sp3)) if kept else float("nan"),
        "sp3_sd": float(np.std(sp3)) if kept else float("nan"),
        "sp3_lowest": min(sp3) if kept else float("nan"),
        "over": bonding.over if kept else float("nan"),
        "sp1": float(np.mean(singles)) if kept else float("nan"),
        "bonding": f"{bonding.sp:.2f} / {bonding.sp2:.2f} / {bonding.sp3:.2f}" if kept else "-",
        "rdf": rdf_distance(radial_distribution(reference), radial_distribution(kept)) if kept else float("nan"),
        "error": float(np.mean(errors)) if kept else float("nan"),
    }


def budget_note(args: argparse.Namespace) -> str:
    note = ""
    if args.resample > 1:
        low, high = args.resample_window
        note = f", each step with t in [{low:g}, {high:g}] run {args.resample} times"
    if args.sp3_refine:
        note += (f"; with sp3 guidance each clean estimate at t <= {args.sp3_refine_below:g} also takes "
                 f"{args.sp3_refine} Adam steps of the sp3 loss")
    if args.bonding_refine:
        note += (f"; with bonding guidance each clean estimate at t <= {args.sp3_refine_below:g} also takes "
                 f"{args.bonding_refine} Adam steps of the bonding loss")
    if args.min_bonds:
        note += f"; sites with under {args.min_bonds} bonds pruned from the estimates at t in {list(PRUNE_WINDOW)}"
    return note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--xanes", type=Path, default=Path("assets/xanes_forward.pt"))
    parser.add_argument("--data", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--box", type=float, default=12.264, help="cubic box edge (A), the same for every target")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--sampler", default="ddpm")
    parser.add_argument("--resample", type=int, default=1, help="repeat each step this often (with re-noising)")
    parser.add_argument(
        "--resample-window", type=float, nargs=2, default=(0.0, 1.0), metavar=("LO", "HI"),
        help="only steps starting at noise times LO <= t <= HI repeat",
    )
    parser.add_argument("--cfg", type=float, nargs="+", default=[0.0, 1.0, 3.0], help="classifier-free scales")
    parser.add_argument("--gradient", type=float, nargs="+", default=[0.0], help="gradient-guidance scales")
    parser.add_argument("--sp3", type=float, nargs="+", default=[0.0], help="sp3-guidance scales")
    parser.add_argument(
        "--sp3-refine", type=int, default=0, metavar="N",
        help="with sp3 guidance, also N Adam steps of the sp3 loss on each clean estimate below --sp3-refine-below",
    )
    parser.add_argument("--sp3-refine-below", type=float, default=0.5, metavar="T")
    parser.add_argument("--bonding", type=float, nargs="+", default=[0.0], help="bonding-guidance scales")
    parser.add_argument(
        "--bonding-refine", type=int, default=0, metavar="N",
        help="with bonding guidance, also N Adam steps of its loss on each clean estimate below --sp3-refine-below",
    )
    parser.add_argument(
        "--settings",
        nargs="+",
        metavar="CFG:GRADIENT[:SP3[:BONDING]]",
        help="explicit (classifier-free, gradient, sp3, bonding) settings instead of every --cfg x --gradient x "
        "--sp3 x --bonding one",
    )
    parser.add_argument(
        "--min-bonds", type=int, default=0, metavar="N",
        help=f"prune sites with fewer than N bonds from clean estimates at noise times {PRUNE_WINDOW} (0: off)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="CPU threads")
    parser.add_argument(
        "--all-targets", action="store_true", help="every held-out cell (default: one per density)"
    )
    parser.add_argument("--targets", nargs="+", metavar="NAME", help="only these held-out cells")
    parser.add_argument(
        "--polish", type=Path, metavar="REFINER",
        help="also give each row polished by this atom-space position refiner (assets/carbon_polish.pt)",
    )
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args()
    warnings.simplefilter("ignore", GridStretchWarning)
    if args.threads:
        torch.set_num_threads(args.threads)

    model = GCDModel.load(args.checkpoint, device=args.device)
    refiner = PositionRefiner.load(args.polish, device=args.device) if args.polish else None
    forward = XanesForwardModel.load(args.xanes, device=args.device)
    forward.eval()
    train, held_out = split_by_structure(load_carbon_dataset(args.data))
    if args.targets:
        held_out = [a for a in held_out if a.info["name"] in args.targets]
    elif not args.all_targets:  # the first held-out cell of each density
        held_out = list({round(a.info["density"], 1): a for a in reversed(held_out)}.values())
    cell = (args.box,) * 3
    settings = list(itertools.product(args.cfg, args.gradient, args.sp3, args.bonding))
    if args.settings:
        settings = [(*(float(v) for v in text.split(":")), 0.0, 0.0)[:4] for text in args.settings]
    lines = [
        f"Model {args.checkpoint}; box {args.box} A (atom count free); {args.samples} samples per row; "
        f"{args.sampler.upper()} {args.steps} steps{budget_note(args)}; seed {args.seed}; device {args.device}",
        "",
        "| target | target density | target sp3 (from pi*) | cfg | gradient | sp3 gradient | bonding gradient | atoms "
        "| density (range) | sp3 (lowest) | sp / sp2 / sp3 (target's) | over-bonded share | RDF distance | sp1 share "
        "| spectral error | failed | s/sample |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    unguided: list = []
    started = time.perf_counter()
    for target_atoms in sorted(held_out, key=lambda a: a.info["density"]):
        target = structure_spectrum(target_atoms)
        goal_sp3 = estimated_sp3(target)
        goal = hybridisation(target_atoms)
        reference = [a for a in train if round(a.info["density"], 1) == round(target_atoms.info["density"], 1)]
        for cfg, gradient, sp3_scale, bonding_scale in settings:
            unguided_setting = cfg == 0 and gradient == 0 and sp3_scale == 0 and bonding_scale == 0
            if unguided_setting and unguided:
                structures, seconds = unguided  # the unconditional model ignores the target: sample it once
            else:
                request = GenerationRequest(
                    cell, num_samples=args.samples, steps=args.steps, sampler=args.sampler, seed=args.seed,
                    resample=args.resample, resample_window=tuple(args.resample_window), min_bonds=args.min_bonds,
                    vector=conditioning_vector(target) if cfg > 0 else None, guidance_scale=max(cfg, 1.0),
                    fit_to_stride=True,
                )
                steer = steering(
                    model.grid, cell, target, forward, spectrum_scale=gradient, sp3_scale=sp3_scale,
                    sp3_refine=args.sp3_refine if sp3_scale > 0 else 0, target_sp3=goal_sp3,
                    refine_below=args.sp3_refine_below, bonding_scale=bonding_scale,
                    bonding_refine=args.bonding_refine if bonding_scale > 0 else 0,
                )
                began = time.perf_counter()
                structures = generate(model, request, gradient_guidance=steer.gradient_guidance,
                                      gradient_scale=steer.gradient_scale, projection=steer.projection)
                seconds = (time.perf_counter() - began) / args.samples
                if unguided_setting:
                    unguided = [structures, seconds]
            versions = [("", structures)]
            if refiner is not None:
                versions.append((" polished", polish(structures, refiner)))
            for suffix, shown in versions:
                s = summarise(shown, forward, target, reference)
                lines.append(
                    f"| {target_atoms.info['name']}{suffix} | {target_atoms.info['density']:.2f} "
                    f"| {target_atoms.info['sp3']:.2f} ({goal_sp3:.2f}) | {cfg:g} | {gradient:g} | {sp3_scale:g} "
                    f"| {bonding_scale:g} | {s['atoms']:.0f} "
                    f"| {s['density']:.2f} ± {s['density_sd']:.2f} ({s['density_range']}) "
                    f"| {s['sp3']:.2f} ± {s['sp3_sd']:.2f} ({s['sp3_lowest']:.3f}) "
                    f"| {s['bonding']} ({goal.sp:.2f} / {goal.sp2:.2f} / {goal.sp3:.2f}) | {s['over']:.3f} "
                    f"| {s['rdf']:.3f} "
                    f"| {s['sp1']:.3f} | {s['error']:.3f} | {s['failed']} "
                    f"| {seconds:.2f} |"
                )
                print(lines[-1], file=sys.stderr, flush=True)
    unguided_versions = [("", unguided[0])] if unguided else []
    if unguided and refiner is not None:
        unguided_versions.append((", polished", polish(unguided[0], refiner)))
    for suffix, shown in unguided_versions:
        sampled = plausible(shown)
        if not sampled:
            continue
        train_rdf = radial_distribution(train)
        sample_rdf = radial_distribution(sampled)
        ref_h, gen_h = hybridisation(train), hybridisation(sampled)
        ref_single = np.concatenate([coordination_numbers(a) == 1 for a in train])
        gen_single = np.concatenate([coordination_numbers(a) == 1 for a in sampled])
        lines += [
            "",
            f"Unguided (cfg 0){suffix} vs the {len(train)} training cells: "
            f"RDF distance {rdf_distance(train_rdf, sample_rdf):.3f}; "
            f"sp/sp2/sp3 {gen_h.sp:.3f}/{gen_h.sp2:.3f}/{gen_h.sp3:.3f} "
            f"vs {ref_h.sp:.3f}/{ref_h.sp2:.3f}/{ref_h.sp3:.3f}; "
            f"mean coordination {gen_h.mean_coordination:.3f} vs {ref_h.mean_coordination:.3f}; "
            f"singly coordinated {gen_single.mean():.4f} ({gen_single.sum()} of {gen_single.size}) vs "
            f"{ref_single.mean():.4f} ({ref_single.sum()} of {ref_single.size})",
        ]
    lines.append(f"\nWall time {time.perf_counter() - started:.0f} s")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
