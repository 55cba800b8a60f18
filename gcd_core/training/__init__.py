"""Training: datasets of structures, the training loop, checkpoints, DDP."""

from gcd_core.training.dataset import VoxelDataset
from gcd_core.training.trainer import (
    CHECKPOINT_NAME,
    EMA,
    TrainConfig,
    TrainResult,
    init_distributed,
    train,
)

__all__ = ["CHECKPOINT_NAME", "EMA", "TrainConfig", "TrainResult", "VoxelDataset", "init_distributed", "train"]
