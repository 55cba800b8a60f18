"""How far back the GB model gives a relaxed boundary: partial diffusion of GB search structures.

Each structure's GB slab is noised to time t (1 is pure noise) and in-painted back between its own grains
(``gcd_core.grain_boundaries.refine_relaxed_gbs``; ``--impose``: at the structure's own [n], else the atom count
free), pasted back, relaxed and scored. A model that gives a boundary back from t but makes something else from a
larger t sets how far a variation may go (``REFINE_START_TIME``); children below their parent are the point of
``gcd gb-generate --refine``.

    python benchmarks/gb_restoration.py assets/gb_sigma5.pt runs/gb_w --seeds 329 41 --times 0.2 0.3 0.4 0.6 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from gcd_core.data.gb_search import read_gb_structure, read_gb_table
from gcd_core.grain_boundaries import GBRequest, refine_relaxed_gbs
from gcd_core.model import GCDModel


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("search", type=Path, help="a gcd gb-search folder")
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="search samples to noise and restore")
    parser.add_argument("--times", type=float, nargs="+", default=[0.2, 0.3, 0.4, 0.6, 1.0])
    parser.add_argument("--samples", type=int, default=4, help="restorations per structure and time")
    parser.add_argument("--steps", type=int, default=25, help="steps for the whole way from t = 1")
    parser.add_argument("--impose", action="store_true", help="keep each structure's own [n]")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = GCDModel.load(args.model, device="cpu")
    rows = {int(row["seed"]): row for row in read_gb_table(args.search)}
    print(f"`python benchmarks/gb_restoration.py {args.model} {args.search} --seeds {' '.join(map(str, args.seeds))} "
          f"--times {' '.join(map(str, args.times))} --samples {args.samples} --steps {args.steps}"
          f"{' --impose' if args.impose else ''}`\n")
    print("| search sample | its [n] | its E_gb (J/m^2) | t | restored E_gb (J/m^2) | restored [n] |")
    print("|---|---|---|---|---|---|")
    for seed in args.seeds:
        if seed not in rows:
            parser.error(f"the search holds no sample {seed}")
        parent = read_gb_structure(args.search, seed)
        parent.info["sample"] = seed
        row = rows[seed]
        for time in args.times:
            request = GBRequest(str(row["gb_system"]), num_samples=args.samples, steps=args.steps, resample=1,
                                seed=0, target_n=float(row["n"]) if args.impose else None)
            children = [child for _, child in refine_relaxed_gbs(model, parent, request, time)]
            energies = " / ".join(f"{child['e_gb']:.3f}" for child in children)
            densities = " / ".join(f"{child['n']:.3f}" for child in children)
            print(f"| {seed} | {float(row['n']):.3f} | {float(row['e_gb']):.3f} | {time} | {energies} | {densities} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
