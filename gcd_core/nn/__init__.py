"""Neural networks: the periodic 3D U-Net denoiser."""

from gcd_core.nn.unet import UNet3D

__all__ = ["UNet3D"]
