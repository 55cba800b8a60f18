"""What the network predicts (x0, eps or v) and the weighted denoising loss."""

from __future__ import annotations

from collections.abc import Callable

import torch

from gcd_core.diffusion.schedules import NoiseSchedule
from gcd_core.errors import GCDError

PREDICTIONS = ("x0", "eps", "v")


def _check(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise GCDError(f"unknown prediction type {prediction!r}; choose one of {PREDICTIONS}")


def _broadcast(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return value.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


def x0_from_output(
    output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule, prediction: str
) -> torch.Tensor:
    """The clean-grid estimate implied by a network output."""
    _check(prediction)
    if prediction == "x0":
        return output
    alpha, sigma = (_broadcast(v, x_t) for v in schedule.alpha_sigma(t))
    if prediction == "eps":
        return (x_t - sigma * output) / alpha.clamp_min(1e-4)
    return alpha * x_t - sigma * output  # v = alpha eps - sigma x0


def training_target(
    x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule, prediction: str
) -> torch.Tensor:
    _check(prediction)
    if prediction == "x0":
        return x0
    if prediction == "eps":
        return noise
    alpha, sigma = (_broadcast(v, x0) for v in schedule.alpha_sigma(t))
    return alpha * noise - sigma * x0


NetFn = Callable[..., torch.Tensor]


def diffusion_loss(
    net: NetFn,
    x0: torch.Tensor,
    weights: torch.Tensor,
    schedule: NoiseSchedule,
    prediction: str = "x0",
    conditioning: dict[str, torch.Tensor] | None = None,
    drop_probability: float = 0.0,
    t_min: float = 1e-3,
    generator: torch.Generator | None = None,
    t_max: float = 1.0,
    self_condition_probability: float = 0.0,
    corrupt: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor] | None = None,
    corrupt_below: float = 1.0,
) -> torch.Tensor:
    """Weighted MSE of the network's prediction at a random time, for a clean model-space batch ``x0``.

    ``weights`` (same shape as ``x0``) come from ``VoxelGrid.loss_weights``. Conditioning is dropped per sample
    with ``drop_probability`` so one network learns the conditional and the unconditional score
    (classifier-free guidance). Times are uniform in ``[t_min, t_max]``.

    With ``self_condition_probability`` p > 0 the net takes an ``estimate`` (see ``UNet3D``): for a fraction p of
    batches it first predicts without one, and that clean-grid estimate, clipped as a sampler clips it and
    without gradient, is passed in for the prediction that is scored; other batches pass none, as the first
    sampling step does.

    ``corrupt(x0, generator)`` (x0 prediction only) noises a corrupted copy of the batch, for samples whose time
    is at most ``corrupt_below``, while the target stays the clean grid: the net learns to undo a sampler's
    typical error as well as the noise (e.g. ``gcd_core.representation.split_sites``).
    """
    if not 0 <= t_min < t_max <= 1:
        raise GCDError(f"training times need 0 <= t_min < t_max <= 1, got [{t_min}, {t_max}]")
    batch = x0.shape[0]
    device = x0.device
    t = t_min + (t_max - t_min) * torch.rand(batch, device=device, generator=generator, dtype=torch.float64)
    noise = torch.randn(x0.shape, device=device, generator=generator, dtype=x0.dtype)
    x_in = x0
    if corrupt is not None:
        if prediction != "x0":
            raise GCDError(f"corrupted inputs need x0 prediction (the target is the clean grid), not {prediction!r}")
        corrupted = _broadcast(t <= corrupt_below, x0).bool()
        x_in = torch.where(corrupted, corrupt(x0, generator), x0)
    x_t = schedule.add_noise(x_in, t, noise).to(x0.dtype)
    kwargs = dict(conditioning or {})
    if kwargs and drop_probability > 0:
        kwargs["drop"] = torch.rand(batch, device=device, generator=generator) < drop_probability
    t_net = t.to(x0.dtype)
    if self_condition_probability > 0:
        estimate = None
        if torch.rand((), device=device, generator=generator) < self_condition_probability:
            with torch.no_grad():
                first = net(x_t, t_net, estimate=None, **kwargs)
                estimate = x0_from_output(first.float(), x_t, t, schedule, prediction).clamp(-1, 1).to(x0.dtype)
        kwargs["estimate"] = estimate
    output = net(x_t, t_net, **kwargs)
    target = training_target(x0, noise, t, schedule, prediction)
    squared = (output.float() - target.float()) ** 2 * weights
    return squared.sum() / weights.sum().clamp_min(1e-8)
