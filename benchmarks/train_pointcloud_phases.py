"""BASELINE: train the fixed-count point-cloud baseline once per crystal phase, on the voxel model's crystals.

The voxel model trains one phase-conditional network on every phase's training cell and its 2x cell
(``gcd train --crystal sc bcc fcc hcp diamond --cell-multiples 1 2``). The baseline has no phase label and a fixed
atom count, so it gets one network per phase, trained on the same two cells, each with ``--time-budget`` seconds
of this process's CPU time (pass the voxel model's training CPU time divided by the number of phases for equal
compute; CPU time rather than wall time keeps the budget fair on a busy machine). The checkpoints go to
``OUT_DIR/<phase>/pointcloud_baseline.pt``, which ``benchmarks/crystal_success.py --baselines OUT_DIR`` reads.

    OMP_NUM_THREADS=1 python benchmarks/train_pointcloud_phases.py runs/baselines --time-budget 480

``--like CHECKPOINT`` trains each phase on that voxel model's own training cell instead of today's default
(a model trained before session 20 keeps HCP on the older 2 x 4 x 1 cell; ``crystal_success.py`` samples the baseline
on the voxel model's cells).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from gcd_core.baselines import PointCloudTrainConfig, train_pointcloud
from gcd_core.data.crystals import PHASES, conventional_cell, crystal, training_supercell


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--phases", nargs="+", default=list(PHASES), choices=sorted(PHASES))
    parser.add_argument("--cell-multiples", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--time-budget", type=float, default=480.0, help="training CPU seconds per phase")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--like", type=Path, help="a voxel crystal model whose training cells to train on")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    net_config = {"hidden": 64, "num_blocks": 4, "cutoff": 4.0, "vector_channels": 16, "frame": "cubic"}
    for phase in args.phases:
        supercell = training_supercell(phase) if args.like is None else supercell_of(args.like, phase)
        structures = [crystal(phase, tuple(n * m for n in supercell)) for m in args.cell_multiples]
        config = PointCloudTrainConfig(
            steps=1_000_000,
            batch_size=args.batch_size,
            lr=args.lr,
            time_budget_s=args.time_budget,
            budget_clock="cpu",
            seed=args.seed,
        )
        command = f"python benchmarks/train_pointcloud_phases.py {args.out_dir} --phases {phase} " + " ".join(
            f"--{k} {v}" for k, v in (("time-budget", args.time_budget), ("seed", args.seed))
        ) + (f" --like {args.like}" if args.like else "")
        model = train_pointcloud(
            structures,
            config,
            args.out_dir / phase,
            net_config=net_config,
            device="cpu",
            metadata={"phase": phase, "command": command, "cell_multiples": args.cell_multiples},
        )
        meta = model.metadata
        summary = {k: meta[k] for k in ("phase", "steps", "train_seconds", "final_loss", "train_cells", "train_atoms")}
        print(json.dumps(summary), flush=True)


def supercell_of(checkpoint: Path, phase: str) -> tuple[int, int, int]:
    """The supercell of conventional cells that makes up ``checkpoint``'s training cell of ``phase``."""
    from gcd_core.model import GCDModel

    model = GCDModel.load(checkpoint, device="cpu")
    ratio = np.asarray(model.training_cell(phase)) / conventional_cell(phase).cell.lengths()
    if not np.allclose(ratio, np.round(ratio), atol=1e-3):
        raise SystemExit(f"{checkpoint}'s {phase} cell is not a whole supercell of the conventional cell: {ratio}")
    return tuple(int(v) for v in np.round(ratio))  # type: ignore[return-value]


if __name__ == "__main__":
    main()
