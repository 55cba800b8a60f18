"""The atom-space position refiner: equivariance, learning to denoise, polish's guarantees and errors."""

from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from gcd_core.errors import GCDError
from gcd_core.physics import bond_lengths
from gcd_core.polish import SIGMA_RANGE, PositionRefiner, noise_levels, polish
from gcd_core.training.polish import RefinerTrainConfig, denoising_error, train_refiner


def _diamond() -> Atoms:
    """64 carbon atoms in a 7.13 A cube: over twice the refiner's 3.2 A cutoff."""
    return bulk("C", "diamond", a=3.567, cubic=True).repeat(2)


def _noised(atoms: Atoms, sigma: float, seed: int) -> Atoms:
    noisy = atoms.copy()
    noisy.positions += sigma * np.random.default_rng(seed).standard_normal(noisy.positions.shape)
    return noisy


@pytest.fixture(scope="module")
def trained() -> PositionRefiner:
    refiner, _ = train_refiner([_diamond()], RefinerTrainConfig(steps=150, batch=2, hidden=32, layers=2, lr=3e-3))
    return refiner


def test_displacements_rotate_with_the_structure_and_ignore_translations() -> None:
    torch.manual_seed(0)
    refiner = PositionRefiner(hidden=16, layers=2)
    atoms = _noised(_diamond(), 0.1, 0)
    x = torch.as_tensor(atoms.positions, dtype=torch.float32)
    lengths = torch.as_tensor(atoms.cell.lengths(), dtype=torch.float32)
    with torch.no_grad():
        base = refiner(x, lengths, 0.1)
        # a cube's symmetry: swap x and y and mirror z (a rotation-reflection the periodic cell keeps)
        turn = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
        turned = refiner(x @ turn.T, lengths, 0.1)
        shifted = refiner(x + torch.tensor([1.3, -0.7, 2.2]), lengths, 0.1)
    assert base.abs().max() > 1e-4  # not trivially zero
    torch.testing.assert_close(turned, base @ turn.T, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(shifted, base, atol=1e-5, rtol=1e-4)


def test_a_briefly_trained_refiner_moves_noised_atoms_back_toward_their_sites(trained: PositionRefiner) -> None:
    for sigma, score in denoising_error(trained, [_diamond()], sigmas=(0.05, 0.1)).items():
        assert score["rms_denoised"] < 0.8 * score["rms_noisy"], (sigma, score)
    clean = _diamond()
    noisy = _noised(clean, 0.08, 1)
    polished = polish(noisy, trained, 0.1, 6)[0]
    spread_noisy, spread_polished = bond_lengths(noisy).std(), bond_lengths(polished).std()
    assert spread_polished < 0.7 * spread_noisy, (spread_noisy, spread_polished)


def test_polish_keeps_every_atom_and_the_cell_and_is_deterministic(trained: PositionRefiner) -> None:
    noisy = _noised(_diamond(), 0.05, 2)
    noisy.info["name"] = "kept"
    first, second = polish([noisy, noisy], trained, 0.05, 4)
    assert len(first) == len(noisy) and first.get_chemical_symbols() == noisy.get_chemical_symbols()
    np.testing.assert_allclose(first.cell, noisy.cell)
    assert first.info["name"] == "kept"
    np.testing.assert_array_equal(first.positions, second.positions)
    assert not np.allclose(first.positions, noisy.positions)
    assert polish(Atoms(cell=[8, 8, 8], pbc=True), trained)[0].get_global_number_of_atoms() == 0


def test_polish_leaves_a_doubled_atom_where_it_is(trained: PositionRefiner) -> None:
    """A pair closer than any training cell holds (a site the decoder read twice) is outside what the refiner
    learnt: both atoms stay put while the rest are polished."""
    noisy = _noised(_diamond(), 0.05, 4)
    noisy.append("C")
    noisy.positions[-1] = noisy.positions[0] + [0.3, 0.0, 0.0]
    polished = polish(noisy, trained)[0]
    np.testing.assert_allclose(polished.positions[[0, -1]], noisy.get_positions(wrap=True)[[0, -1]], atol=1e-5)
    assert np.abs(polished.positions[1:-1] - noisy.positions[1:-1]).max() > 1e-3


def test_polish_refuses_what_it_cannot_do_by_name(trained: PositionRefiner) -> None:
    with pytest.raises(GCDError, match="trained on C only; this structure also holds W"):
        polish(bulk("W", "bcc", a=3.165, cubic=True).repeat(3), trained)
    skewed = _diamond()
    skewed.set_cell(skewed.cell + np.array([[0, 0.5, 0], [0, 0, 0], [0, 0, 0]]))
    with pytest.raises(GCDError, match="orthorhombic"):
        polish(skewed, trained)
    with pytest.raises(GCDError, match="twice the 3.2 A cutoff"):
        polish(bulk("C", "diamond", a=3.567, cubic=True), trained)
    with pytest.raises(GCDError, match="within the trained"):
        polish(_diamond(), trained, start=2 * SIGMA_RANGE[1])
    with pytest.raises(GCDError, match="at least one step"):
        noise_levels(0.05, 0)
    with pytest.raises(GCDError, match="one species"):
        train_refiner([_diamond(), bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)])


def test_the_refiner_saves_and_loads_with_weights_only(trained: PositionRefiner, tmp_path: Path) -> None:
    path = tmp_path / "refiner.pt"
    trained.save(path, {"steps": 150})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "gcd-position-refiner" and raw["config"]["species"] == "C"
    loaded = PositionRefiner.load(path)
    noisy = _noised(_diamond(), 0.05, 3)
    np.testing.assert_allclose(polish(noisy, loaded)[0].positions, polish(noisy, trained)[0].positions)
    (tmp_path / "other.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(GCDError, match="not a readable position refiner checkpoint"):
        PositionRefiner.load(tmp_path / "other.pt")
