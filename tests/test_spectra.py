"""Reading target spectra: resampling onto the model grid, normalisation, and a clear error for each bad file."""

import io
from pathlib import Path

import numpy as np
import pytest

from gcd_core.physics.spectra import (
    ENERGY_GRID,
    MAX_FILE_BYTES,
    SpectrumFileError,
    normalise,
    read_spectrum,
    spectrum_error,
)


def peak(energies: np.ndarray, centre: float = 290.0) -> np.ndarray:
    return np.exp(-0.5 * ((energies - centre) / 2.0) ** 2)


def write(tmp_path, text: str, name: str = "s.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_two_column_files_are_resampled_and_normalised(tmp_path):
    energies = np.linspace(270, 320, 400)
    expected = normalise(peak(ENERGY_GRID))
    rows = list(zip(energies, peak(energies), strict=True))
    for text in (
        "\n".join(f"{e},{i}" for e, i in rows),
        "# measured\nenergy intensity\n" + "\n".join(f"{e}\t{5 * i}" for e, i in rows),
    ):
        spectrum = read_spectrum(write(tmp_path, text))
        assert spectrum.shape == ENERGY_GRID.shape
        assert np.trapezoid(spectrum, ENERGY_GRID) == pytest.approx(1.0)
        assert spectrum_error(spectrum, expected) < 1e-7  # scale does not matter, only shape
    shuffled = np.random.default_rng(0).permutation(len(energies))
    text = "\n".join(f"{energies[k]} {peak(energies)[k]}" for k in shuffled)
    assert spectrum_error(read_spectrum(text.encode()), expected) < 1e-7  # unsorted rows are sorted


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,2,3\n" * 20, "expected 2 columns"),
        ("\n".join(f"{280 + i},{'nan' if i == 4 else 1}" for i in range(30)), "row 5 holds NaN"),
        ("280,1\n281,2\n282,1\n", "has 3 points; at least 10"),
        ("\n".join(f"{0.28 + i * 0.001},1" for i in range(30)), "keV"),
        ("\n".join(f"{300 + i},1" for i in range(30)), "must cover at least 60 %"),
        ("\n".join(f"{270 + i},{-1 if i == 10 else 1}" for i in range(50)), "negative intensities"),
        ("\n".join(f"{270 + i},0" for i in range(50)), "no positive intensity"),
        ("280,1\n280,2\n" + "\n".join(f"{281 + i},1" for i in range(30)), "same energy twice"),
        ("energy,intensity\nabc,def\n", "no numeric rows"),
        ("280,1\n281,x\n", "is not numbers"),
    ],
)
def test_bad_files_get_a_clear_error(tmp_path, text, message):
    with pytest.raises(SpectrumFileError, match=message):
        read_spectrum(write(tmp_path, text))


def test_size_binary_and_missing_files(tmp_path):
    with pytest.raises(SpectrumFileError, match="under 1 MB"):
        read_spectrum(write(tmp_path, "1,1\n" * (MAX_FILE_BYTES // 4 + 10)))
    with pytest.raises(SpectrumFileError, match="larger than 1 MB"):
        read_spectrum(io.BytesIO(b"1,1\n" * (MAX_FILE_BYTES // 4 + 10)))
    with pytest.raises(SpectrumFileError, match="not a text file"):
        read_spectrum(b"\xff\xfe\x00\x81" * 100, name="upload.bin")
    with pytest.raises(SpectrumFileError, match="does not exist"):
        read_spectrum(tmp_path / "missing.csv")


def test_sp3_estimate_rises_with_the_density_of_the_shipped_example_spectra():
    """The pi* reading orders the example spectra (held-out cells, 1.5 to 3.5 g/cm3) by sp3, and puts graphite
    near 0 and the 3.5 g/cm3 cell (94 % sp3) near 1."""
    from gcd_core.physics.spectra import estimated_sp3

    folder = Path(__file__).resolve().parents[1] / "assets" / "spectra"
    names = ["a-C_1.5gcc_d1.5_4", "a-C_2.0gcc_d0.0_14", "a-C_2.5gcc_d2.5_1", "a-C_3.0gcc_d0.0_20", "a-C_3.5gcc_d0.0_18"]
    estimates = [estimated_sp3(read_spectrum(folder / f"{name}.txt")) for name in names]
    assert all(a < b for a, b in zip(estimates, estimates[1:], strict=False)), estimates
    assert estimates[0] < 0.1 and estimates[-1] > 0.8
    assert estimated_sp3(read_spectrum(folder / "graphite.txt")) < 0.1


DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "a-C"


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is not beside this checkout")
def test_sp3_line_is_the_least_squares_fit_on_the_training_cells():
    from gcd_core.data.amorphous import load_carbon_dataset, split_by_structure, structure_spectrum
    from gcd_core.physics import hybridisation
    from gcd_core.physics.spectra import SP3_FROM_PI_STAR, estimated_sp3, pi_star_intensity

    train, held_out = split_by_structure(load_carbon_dataset(DATA))
    pi_star = [pi_star_intensity(normalise(structure_spectrum(a))) for a in train]
    slope, intercept = np.polyfit(pi_star, [hybridisation(a).sp3 for a in train], 1)
    assert (intercept, slope) == pytest.approx(SP3_FROM_PI_STAR, abs=1e-3)
    errors = [abs(estimated_sp3(structure_spectrum(a)) - hybridisation(a).sp3) for a in held_out]
    assert max(errors) < 0.1, errors


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is not beside this checkout")
def test_sp_along_sp3_is_the_training_cells_per_density_and_reads_held_out_cells():
    """The (sp3, sp) points are the training cells' means per density; read from a held-out cell's spectrum, the
    three fractions land within 0.1 of the cell's own (sp3 from the pi* line, sp along the points)."""
    from gcd_core.data.amorphous import load_carbon_dataset, split_by_structure, structure_spectrum
    from gcd_core.physics import hybridisation
    from gcd_core.physics.spectra import SP_ALONG_SP3, estimated_bonding

    train, held_out = split_by_structure(load_carbon_dataset(DATA))
    densities = sorted({round(a.info["density"], 1) for a in train})
    means = [hybridisation([a for a in train if round(a.info["density"], 1) == d]) for d in densities]
    assert np.array(SP_ALONG_SP3) == pytest.approx(np.array([(h.sp3, h.sp) for h in means]), abs=1e-3)
    for cell in held_out:
        h, read = hybridisation(cell), estimated_bonding(structure_spectrum(cell))
        assert sum(read) == pytest.approx(1.0)
        assert np.abs(np.array(read) - (h.sp, h.sp2, h.sp3)).max() < 0.1, (cell.info["name"], read)
