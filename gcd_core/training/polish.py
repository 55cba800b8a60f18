"""Training and scoring the atom-space position refiner (:mod:`gcd_core.polish`) by denoising score matching."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from ase import Atoms

from gcd_core.errors import GCDError
from gcd_core.polish import SIGMA_RANGE, PositionRefiner


@dataclass
class RefinerTrainConfig:
    steps: int = 4000
    batch: int = 4  # structures per step, each with its own noise level
    lr: float = 2e-3
    seed: int = 0
    hidden: int = 64
    layers: int = 3
    cutoff: float = 3.2


def _noisy(x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, float]:
    low, high = (math.log(s) for s in SIGMA_RANGE)
    sigma = math.exp(low + (high - low) * float(torch.rand((), generator=generator)))
    return x + sigma * torch.randn(x.shape, generator=generator), sigma


def train_refiner(
    structures: Sequence[Atoms], config: RefinerTrainConfig | None = None, log_every: int = 0,
    time_budget: float | None = None,
) -> tuple[PositionRefiner, dict]:
    """Fit a :class:`PositionRefiner` to ``structures`` (positions noised at log-uniform levels in
    :data:`SIGMA_RANGE`; loss: the squared error of the predicted displacement over sigma^2, i.e. of the noise);
    stops after ``config.steps`` or ``time_budget`` seconds. Returns it (eval mode) and a training record."""
    if not structures:
        raise GCDError("the refiner needs training structures")
    config = config or RefinerTrainConfig()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    species = sorted({symbol for atoms in structures for symbol in atoms.get_chemical_symbols()})
    if len(species) != 1:
        raise GCDError(f"the refiner learns one species; the training structures hold {species}")
    model = PositionRefiner(species[0], cutoff=config.cutoff, hidden=config.hidden, layers=config.layers)
    cells = [(torch.as_tensor(a.get_positions(wrap=True), dtype=torch.float32),
              torch.as_tensor(a.cell.lengths(), dtype=torch.float32)) for a in structures]
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-5)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.steps)
    losses: list[float] = []
    started = time.perf_counter()
    model.train()
    step = 0
    for step in range(1, config.steps + 1):
        picks = torch.randint(len(cells), (config.batch,), generator=generator).tolist()
        loss = 0.0
        for index in picks:
            clean, lengths = cells[index]
            noisy, sigma = _noisy(clean, generator)
            predicted = model(noisy, lengths, sigma)
            loss = loss + ((predicted - (clean - noisy)) ** 2).sum(-1).mean() / sigma**2 / config.batch
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if log_every and step % log_every == 0:
            print(f"step {step}: loss {np.mean(losses[-log_every:]):.4f} ({time.perf_counter() - started:.0f} s)",
                  flush=True)
        if time_budget is not None and time.perf_counter() - started > time_budget:
            break
    model.eval()
    record = {
        "config": asdict(config),
        "steps": step,
        "seconds": round(time.perf_counter() - started, 1),
        "loss": "squared error of the predicted noise per atom, mean over atoms (3.0 when nothing is predicted)",
        "final_loss": float(np.mean(losses[-100:])),
        "loss_curve": [round(float(np.mean(losses[i : i + 100])), 4) for i in range(0, len(losses), 100)],
    }
    return model, record


def denoising_error(
    model: PositionRefiner, structures: Sequence[Atoms], sigmas: Sequence[float] = (0.02, 0.05, 0.1), seed: int = 0
) -> dict[float, dict[str, float]]:
    """Per noise level, the RMS atom displacement (A) from the clean positions before and after one refiner step,
    over ``structures`` noised at that level (held-out cells tell how well it generalises)."""
    generator = torch.Generator().manual_seed(seed)
    scores = {}
    with torch.no_grad():
        for sigma in sigmas:
            before, after = [], []
            for atoms in structures:
                clean = torch.as_tensor(atoms.get_positions(wrap=True), dtype=torch.float32)
                lengths = torch.as_tensor(atoms.cell.lengths(), dtype=torch.float32)
                noisy = clean + sigma * torch.randn(clean.shape, generator=generator)
                before.append(((noisy - clean) ** 2).sum(-1))
                after.append(((noisy + model(noisy, lengths, sigma) - clean) ** 2).sum(-1))
            scores[float(sigma)] = {"rms_noisy": float(torch.cat(before).mean().sqrt()),
                                    "rms_denoised": float(torch.cat(after).mean().sqrt())}
    return scores
