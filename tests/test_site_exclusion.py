"""Site exclusion while sampling (``GenerationRequest.exclusion_distance``): of two sites closer than the distance
in a clean estimate, the fuller stays and the other voxel is emptied."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.neighborlist import neighbor_list

from gcd_core.data.crystals import PHASES, bond_length, crystal
from gcd_core.diffusion import CosineSchedule
from gcd_core.errors import GCDError
from gcd_core.generate import GenerationRequest, SiteExclusion, generate
from gcd_core.model import GCDModel
from gcd_core.nn.unet import UNet3D
from gcd_core.representation import VoxelGrid

A = PHASES["bcc"].a
CELL = (2 * A,) * 3


def split_site_grid(grid: VoxelGrid) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int, int]]:
    """A clean BCC grid (atoms a quarter voxel in on every axis), and the same grid with one site doubled into
    the next voxel along x at occupancy 0.7 (0.79 A from it, well under the 2.74 A bond)."""
    clean = grid.encode([crystal("bcc", 2, translation=(0.2, 0.2, 0.2))])
    doubled = clean.clone()
    i, j, k = (int(v) for v in (clean[0, 0] > 0.5).nonzero()[0])
    neighbour = ((i + 1) % 8, j, k)
    assert doubled[0, 0][neighbour] == 0
    doubled[0, 0][neighbour] = 0.7
    doubled[0, grid.offset_channels(0)][(slice(None), *neighbour)] = torch.tensor([0.25, 0.25, 0.25])
    return clean, doubled, neighbour


def test_exclusion_empties_the_weaker_half_of_a_split_site_and_nothing_else():
    grid = VoxelGrid(("W",), A / 4)
    clean, doubled, _ = split_site_grid(grid)
    assert len(grid.decode(doubled, CELL)[0]) == 17  # the doubled site decodes as two atoms
    exclusion = SiteExclusion(grid, CELL, 0.5 * bond_length("bcc"), below=0.3)
    late = torch.tensor([0.2])
    projected = grid.to_data_space(exclusion(grid.to_model_space(doubled), late))
    assert torch.allclose(projected, clean, atol=1e-6)
    assert len(grid.decode(projected, CELL)[0]) == 16
    early = exclusion(grid.to_model_space(doubled), torch.tensor([0.5]))  # above `below`: left alone
    assert torch.equal(early, grid.to_model_space(doubled))


def test_exclusion_keeps_the_fuller_site_whichever_voxel_holds_it():
    grid = VoxelGrid(("W",), A / 4)
    clean, doubled, neighbour = split_site_grid(grid)
    i, j, k = (int(v) for v in (clean[0, 0] > 0.5).nonzero()[0])
    doubled[0, 0, i, j, k] = 0.6  # now the original voxel is the weaker half
    projected = grid.to_data_space(SiteExclusion(grid, CELL, 1.3, below=1.0).impose(grid.to_model_space(doubled)))
    assert projected[0, 0, i, j, k] == 0 and projected[0, 0][neighbour] == pytest.approx(0.7)
    assert (projected[0, grid.offset_channels(0), i, j, k] == 0.5).all()  # an empty voxel's, as encoded
    assert int((projected[0, 0] > 0.5).sum()) == 16


def test_exclusion_distance_under_the_pair_changes_nothing():
    grid = VoxelGrid(("W",), A / 4)
    _, doubled, _ = split_site_grid(grid)
    model_space = grid.to_model_space(doubled)
    assert torch.allclose(SiteExclusion(grid, CELL, 0.7, below=1.0).impose(model_space), model_space)


@pytest.fixture(scope="module")
def untrained():
    torch.manual_seed(0)
    grid = VoxelGrid(("W",), A / 4)
    net = UNet3D(in_channels=grid.n_channels, out_channels=grid.n_channels, base_channels=8, channel_mults=(1, 2))
    return GCDModel(net, grid, CosineSchedule(), "x0")


def closest_pair(atoms) -> float:
    distances = neighbor_list("d", atoms, 3.0)
    return float(distances.min()) if len(distances) else np.inf


def test_sampling_with_exclusion_leaves_no_pair_closer_than_the_distance(untrained):
    """An untrained network makes atoms anywhere; with exclusion none of them sit closer than the distance, and
    the same seed gives the same structures."""
    request = GenerationRequest(CELL, num_samples=2, steps=6, seed=1)
    plain = generate(untrained, request)
    assert min(closest_pair(a) for a in plain) < 1.2  # the control: without exclusion there are close pairs
    request.exclusion_distance = 1.2
    excluded = generate(untrained, request)
    assert min(closest_pair(a) for a in excluded) >= 1.2
    again = generate(untrained, request)
    assert all(np.array_equal(a.positions, b.positions) for a, b in zip(excluded, again, strict=True))


@pytest.mark.parametrize(("field", "value"), [("exclusion_distance", 0.0), ("exclusion_below", 0.0),
                                              ("exclusion_below", 1.5)])
def test_bad_exclusion_settings_are_refused(field, value):
    request = GenerationRequest(CELL, **{field: value})
    with pytest.raises(GCDError, match=field):
        request.validate()
