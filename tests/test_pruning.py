"""Pruning under-bonded sites while sampling (``GenerationRequest.min_bonds``): a site with fewer bonds than asked
loses its voxel in clean estimates at noise times inside the window, and the network goes on without it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gcd_core.diffusion import CosineSchedule
from gcd_core.errors import GCDError
from gcd_core.generate import GenerationRequest, UnderbondedPruning, generate
from gcd_core.model import GCDModel
from gcd_core.nn.unet import UNet3D
from gcd_core.physics.analysis import coordination_numbers
from gcd_core.representation import VoxelGrid

VOXEL = 0.438
CELL = (24 * VOXEL,) * 3  # 10.5 A


def test_pruning_empties_the_under_bonded_sites_and_nothing_else(ring_with_loose_ends):
    grid = VoxelGrid(("C",), VOXEL)
    atoms = ring_with_loose_ends
    assert list(coordination_numbers(atoms)) == [3, 2, 2, 2, 2, 2, 1, 0]
    clean = grid.encode(atoms)
    pruning = UnderbondedPruning(grid, CELL, min_bonds=2, cutoff=1.85, window=(0.05, 0.15))
    pruned = grid.decode(grid.to_data_space(pruning(grid.to_model_space(clean), torch.tensor([0.1]))), CELL)[0]
    assert len(pruned) == 6 and pruning.pruned == 2  # the chain end and the lone atom go; the ring stays whole
    ring = atoms[:6]
    assert np.allclose(np.sort(pruned.positions, axis=0), np.sort(ring.positions, axis=0), atol=1e-4)
    for t in (0.02, 0.5):  # outside the window: left alone
        untouched = pruning(grid.to_model_space(clean), torch.tensor([t]))
        assert torch.equal(untouched, grid.to_model_space(clean))


def test_min_bonds_one_prunes_only_the_lone_atom(ring_with_loose_ends):
    grid = VoxelGrid(("C",), VOXEL)
    pruning = UnderbondedPruning(grid, CELL, min_bonds=1, cutoff=1.85, window=(0.0, 1.0))
    pruned = grid.decode(grid.to_data_space(pruning(grid.to_model_space(grid.encode(ring_with_loose_ends)),
                                                    torch.tensor([0.1]))), CELL)[0]
    assert len(pruned) == 7


class FixedEstimate(UNet3D):
    """A network whose clean estimate is always the same grid: sampling ends on it, so what pruning does shows."""

    def __init__(self, estimate: torch.Tensor) -> None:
        super().__init__(in_channels=estimate.shape[1], out_channels=estimate.shape[1], base_channels=4,
                         channel_mults=(1,))
        self.register_buffer("estimate", estimate)

    def forward(self, x: torch.Tensor, t: torch.Tensor, **conditioning: torch.Tensor) -> torch.Tensor:
        return self.estimate.expand(x.shape[0], -1, -1, -1, -1)


def test_generate_prunes_through_the_request(ring_with_loose_ends):
    grid = VoxelGrid(("C",), VOXEL)
    model = GCDModel(FixedEstimate(grid.to_model_space(grid.encode(ring_with_loose_ends))), grid, CosineSchedule(),
                     "x0")
    request = GenerationRequest(CELL, num_samples=2, steps=5, seed=3)
    assert [len(a) for a in generate(model, request)] == [8, 8]
    request.min_bonds = 2  # no step of five (t = 1, 0.8, ..., 0.2) falls in the default window: nothing pruned
    assert [len(a) for a in generate(model, request)] == [8, 8]
    request.prune_window = (0.0, 1.0)
    pruned = generate(model, request)
    assert [len(a) for a in pruned] == [6, 6] and all((coordination_numbers(a) == 2).all() for a in pruned)


@pytest.mark.parametrize(("field", "value"), [("min_bonds", -1), ("bond_cutoff", 0.0), ("prune_window", (0.3, 0.1)),
                                              ("prune_window", (0.0, 1.5))])
def test_bad_pruning_settings_are_refused(field, value):
    request = GenerationRequest(CELL, **{field: value})
    with pytest.raises(GCDError, match=field):
        request.validate()
