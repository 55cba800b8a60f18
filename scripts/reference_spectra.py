"""Write the mean XANES spectra of the diamond and graphite reference cells into ``assets/spectra/``.

The dashboard offers every ``assets/spectra/*.txt`` as a preset target; the a-C examples there are mean spectra
of held-out training cells, and these two come from ``../shared/data/a-C/reference/`` (the same LLNL data set,
MIT licence, ``assets/spectra/LICENSE.graphite``), which no shipped model trained on. Same format as the a-C
files: two comment lines, then energy (eV) and intensity (unit area over the model's grid), 100 rows.

    python scripts/reference_spectra.py            # writes assets/spectra/diamond.txt and graphite.txt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from gcd_core.checkpoint import EXAMPLE_SPECTRA_DIR
from gcd_core.data.amorphous import DEFAULT_ROOT, load_carbon_dataset, structure_spectrum
from gcd_core.physics.spectra import ENERGY_GRID, normalise

REFERENCE_CELLS = ("diamond", "graphite")


def write_reference_spectra(data_root: Path = DEFAULT_ROOT, out_dir: Path = EXAMPLE_SPECTRA_DIR) -> list[Path]:
    """One two-column file per reference cell; returns the paths written."""
    cells = {atoms.info["name"]: atoms for atoms in load_carbon_dataset(data_root, subset="reference")}
    written = []
    for name in REFERENCE_CELLS:
        atoms = cells[name]
        spectrum = normalise(structure_spectrum(atoms))  # the site spectra are unit-area; so is their mean
        header = (
            f"mean site spectrum of reference cell {name}: {len(atoms)} atoms, {atoms.info['density']:.3f} g/cm3, "
            f"sp3 fraction {atoms.info['sp3']:.3f}\nenergy_eV intensity"
        )
        path = Path(out_dir) / f"{name}.txt"
        np.savetxt(path, np.column_stack([ENERGY_GRID, spectrum]), fmt=["%.4f", "%.6e"], header=header)
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_ROOT, help="the a-C folder (with reference/)")
    parser.add_argument("--out", type=Path, default=EXAMPLE_SPECTRA_DIR)
    args = parser.parse_args()
    for path in write_reference_spectra(args.data, args.out):
        print(path)


if __name__ == "__main__":
    main()
