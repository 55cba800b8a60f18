"""Grain boundaries: the in-painting generator against the grand canonical search it was trained on.

One run: the generator in-paints GB slabs between the model's reference grains, every sample is relaxed with
the same EAM relaxation as the search (bottom slab fixed, top slab a rigid block) and scored by E_gb. Prints, per
[n] bin, the search's lowest E_gb and the generator's, whether the generator comes within ``--tolerance`` J/m^2,
and the CPU time each needed to first get there (the search: its samples' CPU seconds summed in seed order, as one
process ran them; the generator: sampling plus relaxation, also summed in order). Writes a Markdown table and a
PNG of E_gb against [n] for both.

    python benchmarks/gb_generation.py assets/gb_sigma5.pt runs/gb_w --samples 48 --batch 8 --steps 50 \
        --out benchmarks/results/gb_w_sigma5.md --plot docs/gb_w_sigma5.png
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from gcd_core.data.bicrystal import gb_density
from gcd_core.data.gb_search import GBSearchSettings, gb_phases, lowest_per_n, read_gb_table, relax_gb
from gcd_core.grain_boundaries import GBRequest, generate_gb
from gcd_core.model import GCDModel


def time_to_reach(rows: list[dict], bins: int, targets: dict[int, float]) -> dict[int, float]:
    """CPU seconds (summed in order) until a sample of each bin comes within its target energy."""
    reached, spent = {}, 0.0
    for row in rows:
        spent += float(row["cpu_seconds"])
        index = min(int(float(row["n"]) * bins), bins - 1)
        if index in targets and index not in reached and float(row["e_gb"]) <= targets[index]:
            reached[index] = spent
    return reached


def generate_and_relax(model: GCDModel, system: str, args: argparse.Namespace) -> list[dict]:
    """Generated GBs, relaxed and scored, with the CPU time of each (its share of its batch's sampling)."""
    settings = GBSearchSettings(system)
    rows = []
    for first in range(0, args.samples, args.batch):
        count = min(args.batch, args.samples - first)
        request = GBRequest(system, num_samples=count, steps=args.steps, resample=args.resample,
                            seed=args.seed + first, target_n=None)
        started = time.process_time()
        structures = generate_gb(model, request)
        sampling = (time.process_time() - started) / count
        for offset, atoms in enumerate(structures):
            started = time.process_time()
            relaxed, energy = relax_gb(atoms, settings)
            rows.append({"sample": first + offset, "n": gb_density(relaxed), "n_atoms": len(relaxed),
                         "e_gb": energy, "cpu_seconds": sampling + time.process_time() - started})
        print(f"  generated {first + count}/{args.samples}", file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="GB model (gcd train --gb-search)")
    parser.add_argument("search", type=Path, help="the gcd gb-search folder of the same GB")
    parser.add_argument("--samples", type=int, default=48)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--resample", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bins", type=int, default=10, help="[n] bins")
    parser.add_argument("--tolerance", type=float, default=0.02, help="J/m^2")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the search used one)")
    parser.add_argument("--out", type=Path, help="Markdown table")
    parser.add_argument("--plot", type=Path, help="PNG of E_gb against [n]")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    search = sorted(read_gb_table(args.search), key=lambda r: int(r["seed"]))
    system = str(search[0]["gb_system"])
    model = GCDModel.load(args.model, device="cpu")
    generated = generate_and_relax(model, system, args)

    best_search = lowest_per_n(search, args.bins)
    best_generated = lowest_per_n(generated, args.bins)
    targets = {i: float(r["e_gb"]) + args.tolerance for i, r in best_search.items()}
    search_time = time_to_reach(search, args.bins, targets)
    generator_time = time_to_reach(generated, args.bins, targets)
    phases = gb_phases(search, args.bins)
    phase_bins = {min(int(float(r["n"]) * args.bins), args.bins - 1) for r in phases}

    lines = [
        f"# {system}: generator vs grand canonical search",
        "",
        f"`python benchmarks/gb_generation.py {args.model} {args.search} --samples {args.samples} --batch "
        f"{args.batch} --steps {args.steps} --resample {args.resample} --bins {args.bins}`",
        "",
        f"Search: {len(search)} samples, {sum(float(r['cpu_seconds']) for r in search):.0f} CPU s. "
        f"Generator: {len(generated)} samples, {sum(r['cpu_seconds'] for r in generated):.0f} CPU s "
        f"(sampling + relaxation, one thread). Reached: within {args.tolerance} J/m^2 of the search's lowest in "
        f"the bin. GB phases: bins whose lowest E_gb is a local minimum over [n] (marked *); ground state first.",
        "",
        "| [n] bin | search lowest (J/m^2) | generator lowest | difference | reached | search CPU s to reach "
        "| generator CPU s to reach | speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for index, row in best_search.items():
        mine = best_generated.get(index)
        low = f"{index / args.bins:.2f}-{(index + 1) / args.bins:.2f}" + (" *" if index in phase_bins else "")
        s_time, g_time = search_time.get(index), generator_time.get(index)
        lowest = float(row["e_gb"])
        mine_text = "- | -" if mine is None else f"{mine['e_gb']:.3f} | {mine['e_gb'] - lowest:+.3f}"
        reach = "no | " + f"{s_time:.0f} | - | -" if g_time is None else f"yes | {s_time:.0f} | {g_time:.0f} | " \
            f"{s_time / g_time:.1f}x"
        lines.append(f"| {low} | {lowest:.3f} | {mine_text} | {reach} |")
    ground = phases[0] if phases else None
    if ground is not None:
        index = min(int(float(ground["n"]) * args.bins), args.bins - 1)
        lines += ["", f"Ground state: [n] = {float(ground['n']):.3f}, E_gb = {float(ground['e_gb']):.3f} J/m^2 "
                  f"(search seed {ground['seed']}); generator "
                  + (f"reached it in {generator_time[index]:.0f} CPU s against the search's {search_time[index]:.0f}"
                     if index in generator_time else "did not reach it")]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    if args.plot:
        plot(search, generated, system, args.plot)
    return 0


def plot(search: list[dict], generated: list[dict], system: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
    axes.scatter([r["n"] for r in search], [r["e_gb"] for r in search], s=8, alpha=0.4, label="GB search")
    axes.scatter([r["n"] for r in generated], [r["e_gb"] for r in generated], s=14, marker="x",
                 label="generator (in-painted, relaxed)")
    axes.set_xlabel("[n] (fraction of a bulk plane)")
    axes.set_ylabel("E_gb (J/m$^2$)")
    axes.set_title(system)
    low = min(float(r["e_gb"]) for r in [*search, *generated])
    axes.set_ylim(low - 0.05, low + 1.5)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)


if __name__ == "__main__":
    sys.exit(main())
