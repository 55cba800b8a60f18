"""Training loop: AdamW, EMA weights, gradient clipping, bf16 autocast on CUDA, checkpoint + resume, DDP.

Randomness is derived from ``(seed, rank, step)``, so a run resumed from a checkpoint continues exactly as an
uninterrupted one would. Launch on several processes with ``torchrun``; ranks talk over gloo on CPU and NCCL
on CUDA, and rank 0 writes the checkpoints.
"""

from __future__ import annotations

import csv
import datetime as _dt
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from gcd_core.checkpoint import read_checkpoint, write_checkpoint
from gcd_core.device import resolve_device
from gcd_core.diffusion.objective import diffusion_loss
from gcd_core.errors import GCDError
from gcd_core.model import GCDModel
from gcd_core.representation.augment import split_sites
from gcd_core.training.dataset import VoxelDataset

CHECKPOINT_NAME = "checkpoint.pt"
REFIT_EVERY = 200
LOSS_LOG_NAME = "loss_log.csv"


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 16
    lr: float = 5e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    min_lr_fraction: float = 0.1  # cosine decay of the learning rate down to this fraction
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    occupied_weight: float = 10.0  # extra loss weight on occupied voxels (see VoxelGrid.loss_weights)
    drop_probability: float = 0.1  # conditioning dropout for classifier-free guidance
    # noise times drawn uniformly from this range; a narrower one fine-tunes the part of the trajectory where
    # samples go wrong (a-C: the bond network forms between t = 0.3 and 0.5)
    time_range: tuple[float, float] = (1e-3, 1.0)
    mixed_precision: bool = True  # bf16 autocast, CUDA only
    checkpoint_every: int = 500
    log_every: int = 25
    seed: int = 0
    time_budget_s: float | None = None  # stop early (and checkpoint) after this much wall time
    # with a time budget: every REFIT_EVERY steps, set ``steps`` (never above the planned number) to what the
    # rest of the budget allows at the recent step time, so the cosine learning rate decays to its end
    # rather than being cut off mid-way
    fit_steps_to_budget: bool = False
    # for a self-conditioned net: the fraction of batches that pass the net its own first estimate (Chen et al.
    # use one half)
    self_condition_probability: float = 0.5
    # sharp grids, x0 prediction: the share of structures whose input has split sites (an atom doubled into the
    # voxel across its nearest face; ``split_sites``), at noise times up to ``split_sites_below``; the target
    # stays clean, so the net learns to undo the doubled sites samplers leave (0: off)
    split_sites: float = 0.0
    split_sites_below: float = 0.5

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps))
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return self.lr * (self.min_lr_fraction + (1 - self.min_lr_fraction) * cosine)


@dataclass
class TrainResult:
    model: GCDModel  # EMA weights
    steps_done: int
    final_loss: float
    seconds: float
    loss_log: list[dict] = field(default_factory=list)
    checkpoint: Path | None = None


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | torch.device | None = None) -> DistributedContext:
    """Join the process group when launched by ``torchrun`` (gloo on CPU, NCCL on CUDA); else one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    resolved = resolve_device(device)
    if world_size <= 1:
        return DistributedContext(0, 1, resolved)
    rank = int(os.environ["RANK"])
    if resolved.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
    return DistributedContext(rank, world_size, resolved)


class EMA:
    """Exponential moving average of a module's floating-point state, with the usual warm-up of the decay."""

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for key, value in module.state_dict().items():
            if value.dtype.is_floating_point:
                self.state[key].lerp_(value.detach(), 1 - decay)
            else:
                self.state[key].copy_(value)


def _step_generators(
    seed: int, rank: int, step: int, device: torch.device
) -> tuple[np.random.Generator, torch.Generator]:
    data_rng = np.random.default_rng([seed, rank, step])
    noise_rng = torch.Generator(device=device)
    noise_rng.manual_seed(int(data_rng.integers(2**62)))
    return data_rng, noise_rng


def train(
    model: GCDModel,
    dataset: VoxelDataset,
    config: TrainConfig,
    out_dir: str | Path,
    resume: bool = True,
    progress: bool = True,
    device: str | torch.device | None = None,
    metadata: dict | None = None,
) -> TrainResult:
    """Train ``model`` on ``dataset``; checkpoints go to ``out_dir/checkpoint.pt``, the loss log beside it."""
    context = init_distributed(device)
    out_dir = Path(out_dir)
    checkpoint_path = out_dir / CHECKPOINT_NAME
    if model.conditioning.is_conditional and config.drop_probability <= 0:
        raise GCDError("a conditional model needs drop_probability > 0 to learn the unconditional branch")
    if config.split_sites and (model.grid.encoding != "sharp" or model.prediction != "x0"):
        raise GCDError("split_sites needs the sharp encoding and x0 prediction")
    model.to(context.device)
    net = model.net
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    ema = EMA(net, config.ema_decay)
    start_step, loss_log = 0, []
    if resume and checkpoint_path.is_file():
        saved = read_checkpoint(checkpoint_path)
        if saved["config"] != model.config():
            raise GCDError(f"{checkpoint_path} belongs to a different model configuration; use another out_dir")
        net.load_state_dict(saved["model"])
        ema.state = {k: v.to(context.device) for k, v in saved["ema"].items()}
        optimizer.load_state_dict(saved["optimizer"])
        start_step, loss_log = int(saved["step"]), list(saved.get("loss_log", []))
    meta = {**(metadata or {}), "train_cells": [list(c) for c in dataset.cell_lengths]}
    if start_step >= config.steps:
        model.metadata.update(meta)
        return _finish(model, ema, start_step, loss_log, 0.0, checkpoint_path)

    trained = net
    if context.world_size > 1:
        trained = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[context.device.index] if context.device.type == "cuda" else None
        )
    autocast = config.mixed_precision and context.device.type == "cuda"
    if context.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # a few grid shapes, each seen many times
    config = replace(config)  # fit_steps_to_budget changes config.steps: the caller's copy stays as given
    planned_steps, mark = config.steps, None
    net.train()
    bar = None
    if progress and context.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, initial=start_step, desc="training", unit="step")
    corrupt = _site_splitter(model, config.split_sites) if config.split_sites else None
    started = time.perf_counter()
    window: list[float] = []
    step = start_step
    while step < config.steps:
        data_rng, noise_rng = _step_generators(config.seed, context.rank, step, context.device)
        x0_data, conditioning = dataset.batch(config.batch_size, data_rng, context.device)
        weights = model.grid.loss_weights(x0_data, config.occupied_weight)
        for group in optimizer.param_groups:
            group["lr"] = config.lr_at(step)
        with torch.autocast(context.device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = diffusion_loss(
                trained,
                model.grid.to_model_space(x0_data),
                weights,
                model.schedule,
                model.prediction,
                conditioning,
                config.drop_probability if conditioning else 0.0,
                t_min=config.time_range[0],
                t_max=config.time_range[1],
                generator=noise_rng,
                self_condition_probability=config.self_condition_probability if net.self_condition else 0.0,
                corrupt=corrupt,
                corrupt_below=config.split_sites_below,
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
        elapsed = time.perf_counter() - started
        out_of_time = config.time_budget_s is not None and elapsed > config.time_budget_s
        since = step - start_step - 10  # the first steps pay for cuDNN's autotuning: left out of the timing
        if config.fit_steps_to_budget and config.time_budget_s and since >= 0 and since % REFIT_EVERY == 0:
            if mark is not None:
                per_step = (elapsed - mark[1]) / (step - mark[0])
                fitted = step + int((config.time_budget_s - elapsed) / per_step)
                affordable = torch.tensor([min(planned_steps, max(step, fitted))], device=context.device)
                if context.world_size > 1:  # every rank must stop at the same step
                    dist.all_reduce(affordable, op=dist.ReduceOp.MIN)
                config.steps = int(affordable.item())
                if bar is not None:
                    bar.total = config.steps
            mark = (step, elapsed)
        if context.world_size > 1:
            flag = torch.tensor([float(out_of_time)], device=context.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # every rank stops at the same step
            out_of_time = bool(flag.item())
        if step % config.log_every == 0 or step == config.steps or out_of_time:
            mean_loss = torch.tensor([float(np.mean(window))], device=context.device)
            if context.world_size > 1:  # the logged loss is the mean over ranks
                dist.all_reduce(mean_loss)
                mean_loss /= context.world_size
            entry = {
                "step": step,
                "loss": float(mean_loss.item()),
                "lr": config.lr_at(step - 1),
                "grad_norm": float(grad_norm),
                "seconds": time.perf_counter() - started,
            }
            loss_log.append(entry)
            window = []
            if bar is not None:
                bar.set_postfix(loss=f"{entry['loss']:.4f}")
        if context.is_main and (step % config.checkpoint_every == 0 or step == config.steps or out_of_time):
            _save_training_checkpoint(model, ema, optimizer, step, loss_log, config, checkpoint_path, meta)
        if out_of_time:
            break
    if bar is not None:
        bar.close()
    if context.world_size > 1:
        dist.barrier()
    model.metadata.update(meta)
    return _finish(model, ema, step, loss_log, time.perf_counter() - started, checkpoint_path)


def _site_splitter(model: GCDModel, probability: float):
    """``split_sites`` on model-space grids."""
    grid = model.grid

    def corrupt(x0: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        data = grid.to_data_space(x0.float())
        return grid.to_model_space(split_sites(data, grid, generator, probability)).to(x0.dtype)

    return corrupt


def _save_training_checkpoint(
    model: GCDModel,
    ema: EMA,
    optimizer: torch.optim.Optimizer,
    step: int,
    loss_log: list[dict],
    config: TrainConfig,
    path: Path,
    metadata: dict,
) -> None:
    model.metadata.update(metadata, steps=step, date=_dt.date.today().isoformat())
    if loss_log:
        model.metadata["final_loss"] = loss_log[-1]["loss"]
    checkpoint = model.checkpoint_dict(
        ema_state=ema.state, optimizer=optimizer.state_dict(), step=step, loss_log=loss_log, train=asdict(config)
    )
    write_checkpoint(path, checkpoint)
    with open(path.parent / LOSS_LOG_NAME, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["step", "loss", "lr", "grad_norm", "seconds"])
        writer.writeheader()
        writer.writerows(loss_log)


def _finish(
    model: GCDModel, ema: EMA, step: int, loss_log: list[dict], seconds: float, checkpoint: Path
) -> TrainResult:
    model.net.load_state_dict(ema.state)
    model.net.eval()
    final = loss_log[-1]["loss"] if loss_log else float("nan")
    return TrainResult(model, step, final, seconds, loss_log, checkpoint if checkpoint.is_file() else None)
