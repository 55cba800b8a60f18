"""BASELINE training: denoising score matching for the point-cloud baseline (``PointCloudBaseline``).

AdamW, warm-up + cosine learning rate, gradient clipping and EMA weights (the voxel trainer's ``EMA``), on random
translations, axis flips and (cubic cells) axis permutations of the training structures: the voxel model's
augmentations. The network is exactly invariant to translations and equivariant to flips (and, for frames "none"
and "cubic", to the permutations), so for those they change only which noise an example meets.
The learning-rate schedule follows whichever runs out first, steps or the time budget, so a time-budgeted run
still anneals.
"""

from __future__ import annotations

import datetime as _dt
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from gcd_core.baselines.pointcloud import (
    DEFAULT_SIGMA_MAX,
    DEFAULT_T_EPS,
    PointCloudBaseline,
    PointCloudScoreNet,
    denoising_score_matching_loss,
)
from gcd_core.device import resolve_device
from gcd_core.errors import GCDError
from gcd_core.training.trainer import EMA

CHECKPOINT_NAME = "pointcloud_baseline.pt"


@dataclass
class PointCloudTrainConfig:
    """BASELINE training settings."""

    steps: int = 20000
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    min_lr_fraction: float = 0.05
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    seed: int = 0
    time_budget_s: float | None = None  # stop after this much time (the schedule anneals to it)
    # the clock of the budget: "wall", or "cpu" (this process's CPU time: the same compute on a busy machine)
    budget_clock: str = "wall"
    log_every: int = 100
    translate: bool = True
    flip: bool = True
    permute_axes: bool = True  # in cubic cells only (the voxel model's 48 grid symmetries)

    def lr_at(self, step: int, elapsed_s: float = 0.0) -> float:
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        if self.time_budget_s:
            progress = max(progress, elapsed_s / self.time_budget_s)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return self.lr * (self.min_lr_fraction + (1 - self.min_lr_fraction) * cosine)


def _check_structures(structures: list[Atoms]) -> None:
    if not structures:
        raise GCDError("the point-cloud baseline needs at least one training structure")
    for n, atoms in enumerate(structures):
        cell = atoms.cell.array
        if not all(atoms.pbc) or len(atoms) == 0:
            raise GCDError(f"training structure {n} must be periodic in x, y, z and hold atoms")
        if np.abs(cell - np.diag(np.diag(cell))).max() > 1e-6 or np.diag(cell).min() <= 0:
            raise GCDError(f"training structure {n} needs an orthorhombic cell (diagonal cell matrix)")


def train_pointcloud(
    structures: list[Atoms],
    config: PointCloudTrainConfig,
    out_dir: str | Path | None,
    model: PointCloudBaseline | None = None,
    net_config: dict | None = None,
    sigma_max: float = DEFAULT_SIGMA_MAX,
    t_eps: float = DEFAULT_T_EPS,
    device: str | torch.device | None = None,
    progress: bool = False,
    metadata: dict | None = None,
) -> PointCloudBaseline:
    """Train the point-cloud BASELINE on ``structures``; returns it with the EMA weights.

    ``model`` continues an existing baseline (its weights, not its optimizer state); otherwise a new one is built
    from ``net_config`` (``PointCloudScoreNet`` arguments; the species come from the data). The checkpoint goes to
    ``out_dir/pointcloud_baseline.pt`` unless ``out_dir`` is None. Training metadata (steps, seconds, loss log)
    lands in ``model.metadata``.
    """
    _check_structures(structures)
    resolved = resolve_device(device)
    species = sorted({int(z) for atoms in structures for z in atoms.numbers})
    if model is None:
        net_kwargs = {**(net_config or {}), "num_species": len(species)}
        model = PointCloudBaseline(PointCloudScoreNet(**net_kwargs), species, sigma_max, t_eps)
    elif not set(species) <= set(model.species):
        raise GCDError(f"the data holds atomic numbers {species}; the model knows only {model.species}")
    model.to(resolved)
    net = model.net
    net.train()

    # the structures as tensors, once
    positions = [torch.tensor(a.get_positions(wrap=True), dtype=torch.float32, device=resolved) for a in structures]
    lengths = [torch.tensor(a.cell.lengths(), dtype=torch.float32, device=resolved) for a in structures]
    kinds = [model.species_indices(a.numbers) for a in structures]

    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    ema = EMA(net, config.ema_decay)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator(device=resolved)
    generator.manual_seed(config.seed)
    loss_log: list[dict] = []
    window: list[float] = []
    if config.budget_clock not in ("wall", "cpu"):
        raise GCDError(f"budget_clock must be 'wall' or 'cpu', got {config.budget_clock!r}")
    clock = time.process_time if config.budget_clock == "cpu" else time.perf_counter
    started = clock()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, desc="baseline training", unit="step")
    step = 0
    while step < config.steps:
        elapsed = clock() - started
        pick = rng.integers(len(structures), size=config.batch_size)
        xs, boxes, species_batch, batch = [], [], [], []
        for b, index in enumerate(pick):
            x, box = positions[index], lengths[index]
            if config.translate:  # the network is translation invariant; this only reshuffles wrapping
                x = x + torch.tensor(rng.random(3), dtype=x.dtype, device=resolved) * box
            if config.flip:
                flips = torch.tensor(rng.random(3) < 0.5, device=resolved)
                x = torch.where(flips, box - x, x)
            if config.permute_axes and bool(torch.allclose(box, box[0].expand(3))):
                x = x[:, torch.as_tensor(rng.permutation(3), device=resolved)]
            xs.append(torch.remainder(x, box))
            boxes.append(box)
            species_batch.append(kinds[index])
            batch.append(torch.full((len(x),), b, dtype=torch.long, device=resolved))
        x0, box, kind, batch_index = torch.cat(xs), torch.stack(boxes), torch.cat(species_batch), torch.cat(batch)

        for group in optimizer.param_groups:
            group["lr"] = config.lr_at(step, elapsed)

        def score_fn(x_t: torch.Tensor, t: torch.Tensor, _x0: torch.Tensor) -> torch.Tensor:
            return model.score(x_t, box, t, kind, batch_index)  # noqa: B023 (used within this iteration)

        loss = denoising_score_matching_loss(
            score_fn, x0, box, batch_index, model.sigma_max, model.t_eps, generator=generator
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
        optimizer.step()
        ema.update(net, step)
        step += 1
        window.append(float(loss.detach()))
        if bar is not None:
            bar.update(1)
        out_of_time = config.time_budget_s is not None and clock() - started > config.time_budget_s
        if step % config.log_every == 0 or step == config.steps or out_of_time:
            loss_log.append(
                {
                    "step": step,
                    "loss": float(np.mean(window)),
                    "lr": config.lr_at(step - 1, elapsed),
                    "grad_norm": float(grad_norm),
                    "seconds": clock() - started,
                }
            )
            window = []
            if bar is not None:
                bar.set_postfix(loss=f"{loss_log[-1]['loss']:.4f}")
        if out_of_time:
            break
    if bar is not None:
        bar.close()
    seconds = clock() - started
    net.load_state_dict(ema.state)
    net.eval()
    model.metadata.update(
        metadata or {},
        baseline="pointcloud (fixed atom count, VE diffusion, graph network)",
        steps=step,
        train_seconds=seconds,
        final_loss=loss_log[-1]["loss"] if loss_log else None,
        loss_log=loss_log,
        train=asdict(config),
        train_cells=[[float(v) for v in a.cell.lengths()] for a in structures[:8]],
        train_atoms=[len(a) for a in structures[:8]],
        date=_dt.date.today().isoformat(),
    )
    if out_dir is not None:
        path = Path(out_dir) / CHECKPOINT_NAME
        model.save(path)
    return model
