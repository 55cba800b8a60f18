"""FEFF10 check of the XANES forward model: do pi* and sigma* move with sp3 fraction the same way in both?

For a-C cells across densities (by default the forward model's held-out cells, one per density) and crystalline
graphite and diamond, compares three carbon K-edge structure spectra on the model's energy grid:

- FEFF: FEFF10 full multiple scattering (``gcd_core.physics.feff``, cheap default settings) on a random sample of
  sites, averaged; crystals use every site (equivalent sites share one cached run). Energies are FEFF's omega plus
  one constant shift (``DEFAULT_ENERGY_SHIFT``: graphite's FEFF pi* peak at 285.4 eV), not calibrated per site.
- forward model: ``XanesForwardModel.spectrum`` (every site).
- dataset: the cell's own mean site spectrum (graphite and diamond: the reference files).

Per structure it reports the pi* intensity (mean unit-area intensity over PI_STAR_WINDOW) and the sigma* maximum (the
energy of the largest intensity in SIGMA_STAR_WINDOW, on the 0.4 eV grid), prints a markdown table, writes it with
the command line to ``--out`` and draws ``--figure``.

    python benchmarks/feff_trends.py --sites 6
    python benchmarks/feff_trends.py --calibrate      # recompute the graphite pi* energy shift
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.build import make_supercell
from scipy.stats import spearmanr

from gcd_core.data.amorphous import DEFAULT_ROOT, load_carbon_dataset, structure_spectrum
from gcd_core.physics.feff import GRAPHITE_PI_STAR_EV, FeffSettings, align, feff_raw_spectrum, feff_structure_spectrum
from gcd_core.physics.spectra import (
    ENERGY_GRID,
    PI_STAR_WINDOW,
    SIGMA_STAR_WINDOW,
    pi_star_intensity,
    sigma_star_maximum,
)
from gcd_core.physics.xanes import XanesForwardModel

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CELLS = ["d1.5_4", "d0.0_14", "d2.5_1", "d0.0_20", "d0.0_18"]  # held out from the forward model, 1.5-3.5 g/cm3


def orthorhombic(atoms: Atoms) -> Atoms:
    """The forward model needs x, y, z cell axes: graphite's hexagonal cell becomes its a x sqrt(3)a x c cell
    (the smallest integer combinations of the in-plane vectors that lie along x and along y)."""
    cell = np.asarray(atoms.cell)
    if np.allclose(cell, np.diag(np.diag(cell)), atol=1e-6):
        return atoms
    if not np.allclose(cell[2, :2], 0.0, atol=1e-6) or not np.allclose(cell[:2, 2], 0.0, atol=1e-6):
        raise SystemExit(f"{atoms.info.get('name')}: only the in-plane cell vectors may be oblique")
    combos = [(i, j) for i in range(-2, 3) for j in range(-2, 3) if (i, j) != (0, 0)]
    combos.sort(key=lambda c: np.linalg.norm(c[0] * cell[0] + c[1] * cell[1]))
    along_x = next(c for c in combos if abs((c[0] * cell[0] + c[1] * cell[1])[1]) < 1e-4)
    along_y = next(c for c in combos if abs((c[0] * cell[0] + c[1] * cell[1])[0]) < 1e-4)
    out = make_supercell(atoms, [[*along_x, 0], [*along_y, 0], [0, 0, 1]])
    lengths = np.abs(np.diag(np.asarray(out.cell)))
    out.set_cell(np.diag(lengths), scale_atoms=False)
    out.wrap()
    return out


def calibrate(graphite: Atoms, settings: FeffSettings, cache: Path) -> float:
    """Shift that puts graphite's FEFF pi* peak (mean of all sites, default radii) at GRAPHITE_PI_STAR_EV."""
    fine = np.arange(265.0, 300.0, 0.02)
    unshifted = replace(settings, energy_shift=0.0)
    spectra = [align(feff_raw_spectrum(graphite, i, settings, cache), unshifted, fine) for i in range(len(graphite))]
    mean = np.mean(spectra, axis=0)
    # pi* is the first peak: the maximum between the onset and 4 eV above it (sigma* starts ~8 eV higher)
    onset = fine[np.argmax(mean > 0.1 * mean.max())]
    window = (fine >= onset) & (fine <= onset + 4.0)
    peak = float(fine[window][np.argmax(mean[window])])
    shift = GRAPHITE_PI_STAR_EV - peak
    print(f"graphite FEFF pi* peak at omega = {peak:.2f} eV (onset {onset:.2f} eV); shift = {shift:.2f} eV")
    return shift


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--cells", nargs="+", default=DEFAULT_CELLS, help="a-C cell names from the train folder")
    parser.add_argument("--sites", type=int, default=6, help="FEFF sites sampled per a-C cell")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-crystals", action="store_true", help="leave out graphite and diamond")
    parser.add_argument("--model", type=Path, default=ROOT / "assets" / "xanes_forward.pt")
    parser.add_argument("--cache", type=Path, default=ROOT / "runs" / "feff_cache")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "feff_trends.md")
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "feff_trends.png")
    parser.add_argument("--calibrate", action="store_true", help="only compute the graphite energy shift")
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = FeffSettings()
    reference = {a.info["name"]: a for a in load_carbon_dataset(args.data, subset="reference")}
    if args.calibrate:
        calibrate(reference["graphite"], settings, args.cache)
        return

    cells = {a.info["name"]: a for a in load_carbon_dataset(args.data)}
    missing = [name for name in args.cells if name not in cells]
    if missing:
        raise SystemExit(f"no such cells: {', '.join(missing)}")
    model = XanesForwardModel.load(args.model, device="cpu")
    held_out = set(getattr(model, "metadata", {}).get("held_out_cells", []))
    structures = [cells[name] for name in args.cells]
    if not args.no_crystals:
        structures += [reference["graphite"], reference["diamond"]]

    rows, spectra = [], {}
    cached_before = len(list(args.cache.glob("*.npy"))) if args.cache.is_dir() else 0
    started = time.perf_counter()
    for atoms in structures:
        name = atoms.info["name"]
        crystal = name in reference
        tic = time.perf_counter()
        # crystals: every site (equivalent sites have identical input text, so FEFF runs once per kind of site)
        sites = list(range(len(atoms))) if crystal else args.sites
        feff_mean, per_site, indices = feff_structure_spectrum(atoms, sites, settings, args.cache, seed=args.seed)
        seconds = time.perf_counter() - tic
        model_spectrum = model.spectrum(orthorhombic(atoms))
        data_spectrum = structure_spectrum(atoms)
        spectra[name] = {"FEFF": feff_mean, "forward model": model_spectrum, "dataset": data_spectrum}
        role = "crystal (not trained on)" if crystal else ("held out" if name in held_out else "trained on")
        row = {"name": name, "sp3": float(atoms.info["sp3"]), "density": float(atoms.info["density"]), "role": role}
        row["sites"] = "all" if crystal else str(len(indices))
        # sampling error of FEFF's pi*: standard error of the site values (crystals: every site, so none)
        site_pi = [pi_star_intensity(spectrum) for spectrum in per_site]
        row["pi FEFF error"] = 0.0 if crystal else float(np.std(site_pi, ddof=1) / np.sqrt(len(site_pi)))
        for source, spectrum in spectra[name].items():
            row[f"pi {source}"] = pi_star_intensity(spectrum)
            row[f"sigma {source}"] = sigma_star_maximum(spectrum)
        rows.append(row)
        print(f"{name}: sp3 {row['sp3']:.3f}, FEFF over {row['sites']} sites in {seconds:.0f} s", flush=True)
    total = time.perf_counter() - started
    new_runs = len(list(args.cache.glob("*.npy"))) - cached_before

    sources = ("FEFF", "forward model", "dataset")
    lines = [
        f"`{' '.join(['python'] + sys.argv)}` ({_dt.date.today().isoformat()}, FEFF10 via feff10-rs, nice 19, "
        f"1 thread on a shared 2-core CPU; {total:.0f} s for {new_runs} new FEFF runs, the rest from the cache)",
        "",
        f"FEFF settings: {settings}. FEFF energies are FEFF's omega + {settings.energy_shift} eV (one constant: "
        f"graphite's FEFF pi* peak at {GRAPHITE_PI_STAR_EV} eV), then a {settings.broadening} eV Gaussian.",
        f"pi* = mean unit-area intensity over {PI_STAR_WINDOW[0]}-{PI_STAR_WINDOW[1]} eV (x 1000); "
        f"sigma* max = energy of the largest intensity over {SIGMA_STAR_WINDOW[0]}-{SIGMA_STAR_WINDOW[1]} eV "
        "(0.4 eV grid); "
        "± is the standard error over the sampled FEFF sites.",
        "",
        "| structure | density (g/cm3) | sp3 | forward model | FEFF sites | "
        + " | ".join(f"pi* {s}" for s in sources)
        + " | "
        + " | ".join(f"sigma* max {s} (eV)" for s in sources)
        + " |",
        "|---|---|---|---|---|" + "---|" * 6,
    ]
    for row in rows:
        lines.append(
            f"| {row['name']} | {row['density']:.2f} | {row['sp3']:.3f} | {row['role']} | {row['sites']} | "
            + f"{1000 * row['pi FEFF']:.1f} ± {1000 * row['pi FEFF error']:.1f} | "
            + " | ".join(f"{1000 * row[f'pi {s}']:.1f}" for s in sources[1:])
            + " | "
            + " | ".join(f"{row[f'sigma {s}']:.1f}" for s in sources)
            + " |"
        )
    lines += ["", "Spearman rank correlation with sp3 over the a-C cells (crystals included in brackets):", ""]
    amorphous = [r for r in rows if not r["role"].startswith("crystal")]
    for source in sources:
        parts = []
        for quantity in ("pi", "sigma"):
            rho = spearmanr([r["sp3"] for r in amorphous], [r[f"{quantity} {source}"] for r in amorphous])[0]
            rho_all = spearmanr([r["sp3"] for r in rows], [r[f"{quantity} {source}"] for r in rows])[0]
            parts.append(f"{'pi*' if quantity == 'pi' else 'sigma* max'} {rho:+.2f} ({rho_all:+.2f})")
        lines.append(f"- {source}: " + ", ".join(parts))
    table = "\n".join(lines) + "\n"
    print("\n" + table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
    draw(rows, spectra, args.figure)
    print(f"wrote {args.out} and {args.figure}")


def draw(rows: list[dict], spectra: dict[str, dict[str, np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {"FEFF": ("C3", "o", "-"), "forward model": ("C0", "s", "--"), "dataset": ("0.4", "^", ":")}
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.8), gridspec_kw={"width_ratios": [1, 1, 1.3]})
    sp3 = np.array([r["sp3"] for r in rows])
    order = np.argsort(sp3, kind="stable")
    for source, (colour, marker, _) in styles.items():
        pi = np.array([1000 * r[f"pi {source}"] for r in rows])
        sigma = np.array([r[f"sigma {source}"] for r in rows])
        axes[0].plot(sp3[order], pi[order], marker=marker, color=colour, label=source)
        axes[1].plot(sp3[order], sigma[order], marker=marker, color=colour, label=source)
    axes[0].set(xlabel="sp3 fraction", ylabel=f"pi* intensity, {PI_STAR_WINDOW[0]}-{PI_STAR_WINDOW[1]} eV (x1000)")
    axes[1].set(xlabel="sp3 fraction", ylabel=f"sigma* maximum, {SIGMA_STAR_WINDOW[0]}-{SIGMA_STAR_WINDOW[1]} eV (eV)")
    axes[0].set_title("pi* intensity")
    axes[1].set_title("sigma* maximum position")
    axes[0].legend()
    step = 0.06
    for offset, index in enumerate(order):
        name = rows[index]["name"]
        for source, (colour, _, line) in styles.items():
            axes[2].plot(ENERGY_GRID, spectra[name][source] + offset * step, line, color=colour, lw=1.2)
        axes[2].text(314, offset * step + 0.012, f"{name} (sp3 {sp3[index]:.2f})", ha="right", fontsize=8)
    axes[2].axvspan(*PI_STAR_WINDOW, color="C1", alpha=0.15)
    axes[2].set(xlabel="energy (eV; FEFF: omega + constant shift)", ylabel="unit-area intensity (offset)")
    axes[2].set_title("spectra: FEFF solid, forward model dashed, dataset dotted")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
