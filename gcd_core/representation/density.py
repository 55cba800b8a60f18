"""A smooth density view of a grid, for volume viewers: Gaussian blobs weighted by occupancy."""

from __future__ import annotations

import numpy as np
import torch

from gcd_core.representation.grid import VoxelGrid


def density_view(
    grid: torch.Tensor, voxel_grid: VoxelGrid, upsample: int = 2, sigma_voxels: float = 0.6
) -> np.ndarray:
    """Density ``[X*u, Y*u, Z*u]`` (float32, all species summed) of a data-space grid ``[C, X, Y, Z]``.

    Every voxel contributes its occupancy (clipped to [0, 1]) at its position, so a grid that is still noisy
    shows as a haze that sharpens into atoms while the sampler anneals. ``sigma_voxels`` is the blob width in
    original voxels; the blur is a periodic FFT convolution.
    """
    grid = grid.detach().double().cpu()
    if grid.dim() == 5:
        grid = grid[0]
    shape = grid.shape[1:]
    fine = tuple(n * upsample for n in shape)
    weights = grid[voxel_grid.occupancy_channels].clamp(0, 1)
    if voxel_grid.encoding == "smooth":
        # the channel already is a density; resample it onto the finer grid
        density = weights.sum(0)
        if upsample > 1:
            # periodic: pad one voxel by wrapping so the cell's faces interpolate across the boundary
            padded = torch.nn.functional.pad(density[None, None], (1, 1, 1, 1, 1, 1), mode="circular")
            density = torch.nn.functional.interpolate(
                padded, scale_factor=upsample, mode="trilinear", align_corners=False
            )[0, 0, upsample:-upsample, upsample:-upsample, upsample:-upsample]
        return density.clamp_min(0).float().numpy()

    index = torch.stack(torch.meshgrid(*(torch.arange(n) for n in shape), indexing="ij"), 0).double()
    splat = torch.zeros(fine, dtype=torch.float64)
    for s in range(voxel_grid.n_species):
        offsets = grid[voxel_grid.offset_channels(s)].clamp(0, 1)
        # in fine voxels, shifted by half a fine voxel so that element j holds the fine voxel centred at
        # j + 1/2 (the grid's own convention, and the smooth branch's)
        position = ((index + offsets) * upsample - 0.5).reshape(3, -1).T
        _splat_trilinear(splat, position, weights[s].reshape(-1))
    # the blur is exact only up to its spectrum's cut at the Nyquist frequency: clip the tiny negative ringing
    return _periodic_gaussian_blur(splat, sigma_voxels * upsample).clamp_min(0).float().numpy()


def _splat_trilinear(target: torch.Tensor, position: torch.Tensor, weight: torch.Tensor) -> None:
    shape = torch.tensor(target.shape)
    base = position.floor().long()
    frac = position - base
    flat = target.view(-1)
    for corner in range(8):
        step = torch.tensor([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1])
        w = weight * torch.prod(torch.where(step.bool(), frac, 1 - frac), dim=1)
        idx = (base + step) % shape
        flat.index_add_(0, (idx[:, 0] * shape[1] + idx[:, 1]) * shape[2] + idx[:, 2], w)


def _periodic_gaussian_blur(volume: torch.Tensor, sigma: float) -> torch.Tensor:
    """Periodic convolution with a sampled, normalised Gaussian (separable, via FFT).

    The kernel is built in real space (summed over periodic images) rather than as a Gaussian spectrum cut at
    the Nyquist frequency: that one rings negative and, for narrow blurs, changes the mass noticeably.
    """
    spectrum = torch.fft.fftn(volume)
    for axis, n in enumerate(volume.shape):
        images = int(np.ceil(5 * sigma / n)) + 1
        offsets = torch.arange(n, dtype=torch.float64)[:, None] - n * torch.arange(-images, images + 1)[None]
        kernel = torch.exp(-(offsets**2) / (2 * sigma**2)).sum(1)
        kernel = torch.fft.fft(kernel / kernel.sum()).real  # symmetric kernel: a real spectrum
        shape = [1] * volume.dim()
        shape[axis] = n
        spectrum = spectrum * kernel.view(shape)
    return torch.fft.ifftn(spectrum).real
