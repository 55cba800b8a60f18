"""Time one UNet3D forward pass (one sampling step) on cubic grids of several sizes.

Usage: ``python benchmarks/unet_forward.py [--device auto|cpu|cuda] [--sizes 16 32 64] [--batch 1]
[--repeats N] [--base-channels 32] [--channels 4] [--bf16]``

Columns: grid side, parameter count, median seconds per forward (torch.inference_mode, after warm-up),
voxels per second (batch * side**3 / seconds) and peak extra memory per step, in MiB:

* CUDA: ``torch.cuda.max_memory_allocated`` during the timed steps minus the memory allocated before them
  (weights and input), i.e. the activations and workspace one step needs.
* CPU: the process's peak resident set size (``resource.getrusage(...).ru_maxrss``) after the steps minus
  its current RSS before them. ``ru_maxrss`` is a lifetime peak, so sizes run in ascending order; the
  number is approximate (allocator caching, thread-pool buffers) and reads 0 if a smaller earlier size
  somehow peaked higher.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from gcd_core.device import resolve_device  # noqa: E402
from gcd_core.nn.unet import UNet3D  # noqa: E402

MIB = 1024**2


def _current_rss() -> int:
    """Resident set size now, in bytes (Linux /proc; falls back to the lifetime peak elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return _peak_rss()


def _peak_rss() -> int:
    """Lifetime peak RSS in bytes (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _default_repeats(size: int, device: torch.device) -> int:
    # Large CPU grids take seconds per step; a few repeats keep the whole run near a minute.
    if device.type == "cuda":
        return 20
    return 10 if size <= 16 else 5 if size <= 32 else 2


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_size(
    net: UNet3D, size: int, batch: int, repeats: int, device: torch.device, bf16: bool
) -> tuple[float, float]:
    """Median seconds per forward and peak extra MiB for one cubic grid side."""
    x = torch.randn(batch, net.in_channels, size, size, size, device=device)
    t = torch.full((batch,), 0.5, device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda")
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base_mem = torch.cuda.memory_allocated(device)
    else:
        base_mem = _current_rss()
    times = []
    with torch.inference_mode(), autocast:
        for i in range(repeats + 1):  # the first call is warm-up (kernel selection, allocator growth)
            _sync(device)
            start = time.perf_counter()
            net(x, t)
            _sync(device)
            if i:
                times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - base_mem
    else:
        peak = max(_peak_rss() - base_mem, 0)
    return statistics.median(times), peak / MIB


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda[:N]")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=None, help="grid sides (default 16 32 64, +128 on CUDA)"
    )
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per size (default: by size)")
    parser.add_argument("--base-channels", type=int, default=32)
    parser.add_argument("--channels", type=int, default=4, help="input = output channels")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only)")
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    sizes = args.sizes or ([16, 32, 64, 128] if device.type == "cuda" else [16, 32, 64])
    torch.manual_seed(0)
    net = UNet3D(args.channels, args.channels, base_channels=args.base_channels).to(device).eval()
    n_params = sum(p.numel() for p in net.parameters())
    bad = [s for s in sizes if s % net.stride]
    if bad:
        parser.error(f"grid sizes {bad} are not multiples of the net's stride {net.stride}")

    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"UNet3D forward: device {name}{threads}, batch {args.batch}, base_channels {args.base_channels}, "
        f"channels {args.channels}, {'bf16 autocast' if args.bf16 and device.type == 'cuda' else 'float32'}"
    )
    mem_label = "peak MiB (cuda alloc)" if device.type == "cuda" else "peak MiB (RSS delta)"
    header = f"{'grid':>6} {'params':>10} {'s/forward':>11} {'voxels/s':>12} {mem_label:>22}"
    print(header)
    print("-" * len(header))
    for size in sorted(sizes):
        repeats = args.repeats or _default_repeats(size, device)
        seconds, peak = bench_size(net, size, args.batch, repeats, device, args.bf16)
        voxels = args.batch * size**3 / seconds
        print(f"{f'{size}^3':>6} {n_params:>10,} {seconds:>11.4f} {voxels:>12.3e} {peak:>22.1f}", flush=True)


if __name__ == "__main__":
    main()
