"""Where do generated amorphous carbons' extra two-bonded (sp) atoms come from? Compare structures with real cells.

For each structure (generated files, and the a-C cells named with ``--cells``): density, sp / sp2 / sp3, the local
density fluctuation (the spread of atom counts within ``--radius`` of points on a 1 A grid, as std / mean: a box
made of denser and sparser patches scores high), the bond lengths' mean and spread (the RDF's first peak, which
dominates an RDF distance) and where each atom's third-nearest neighbour sits (a histogram over distance bins): a
three-bonded carbon has it within the 1.85 A bond cutoff, a two-bonded one beyond.

    python benchmarks/carbon_bonding.py runs/a-C/*.extxyz --cells d2.0_1 d0.0_14 d0.0_15 d1.5_1
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read
from ase.neighborlist import neighbor_list

from gcd_core.physics import bond_lengths, hybridisation, mass_density

THIRD_NEIGHBOUR_BINS = (0.0, 1.75, 1.85, 2.05, 2.2, 2.4, 3.0)  # A


def local_fluctuation(atoms: Atoms, radius: float, spacing: float = 1.0) -> float:
    """std / mean of the atom count within ``radius`` of the points of a ``spacing`` grid over the periodic cell."""
    lengths = atoms.cell.lengths()
    axes = [np.arange(0.0, length, spacing) for length in lengths]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    offsets = points[:, None, :] - atoms.get_positions(wrap=True)[None, :, :]
    offsets -= np.round(offsets / lengths) * lengths  # minimum image (orthorhombic cells)
    counts = (np.linalg.norm(offsets, axis=-1) < radius).sum(axis=1)
    return float(counts.std() / counts.mean())


def third_neighbour_histogram(atoms: Atoms) -> np.ndarray:
    """How many atoms have their third-nearest neighbour in each of THIRD_NEIGHBOUR_BINS (beyond 3 A: the last)."""
    centres, distances = neighbor_list("id", atoms, THIRD_NEIGHBOUR_BINS[-1])
    third = np.full(len(atoms), np.inf)
    for index in range(len(atoms)):
        mine = np.sort(distances[centres == index])
        if len(mine) >= 3:
            third[index] = mine[2]
    counts, _ = np.histogram(np.minimum(third, THIRD_NEIGHBOUR_BINS[-1] - 1e-9), bins=THIRD_NEIGHBOUR_BINS)
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("structures", nargs="*", type=Path, help="generated structure files (any ASE format)")
    parser.add_argument("--cells", nargs="*", default=[], help="a-C cells to compare (names in --data)")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/a-C/train"))
    parser.add_argument(
        "--radius", type=float, nargs="*", default=[3.0, 4.0], help="fluctuation radii (A; none for large boxes)"
    )
    args = parser.parse_args(argv)

    named = [(f"real {name}", read(args.data / f"{name}.vasp")) for name in args.cells]
    for path in args.structures:
        named += [(f"{path.name}[{i}]", atoms) for i, atoms in enumerate(read(path, ":"))]
    bins = [f"{low:g}-{high:g}" for low, high in zip(THIRD_NEIGHBOUR_BINS, THIRD_NEIGHBOUR_BINS[1:], strict=False)]
    bins[-1] = f">{THIRD_NEIGHBOUR_BINS[-2]:g}"
    fluct = "".join(f"fluctuation R={r:g} A | " for r in args.radius)
    print(f"| structure | atoms | density | sp / sp2 / sp3 | {fluct}bond length (A): mean, sd | "
          f"third neighbour at (A): {', '.join(bins)} |")
    print("|---|---|---|---|" + "---|" * len(args.radius) + "---|---|")
    for name, atoms in named:
        bonding = hybridisation(atoms)
        values = "".join(f"{local_fluctuation(atoms, r):.3f} | " for r in args.radius)
        histogram = ", ".join(str(int(c)) for c in third_neighbour_histogram(atoms))
        lengths = bond_lengths(atoms)
        print(f"| {name} | {len(atoms)} | {mass_density(atoms):.2f} | {bonding.sp:.2f} / {bonding.sp2:.2f} / "
              f"{bonding.sp3:.2f} | {values}{lengths.mean():.3f}, {lengths.std():.3f} | {histogram} |")


if __name__ == "__main__":
    main()
