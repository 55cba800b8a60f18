"""A trained model as one object: network, voxel grid, noise schedule, prediction type and conditioning.

Checkpoints are plain ``torch.save`` dicts of tensors and JSON-like config, so ``torch.load(weights_only=True)``
reads them::

    {"format": "gcd-checkpoint", "version": 1,
     "config": {"grid": ..., "net": ..., "schedule": ..., "prediction": ..., "conditioning": ...},
     "model": state_dict, "ema": state_dict | absent, "metadata": {...},
     # training checkpoints also hold: "optimizer", "step", "loss_log", "train", "rng"}

A loaded model uses the EMA weights when present.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gcd_core.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, read_checkpoint, write_checkpoint
from gcd_core.device import resolve_device
from gcd_core.diffusion.objective import PREDICTIONS
from gcd_core.diffusion.samplers import Denoiser
from gcd_core.diffusion.schedules import NoiseSchedule, schedule_from_config
from gcd_core.errors import GCDError
from gcd_core.nn.unet import UNet3D
from gcd_core.representation.grid import VoxelGrid


@dataclass
class Conditioning:
    """What a model can be conditioned on: class names, a vector (e.g. a spectrum), named scalars."""

    labels: list[str] = field(default_factory=list)
    vector_dim: int = 0
    vector_name: str = ""
    scalars: list[str] = field(default_factory=list)
    # Per label, grid options that differ from the model's grid ({"voxel_size": ..., "species": [...]}).
    # The network works in voxel units, so classes of different scale and element (crystals with different
    # lattice constants) share one network, each on voxels that fit its own lattice.
    label_grids: dict[str, dict] = field(default_factory=dict)

    def to_config(self) -> dict:
        return {
            "labels": list(self.labels),
            "vector_dim": self.vector_dim,
            "vector_name": self.vector_name,
            "scalars": list(self.scalars),
            "label_grids": {name: dict(spec) for name, spec in self.label_grids.items()},
        }

    @classmethod
    def from_config(cls, config: dict | None) -> Conditioning:
        return cls(**(config or {}))

    @property
    def is_conditional(self) -> bool:
        return bool(self.labels or self.vector_dim or self.scalars)

    def label_index(self, label: str | int) -> int:
        if isinstance(label, int) and 0 <= label < len(self.labels):
            return label
        if isinstance(label, str) and label in self.labels:
            return self.labels.index(label)
        raise GCDError(f"unknown label {label!r}; this model knows {self.labels or 'no labels'}")


@dataclass
class GCDModel:
    net: UNet3D
    grid: VoxelGrid
    schedule: NoiseSchedule
    prediction: str = "x0"
    conditioning: Conditioning = field(default_factory=Conditioning)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.prediction not in PREDICTIONS:
            raise GCDError(f"unknown prediction type {self.prediction!r}; choose one of {PREDICTIONS}")
        if self.net.config["in_channels"] != self.grid.n_channels:
            raise GCDError(
                f"network takes {self.net.config['in_channels']} channels, the grid has {self.grid.n_channels}"
            )
        for name in self.conditioning.label_grids:
            if name not in self.conditioning.labels:
                raise GCDError(f"label_grids names {name!r}, which is not one of the labels {self.conditioning.labels}")
            if self.grid_for(name).n_channels != self.grid.n_channels:
                raise GCDError(f"the grid of label {name!r} has a different number of species than the model's")

    def grid_for(self, label: str | int | None) -> VoxelGrid:
        """The voxel grid of one class (its own voxel edge and species if it has them), else the model's."""
        if label is None:
            return self.grid
        if not self.conditioning.labels:
            raise GCDError("this model was not trained with class labels; leave the label out")
        name = self.conditioning.labels[self.conditioning.label_index(label)]
        spec = self.conditioning.label_grids.get(name)
        return self.grid.with_options(**spec) if spec else self.grid

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: str | torch.device | None) -> GCDModel:
        self.net.to(resolve_device(device))
        return self

    def config(self) -> dict:
        return {
            "grid": self.grid.to_config(),
            "net": dict(self.net.config),
            "schedule": self.schedule.to_config(),
            "prediction": self.prediction,
            "conditioning": self.conditioning.to_config(),
        }

    @classmethod
    def from_config(cls, config: dict, metadata: dict | None = None) -> GCDModel:
        return cls(
            net=UNet3D(**config["net"]),
            grid=VoxelGrid.from_config(config["grid"]),
            schedule=schedule_from_config(config["schedule"]),
            prediction=config.get("prediction", "x0"),
            conditioning=Conditioning.from_config(config.get("conditioning")),
            metadata=dict(metadata or {}),
        )

    # -------------------------------------------------------------------------------------------- sampling
    def conditioning_tensors(
        self,
        batch: int,
        label: str | int | None = None,
        vector: torch.Tensor | None = None,
        scalars: dict[str, float] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Network keyword arguments for a batch that shares one condition (None entries mean unconditional)."""
        cond = self.conditioning
        device = self.device
        out: dict[str, torch.Tensor] = {}
        if label is not None:
            if not cond.labels:
                raise GCDError("this model was not trained with class labels; leave the label out")
            out["label"] = torch.full((batch,), cond.label_index(label), dtype=torch.long, device=device)
        if vector is not None:
            if not cond.vector_dim:
                raise GCDError("this model was not trained with a conditioning vector")
            vector = torch.as_tensor(vector, dtype=torch.float32, device=device).reshape(-1)
            if vector.numel() != cond.vector_dim:
                raise GCDError(f"the conditioning vector needs {cond.vector_dim} values, got {vector.numel()}")
            out["vector"] = vector.expand(batch, -1)
        if scalars:
            unknown = sorted(set(scalars) - set(cond.scalars))
            if unknown or set(scalars) != set(cond.scalars):
                raise GCDError(f"scalars must be exactly {cond.scalars}, got {sorted(scalars)}")
            values = torch.tensor([float(scalars[name]) for name in cond.scalars], device=device)
            out["scalars"] = values.expand(batch, -1)
        return out

    def training_cell(self, label: str | int | None = None) -> tuple[float, float, float] | None:
        """The cell (A) the model (or class ``label``) was trained on, from its metadata; None if unrecorded.

        Without a label, a model whose classes have their own voxels answers with the first class's training
        grid laid on the model's own voxels: the cell that unconditional samples of that grid size fill."""
        label_cells = self.metadata.get("data", {}).get("label_cells", {})
        if label is not None:
            name = self.conditioning.labels[self.conditioning.label_index(label)]
            if label_cells.get(name):
                return tuple(float(v) for v in label_cells[name])  # type: ignore[return-value]
        elif self.conditioning.label_grids and label_cells:
            first = next(iter(label_cells))
            shape = self.grid_for(first).layout(label_cells[first], warn=False).shape
            return tuple(n * h for n, h in zip(shape, self.grid.nominal_edges, strict=True))  # type: ignore
        cells = self.metadata.get("train_cells")
        return tuple(float(v) for v in cells[0]) if cells else None  # type: ignore[return-value]

    def denoiser(self, conditioning: dict[str, torch.Tensor] | None = None, **kwargs: Any) -> Denoiser:
        """A denoiser for this network (``kwargs`` as in :class:`Denoiser`; a self-conditioned network is
        sampled with its estimate unless ``self_condition=False`` is passed)."""
        kwargs.setdefault("self_condition", self.net.self_condition)
        return Denoiser(self.net, self.schedule, self.prediction, conditioning, **kwargs)

    # ----------------------------------------------------------------------------------------------- files
    def checkpoint_dict(self, ema_state: dict | None = None, **extra: Any) -> dict:
        """The dict saved to disk; ``extra`` adds training state (optimizer, step, loss log...)."""
        out = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config": self.config(),
            "model": self.net.state_dict(),
            "metadata": dict(self.metadata),
        }
        if ema_state is not None:
            out["ema"] = ema_state
        out.update(extra)
        return out

    def save(self, path: str | Path) -> None:
        """Save for inference only: weights (the ones in use) and config, no optimizer state."""
        write_checkpoint(path, self.checkpoint_dict())

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None, use_ema: bool = True) -> GCDModel:
        checkpoint = read_checkpoint(path)
        model = cls.from_config(checkpoint["config"], checkpoint.get("metadata"))
        state = checkpoint["ema"] if use_ema and "ema" in checkpoint else checkpoint["model"]
        model.net.load_state_dict(state)
        model.net.eval()
        return model.to(device)
