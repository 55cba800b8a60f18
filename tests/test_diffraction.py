"""Bragg reflections, the order a structure shows at them, and Bragg guidance on the voxel grid."""

import numpy as np
import pytest
import torch

from gcd_core.data.crystals import conventional_cell, crystal, phase_reference, phase_voxel_size
from gcd_core.errors import GCDError
from gcd_core.guidance import bragg_guidance, bragg_refinement
from gcd_core.physics.diffraction import bragg_order, bragg_reflections
from gcd_core.representation.grid import VoxelGrid


def test_fcc_reflections_are_the_unmixed_indices_at_full_amplitude():
    cell = conventional_cell("fcc")
    vectors, amplitudes = bragg_reflections(cell)
    hkl = np.round(vectors * cell.cell.lengths() / (2 * np.pi)).astype(int)
    assert np.allclose(amplitudes, 1.0)
    # unmixed indices only; within |G| <= 4 1/A (a = 3.615 A) the 111 and 200 families, 4 + 3 of them
    assert {tuple(sorted(np.abs(row))) for row in hkl} == {(1, 1, 1), (0, 0, 2)} and len(hkl) == 7
    assert not any(np.allclose(vectors[i], -vectors[j]) for i in range(len(vectors)) for j in range(len(vectors)))


def test_hcp_reflections_carry_the_stacking():
    _, amplitudes = bragg_reflections(conventional_cell("hcp"))
    # |1 + exp(2 pi i (h + 2k)/3 + l/2)| / 2 over the two layers: 1, cos 30 deg and 1/2
    assert set(np.round(amplitudes, 3)) == {0.5, 0.866, 1.0}


@pytest.mark.parametrize("phase", ["bcc", "hcp", "diamond"])
def test_a_crystal_at_any_translation_and_with_vacancies_shows_full_order(phase):
    reference = conventional_cell(phase)
    rng = np.random.default_rng(0)
    atoms = crystal(phase, 2, translation=rng.uniform(0, 5, 3))
    assert bragg_order(atoms, reference) == pytest.approx(1.0, abs=1e-9)
    del atoms[[0, 3]]
    assert bragg_order(atoms, reference) == pytest.approx(1.0, abs=1e-9)


def test_grains_out_of_register_and_thermal_noise_lower_the_order():
    reference = conventional_cell("bcc")
    atoms = crystal("bcc", (4, 2, 2))
    upper = atoms.positions[:, 0] >= 2 * reference.cell.lengths()[0]
    walled = atoms.copy()
    walled.positions[upper] += [0.0, reference.cell.lengths()[1] / 2, 0.0]  # half a cell: not a lattice vector
    walled.wrap()
    shaken = atoms.copy()
    shaken.positions += np.random.default_rng(1).normal(0, 0.15, shaken.positions.shape)
    assert bragg_order(walled, reference) < 0.8
    assert 0.85 < bragg_order(shaken, reference) < 0.99  # Debye-Waller: exp(-G^2 u^2 / 2)


def test_a_cell_that_is_not_whole_reference_cells_is_refused_by_name():
    atoms = crystal("fcc", 2)
    atoms.set_cell([7.5] * 3)  # 2.07 FCC cells
    with pytest.raises(GCDError, match="whole reference cells"):
        bragg_order(atoms, conventional_cell("fcc"))
    with pytest.raises(GCDError, match="phase label"):
        phase_reference("amorphous", VoxelGrid(("C",), 0.8))


@pytest.fixture
def hcp_grid():
    return VoxelGrid(("Mg",), phase_voxel_size("hcp"))


def test_bragg_loss_is_zero_for_an_encoded_crystal_and_positive_for_a_domain_wall(hcp_grid):
    reference = phase_reference("hcp", hcp_grid)
    atoms = crystal("hcp", (2, 4, 2))
    lengths = atoms.cell.lengths()
    loss = bragg_guidance(hcp_grid, reference, lengths)
    walled = atoms.copy()
    walled.positions[atoms.positions[:, 1] >= lengths[1] / 2] += [0.0, reference.cell.lengths()[1] / 3, 0.0]
    walled.wrap()
    grids = torch.cat([hcp_grid.to_model_space(hcp_grid.encode([a])) for a in (atoms, walled)])
    values = loss(grids)
    assert float(values[0]) < 1e-6 < 1e-2 < float(values[1])


def test_bragg_refinement_favours_the_grain_in_register_with_the_rest(hcp_grid):
    """An estimate undecided about half the cell, as early in sampling: there each site of the lattice and of
    the same lattice shifted by a third of the cell along y (a stacking domain) holds 0.5. Ten Adam steps of
    the Bragg loss raise the sites in register with the decided half and lower the others (measured: 0.60 and
    0.40), and leave the decided half as it was."""
    reference = phase_reference("hcp", hcp_grid)
    atoms = crystal("hcp", (2, 4, 2))
    lengths = atoms.cell.lengths()
    upper = atoms.positions[:, 1] >= lengths[1] / 2
    shifted = atoms[upper]
    shifted.positions += [0.0, reference.cell.lengths()[1] / 3, 0.0]
    shifted.wrap()
    data = torch.zeros_like(hcp_grid.encode([atoms]))
    offsets = hcp_grid.offset_channels(0)
    sites = []
    for part, occupancy in ((atoms[~upper], 1.0), (atoms[upper], 0.5), (shifted, 0.5)):
        encoded = hcp_grid.encode([part])
        held = encoded[0, 0] > 0.5
        assert not bool((data[0, 0][held] > 0).any())  # the three sets hold different voxels
        data[0, 0][held] = occupancy
        data[0, offsets][:, held] = encoded[0, offsets][:, held]
        sites.append(held)
    estimate = hcp_grid.to_model_space(data)
    loss = bragg_guidance(hcp_grid, reference, lengths)
    refined = bragg_refinement(hcp_grid, reference, lengths)(estimate, torch.tensor([0.8]))
    occupancy = hcp_grid.to_data_space(refined)[0, 0]
    decided, in_register, out_of_register = (float(occupancy[held].mean()) for held in sites)
    assert decided == pytest.approx(1.0)
    assert in_register > 0.55 and out_of_register < 0.45
    assert float(loss(refined)[0]) < 0.75 * float(loss(estimate)[0])
