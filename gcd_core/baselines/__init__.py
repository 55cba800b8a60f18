"""BASELINES for comparison with the grand canonical voxel model; nothing here is part of gcd's own method.

``pointcloud``: a fixed-atom-count point-cloud diffusion baseline (periodic graph network, VE diffusion,
Euler-Maruyama from uniformly random positions), after Kwon et al. 2024 (LLNL ``graphite``).
"""

from gcd_core.baselines.pointcloud import (
    PointCloudBaseline,
    PointCloudFrame,
    PointCloudScoreNet,
    denoising_score_matching_loss,
    wrapped_normal_score,
)
from gcd_core.baselines.pointcloud_graph import PeriodicGraph, periodic_radius_graph
from gcd_core.baselines.pointcloud_train import PointCloudTrainConfig, train_pointcloud

__all__ = [
    "PeriodicGraph",
    "PointCloudBaseline",
    "PointCloudFrame",
    "PointCloudScoreNet",
    "PointCloudTrainConfig",
    "denoising_score_matching_loss",
    "periodic_radius_graph",
    "train_pointcloud",
    "wrapped_normal_score",
]
