"""A tiny model trained on CPU for about a minute regenerates BCC W from noise.

The grid puts the lattice constant at 5 voxels, so the body-centre atoms sit half a voxel off the corner
atoms' offsets: a decoder that ignored the offsets, or a sampler that did not denoise, gives no Im-3m.
"""

import pytest
import torch

from gcd_core.data import PHASES, crystal
from gcd_core.diffusion import CosineSchedule
from gcd_core.generate import GenerationRequest, decode_frame, generate, generate_frames
from gcd_core.model import GCDModel
from gcd_core.nn.unet import UNet3D
from gcd_core.physics import space_group
from gcd_core.representation import VoxelGrid
from gcd_core.training import TrainConfig, VoxelDataset, train

BCC = PHASES["bcc"]
CELL = (2 * BCC.a,) * 3
SAMPLES = 8


def perfect(structures) -> int:
    return sum(len(a) == 16 and space_group(a)[0] == 229 for a in structures)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> GCDModel:
    torch.manual_seed(0)
    grid = VoxelGrid(("W",), BCC.a / 5)  # 10^3 voxels for the 2x2x2 cell
    net = UNet3D(in_channels=grid.n_channels, out_channels=grid.n_channels, base_channels=16, channel_mults=(1, 2))
    model = GCDModel(net, grid, CosineSchedule(), "x0")
    data = VoxelDataset([crystal("bcc", 2)], grid, stride=net.stride)
    config = TrainConfig(steps=300, batch_size=16, lr=1e-3, warmup_steps=50, checkpoint_every=10**9)
    return train(model, data, config, tmp_path_factory.mktemp("e2e"), progress=False).model


@pytest.mark.slow
def test_tiny_model_regenerates_bcc_from_noise(trained):
    request = GenerationRequest(CELL, num_samples=SAMPLES, steps=40, seed=0)
    samples = generate(trained, request)
    counts = [len(a) for a in samples]
    assert perfect(samples) >= SAMPLES * 3 // 4, f"atom counts {counts}, groups {[space_group(a) for a in samples]}"


@pytest.mark.slow
def test_broken_decoder_or_sampler_is_caught(trained):
    request = GenerationRequest(CELL, num_samples=SAMPLES, steps=40, seed=0)
    frames = list(generate_frames(trained, request))
    assert perfect(decode_frame(trained, frames[-1], request)) >= SAMPLES * 3 // 4
    # a decoder that ignores the offsets: every atom at its voxel corner
    final = frames[-1].x0.clone()
    final[:, trained.grid.offset_channels(0)] = -1.0
    frames[-1].x0 = final
    assert perfect(decode_frame(trained, frames[-1], request)) == 0
    # a sampler that stops denoising half way
    assert perfect(decode_frame(trained, frames[len(frames) // 4], request)) == 0
