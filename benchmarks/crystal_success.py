"""How often does a crystal model regenerate a perfect crystal from noise, at its training cell and larger?

For each phase the model knows (its class labels, or the phase its metadata records) and each cell size
(multiples of the training cell edge), generates samples and judges each one with
``gcd_core.physics.judge_phase``: perfect = ideal atom count, the phase's spglib space group and every atom of
the phase's type. Prints one markdown table.

    python benchmarks/crystal_success.py assets/crystal_bcc_W.pt --sizes 1 2 --samples 50 20
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from gcd_core.generate import GenerationRequest, generate
from gcd_core.model import GCDModel
from gcd_core.physics import judge_phase
from gcd_core.representation import GridStretchWarning


def model_phases(model: GCDModel) -> list[tuple[str, str | None]]:
    """(phase, label) pairs: every class of a conditional model, else the phase the metadata records."""
    if model.conditioning.labels:
        return [(label, label) for label in model.conditioning.labels]
    phase = model.metadata.get("phase") or model.metadata.get("data", {}).get("phase")
    if not phase:
        raise SystemExit("the checkpoint records no phase (metadata 'phase' or data.phase)")
    return [(phase, None)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 3], help="multiples of the training edge")
    parser.add_argument("--samples", type=int, nargs="+", default=[50, 20], help="per size; the last repeats")
    parser.add_argument("--batch", type=int, default=16, help="samples generated together")
    parser.add_argument("--steps", type=int, default=200, help="sampler steps")
    parser.add_argument("--sampler", choices=("ddim", "ddpm"), default="ddpm")
    parser.add_argument("--resample", type=int, default=1, help="repeat each step with re-noising")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", GridStretchWarning)

    model = GCDModel.load(args.checkpoint, device=None if args.device == "auto" else args.device)
    base_cell = np.array(model.metadata["train_cells"][0])
    rows = []
    for phase, label in model_phases(model):
        for n, size in enumerate(args.sizes):
            count = args.samples[min(n, len(args.samples) - 1)]
            cell = tuple(base_cell * size)
            verdicts, seconds = [], 0.0
            for start in range(0, count, args.batch):
                request = GenerationRequest(
                    cell,
                    num_samples=min(args.batch, count - start),
                    steps=args.steps,
                    sampler=args.sampler,
                    resample=args.resample,
                    seed=args.seed + start,
                    label=label,
                )
                began = time.perf_counter()
                structures = generate(model, request)
                seconds += time.perf_counter() - began
                verdicts += [judge_phase(a, phase) for a in structures]
            perfect = sum(v.perfect for v in verdicts)
            rows.append(
                {
                    "phase": phase,
                    "size": f"{size}x",
                    "cell (A)": "x".join(f"{v:.2f}" for v in cell),
                    "perfect": f"{perfect}/{count} ({100 * perfect / count:.0f} %)",
                    "mean |count error|": np.mean([abs(v.n_atoms - v.ideal_atoms) for v in verdicts]),
                    "mean phase fraction": np.mean([v.target_fraction for v in verdicts]),
                    "s/sample": seconds / count,
                }
            )
            print(rows[-1], file=sys.stderr, flush=True)
    header = list(rows[0])
    sampling = f"{args.sampler.upper()} {args.steps} steps x resample {args.resample}"
    print(f"Model {args.checkpoint} ({model.device}), {sampling}, seed {args.seed}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()) + " |")


if __name__ == "__main__":
    main()
