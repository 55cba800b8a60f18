"""Encode and decode throughput (atoms/s) of both occupancy encodings, with a round-trip check.

Usage: ``python benchmarks/encode_decode.py [--device auto|cpu|cuda] [--max-atoms N] [--smooth-max-atoms N]``

Structures are BCC W supercells (``crystal("bcc", n)``, 2 n^3 atoms) of about 10^3, 10^4, 10^5 and 10^6 atoms,
each shifted by a random translation so atoms sit at arbitrary sub-voxel positions. Voxels: 0.79 A for
``sharp`` (the cell edge is not a whole number of voxels, so voxels stretch slightly), 0.4 A for ``smooth``.

Columns: encoding, atoms, grid, seconds and atoms/s for ``VoxelGrid.encode`` (atoms -> grid on the device)
and ``VoxelGrid.decode`` (grid -> ``ase.Atoms``), best of up to 5 runs within 1 s for small sizes, the round trip:
decoded atom count minus the true one, and the largest distance (A, periodic minimum image) from a decoded
atom to the nearest true atom. A working decoder shows ``0`` and an error far below the voxel edge.

The smooth encoding at 10^6 atoms needs a 600^3 double-precision grid and its neighbourhood maxima (several
GiB and minutes on CPU), so on CPU it is capped at ``--smooth-max-atoms`` (default 2e5) unless raised.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from gcd_core.data.crystals import PHASES, crystal  # noqa: E402
from gcd_core.device import resolve_device  # noqa: E402
from gcd_core.representation.grid import GridStretchWarning, VoxelGrid, cell_lengths_of  # noqa: E402

TARGETS = (10**3, 10**4, 10**5, 10**6)
VOXEL = {"sharp": 0.79, "smooth": 0.4}
CPU_SMOOTH_CAP = 200_000
MAX_REPEATS = 5  # best of up to this many runs ...
REPEAT_BUDGET_S = 1.0  # ... while they take less than this in total


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def round_trip_error(original: np.ndarray, decoded: np.ndarray, lengths: np.ndarray) -> float:
    """Largest periodic distance (A) from a decoded atom to its nearest original atom."""
    if len(decoded) == 0 or len(original) == 0:
        return float("nan")
    tree = cKDTree(np.mod(original, lengths), boxsize=lengths)
    distance, _ = tree.query(np.mod(decoded, lengths) % lengths)
    return float(distance.max())


def bench(
    grid: VoxelGrid, n_cells: int, device: torch.device, rng: np.random.Generator
) -> tuple[int, tuple[int, ...], float, float, int, float]:
    """(atoms, grid shape, encode s, decode s, count error, max position error in A) for one supercell."""
    a = PHASES["bcc"].a
    atoms = crystal("bcc", n_cells, translation=rng.uniform(0, a, 3))
    cell = cell_lengths_of(atoms)
    encode_s, decode_s = [], []
    while not encode_s or (len(encode_s) < MAX_REPEATS and sum(encode_s) + sum(decode_s) < REPEAT_BUDGET_S):
        _sync(device)
        start = time.perf_counter()
        encoded = grid.encode(atoms, device=device)
        _sync(device)
        encode_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        decoded = grid.decode(encoded, cell)[0]
        _sync(device)
        decode_s.append(time.perf_counter() - start)
        shape = tuple(encoded.shape[2:])
        del encoded
    error = round_trip_error(atoms.positions, decoded.positions, np.asarray(cell))
    return len(atoms), shape, min(encode_s), min(decode_s), len(decoded) - len(atoms), error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--max-atoms", type=float, default=1e6, help="skip sizes above this many atoms")
    parser.add_argument(
        "--smooth-max-atoms",
        type=float,
        default=None,
        help=f"cap for the smooth encoding (default: none on CUDA, {CPU_SMOOTH_CAP:.0e} on CPU)",
    )
    parser.add_argument("--encodings", nargs="+", choices=tuple(VOXEL), default=list(VOXEL))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    smooth_cap = args.smooth_max_atoms
    if smooth_cap is None:
        smooth_cap = float("inf") if device.type == "cuda" else CPU_SMOOTH_CAP
    rng = np.random.default_rng(args.seed)
    threads = f"{torch.get_num_threads()} threads"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else threads
    load = os.getloadavg()[0]
    print(f"# encode/decode throughput on {device} ({name}), torch {torch.__version__}, load average {load:.1f}")
    header = (
        f"{'encoding':<8} {'voxel':>6} {'atoms':>9} {'grid':>15} {'encode s':>9} {'atoms/s':>10} "
        f"{'decode s':>9} {'atoms/s':>10} {'d count':>7} {'max err A':>10}"
    )
    print(header)
    print("-" * len(header))
    skipped = []
    warnings.simplefilter("ignore", GridStretchWarning)
    for encoding in args.encodings:
        grid = VoxelGrid(("W",), VOXEL[encoding], encoding=encoding)
        bench(grid, 2, device, rng)  # warm-up: first calls pay for kernel selection and allocation
        for target in TARGETS:
            n_cells = round((target / 2) ** (1 / 3))
            atoms = 2 * n_cells**3
            if atoms > args.max_atoms * 1.05:
                continue
            if encoding == "smooth" and atoms > smooth_cap * 1.05:
                skipped.append(f"smooth at {atoms:,} atoms (cap {smooth_cap:,.0f}; raise --smooth-max-atoms)")
                continue
            count, shape, enc, dec, dcount, err = bench(grid, n_cells, device, rng)
            print(
                f"{encoding:<8} {VOXEL[encoding]:>6.2f} {count:>9,} {'x'.join(map(str, shape)):>15} "
                f"{enc:>9.4f} {count / enc:>10.3g} {dec:>9.4f} {count / dec:>10.3g} {dcount:>7d} "
                f"{err:>10.2e}",
                flush=True,
            )
            if device.type == "cuda":
                torch.cuda.empty_cache()
    for line in skipped:
        print(f"# skipped {line}: too slow and memory-hungry on CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
