"""How often does a crystal model regenerate a perfect crystal from noise, at its training cell and larger?

For each phase the model knows (its class labels, or the phase its metadata records) and each cell size
(multiples of that phase's training cell edge), generates samples and judges each one with
``gcd_core.physics.judge_phase``: perfect = ideal atom count, the phase's spglib space group and every atom of
the phase's type. With ``--baselines DIR`` the fixed-count point-cloud BASELINE (one checkpoint per phase,
``DIR/<phase>/pointcloud_baseline.pt``, from ``benchmarks/train_pointcloud_phases.py``) is sampled in the same
cells with the ideal atom count and judged the same way. With ``--bragg-refine N`` the voxel model is also sampled
with Bragg guidance (``gcd_core.guidance.bragg_refinement``: every clean estimate takes N Adam steps toward the
phase's strong Bragg reflections), in its own columns, and so is the baseline with ``--baselines`` (its clean
estimates, Tweedie's, take the same steps); ``--guided-only`` leaves out the unguided columns.
Jobs run in ``--workers`` processes of one torch thread each; seconds per sample are per thread.
Prints one markdown table.

    python benchmarks/crystal_success.py assets/crystal_phases.pt --baselines runs/baselines \\
        --sizes 1 2 3 --samples 50 20 --workers 2 [--bragg-refine 10]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gcd_core.data.crystals import bond_length, phase_reference
from gcd_core.generate import GenerationRequest, generate, generate_frames
from gcd_core.guidance import BRAGG_REFINE_ABOVE, bragg_refinement
from gcd_core.model import GCDModel
from gcd_core.physics import judge_phase
from gcd_core.representation import GridStretchWarning


@dataclass(frozen=True)
class Job:
    kind: str  # "voxel", "bragg" (the voxel model with Bragg guidance), "baseline", "baseline-bragg", "unconditional"
    phase: str
    label: str | None
    size: int
    cell: tuple[float, float, float]
    start: int
    count: int
    steps: int  # the voxel sampler's budget at this size
    resample: int
    resample_window: tuple[float, float]
    exclusion: float  # x the phase's bond length; 0: off


VOXEL_KINDS = ("voxel", "bragg")
BASELINE_KINDS = ("baseline", "baseline-bragg")
KIND_NAMES = {"voxel": "voxel", "bragg": "voxel + Bragg", "baseline": "baseline", "baseline-bragg": "baseline + Bragg"}


def table_kinds(args: argparse.Namespace) -> list[str]:
    """The column groups of the table, in order."""
    kinds = []
    for plain, guided, wanted in (("voxel", "bragg", True), ("baseline", "baseline-bragg", bool(args.baselines))):
        if wanted:
            kinds += ([] if args.guided_only else [plain]) + ([guided] if args.bragg_refine else [])
    return kinds


def per_size(values: list, n: int):
    """The value of a per-size option for the n-th size: the last one repeats."""
    return values[min(n, len(values) - 1)]


def sampler_budget(args: argparse.Namespace, n: int) -> tuple[int, int, tuple[float, float], float]:
    """Steps, resample, resample window and site exclusion of the voxel sampler at the n-th size."""
    return (per_size(args.steps, n), per_size(args.resample, n), (0.0, per_size(args.resample_below, n)),
            per_size(args.exclusion, n))


def model_phases(model: GCDModel) -> list[tuple[str, str | None]]:
    """(phase, label) pairs: every class of a conditional model, else the phase the metadata records."""
    if model.conditioning.labels:
        return [(label, label) for label in model.conditioning.labels]
    phase = model.metadata.get("phase") or model.metadata.get("data", {}).get("phase")
    if not phase:
        raise SystemExit("the checkpoint records no phase (metadata 'phase' or data.phase)")
    return [(phase, None)]


_MODELS: dict[str, object] = {}


def _load(key: str, loader) -> object:  # one copy per worker process
    if key not in _MODELS:
        _MODELS[key] = loader()
    return _MODELS[key]


def run_job(job: Job, args: argparse.Namespace) -> tuple[Job, list[dict], float]:
    if args.device == "cpu":
        torch.set_num_threads(1)
    warnings.simplefilter("ignore", GridStretchWarning)
    began = time.perf_counter()
    if job.kind == "unconditional":
        model = _load("voxel", lambda: GCDModel.load(args.checkpoint, device=args.device))
        structures = unconditional_samples(model, job, args)  # type: ignore[arg-type]
    elif job.kind in VOXEL_KINDS:
        model = _load("voxel", lambda: GCDModel.load(args.checkpoint, device=args.device))
        request = GenerationRequest(
            job.cell,
            num_samples=job.count,
            steps=job.steps,
            sampler=args.sampler,
            resample=job.resample,
            resample_window=job.resample_window,
            seed=args.seed + job.start,
            label=job.label,
            exclusion_distance=job.exclusion * bond_length(job.phase) if job.exclusion else None,
        )
        projection = None
        if job.kind == "bragg":
            grid = model.grid_for(job.label)  # type: ignore[attr-defined]
            projection = bragg_refinement(grid, phase_reference(job.phase, grid), job.cell, args.bragg_refine)
        structures = generate(model, request, projection=projection)  # type: ignore[arg-type]
    else:
        from gcd_core.baselines import PointCloudBaseline
        from gcd_core.data.crystals import conventional_cell, ideal_atom_count
        from gcd_core.guidance import bragg_refinement_of_positions

        path = args.baselines / job.phase / "pointcloud_baseline.pt"
        waited = time.perf_counter()
        while not path.exists() and time.perf_counter() - waited < args.wait_for_baselines:
            time.sleep(10)  # still being trained by benchmarks/train_pointcloud_phases.py
        baseline = _load(f"baseline-{job.phase}", lambda: PointCloudBaseline.load(path, device=args.device))
        structures = baseline.sample(  # type: ignore[attr-defined]
            job.cell,
            round(ideal_atom_count(job.phase, job.cell)),
            num_samples=job.count,
            steps=args.baseline_steps,
            restarts=args.baseline_restarts,
            seed=args.seed + 1000 + job.start,
            estimate_refinement=bragg_refinement_of_positions(conventional_cell(job.phase), job.cell, args.bragg_refine)
            if job.kind == "baseline-bragg" else None,
        )
    seconds = time.perf_counter() - began
    if job.kind == "unconditional":
        return job, structures, seconds  # type: ignore[return-value]  (judged per phase by the caller)
    verdicts = []
    for atoms in structures:
        v = judge_phase(atoms, job.phase)
        error = abs(v.n_atoms - round(v.ideal_atoms))  # ideal_atoms is a float off by rounding
        verdicts.append({"perfect": v.perfect, "count_error": error, "fraction": v.target_fraction})
    return job, verdicts, seconds


def unconditional_samples(model: GCDModel, job: Job, args: argparse.Namespace) -> list[list[dict]]:
    """Sample without a label on the grid every phase's training cell shares, then read each sample as each
    phase (its voxel edge and cell); per sample, the verdicts for every phase."""
    phases = model.conditioning.labels
    cell = model.training_cell(None)  # the shared 1x grid on the model's own voxels
    shape = model.grid.layout(cell, warn=False).shape
    request = GenerationRequest(
        cell, num_samples=job.count, steps=job.steps, sampler=args.sampler, resample=job.resample,
        resample_window=job.resample_window, seed=args.seed + 5000 + job.start,
    )
    last = None
    for last in generate_frames(model, request):  # noqa: B007 (only the final frame is wanted)
        pass
    per_sample: list[list[dict]] = [[] for _ in range(job.count)]
    for phase in phases:
        grid, phase_cell = model.grid_for(phase), model.training_cell(phase)
        if grid.layout(phase_cell, warn=False).shape != shape:
            continue  # this phase's training cell is another grid: it cannot be read from these samples
        for index, atoms in enumerate(grid.decode(grid.to_data_space(last.x0.float()), phase_cell)):
            per_sample[index].append({"phase": phase, "perfect": judge_phase(atoms, phase).perfect})
    return per_sample


def _run_job_star(packed: tuple[Job, argparse.Namespace]) -> tuple[Job, list[dict], float]:
    return run_job(*packed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 3], help="multiples of the training edge")
    parser.add_argument("--samples", type=int, nargs="+", default=[50, 20], help="per size; the last repeats")
    parser.add_argument("--phases", nargs="+", help="only these phases (default: all the model knows)")
    parser.add_argument("--batch", type=int, default=10, help="samples generated together (one job)")
    parser.add_argument("--sampler", choices=("ddim", "ddpm"), default="ddpm")
    for option, kind, default, text in (
        ("--steps", int, 200, "sampler steps"),
        ("--resample", int, 1, "times each step is taken, re-noising between"),
        ("--resample-below", float, 1.0, "repeat only the steps that start at noise times t <= this"),
        ("--exclusion", float, 0.0, "site exclusion below t = 0.3 (labelled samples): of two sites closer than this "
         "times the phase's bond length the fuller stays; 0: off"),
    ):
        parser.add_argument(option, type=kind, nargs="+", default=[default], help=f"{text}, per size; the last repeats")
    parser.add_argument(
        "--bragg-refine", type=int, default=0, metavar="N",
        help="also sample the voxel model with Bragg guidance, N Adam steps per clean estimate (measured: 10)",
    )
    parser.add_argument("--guided-only", action="store_true", help="with --bragg-refine: no unguided columns")
    parser.add_argument("--baselines", type=Path, help="directory of per-phase point-cloud baseline checkpoints")
    parser.add_argument("--baseline-steps", type=int, default=64, help="baseline Euler-Maruyama steps")
    parser.add_argument("--baseline-restarts", type=int, default=4, help="baseline restart rounds")
    parser.add_argument(
        "--wait-for-baselines", type=float, default=0, help="seconds to wait for a baseline checkpoint to appear"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="processes, one torch thread each")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (then one worker, batched samples)")
    parser.add_argument(
        "--unconditional", type=int, default=0, help="also this many unlabelled samples (phase-conditional models)"
    )
    args = parser.parse_args()
    if args.guided_only and not args.bragg_refine:
        parser.error("--guided-only needs --bragg-refine N")

    model = GCDModel.load(args.checkpoint, device=args.device)
    phases = [(p, label) for p, label in model_phases(model) if not args.phases or p in args.phases]
    jobs = []
    for phase, label in phases:
        base_cell = np.array(model.training_cell(label))
        for n, size in enumerate(args.sizes):
            count = per_size(args.samples, n)
            cell = tuple(float(v) for v in base_cell * size)
            budget = sampler_budget(args, n)
            for kind in table_kinds(args):
                for start in range(0, count, args.batch):
                    jobs.append(Job(kind, phase, label, size, cell, start, min(args.batch, count - start), *budget))
    if args.unconditional and model.conditioning.labels:
        for start in range(0, args.unconditional, args.batch):
            count = min(args.batch, args.unconditional - start)
            jobs.append(Job("unconditional", "any", None, 1, tuple(model.training_cell(None)), start, count,
                            *sampler_budget(args, 0)))
    # the voxel model's jobs first (baselines may still be training), each kind largest first to balance workers
    jobs.sort(key=lambda j: (j.kind in BASELINE_KINDS, -np.prod(j.cell) * j.count))
    results: dict[tuple[str, str, int], list] = {}
    started = time.perf_counter()
    if args.workers > 1:
        with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
            outputs = pool.imap_unordered(_run_job_star, [(job, args) for job in jobs])
            for job, verdicts, seconds in outputs:
                results.setdefault((job.kind, job.phase, job.size), []).append((verdicts, seconds))
                print(f"done {job} in {seconds:.1f} s", file=sys.stderr, flush=True)
    else:
        for job in jobs:
            _, verdicts, seconds = run_job(job, args)
            results.setdefault((job.kind, job.phase, job.size), []).append((verdicts, seconds))
            print(f"done {job} in {seconds:.1f} s", file=sys.stderr, flush=True)

    header = ["phase", "size", "cell (A)"]
    for kind in table_kinds(args):
        name = KIND_NAMES[kind]
        second = "mean phase fraction" if kind in BASELINE_KINDS else "mean abs. count error"
        header += [f"{name}: perfect", f"{name}: {second}", f"{name}: s/sample"]
    sampling = ", ".join(
        f"{size}x {args.sampler.upper()} {steps} steps x resample {resample}"
        + (f" below t = {window[1]:g}" if window[1] < 1 else "")
        + (f", site exclusion at {exclusion:g} x bond length" if exclusion else "")
        for size, (steps, resample, window, exclusion) in (
            (size, sampler_budget(args, n)) for n, size in enumerate(args.sizes)
        )
    )
    where = f"{args.device}, batches of {args.batch}"
    if args.device == "cpu":
        where = f"{args.workers} worker(s) x 1 thread"
    print(f"Model {args.checkpoint}: {sampling}, seed {args.seed}; {where}")
    if args.bragg_refine:
        print(f"+ Bragg: the same sampler, every clean estimate above noise time {BRAGG_REFINE_ABOVE:g} also "
              f"{args.bragg_refine} Adam steps toward the phase's strong Bragg reflections (|G| <= 4 1/A)")
    if args.baselines:
        print(
            f"Baseline {args.baselines}/<phase>: {args.baseline_steps} Euler-Maruyama steps + "
            f"{args.baseline_restarts} restarts, the ideal atom count imposed"
        )
    print(f"Wall time {time.perf_counter() - started:.0f} s\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for phase, label in phases:
        base_cell = np.array(model.training_cell(label))
        for size in args.sizes:
            row = [phase, f"{size}x", "x".join(f"{v:.2f}" for v in base_cell * size)]
            for kind in table_kinds(args):
                parts = results[(kind, phase, size)]
                verdicts = [v for chunk, _ in parts for v in chunk]
                seconds = sum(s for _, s in parts) / len(verdicts)
                perfect = sum(v["perfect"] for v in verdicts)
                row.append(f"{perfect}/{len(verdicts)} ({100 * perfect / len(verdicts):.0f} %)")
                if kind in VOXEL_KINDS:
                    row.append(f"{np.mean([v['count_error'] for v in verdicts]):.3g}")
                else:
                    row.append(f"{np.mean([v['fraction'] for v in verdicts]):.3g}")
                row.append(f"{seconds:.3g}")
            print("| " + " | ".join(row) + " |")
    unlabelled = [v for chunk, _ in results.get(("unconditional", "any", 1), []) for v in chunk]
    if unlabelled:
        found: dict[str, int] = {}
        for verdicts in unlabelled:
            perfect = [v["phase"] for v in verdicts if v["perfect"]]
            key = perfect[0] if len(perfect) == 1 else ("none" if not perfect else "+".join(perfect))
            found[key] = found.get(key, 0) + 1
        share = ", ".join(f"{k} {n}" for k, n in sorted(found.items(), key=lambda kv: -kv[1]))
        print(f"\nUnconditional (no label, guidance off), {len(unlabelled)} samples on the shared 1x grid, "
              f"read as each phase; perfect as: {share}")


if __name__ == "__main__":
    main()
