"""Train the XANES forward model on whole a-C cells and score it on held-out cells (split by structure).

Prints the held-out site MSE and structure (mean-spectrum) MSE on unit-area spectra, beside a constant-spectrum
predictor for scale and the same figures on the shared data's own intensity scale (its rows have an area of
about 8.7 over the energy grid; the source paper's 2.2e-3 per site, split by atom, is on that scale).
With ``--out`` it saves the model trained on the training cells, with its metadata.

    python benchmarks/xanes_forward.py --epochs 3000 --out assets/xanes_forward.pt
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from pathlib import Path

import numpy as np
import torch

from gcd_core.data.amorphous import DEFAULT_ROOT, load_carbon_dataset, split_by_structure
from gcd_core.physics.spectra import ENERGY_GRID
from gcd_core.training.xanes import XanesTrainConfig, evaluate_xanes, train_xanes


def raw_area(root: Path) -> float:
    """Mean area (over the energy grid) of the shared data's unnormalised site spectra."""
    rows = np.concatenate([np.loadtxt(p, ndmin=2) for p in sorted((root / "train").glob("*.xanes.txt"))])
    return float(np.trapezoid(rows, ENERGY_GRID, axis=1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--epochs", type=int, default=3000)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="save the trained model here (and metadata beside it)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    cells = load_carbon_dataset(args.data)
    train, held = split_by_structure(cells, seed=args.seed)
    config = XanesTrainConfig(epochs=args.epochs, hidden=args.hidden, lr=args.lr, seed=args.seed)
    model, record = train_xanes(train, config, log_every=max(1, args.epochs // 5))
    scale = raw_area(args.data) ** 2
    rows = {"training cells": evaluate_xanes(model, train), "held-out cells": evaluate_xanes(model, held)}
    print(f"{len(train)} training cells, {len(held)} held out: {', '.join(a.info['name'] for a in held)}")
    print(f"training: {record['seconds']:.0f} s, {args.epochs} full-batch epochs over {record['sites']} sites\n")
    print("| cells | site MSE | structure MSE | constant: site | constant: structure | site MSE (data scale) |")
    print("|---|---|---|---|---|---|")
    for name, s in rows.items():
        print(
            f"| {name} | {s['site_mse']:.3g} | {s['structure_mse']:.3g} | {s['site_mse_constant']:.3g} | "
            f"{s['structure_mse_constant']:.3g} | {s['site_mse'] * scale:.3g} |"
        )
    if args.out:
        metadata = {
            "command": "python " + " ".join(sys.argv),
            "data": "shared/data/a-C/train (LLNL graphite demo data, MIT)",
            "training_cells": record["structures"],
            "held_out_cells": [a.info["name"] for a in held],
            "scores": rows,
            "data_scale_factor": scale,
            "steps": args.epochs,
            "final_loss": record["final_site_mse"],
            **{k: record[k] for k in ("train", "sites", "loss_curve", "seconds")},
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        model.save(args.out, metadata)
        args.out.with_suffix(".json").write_text(json.dumps(metadata, indent=2) + "\n")
        print(f"\nwrote {args.out} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
