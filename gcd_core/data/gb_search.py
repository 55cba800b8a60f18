"""Grand canonical grain-boundary search (GRIP's method): random in-plane shifts of the upper grain, random
removal or insertion of atoms in the GB plane to set the GB atom density [n], an optional MD anneal at a random
temperature and length, relaxation with the bottom slab fixed and the top slab moving as one block, and the GB
energy. Samples run in parallel processes; every result is kept in a table (``gb_search.csv``) with its relaxed
structure (``structures/SEED.extxyz``), so a search can be resumed and its low-energy structures train the GB
diffusion model. The lowest E_gb per [n] is the reference a generator must reach.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import multiprocessing
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read, write

from gcd_core.data.bicrystal import SURFACE_MARGIN, bicrystal, gb_density, gb_energy, gb_system, set_gb_density
from gcd_core.errors import GCDError

TABLE_NAME = "gb_search.csv"
STRUCTURES_DIR = "structures"
COLUMNS = ("seed", "gb_system", "n", "n_atoms", "e_gb", "shift_x", "shift_y", "inserted", "temperature",
           "md_steps", "final_shift_x", "final_shift_y", "final_shift_z", "seconds", "cpu_seconds")


@dataclass(frozen=True)
class GBSearchSettings:
    """What one search samples. Temperatures are drawn uniformly in ``temperature_range`` (K; default 300 K to
    0.7 of the melting point) and MD lengths in ``md_steps_range`` for the fraction ``anneal_fraction`` of samples;
    the rest are only relaxed (GRIP mixes both: relaxation alone finds the shift-dependent minima, MD lets the GB
    plane reorder)."""

    system: str
    repeat: tuple[int, int] = (1, 1)
    thickness: float = 16.0  # of each grain (A)
    fixed_thickness: float = 4.0  # bottom slab held fixed, and top slab moving as one block (A)
    insert_fraction: float = 0.25  # samples that set [n] by inserting atoms rather than removing them
    anneal_fraction: float = 0.5
    temperature_range: tuple[float, float] | None = None
    md_steps_range: tuple[int, int] = (500, 3000)
    surface_margin: float = SURFACE_MARGIN  # atoms this close (A) to a free surface do not count in E_gb

    def __post_init__(self) -> None:
        system = gb_system(self.system)  # a clear error for an unknown system
        if self.temperature_range is None:
            object.__setattr__(self, "temperature_range", (300.0, 0.7 * system.melting_point))
        if not self.fixed_thickness <= self.surface_margin < self.thickness:
            raise GCDError(f"the E_gb region's surface margin ({self.surface_margin} A) must cover the "
                           f"{self.fixed_thickness} A boundary slabs and leave room in {self.thickness} A grains")


@dataclass
class GBSample:
    """One relaxed GB of the search and how it was made."""

    seed: int
    gb_system: str
    n: float
    n_atoms: int
    e_gb: float  # J/m^2
    shift_x: float
    shift_y: float
    inserted: bool
    temperature: float  # 0: relaxed only
    md_steps: int
    final_shift_x: float  # the upper grain's translation after MD and relaxation (A)
    final_shift_y: float
    final_shift_z: float  # away from the GB: the boundary's expansion
    seconds: float  # wall clock
    cpu_seconds: float  # this process's CPU time (LAMMPS runs in it): comparable however busy the machine is
    atoms: Atoms | None = field(default=None, repr=False)

    def row(self) -> dict[str, object]:
        values = asdict(self)
        values.pop("atoms")
        return values


def boundary_masks(atoms: Atoms, fixed_thickness: float) -> tuple[np.ndarray, np.ndarray]:
    """Atoms of the bottom slab (held fixed) and of the top slab (moving only as one block)."""
    z = atoms.positions[:, 2]
    return z < z.min() + fixed_thickness, z > z.max() - fixed_thickness


def relax_gb(atoms: Atoms, settings: GBSearchSettings) -> tuple[Atoms, float]:
    """Relax a bicrystal (bottom slab fixed, top slab a rigid block) and return it with its E_gb (J/m^2)."""
    from gcd_core.physics.eam import potential_for, relax

    potential = potential_for(gb_system(settings.system).element)
    fixed, block = boundary_masks(atoms, settings.fixed_thickness)
    result = relax(atoms, potential, fixed=fixed, rigid=block)
    relaxed = result.atoms
    relaxed.info.update(atoms.info)
    energy = gb_energy(relaxed, result.energies, potential.cohesive_energy, settings.surface_margin)
    relaxed.info["e_gb"] = energy
    return relaxed, energy


def sample_gb(settings: GBSearchSettings, seed: int) -> GBSample:
    """One sample of the search, fully determined by ``seed``."""
    from gcd_core.physics.eam import anneal, potential_for

    started, started_cpu = time.perf_counter(), time.process_time()
    rng = np.random.default_rng(seed)
    system = gb_system(settings.system)
    start = bicrystal(system, settings.repeat, settings.thickness)
    shift = rng.uniform(0, 1, 2) * start.cell.lengths()[:2] / np.asarray(settings.repeat)  # one in-plane period
    atoms = bicrystal(system, settings.repeat, settings.thickness, shift=shift)
    inserted = bool(rng.random() < settings.insert_fraction)
    per_plane = int(atoms.info["atoms_per_plane"])
    atoms = set_gb_density(atoms, rng.integers(per_plane) / per_plane, rng, insert=inserted)
    built = atoms
    temperature, md_steps = 0.0, 0
    if rng.random() < settings.anneal_fraction:
        temperature = float(rng.uniform(*settings.temperature_range))
        md_steps = int(rng.integers(settings.md_steps_range[0], settings.md_steps_range[1] + 1))
        fixed, block = boundary_masks(atoms, settings.fixed_thickness)
        info = dict(atoms.info)
        grains = atoms.get_array("grain")
        atoms = anneal(atoms, potential_for(system.element), temperature, md_steps, seed=seed % 900_000_000 + 1,
                       fixed=fixed, rigid=block)
        atoms.info.update(info)
        atoms.set_array("grain", grains)
    relaxed, energy = relax_gb(atoms, settings)
    final_shift = np.append(shift, 0.0) + block_translation(built, relaxed, settings.fixed_thickness)
    relaxed.info.update(seed=seed, shift=[float(v) for v in shift], temperature=temperature, md_steps=md_steps,
                        final_shift=[float(v) for v in final_shift])
    return GBSample(
        seed=seed, gb_system=system.key, n=round(gb_density(relaxed), 6), n_atoms=len(relaxed), e_gb=energy,
        shift_x=float(shift[0]), shift_y=float(shift[1]), inserted=inserted, temperature=round(temperature, 1),
        md_steps=md_steps, final_shift_x=float(final_shift[0]), final_shift_y=float(final_shift[1]),
        final_shift_z=float(final_shift[2]), seconds=round(time.perf_counter() - started, 3),
        cpu_seconds=round(time.process_time() - started_cpu, 3), atoms=relaxed,
    )


def block_translation(before: Atoms, after: Atoms, fixed_thickness: float) -> np.ndarray:
    """How far the top slab (one rigid block) moved between two states of the same atoms (minimum image in-plane)."""
    _, block = boundary_masks(before, fixed_thickness)
    moved = after.positions[block] - before.positions[block]
    lengths = before.cell.lengths()[:2]
    moved[:, :2] -= np.round(moved[:, :2] / lengths) * lengths
    return moved.mean(axis=0)


def _sample_quietly(settings: GBSearchSettings, seed: int) -> GBSample:
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core per worker process
    return sample_gb(settings, seed)


def run_gb_search(
    settings: GBSearchSettings,
    samples: int,
    out_dir: str | Path,
    processes: int = 1,
    first_seed: int = 0,
    progress: Callable[[GBSample], None] | None = None,
    time_budget: float | None = None,
) -> list[dict[str, object]]:
    """Sample seeds ``first_seed .. first_seed + samples - 1`` in ``processes`` worker processes, appending each
    result to ``out_dir/gb_search.csv`` and its structure to ``out_dir/structures/``; seeds already in the table
    are skipped (resume). No sample starts after ``time_budget`` seconds. Returns the whole table."""
    out = Path(out_dir)
    (out / STRUCTURES_DIR).mkdir(parents=True, exist_ok=True)
    _upgrade_table(out / TABLE_NAME)
    done = {int(row["seed"]) for row in read_gb_table(out)} if (out / TABLE_NAME).exists() else set()
    seeds = [s for s in range(first_seed, first_seed + samples) if s not in done]

    def keep(sample: GBSample) -> None:
        write(out / STRUCTURES_DIR / f"{sample.seed}.extxyz", sample.atoms, format="extxyz")
        _append_row(out / TABLE_NAME, sample.row())
        if progress is not None:
            progress(sample)

    deadline = None if time_budget is None else time.perf_counter() + time_budget
    if processes <= 1:
        for seed in seeds:
            if deadline is not None and time.perf_counter() > deadline:
                break
            keep(sample_gb(settings, seed))
    else:
        context = multiprocessing.get_context("spawn")  # LAMMPS and torch threads do not survive a fork well
        with ProcessPoolExecutor(processes, mp_context=context) as pool:
            pending = iter(seeds)
            running = {pool.submit(_sample_quietly, settings, s) for s in itertools.islice(pending, processes)}
            while running:
                finished = next(as_completed(running))
                running.remove(finished)
                keep(finished.result())
                if deadline is None or time.perf_counter() < deadline:
                    running.update(pool.submit(_sample_quietly, settings, s) for s in itertools.islice(pending, 1))
    return read_gb_table(out)


def rescore_gb_search(out_dir: str | Path, surface_margin: float = SURFACE_MARGIN) -> list[dict[str, object]]:
    """Recompute every stored sample's E_gb with today's definition (``gb_energy``) from its relaxed structure
    (single-point per-atom energies: the structures are minima already) and rewrite the table; everything else
    in a row, its CPU time included, stays. Returns the rewritten table."""
    from gcd_core.physics.eam import energies, potential_for

    out = Path(out_dir)
    _upgrade_table(out / TABLE_NAME)
    rows = read_gb_table(out)
    with (out / TABLE_NAME).open(newline="") as handle:
        raw = list(csv.DictReader(handle))
    for row, text in zip(rows, raw, strict=True):
        atoms = read_gb_structure(out, int(row["seed"]))
        potential = potential_for(gb_system(str(row["gb_system"])).element)
        energy = gb_energy(atoms, energies(atoms, potential), potential.cohesive_energy, surface_margin)
        text["e_gb"] = repr(energy)
        atoms.info["e_gb"] = energy
        write(out / STRUCTURES_DIR / f"{int(row['seed'])}.extxyz", atoms, format="extxyz")
    with (out / TABLE_NAME).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(raw)
    return read_gb_table(out)


def _upgrade_table(path: Path) -> None:
    """Rewrite a table written with fewer columns under today's header (new columns empty), so rows append."""
    if not path.exists():
        return
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) == COLUMNS:
            return
        rows = list(reader)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, restval="")
        writer.writeheader()
        writer.writerows({k: v for k, v in row.items() if k in COLUMNS} for row in rows)


def _append_row(path: Path, row: dict[str, object]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def read_gb_table(out_dir: str | Path) -> list[dict[str, object]]:
    """The search's table: one dict per sample with numbers parsed."""
    path = Path(out_dir) / TABLE_NAME
    if not path.exists():
        raise GCDError(f"{path} does not exist: run a GB search into {out_dir} first")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        if not row.get("cpu_seconds"):  # tables from before the column: wall time on an idle core
            row["cpu_seconds"] = row["seconds"]
        for key in ("n", "e_gb", "shift_x", "shift_y", "temperature", "final_shift_x", "final_shift_y",
                    "final_shift_z", "seconds", "cpu_seconds"):
            row[key] = float(row[key])
        for key in ("seed", "n_atoms", "md_steps"):
            row[key] = int(row[key])
        row["inserted"] = row["inserted"] == "True"
    return rows


def read_gb_structure(out_dir: str | Path, seed: int) -> Atoms:
    atoms = read(Path(out_dir) / STRUCTURES_DIR / f"{seed}.extxyz", format="extxyz")
    atoms.pbc = (True, True, False)
    return atoms


def low_energy_structures(out_dir: str | Path, per_n: int = 4) -> list[Atoms]:
    """The ``per_n`` lowest-E_gb relaxed structures of each [n] the search reached, lowest overall first (the
    GB diffusion model's training set)."""
    groups: dict[float, list[dict[str, object]]] = {}
    for row in read_gb_table(out_dir):
        groups.setdefault(round(float(row["n"]), 6), []).append(row)
    chosen = [r for rows in groups.values() for r in sorted(rows, key=lambda r: float(r["e_gb"]))[:per_n]]
    structures = []
    for row in sorted(chosen, key=lambda r: float(r["e_gb"])):
        atoms = read_gb_structure(out_dir, int(row["seed"]))
        atoms.info["e_gb"] = float(row["e_gb"])
        structures.append(atoms)
    return structures


def n_bin(n: float, bins: int) -> int:
    """Index of the equal [n] bin (of ``bins`` over [0, 1)) that ``n`` falls in."""
    return min(int(float(n) * bins), bins - 1)


def lowest_per_n(rows: Iterable[dict[str, object]], bins: int) -> dict[int, dict[str, object]]:
    """The lowest-E_gb row in each of ``bins`` equal [n] bins (bin index -> row); failed relaxations (E_gb not
    finite) never count, and bins with no other sample are left out."""
    best: dict[int, dict[str, object]] = {}
    for row in rows:
        if not math.isfinite(float(row["e_gb"])):
            continue
        index = n_bin(float(row["n"]), bins)
        if index not in best or float(row["e_gb"]) < float(best[index]["e_gb"]):
            best[index] = row
    return dict(sorted(best.items()))


def gb_phases(rows: Sequence[dict[str, object]], bins: int) -> list[dict[str, object]]:
    """Candidate GB phases: [n] bins whose lowest E_gb is a local minimum over the bins ([n] is periodic),
    lowest first, so the ground state comes first."""
    best = lowest_per_n(rows, bins)
    phases = []
    for index, row in best.items():
        neighbours = [best.get((index + step) % bins) for step in (-1, 1)]
        if all(n is None or float(row["e_gb"]) <= float(n["e_gb"]) for n in neighbours):
            phases.append(row)
    return sorted(phases, key=lambda r: float(r["e_gb"]))


SUMMARY_VERSION = 1


def search_summary(rows: Sequence[dict[str, object]], bins: int, system: str, command: str = "") -> dict[str, object]:
    """A search's lowest E_gb per [n] bin as plain data (what ``gcd gb-search --summary`` writes and the dashboard
    draws as the generator's reference): the system, bin count, sample count, the command, and per non-empty bin
    its [n] range, lowest E_gb (J/m^2), that sample's [n] and seed."""
    if bins <= 0:
        raise GCDError(f"bins must be positive, got {bins}")
    lowest = [
        {"n_low": index / bins, "n_high": (index + 1) / bins, "e_gb": float(row["e_gb"]), "n": float(row["n"]),
         "seed": int(row["seed"])}
        for index, row in lowest_per_n(rows, bins).items()
    ]
    return {"version": SUMMARY_VERSION, "system": system, "bins": bins, "samples": len(rows), "command": command,
            "lowest": lowest}


def read_search_summary(path: str | Path) -> dict[str, object]:
    """A summary written by :func:`search_summary` (``gcd gb-search --summary``), checked: bins inside [0, 1] in
    order, finite energies."""
    path = Path(path)
    try:
        summary = json.loads(path.read_text())
        lowest = summary["lowest"]
        edges = [(float(b["n_low"]), float(b["n_high"]), float(b["e_gb"])) for b in lowest]
        summary["system"], summary["bins"] = str(summary["system"]), int(summary["bins"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GCDError(f"{path} is not a GB search summary: {type(exc).__name__}: {exc}") from None
    ordered = all(0 <= low < high <= 1 for low, high, _ in edges) and all(
        a[1] <= b[0] + 1e-9 for a, b in itertools.pairwise(edges)
    )
    if not edges or not ordered or not all(math.isfinite(e) for _, _, e in edges):
        raise GCDError(f"{path}: the bins must be non-empty, in order within [0, 1], with finite E_gb")
    return summary
