"""A tiny model trained on CPU for about two minutes regenerates BCC W from noise, judged by atom count and spglib.

Negative controls on the same frames show the judge catches a broken decoder (offsets scrambled) and a sampler
that stops denoising early.
"""

import pytest
import torch

from gcd_core.data import PHASES, crystal
from gcd_core.diffusion import CosineSchedule
from gcd_core.generate import GenerationRequest, decode_frame, generate_frames
from gcd_core.model import GCDModel
from gcd_core.nn.unet import UNet3D
from gcd_core.physics import space_group
from gcd_core.representation import VoxelGrid
from gcd_core.training import TrainConfig, VoxelDataset, train

pytestmark = pytest.mark.slow

BCC = PHASES["bcc"]
CELL = (2 * BCC.a,) * 3
SAMPLES = 16
REQUIRED = 12  # of 16; measured 94-98 % at 600 steps (3 training seeds x 64 samples), 75-84 % at 300


def perfect(structures) -> int:
    return sum(len(a) == 16 and space_group(a)[0] == BCC.space_group for a in structures)


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    torch.manual_seed(0)
    grid = VoxelGrid(("W",), BCC.a / 4)  # 8^3 voxels for the 2x2x2 cell
    net = UNet3D(in_channels=grid.n_channels, out_channels=grid.n_channels, base_channels=16)
    model = GCDModel(net, grid, CosineSchedule(), "x0")
    data = VoxelDataset([crystal("bcc", 2)], grid, stride=net.stride)
    config = TrainConfig(steps=600, batch_size=16, lr=1e-3, warmup_steps=50, checkpoint_every=10**9)
    model = train(model, data, config, tmp_path_factory.mktemp("e2e"), progress=False).model
    request = GenerationRequest(CELL, num_samples=SAMPLES, steps=40, sampler="ddim", seed=0)
    return model, request, list(generate_frames(model, request))


def test_tiny_model_regenerates_bcc_from_noise(frames):
    model, request, steps = frames
    samples = decode_frame(model, steps[-1], request)
    found = perfect(samples)
    assert found >= REQUIRED, f"{found}/{SAMPLES} perfect; counts {[len(a) for a in samples]}"


def test_broken_decoder_is_caught(frames):
    model, request, steps = frames
    final = steps[-1]
    scrambled = final.x0.clone()
    offsets = scrambled[:, model.grid.offset_channels(0)]
    noise = torch.rand(offsets.shape, generator=torch.Generator().manual_seed(0))
    scrambled[:, model.grid.offset_channels(0)] = 2 * noise - 1  # any offset in the voxel
    final.x0 = scrambled
    assert perfect(decode_frame(model, final, request)) == 0


def test_sampler_stopped_early_is_caught(frames):
    model, request, steps = frames
    assert perfect(decode_frame(model, steps[len(steps) // 5], request)) <= SAMPLES // 4


def test_restore_brings_a_lightly_noised_crystal_back_reproducibly(frames):
    """``restore`` (SDEdit: noise to t, denoise back) on real BCC cells: from t = 0.05 the tiny model gives the
    crystals back, and the same seed gives the same grids."""
    from gcd_core.generate import restore

    model = frames[0]
    clean = model.grid.to_model_space(model.grid.encode([crystal("bcc", 2)] * 4))
    first = restore(model, clean, 0.05, seed=3)
    assert torch.equal(first, restore(model, clean, 0.05, seed=3))
    assert not torch.equal(first, restore(model, clean, 0.05, seed=4))
    assert perfect(model.grid.decode(model.grid.to_data_space(first), CELL)) == 4
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    noisy = model.schedule.add_noise(clean, torch.full((4,), 0.9, dtype=torch.float64), noise).float()
    assert perfect(model.grid.decode(model.grid.to_data_space(noisy), CELL)) < 4  # unrestored grids fail the judge
