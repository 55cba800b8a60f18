"""Cost of the guidance pair search: every pair compared (dense) against ASE's neighbour list (binned).

The sp3 guidance loss and its gradient on a sharp voxel grid of random carbon sites at a given density, in cubic
boxes of the given edges, on one CPU thread by default; each row times both pair searches in the same run (dense
skipped above ``--dense-max`` sites) and prints their ratio. ``gcd_core.physics.xanes.DENSE_PAIR_LIMIT`` is the
site count above which guidance switches to the binned search.

    python benchmarks/pair_search.py --edges 12.264 24.528 49.056
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from gcd_core.guidance import sp3_guidance
from gcd_core.physics import xanes
from gcd_core.representation.grid import VoxelGrid

CARBON_SITES_PER_A3_PER_G_CM3 = 0.0502  # atoms per A^3 of carbon at 1 g/cm3


def seconds(loss, x: torch.Tensor, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        xi = x.clone().requires_grad_(True)
        began = time.perf_counter()
        loss(xi).sum().backward()
        best = min(best, time.perf_counter() - began)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edges", type=float, nargs="+", default=[12.264, 24.528, 49.056])
    parser.add_argument("--density", type=float, default=3.0, help="g/cm3 of the random sites")
    parser.add_argument("--dense-max", type=int, default=20000, help="skip the dense search above this many sites")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many timings")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    grid = VoxelGrid(("C",), 0.438)
    rng = np.random.default_rng(0)
    print(f"sp3 guidance loss + gradient, {args.density:g} g/cm3 of random sites, {args.threads} CPU thread(s)\n")
    print("| box (A) | grid | sites | dense (s) | binned (s) | dense / binned |")
    print("|---|---|---|---|---|---|")
    for edge in args.edges:
        n = grid.layout((edge,) * 3, warn=False, multiple_of=2).shape[0]
        sites = int(CARBON_SITES_PER_A3_PER_G_CM3 * args.density * edge**3)
        x = -torch.ones(1, 4, n, n, n)
        x[0, 0].view(-1)[torch.as_tensor(rng.choice(n**3, sites, replace=False))] = 1.0
        x[0, 1:] = torch.as_tensor(rng.uniform(-1, 1, (3, n, n, n)), dtype=torch.float32)
        loss = sp3_guidance(grid, 0.9, (edge,) * 3)
        limit = xanes.DENSE_PAIR_LIMIT
        try:
            xanes.DENSE_PAIR_LIMIT = 0
            binned = seconds(loss, x, args.repeats)
            dense = float("nan")
            if sites <= args.dense_max:
                xanes.DENSE_PAIR_LIMIT = 10**12
                dense = seconds(loss, x, args.repeats)
        finally:
            xanes.DENSE_PAIR_LIMIT = limit
        print(f"| {edge:g} | {n}^3 | {sites} | {dense:.2f} | {binned:.2f} | {dense / binned:.1f} |", flush=True)


if __name__ == "__main__":
    main()
