"""Training and scoring the XANES forward model on structures that carry site spectra (``atoms.arrays["xanes"]``)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from ase import Atoms

from gcd_core.errors import GCDError
from gcd_core.physics.xanes import XanesForwardModel


@dataclass
class XanesTrainConfig:
    epochs: int = 3000  # full-batch steps over every training site
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    hidden: int = 128


def _raw_descriptors(model: XanesForwardModel, structures: Sequence[Atoms]) -> torch.Tensor:
    """Unnormalised descriptors of every site (the model's normalisation is the identity while this runs)."""
    rows = []
    with torch.no_grad():
        for atoms in structures:
            positions = torch.as_tensor(atoms.get_positions(wrap=True), dtype=torch.float32)
            features = model.descriptors(positions, atoms.cell.lengths())
            rows.append(features * model.feature_std + model.feature_mean)
    return torch.cat(rows)


def _targets(structures: Sequence[Atoms]) -> torch.Tensor:
    missing = [a.info.get("name", i) for i, a in enumerate(structures) if "xanes" not in a.arrays]
    if missing:
        raise GCDError(f"structures without site spectra (atoms.arrays['xanes']): {missing[:5]}")
    return torch.as_tensor(np.concatenate([a.arrays["xanes"] for a in structures]), dtype=torch.float32)


def train_xanes(
    structures: Sequence[Atoms], config: XanesTrainConfig | None = None, log_every: int = 0
) -> tuple[XanesForwardModel, dict]:
    """Fit the forward model to every site of ``structures``; returns it (eval mode) and a training record."""
    config = config or XanesTrainConfig()
    torch.manual_seed(config.seed)
    model = XanesForwardModel(hidden=config.hidden)
    started = time.perf_counter()
    features = _raw_descriptors(model, structures)
    targets = _targets(structures)
    model.feature_mean.copy_(features.mean(0))
    model.feature_std.copy_(features.std(0).clamp_min(1e-3))
    inputs = (features - model.feature_mean) / model.feature_std
    optimizer = torch.optim.AdamW(model.mlp.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    losses = []
    model.train()
    for epoch in range(config.epochs):
        lr = config.lr * 0.5 * (1 + math.cos(math.pi * epoch / config.epochs))
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = torch.mean((model.site_spectra_from_descriptors(inputs) - targets) ** 2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if log_every and (epoch + 1) % log_every == 0:
            print(f"epoch {epoch + 1}: site MSE {losses[-1]:.4g}", flush=True)
    model.eval()
    record = {
        "train": asdict(config),
        "sites": len(targets),
        "structures": [a.info.get("name", str(i)) for i, a in enumerate(structures)],
        "final_site_mse": losses[-1],
        "loss_curve": [[int(e) + 1, losses[e]] for e in np.unique(np.linspace(0, len(losses) - 1, 30).astype(int))],
        "seconds": time.perf_counter() - started,
    }
    return model, record


def evaluate_xanes(model: XanesForwardModel, structures: Sequence[Atoms]) -> dict[str, float]:
    """Site MSE (every site's predicted vs reference spectrum) and structure MSE (site means), unit-area spectra;
    beside them the same figures for predicting one constant spectrum (the mean over these sites), for scale."""
    targets = _targets(structures).numpy()
    predicted = np.concatenate([model.site_spectra(a) for a in structures])
    counts = np.cumsum([0] + [len(a) for a in structures])
    mean_of = [slice(counts[k], counts[k + 1]) for k in range(len(structures))]
    structure_targets = np.stack([targets[s].mean(0) for s in mean_of])
    structure_predicted = np.stack([predicted[s].mean(0) for s in mean_of])
    constant = targets.mean(0)
    return {
        "site_mse": float(np.mean((predicted - targets) ** 2)),
        "structure_mse": float(np.mean((structure_predicted - structure_targets) ** 2)),
        "site_mse_constant": float(np.mean((constant - targets) ** 2)),
        "structure_mse_constant": float(np.mean((constant - structure_targets) ** 2)),
    }
