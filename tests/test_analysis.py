"""Structure analysis on structures with known answers: diamond, graphite, an ideal gas, and defects."""

from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from gcd_core.errors import GCDError
from gcd_core.physics import (
    bond_angle_distribution,
    bond_angles,
    bond_lengths,
    coordination_histogram,
    coordination_numbers,
    hybridisation,
    mass_density,
    radial_distribution,
    rdf_distance,
)

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "a-C" / "reference"


def diamond(reps: int = 3) -> Atoms:
    return bulk("C", "diamond", a=3.567, cubic=True).repeat(reps)


def graphite() -> Atoms:
    """AB graphite, a = 2.464 A, c = 6.711 A, as an orthorhombic 8-atom cell repeated."""
    a, c = 2.464, 6.711
    cell = Atoms(
        "C8",
        scaled_positions=[
            (0, 0, 0.25), (0.5, 0.5, 0.25), (0, 1 / 3, 0.75), (0.5, 5 / 6, 0.75),
            (0, 2 / 3, 0.25), (0.5, 1 / 6, 0.25), (0, 0, 0.75), (0.5, 0.5, 0.75),
        ],
        cell=[a, a * np.sqrt(3), c],
        pbc=True,
    )
    return cell.repeat((3, 2, 1))


def test_diamond_coordination_density_rdf_and_angles():
    atoms = diamond()
    assert np.all(coordination_numbers(atoms) == 4)
    h = hybridisation(atoms)
    assert (h.sp3, h.sp2, h.sp, h.mean_coordination) == (1.0, 0.0, 0.0, 4.0)
    assert mass_density(atoms) == pytest.approx(3.517, abs=0.002)
    rdf = radial_distribution(atoms, r_max=5.0, bin_width=0.02)
    assert rdf.first_peak() == pytest.approx(3.567 * np.sqrt(3) / 4, abs=0.02)  # 1.545 A
    assert np.allclose(bond_angles(atoms), 109.47, atol=0.01)
    assert len(bond_lengths(atoms)) == 4 * len(atoms)  # four bonds per atom, each seen from both ends
    assert np.allclose(bond_lengths([atoms, atoms]), 3.567 * np.sqrt(3) / 4)
    centres, density = bond_angle_distribution(atoms)
    assert centres[np.argmax(density)] == pytest.approx(109.47, abs=1.0)
    assert density.sum() * 2.0 == pytest.approx(1.0)  # a probability density per degree


def test_graphite_is_threefold_with_120_degree_angles():
    atoms = graphite()
    assert np.all(coordination_numbers(atoms) == 3)
    assert hybridisation(atoms).sp2 == 1.0
    assert mass_density(atoms) == pytest.approx(2.26, abs=0.01)
    assert radial_distribution(atoms).first_peak() == pytest.approx(1.4226, abs=0.02)
    assert np.allclose(bond_angles(atoms), 120.0, atol=0.01)
    assert np.allclose(bond_lengths(atoms), 1.4226, atol=0.001)


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="../shared/data is not beside this checkout")
def test_shared_reference_structures():
    for name, sp3, sp2, density in (("diamond", 1.0, 0.0, 3.52), ("graphite", 0.0, 1.0, 2.26)):
        atoms = ase.io.read(REFERENCE / f"{name}.vasp")  # graphite's cell is hexagonal: not orthogonal
        h = hybridisation(atoms)
        assert (h.sp3, h.sp2) == (sp3, sp2)
        assert mass_density(atoms) == pytest.approx(density, abs=0.01)


def test_rdf_of_an_ideal_gas_is_one_and_distances_tell_structures_apart():
    rng = np.random.default_rng(0)
    gas = [Atoms("C500", positions=rng.random((500, 3)) * 15, cell=[15] * 3, pbc=True) for _ in range(4)]
    rdf = radial_distribution(gas, r_max=6.0, bin_width=0.2)
    assert np.abs(rdf.g[rdf.r > 2] - 1).max() < 0.1  # pooled statistics, shells of >1000 pairs
    same = radial_distribution(diamond(), r_max=5.0)
    assert rdf_distance(same, radial_distribution(diamond(4), r_max=5.0)) < 1e-9  # size does not matter
    assert rdf_distance(same, radial_distribution(graphite(), r_max=5.0)) > 1.0
    with pytest.raises(GCDError, match="share their bins"):
        rdf_distance(same, rdf)


def test_defects_change_coordination_statistics():
    atoms = diamond()
    vacancy = atoms.copy()
    del vacancy[0]
    hist = coordination_histogram(vacancy)
    assert hist[3] == pytest.approx(4 / len(vacancy))  # the vacancy's four neighbours lose a bond
    assert hybridisation(vacancy).sp3 == pytest.approx(1 - 4 / len(vacancy))
    lonely = Atoms("C2", positions=[[0, 0, 0], [1.4, 0, 0]], cell=[10] * 3, pbc=True)
    assert hybridisation(lonely).under == 1.0  # two singly coordinated carbons
    with pytest.raises(GCDError, match="periodic"):
        radial_distribution(Atoms("C", positions=[[0, 0, 0]]))


DATA = REFERENCE.parent


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is not beside this checkout")
def test_carbon_dataset_loads_with_site_spectra_and_splits_by_structure():
    from gcd_core.data.amorphous import load_carbon_dataset, split_by_structure, structure_spectrum
    from gcd_core.physics.spectra import ENERGY_GRID

    cells = load_carbon_dataset(DATA)
    assert len(cells) == 25 and all(len(a) == 216 for a in cells)
    spectrum = structure_spectrum(cells[0])
    assert spectrum.shape == (100,) and np.trapezoid(spectrum, ENERGY_GRID) == pytest.approx(1.0)
    densities = sorted({round(a.info["density"], 1) for a in cells})
    assert densities == [1.5, 2.0, 2.5, 3.0, 3.5]
    low = [a.info["sp3"] for a in cells if a.info["density"] < 1.6]
    high = [a.info["sp3"] for a in cells if a.info["density"] > 3.4]
    assert max(low) < 0.1 and min(high) > 0.9  # the README's 3 % and 94 %
    train, held = split_by_structure(cells)
    names = {a.info["name"] for a in held}
    assert names and not names & {a.info["name"] for a in train}
    assert {round(a.info["density"] * 2) / 2 for a in held} >= {1.5, 2.0, 2.5, 3.0, 3.5}
    assert ("d1.5_1" in names) == ("d1.5_6" in names)  # the shared set's one duplicated cell stays together


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is not beside this checkout")
def test_density_balanced_weights_give_every_density_the_same_share():
    from gcd_core.data.amorphous import density_balanced_weights, load_carbon_dataset, split_by_structure

    train, _ = split_by_structure(load_carbon_dataset(DATA))
    weights = np.array(density_balanced_weights(train))
    bins = np.array([round(a.info["density"] * 2) / 2 for a in train])
    shares = {b: weights[bins == b].sum() for b in np.unique(bins)}
    assert len(shares) == 5 and np.allclose(list(shares.values()), 1.0)
    assert weights[bins == 3.5][0] > weights[bins == 1.5][0]  # the rare dense cells are drawn more often each
    with pytest.raises(GCDError, match="bin width"):
        density_balanced_weights(train, bin_width=0)
