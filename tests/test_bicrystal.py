import numpy as np
import pytest
from ase.neighborlist import neighbor_list

from gcd_core.data.bicrystal import (
    GB_SYSTEMS,
    LOWER,
    UPPER,
    bicrystal,
    gb_density,
    gb_plane_atoms,
    gb_system,
    misorientation,
    orientation,
    set_gb_density,
)
from gcd_core.errors import GCDError

SIGMA5_ANGLE = np.degrees(2 * np.arctan(1 / 3))  # 36.87 degrees about <001>


@pytest.mark.parametrize("key", sorted(GB_SYSTEMS))
def test_both_sigma5_boundaries_are_36_87_degrees_about_001(key):
    angle, axis = misorientation(GB_SYSTEMS[key])
    assert angle == pytest.approx(SIGMA5_ANGLE, abs=1e-6)
    np.testing.assert_allclose(np.abs(axis), [0, 0, 1], atol=1e-9)


@pytest.mark.parametrize("key", sorted(GB_SYSTEMS))
@pytest.mark.parametrize("repeat", [(1, 1), (2, 1)])
def test_bicrystal_is_periodic_in_plane_whole_planes_and_no_overlaps(key, repeat):
    system = GB_SYSTEMS[key]
    atoms = bicrystal(system, repeat, thickness=10.0)
    assert tuple(atoms.pbc) == (True, True, False)
    # in-plane periods: the grains' repeat lengths times the supercell
    lower = orientation(system.lower)
    periods = [np.linalg.norm(d) * system.a for d in system.lower[:2]]
    assert lower.shape == (3, 3)
    for axis in range(2):
        ratio = atoms.cell[axis, axis] / periods[axis]
        assert ratio == pytest.approx(round(ratio)) and round(ratio) % repeat[axis] == 0
    # every atom of each grain has the bulk coordination away from the GB and the free surfaces
    z = atoms.positions[:, 2]
    inner = (np.abs(z - atoms.info["gb_z"]) > 3.0) & (z > 3.0) & (z < z.max() - 3.0)
    first = neighbor_list("i", atoms, system.nearest_neighbour * 1.05)
    bulk_neighbours = 8 if system.lattice == "bcc" else 12
    assert np.all(np.bincount(first, minlength=len(atoms))[inner] == bulk_neighbours)
    # no two atoms closer than 0.6 of the nearest-neighbour distance, across the GB and the periodic faces
    assert neighbor_list("d", atoms, system.nearest_neighbour * 0.6).size == 0
    assert len(atoms) % atoms.info["atoms_per_plane"] == 0 and gb_density(atoms) == 0
    grains = atoms.get_array("grain")
    assert np.all(z[grains == LOWER] < atoms.info["gb_z"]) and np.all(z[grains == UPPER] > atoms.info["gb_z"])


def test_grains_hold_their_own_orientation():
    """A lower-grain bond vector rotated by the misorientation is a bond vector of the upper grain."""
    system = gb_system("w_sigma5_twist")
    atoms = bicrystal(system, (1, 1), thickness=10.0)
    i, j, vectors = neighbor_list("ijD", atoms, system.nearest_neighbour * 1.05)
    grains = atoms.get_array("grain")
    same = grains[i] == grains[j]
    lower_bonds = np.unique(np.round(vectors[same & (grains[i] == LOWER)], 3), axis=0)
    upper_bonds = np.unique(np.round(vectors[same & (grains[i] == UPPER)], 3), axis=0)
    crystal_bonds = lower_bonds @ orientation(system.lower)  # lab -> crystal frame of the lower grain
    np.testing.assert_allclose(np.sort(np.abs(crystal_bonds), axis=1), np.full((8, 3), system.a / 2), atol=1e-3)
    rotated = crystal_bonds @ orientation(system.upper).T  # same crystal bonds in the upper grain's lab frame
    assert {tuple(v) for v in np.round(rotated, 3)} == {tuple(v) for v in upper_bonds}
    assert {tuple(v) for v in lower_bonds}.isdisjoint({tuple(v) for v in upper_bonds})  # the grains differ


def test_gb_density_by_removal_and_insertion():
    rng = np.random.default_rng(0)
    atoms = bicrystal("w_sigma5_twist", (2, 1), thickness=8.0)
    per_plane = atoms.info["atoms_per_plane"]
    assert per_plane == 20 and len(gb_plane_atoms(atoms)) == 2 * per_plane
    removed = set_gb_density(atoms, 0.75, rng)
    assert len(removed) == len(atoms) - 5 and gb_density(removed) == pytest.approx(0.75)
    inserted = set_gb_density(atoms, 0.25, rng, insert=True)
    assert len(inserted) == len(atoms) + 5 and gb_density(inserted) == pytest.approx(0.25)
    new = inserted.positions[-5:]
    np.testing.assert_allclose(new[:, 2], atoms.info["gb_z"])
    assert np.all(inserted.get_array("grain")[-5:] == UPPER)
    with pytest.raises(GCDError, match=r"\[0, 1\)"):
        set_gb_density(atoms, 1.2, rng)


def test_bad_requests_name_the_problem():
    with pytest.raises(GCDError, match="unknown grain boundary"):
        bicrystal("al_sigma3")
    with pytest.raises(GCDError, match="two positive"):
        bicrystal("w_sigma5_twist", (0, 1))
    with pytest.raises(GCDError, match="perpendicular"):
        orientation(((1, 1, 0), (1, 0, 0), (0, 0, 1)))
