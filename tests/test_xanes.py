"""The XANES forward model: invariances, the weighted (voxel) path, gradients, training and checkpoints."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from gcd_core.errors import GCDError
from gcd_core.physics import coordination_numbers
from gcd_core.physics.spectra import ENERGY_GRID
from gcd_core.physics.xanes import XanesForwardModel, periodic_pairs
from gcd_core.training.xanes import XanesTrainConfig, evaluate_xanes, train_xanes


def diamond(reps: int = 3):
    return bulk("C", "diamond", a=3.567, cubic=True).repeat(reps)


def disordered(seed: int = 0, n: int = 64, edge: float = 9.0):
    """Random carbon with a minimum distance, standing in for an amorphous cell."""
    rng = np.random.default_rng(seed)
    points = []
    while len(points) < n:
        p = rng.random(3) * edge
        d = np.array(points) - p if points else np.zeros((0, 3))
        d -= edge * np.round(d / edge)
        if not len(d) or np.linalg.norm(d, axis=1).min() > 1.3:
            points.append(p)
    return Atoms(f"C{n}", positions=points, cell=[edge] * 3, pbc=True)


def test_descriptors_are_invariant_and_spectra_unit_area():
    torch.manual_seed(0)
    model = XanesForwardModel()
    atoms = disordered()
    spectra = model.site_spectra(atoms)
    assert spectra.shape == (len(atoms), len(ENERGY_GRID))
    assert np.allclose(np.trapezoid(spectra, ENERGY_GRID, axis=1), 1.0, atol=1e-5)
    moved = atoms.copy()
    moved.positions = moved.positions[:, [2, 0, 1]] * [1, -1, 1] + [1.3, 0.2, 5.0]  # a cubic symmetry + shift
    moved.wrap()
    assert np.allclose(model.site_spectra(moved), spectra, atol=1e-5)
    crystal = model.site_spectra(diamond())
    assert np.allclose(crystal, crystal[0], atol=1e-5)  # every diamond site is the same site


def test_weighted_sites_match_atoms_and_ignore_empty_voxels():
    torch.manual_seed(0)
    model = XanesForwardModel()
    atoms = disordered()
    positions = torch.tensor(atoms.positions, dtype=torch.float32)
    ghosts = torch.rand(200, 3) * 9.0  # empty voxels: candidate sites of (almost) zero occupancy
    weights = torch.cat([torch.ones(len(atoms)), torch.full((200,), 0.01)])
    spectrum = model.weighted_spectrum(torch.cat([positions, ghosts]), weights, atoms.cell.lengths())
    assert np.allclose(spectrum.detach().numpy(), model.spectrum(atoms), atol=1e-5)
    with pytest.raises(GCDError, match="no site is occupied"):
        model.weighted_spectrum(ghosts, torch.zeros(200), atoms.cell.lengths())


def test_gradients_reach_positions_and_occupancies():
    torch.manual_seed(0)
    model = XanesForwardModel()
    atoms = disordered()
    positions = torch.tensor(atoms.positions, dtype=torch.float32, requires_grad=True)
    weights = torch.full((len(atoms),), 0.8, requires_grad=True)
    target = torch.as_tensor(model.spectrum(diamond()))
    loss = ((model.weighted_spectrum(positions, weights, atoms.cell.lengths()) - target) ** 2).sum()
    loss.backward()
    assert positions.grad.abs().sum() > 0 and weights.grad.abs().sum() > 0
    assert torch.isfinite(positions.grad).all() and torch.isfinite(weights.grad).all()


def test_periodic_pairs_agree_with_ase_and_check_the_cell():
    from ase.neighborlist import neighbor_list

    atoms = disordered()
    i, j, vectors = periodic_pairs(torch.tensor(atoms.positions), torch.tensor(atoms.cell.lengths()), 3.0)
    ase_i, ase_j = neighbor_list("ij", atoms, 3.0)
    assert sorted(zip(i.tolist(), j.tolist(), strict=True)) == sorted(zip(ase_i.tolist(), ase_j.tolist(), strict=True))
    with pytest.raises(GCDError, match="over twice"):
        periodic_pairs(torch.tensor(atoms.positions), torch.tensor(atoms.cell.lengths()), 4.5)


def test_binned_pairs_of_many_sites_are_the_dense_ones(monkeypatch):
    """Above DENSE_PAIR_LIMIT sites the pairs come from a neighbour list: the same pairs, vectors and gradients as
    comparing every pair (positions partly outside the cell, a candidate mask, one coincident pair)."""
    from gcd_core.physics import xanes

    rng = np.random.default_rng(1)
    lengths = torch.tensor([14.0, 15.0, 16.0], dtype=torch.float64)
    positions = torch.tensor(rng.uniform(-2, 18, (1200, 3)))
    positions[7] = positions[3]
    candidates = torch.tensor(rng.random(1200) < 0.9)
    results = {}
    for limit in (10**9, 100):
        monkeypatch.setattr(xanes, "DENSE_PAIR_LIMIT", limit)
        points = positions.clone().requires_grad_(True)
        i, j, vectors = periodic_pairs(points, lengths, 2.5, candidates)
        (vectors.norm(dim=-1) ** 3).sum().backward()
        order = np.lexsort((j.numpy(), i.numpy()))
        results[limit] = (i.numpy()[order], j.numpy()[order], vectors.detach().numpy()[order], points.grad)
    (dense_i, dense_j, dense_v, dense_grad), (bin_i, bin_j, bin_v, bin_grad) = results.values()
    assert len(dense_i) > 1000
    np.testing.assert_array_equal(dense_i, bin_i)
    np.testing.assert_array_equal(dense_j, bin_j)
    np.testing.assert_allclose(dense_v, bin_v, atol=1e-9)
    torch.testing.assert_close(dense_grad, bin_grad)


def test_training_fits_and_checkpoints_round_trip(tmp_path):
    structures = [diamond(3), disordered(1)]
    rng = np.random.default_rng(0)
    for atoms in structures:  # site spectra that depend on coordination, as real ones do
        coordination = coordination_numbers(atoms)
        peaks = 286.0 + 1.5 * coordination[:, None]
        spectra = np.exp(-0.5 * ((ENERGY_GRID - peaks) / 1.5) ** 2) + 0.01 * rng.random((len(atoms), 100))
        atoms.arrays["xanes"] = spectra / np.trapezoid(spectra, ENERGY_GRID, axis=1)[:, None]
    model, record = train_xanes(structures, XanesTrainConfig(epochs=300, hidden=32))
    scores = evaluate_xanes(model, structures)
    assert scores["site_mse"] < 0.2 * scores["site_mse_constant"]  # learnt the neighbourhood, not one mean
    assert record["loss_curve"][-1][1] < record["loss_curve"][0][1]
    path = tmp_path / "xanes.pt"
    model.save(path, {"note": "test"})
    again = XanesForwardModel.load(path)
    assert np.allclose(again.site_spectra(structures[1]), model.site_spectra(structures[1]), atol=1e-6)
    assert again.metadata == {"note": "test"}
