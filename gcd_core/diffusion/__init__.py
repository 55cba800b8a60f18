"""Noise schedules, the training objective and samplers."""

from gcd_core.diffusion.objective import PREDICTIONS, diffusion_loss, training_target, x0_from_output
from gcd_core.diffusion.samplers import SAMPLERS, Denoiser, Frame, Inpaint, ddim, ddpm, run_to_end
from gcd_core.diffusion.schedules import (
    SCHEDULES,
    CosineSchedule,
    LinearSchedule,
    NoiseSchedule,
    schedule_from_config,
)

__all__ = [
    "PREDICTIONS",
    "SAMPLERS",
    "SCHEDULES",
    "CosineSchedule",
    "Denoiser",
    "Frame",
    "Inpaint",
    "LinearSchedule",
    "NoiseSchedule",
    "ddim",
    "ddpm",
    "diffusion_loss",
    "run_to_end",
    "schedule_from_config",
    "training_target",
    "x0_from_output",
]
