"""Data-parallel training throughput: one rank against two ranks, measured in the same run.

Usage: ``python benchmarks/ddp_throughput.py [--device cpu|cuda] [--steps 20] [--warmup 5] [--batch-size 4]
[--base-channels 16] [--supercell 3]``

Every configuration trains the same tiny model (BCC W supercell, sharp encoding, 0.79125 A voxels) with
``gcd_core.training.train`` for ``warmup + steps`` steps, launched with ``torch.distributed.run`` (gloo on CPU,
NCCL on CUDA). Throughput counts only the steps after the warm-up (from the loss log's timestamps), so process
start, DDP set-up and the final checkpoint are excluded: ``examples/s = ranks * batch * steps / seconds``
(``--batch-size`` is per rank, as in ``gcd train``).

CPU configurations: 1 rank x 1 thread, 1 rank x 2 threads, 2 ranks x 1 thread (OMP_NUM_THREADS and
``torch.set_num_threads`` per rank, so two ranks never oversubscribe two cores). The ratios printed are
2-rank / 1-rank for both 1-rank baselines. With ``--device cuda`` each rank gets its own GPU; with a single
GPU the 2-rank run is skipped. Numbers are only comparable within one run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

RESULT_TAG = "DDP_THROUGHPUT_RESULT "


def worker(args: argparse.Namespace) -> int:
    """One rank of a timed run (started by torch.distributed.run); rank 0 prints a result line."""
    import torch

    torch.set_num_threads(args.threads)
    from gcd_core.data.crystals import crystal
    from gcd_core.diffusion.schedules import schedule_from_config
    from gcd_core.model import GCDModel
    from gcd_core.nn.unet import UNet3D
    from gcd_core.representation.grid import VoxelGrid
    from gcd_core.training import TrainConfig, VoxelDataset, init_distributed, train

    context = init_distributed(args.device)
    grid = VoxelGrid(("W",), 0.79125)
    torch.manual_seed(0)
    net = UNet3D(grid.n_channels, grid.n_channels, base_channels=args.base_channels)
    model = GCDModel(net, grid, schedule_from_config("cosine"))
    dataset = VoxelDataset([crystal("bcc", args.supercell)], grid, stride=net.stride)
    total = args.warmup + args.steps
    config = TrainConfig(
        steps=total, batch_size=args.batch_size, warmup_steps=1, log_every=args.warmup, checkpoint_every=10**9
    )
    with tempfile.TemporaryDirectory() as out:
        result = train(model, dataset, config, out, resume=False, progress=False, device=args.device)
    if context.is_main:
        log = {entry["step"]: entry["seconds"] for entry in result.loss_log}
        seconds = log[total] - log[args.warmup]
        examples = context.world_size * args.batch_size * args.steps
        record = {
            "ranks": context.world_size,
            "threads": args.threads,
            "device": str(context.device),
            "seconds": seconds,
            "examples_per_s": examples / seconds,
            "s_per_step": seconds / args.steps,
            "final_loss": result.final_loss,
        }
        print(RESULT_TAG + json.dumps(record), flush=True)
    if context.world_size > 1:
        torch.distributed.destroy_process_group()
    return 0


def launch(args: argparse.Namespace, ranks: int, threads: int) -> dict:
    """Run the worker on ``ranks`` processes of ``threads`` threads each; returns rank 0's record."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
        str(Path(__file__).resolve()), "--worker", "--threads", str(threads), "--device", args.device,
        "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size),
        "--base-channels", str(args.base_channels), "--supercell", str(args.supercell),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=args.timeout)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG) :])
    raise RuntimeError(f"run with {ranks} rank(s) failed (exit {done.returncode}):\n{done.stderr[-4000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU per rank)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=4, help="per rank")
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--supercell", type=int, default=3, help="BCC W supercell (3: a 12^3 grid)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per configuration")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)

    import torch

    if args.device.startswith("cuda"):
        gpus = torch.cuda.device_count()
        if gpus == 0:
            parser.error("--device cuda asked for, but no CUDA device is available")
        configs = [(1, 1)] + ([(2, 1)] if gpus >= 2 else [])
        if gpus < 2:
            print("# one GPU only: NCCL needs a GPU per rank, so the 2-rank run is skipped")
    else:
        configs = [(1, 1), (1, 2), (2, 1)]
    print(
        f"# DDP throughput: base_channels {args.base_channels}, bcc supercell {args.supercell}, "
        f"batch {args.batch_size}/rank, {args.steps} timed steps after {args.warmup}; torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (other processes skew the numbers)"
    )
    header = f"{'ranks':>5} {'threads/rank':>12} {'device':>7} {'s/step':>8} {'examples/s':>11}"
    print(header)
    print("-" * len(header))
    results = {}
    for ranks, threads in configs:
        record = launch(args, ranks, threads)
        results[ranks, threads] = record
        print(
            f"{ranks:>5} {threads:>12} {record['device']:>7} {record['s_per_step']:>8.4f} "
            f"{record['examples_per_s']:>11.2f}",
            flush=True,
        )
    if (2, 1) in results:
        two = results[2, 1]["examples_per_s"]
        for key in ((1, 1), (1, 2)):
            if key in results:
                base = results[key]["examples_per_s"]
                print(f"ratio 2 ranks x 1 thread / 1 rank x {key[1]} thread(s): {two / base:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
