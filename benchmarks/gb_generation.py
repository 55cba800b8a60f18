"""Grain boundaries: the in-painting generator against the grand canonical search it was trained on.

One run: the generator in-paints GB slabs between the model's reference grains, every sample is relaxed with
the same EAM relaxation as the search (bottom slab fixed, top slab a rigid block) and scored by E_gb. Prints, per
[n] bin, the search's lowest E_gb and the generator's, whether the generator comes within ``--tolerance`` J/m^2,
and the CPU time each needed to first get there (the search: its samples' CPU seconds summed in seed order, as one
process ran them; the generator: sampling plus relaxation, also summed in order). Writes a Markdown table and a
PNG of E_gb against [n] for both.

    python benchmarks/gb_generation.py assets/gb_sigma5.pt runs/gb_w --rounds 1 --spread --refine 10 --batch 4 \
        --steps 25 --resample 1 --bins 10 --out benchmarks/results/gb_w_sigma5_refine.md \
        --plot docs/gb_w_sigma5_refine.png

``--rounds R`` gives every sample a target [n] (R rounds over the bins; a bin's batch aims at one of the [n] values
the bin holds, the next value in the next round), imposed on the generated slab's atom count
(``--condition-only``: only conditioned on, for models trained with it); ``--samples N`` leaves [n] to the model.
``--refine K`` then takes K more rounds over the bins in which the lowest-E_gb GB of each of the ``--parents`` [n]
values of the bin with the lowest E_gb so far gets ``--children`` variations at its own [n] (partial diffusion
from ``--refine-time``, ``gcd_core.grain_boundaries.refine_relaxed_gbs``): a search driven by the model alone.
``--hops H`` adds, in every refinement round, H variations of the lowest GB outside the bin made at the bin's own
[n] values in turn: the model inserts or removes the atoms, as the search's insertions and removals move a
boundary between [n], so a bin starts from the best boundary found anywhere, not only from its own. ``--focus F``
refines only the F bins of lowest E_gb so far. The rounds are ``gcd_core.grain_boundaries.survey_gbs``.
With ``--samples`` instead, ``--refine K`` varies the lowest GBs of all so far with their atom count free
(``evolve_gbs``, grand canonical).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch

from gcd_core.data.gb_search import gb_phases, lowest_per_n, n_bin, read_gb_table
from gcd_core.grain_boundaries import (
    IMPOSE_N_BELOW,
    REFINE_START_TIME,
    GBRequest,
    evolve_gbs,
    generate_relaxed_gbs,
    plot_gb_energies,
    survey_gbs,
)
from gcd_core.model import GCDModel


def time_to_reach(rows: list[dict], bins: int, targets: dict[int, float]) -> dict[int, float]:
    """CPU seconds (summed in order) until a sample of each bin comes within its target energy."""
    reached, spent = {}, 0.0
    for row in rows:
        spent += float(row["cpu_seconds"])
        index = n_bin(float(row["n"]), bins)
        if index in targets and index not in reached and float(row["e_gb"]) <= targets[index]:
            reached[index] = spent
    return reached


def how_generated(args: argparse.Namespace) -> str:
    """The generator's sampling plan, in words."""
    if not args.rounds:
        plan = "[n] left to the model"
        refine = f"; then {args.refine} rounds of {args.children} variations of the {args.parents} lowest so far"
        return plan + (refine + ", [n] free" if args.refine else "")
    plan = f"{args.rounds} rounds of {args.batch} per bin, "
    if args.condition_only:
        return plan + "conditioned on the bin's centre [n]"
    plan += "[n] imposed, the bin's values in turn" + (" sample by sample" if args.spread else "")
    refine = (f"; then {args.refine} rounds of {args.children} variations of the lowest GB of each bin's "
              f"{args.parents} lowest [n] values")
    if args.hops:
        refine += f" and {args.hops} of the lowest GB outside the bin, at the bin's [n] values in turn"
    if args.focus:
        refine += f", each round in the {args.focus} bins of lowest E_gb so far"
    return plan + (refine if args.refine else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="GB model (gcd train --gb-search)")
    parser.add_argument("search", type=Path, help="the gcd gb-search folder of the same GB")
    parser.add_argument("--samples", type=int, default=48, help="free samples ([n] left to the model)")
    parser.add_argument("--rounds", type=int, default=0,
                        help="instead: rounds over the [n] bins, --batch samples per bin with a target [n] in it")
    parser.add_argument("--condition-only", action="store_true",
                        help="--rounds: condition on the bin's centre [n] instead of imposing [n]")
    parser.add_argument("--spread", action="store_true",
                        help="--rounds: each sample of a bin's batch aims at the bin's next [n] value (default: "
                        "the whole batch at one value per round)")
    parser.add_argument("--refine", type=int, default=0, metavar="K",
                        help="--rounds: then K rounds of variations of each bin's lowest GBs so far")
    parser.add_argument("--parents", type=int, default=2,
                        help="--refine: GBs varied per bin and round (the lowest of as many [n] values)")
    parser.add_argument("--children", type=int, default=2, help="--refine: variations per parent")
    parser.add_argument("--focus", type=int, default=0, metavar="F",
                        help="--rounds --refine: each refinement round works only on the F bins with the lowest "
                        "E_gb so far (a hunt for the ground state; default: every bin)")
    parser.add_argument("--hops", type=int, default=0, metavar="H",
                        help="--rounds --refine: also H variations per bin and round of the lowest GB outside the "
                        "bin, at the bin's [n] values in turn (cross-[n] moves)")
    parser.add_argument("--refine-time", type=float, default=REFINE_START_TIME,
                        help="--refine: noise time the parent's GB slab is taken back to")
    parser.add_argument("--rows", type=Path, help="CSV of every generated sample")
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
    if args.spread and (args.condition_only or not args.rounds):
        parser.error("--spread aims imposed --rounds samples")
    if (args.hops or args.focus) and not (args.rounds and args.refine):
        parser.error("--hops and --focus work on the [n] bins' refinement: they need --rounds and --refine")
    if args.refine and args.condition_only:
        parser.error("--refine imposes each parent's [n] (with --rounds) or leaves it free (with --samples)")
    generated = []
    if args.rounds:  # every bin gets its turn in each round, so all bins progress together
        request = GBRequest(system, num_samples=args.batch, steps=args.steps, resample=args.resample, seed=args.seed,
                            impose_n_below=None if args.condition_only else IMPOSE_N_BELOW)

        def progress_rounds(done: int, samples: int) -> None:
            print(f"  round {done}/{args.rounds + args.refine}: {samples} samples", file=sys.stderr)

        results = survey_gbs(model, request, args.bins, args.rounds, args.refine, args.parents, args.children,
                             args.hops, args.focus or None, args.spread, args.refine_time, args.batch,
                             progress_rounds)
        generated = [row for _, row in results]
    else:
        request = GBRequest(system, num_samples=args.samples, steps=args.steps, resample=args.resample,
                            seed=args.seed)

        def progress(done: int) -> None:
            print(f"  {done}/{args.refine} rounds of variations" if args.refine
                  else f"  generated and relaxed {done}/{args.samples}", file=sys.stderr)

        if args.refine:  # grand canonical: the variations' atom counts are free too
            results = evolve_gbs(model, request, args.refine, args.parents, args.children, args.refine_time,
                                 args.batch, progress)
        else:
            results = generate_relaxed_gbs(model, request, args.batch, progress)
        generated = [row for _, row in results]
    for number, row in enumerate(generated):
        row["sample"] = number
    if args.rows:
        args.rows.parent.mkdir(parents=True, exist_ok=True)
        with args.rows.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(generated[0]))
            writer.writeheader()
            writer.writerows(generated)

    best_search = lowest_per_n(search, args.bins)
    best_generated = lowest_per_n(generated, args.bins)
    targets = {i: float(r["e_gb"]) + args.tolerance for i, r in best_search.items()}
    search_time = time_to_reach(search, args.bins, targets)
    generator_time = time_to_reach(generated, args.bins, targets)
    phases = gb_phases(search, args.bins)
    phase_bins = {n_bin(float(r["n"]), args.bins) for r in phases}

    total = sum(r["cpu_seconds"] for r in generated)
    sampling = sum(r["sampling_seconds"] for r in generated)
    lines = [
        f"# {system}: generator vs grand canonical search",
        "",
        f"`python benchmarks/gb_generation.py {args.model} {args.search} "
        + (f"--rounds {args.rounds}" + (" --condition-only" if args.condition_only else "")
           + (" --spread" if args.spread else "")
           if args.rounds else f"--samples {args.samples}")
        + (f" --refine {args.refine} --parents {args.parents} --children {args.children} --refine-time "
           f"{args.refine_time}" + (f" --hops {args.hops}" if args.hops else "")
           + (f" --focus {args.focus}" if args.focus else "") if args.refine else "")
        + f" --batch {args.batch} --steps {args.steps} --resample {args.resample} --bins {args.bins}`",
        "",
        f"Search: {len(search)} samples, {sum(float(r['cpu_seconds']) for r in search):.0f} CPU s. "
        f"Generator: {len(generated)} samples ({how_generated(args)})"
        + f", {total:.0f} CPU s (sampling + relaxation, one thread; per sample "
        f"{sampling / len(generated):.1f} s sampling + {(total - sampling) / len(generated):.1f} s relaxation). "
        f"Reached: within {args.tolerance} J/m^2 of the search's lowest in the bin. GB phases: bins whose lowest "
        "E_gb is a local minimum over [n] (marked *).",
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
    if args.rounds:  # how well the target [n] holds: samples in the bin they were aimed at
        on_target = sum(n_bin(float(r["n"]), args.bins) == r["target_bin"] for r in generated)
        lines += ["", f"Target [n] ({'conditioned on' if args.condition_only else 'imposed'}): {on_target} of "
                  f"{len(generated)} samples landed in the bin they were aimed at."]
    ground = phases[0] if phases else None
    if ground is not None:
        index = n_bin(float(ground["n"]), args.bins)
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
        plot_gb_energies(search, generated, system, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
