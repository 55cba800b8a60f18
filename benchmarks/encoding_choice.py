"""Sharp vs smooth occupancy on the same training budget: which encoding regenerates a crystal from noise?

Trains one small U-Net per encoding on the same crystal with the same steps and batch size (so the same
number of training examples), then samples at the training cell and at twice its edge and judges every sample
by atom count and spglib space group. Prints a markdown table (and writes it with --out).

    python benchmarks/encoding_choice.py --steps 400 --out benchmarks/results/encoding_choice.md
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from gcd_core.data import PHASES, crystal
from gcd_core.diffusion import CosineSchedule
from gcd_core.generate import GenerationRequest, generate
from gcd_core.model import GCDModel
from gcd_core.nn.unet import UNet3D
from gcd_core.physics import space_group
from gcd_core.representation import GridStretchWarning, VoxelGrid
from gcd_core.training import TrainConfig, VoxelDataset, train


def judge(structures, phase: str, multiple: int, supercell: int) -> tuple[int, float]:
    ideal = PHASES[phase].atoms_per_cell * (supercell * multiple) ** 3
    perfect = sum(len(a) == ideal and space_group(a)[0] == PHASES[phase].space_group for a in structures)
    count_error = float(np.mean([abs(len(a) - ideal) for a in structures]))
    return perfect, count_error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase", default="bcc", choices=sorted(PHASES))
    parser.add_argument("--supercell", type=int, default=2)
    parser.add_argument("--encodings", nargs="+", default=["sharp", "smooth"])
    parser.add_argument("--sharp-voxels-per-a", type=int, default=4, help="voxels per lattice constant (sharp)")
    parser.add_argument("--smooth-voxels-per-a", type=int, default=8, help="voxels per lattice constant (smooth)")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--occupied-weight", type=float, default=10.0)
    parser.add_argument("--samples", type=int, nargs=2, default=[32, 8], help="samples at 1x and 2x edge")
    parser.add_argument("--sampling-steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", GridStretchWarning)

    phase = PHASES[args.phase]
    structure = crystal(args.phase, args.supercell)
    edge = structure.cell.lengths()
    rows = []
    for encoding in args.encodings:
        per_a = args.sharp_voxels_per_a if encoding == "sharp" else args.smooth_voxels_per_a
        grid = VoxelGrid((phase.element,), phase.a / per_a, encoding=encoding)
        net = UNet3D(in_channels=grid.n_channels, out_channels=grid.n_channels, base_channels=args.base_channels)
        model = GCDModel(net, grid, CosineSchedule(), "x0")
        dataset = VoxelDataset([structure], grid, stride=net.stride)
        config = TrainConfig(
            steps=args.steps, batch_size=args.batch_size, lr=1e-3, warmup_steps=50,
            occupied_weight=args.occupied_weight, checkpoint_every=10**9,
        )
        workdir = Path(tempfile.mkdtemp(prefix=f"gcd_{encoding}_"))
        result = train(model, dataset, config, workdir, resume=False, progress=False)
        shutil.rmtree(workdir, ignore_errors=True)
        row = {
            "encoding": encoding,
            "voxel": f"{grid.voxel_size:.3f}",
            "grid": "x".join(map(str, grid.layout(edge).shape)),
            "s/step": result.seconds / result.steps_done,
            "loss": result.final_loss,
        }
        for multiple, count in zip((1, 2), args.samples, strict=True):
            request = GenerationRequest(tuple(edge * multiple), num_samples=count, steps=args.sampling_steps, seed=1)
            started = time.perf_counter()
            samples = generate(result.model, request)
            row[f"s/sample {multiple}x"] = (time.perf_counter() - started) / count
            perfect, count_error = judge(samples, args.phase, multiple, args.supercell)
            row[f"perfect {multiple}x"] = f"{perfect}/{count}"
            row[f"count err {multiple}x"] = count_error
        rows.append(row)
        print(row, flush=True)

    header = list(rows[0])
    lines = [
        f"Phase {args.phase} ({phase.element}, {args.supercell}x{args.supercell}x{args.supercell} cells), "
        f"{args.steps} steps x batch {args.batch_size}, U-Net base {args.base_channels}, x0-prediction, "
        f"occupied weight {args.occupied_weight}, DDIM {args.sampling_steps} steps, {args.threads} CPU threads",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in rows:
        cells = [f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(f"Command: `python benchmarks/encoding_choice.py {' '.join(_argv())}`\n\n{table}\n")


def _argv() -> list[str]:
    import sys

    return sys.argv[1:]


if __name__ == "__main__":
    main()
