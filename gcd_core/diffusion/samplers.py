"""Samplers: small generator functions over (denoiser, x, schedule) that yield one ``Frame`` per step.

A *denoiser* maps ``(x_t, t[B]) -> x0_hat`` in model space; ``Denoiser`` builds one from a network with
classifier-free guidance, optional gradient guidance and clipping. Every sampler takes a ``torch.Generator``
for its noise (same seed, same device: same result), can in-paint known voxels (with RePaint-style
resampling so the seam agrees with the known region), and yields frames a viewer can show while it runs::

    for frame in ddim(denoiser, x, schedule, steps=50, generator=g):
        show(frame.x0)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from gcd_core.diffusion.objective import x0_from_output
from gcd_core.diffusion.schedules import NoiseSchedule
from gcd_core.errors import GCDError

DenoiseFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Frame:
    """One sampler step: ``x`` is the noisy grid after the step, ``x0`` the clean prediction made in it."""

    step: int  # 1 .. num_steps
    num_steps: int
    t: float  # the time the step ends at
    x: torch.Tensor
    x0: torch.Tensor

    @property
    def done(self) -> bool:
        return self.step == self.num_steps


@dataclass
class Inpaint:
    """Known voxels held to a given clean grid: ``mask`` is 1 where ``known`` (model space) is imposed."""

    known: torch.Tensor
    mask: torch.Tensor

    def __post_init__(self) -> None:
        self.mask = self.mask.to(self.known.dtype)

    def impose(self, x: torch.Tensor, alpha: float, sigma: float, generator: torch.Generator | None) -> torch.Tensor:
        noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator) if sigma > 0 else 0
        return self.mask * (alpha * self.known + sigma * noise) + (1 - self.mask) * x


class Denoiser:
    """``(x_t, t) -> x0_hat`` from a network, with classifier-free and gradient guidance.

    ``guidance_scale`` w mixes the conditional and unconditional outputs as ``u + w (c - u)``: 1 is plain
    conditional sampling, 0 unconditional, >1 sharpens the condition. ``gradient_guidance(x0_hat) -> loss[B]``
    (optional) pushes the estimate downhill on a differentiable loss, scaled by ``gradient_scale``.
    ``projection(x0_hat, t) -> x0_hat`` (optional) maps every clamped estimate onto a constraint the structure
    must meet, e.g. an atom count (``gcd_core.grain_boundaries.SlabCount``).

    ``self_condition``: the net takes its previous estimate (``UNet3D(self_condition=True)``); the denoiser
    keeps the clean grid it returned last and passes it in. A call at a later time than the last one, or on a
    grid of another shape, is a new sampling run and starts without one (as does ``reset()``).
    """

    def __init__(
        self,
        net: Callable[..., torch.Tensor],
        schedule: NoiseSchedule,
        prediction: str = "x0",
        conditioning: dict[str, torch.Tensor] | None = None,
        guidance_scale: float = 1.0,
        gradient_guidance: Callable[[torch.Tensor], torch.Tensor] | None = None,
        gradient_scale: float = 0.0,
        clip: bool = True,
        self_condition: bool = False,
        projection: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.net = net
        self.schedule = schedule
        self.prediction = prediction
        self.conditioning = {k: v for k, v in (conditioning or {}).items() if v is not None}
        self.guidance_scale = float(guidance_scale)
        self.gradient_guidance = gradient_guidance
        self.gradient_scale = float(gradient_scale)
        self.clip = clip
        self.self_condition = self_condition
        self.projection = projection
        self._estimate: torch.Tensor | None = None
        self._last_time = float("inf")

    def reset(self) -> None:
        """Forget the last estimate (self-conditioning): the next call starts a new sampling run."""
        self._estimate, self._last_time = None, float("inf")

    def _output(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        w = self.guidance_scale
        extra = {"estimate": self._estimate} if self.self_condition else {}
        if not self.conditioning or w == 1.0:
            return self.net(x_t, t, **self.conditioning, **extra)
        batch = x_t.shape[0]
        if w == 0.0:
            drop = torch.ones(batch, dtype=torch.bool, device=x_t.device)
            return self.net(x_t, t, drop=drop, **self.conditioning, **extra)
        # one network call on a doubled batch: conditional rows first, then unconditional
        cond = {k: torch.cat([v, v]) for k, v in self.conditioning.items()}
        if self._estimate is not None:
            extra = {"estimate": torch.cat([self._estimate, self._estimate])}
        drop = torch.cat([torch.zeros(batch, dtype=torch.bool), torch.ones(batch, dtype=torch.bool)])
        out = self.net(torch.cat([x_t, x_t]), torch.cat([t, t]), drop=drop.to(x_t.device), **cond, **extra)
        conditional, unconditional = out[:batch], out[batch:]
        return unconditional + w * (conditional - unconditional)

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.self_condition:
            time = float(t.max())
            if time > self._last_time or (self._estimate is not None and self._estimate.shape != x_t.shape):
                self.reset()
            self._last_time = time
        x0 = self._denoise(x_t, t)
        if self.projection is not None:
            x0 = self.projection(x0, t)
        if self.self_condition:
            self._estimate = x0.detach()
        return x0

    def _denoise(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.gradient_guidance is None or self.gradient_scale == 0:
            with torch.no_grad():
                x0 = x0_from_output(self._output(x_t, t), x_t, t, self.schedule, self.prediction)
        else:
            with torch.enable_grad():
                x_in = x_t.detach().requires_grad_(True)
                x0 = x0_from_output(self._output(x_in, t), x_in, t, self.schedule, self.prediction)
                loss = self.gradient_guidance(x0).sum()
                (grad,) = torch.autograd.grad(loss, x_in)
            x0 = x0.detach() - self.gradient_scale * grad
        return x0.clamp(-1, 1) if self.clip else x0


def ddim(
    denoise: DenoiseFn,
    x: torch.Tensor,
    schedule: NoiseSchedule,
    steps: int = 50,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    inpaint: Inpaint | None = None,
    resample: int = 1,
    start_time: float = 1.0,
    resample_window: tuple[float, float] = (0.0, 1.0),
) -> Iterator[Frame]:
    """DDIM (Song et al.): deterministic for ``eta = 0``; ``eta = 1`` is the ancestral DDPM posterior.

    ``resample = r > 1`` takes every step r times, re-noising back to its start in between (RePaint): it
    harmonises an in-painted seam, and without in-painting it acts as a corrector that lets defects anneal out.
    ``resample_window = (lo, hi)`` limits that to the steps that start at a noise time lo <= t <= hi: in large
    crystal cells the corrector's work is done late (t <= 0.25), where grains that placed their atoms at
    different points inside their voxels settle on one (``benchmarks/results/crystal_resample_window_cpu.md``).
    ``start_time`` < 1 denoises an ``x`` noised only to that time (SDEdit; how far a model restores a structure).
    """
    if resample < 1:
        raise GCDError(f"resample must be at least 1, got {resample}")
    low, high = resample_window
    if not 0 <= low <= high <= 1:
        raise GCDError(f"resample_window must be (lo, hi) with 0 <= lo <= hi <= 1, got {tuple(resample_window)}")
    if not 0 < start_time <= 1:
        raise GCDError(f"start_time must lie in (0, 1], got {start_time}")
    times = schedule.timesteps(steps, device=x.device) * start_time
    alpha_bars = schedule.alpha_bar(times).clamp(1e-8, 1.0).tolist()
    batch = x.shape[0]
    for n in range(steps):
        t, s = float(times[n]), float(times[n + 1])
        abar_t, abar_s = alpha_bars[n], alpha_bars[n + 1]
        repeats = resample if low <= t <= high else 1
        for jump in range(repeats):
            t_batch = torch.full((batch,), t, device=x.device, dtype=x.dtype)
            x0 = denoise(x, t_batch)
            eps = (x - abar_t**0.5 * x0) / (1 - abar_t) ** 0.5
            noise_std = eta * ((1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s)) ** 0.5
            x_next = abar_s**0.5 * x0 + max(1 - abar_s - noise_std**2, 0.0) ** 0.5 * eps
            if noise_std > 0:
                x_next = x_next + noise_std * torch.randn(
                    x.shape, device=x.device, dtype=x.dtype, generator=generator
                )
            if inpaint is not None:
                x_next = inpaint.impose(x_next, abar_s**0.5, (1 - abar_s) ** 0.5, generator)
            if jump < repeats - 1:
                # back to time t through q(x_t | x_s), then the step is taken again
                ratio = abar_t / abar_s
                x_next = ratio**0.5 * x_next + (1 - ratio) ** 0.5 * torch.randn(
                    x.shape, device=x.device, dtype=x.dtype, generator=generator
                )
            x = x_next
        if inpaint is not None:
            x0 = inpaint.impose(x0, 1.0, 0.0, None)
        yield Frame(step=n + 1, num_steps=steps, t=s, x=x, x0=x0)


def ddpm(
    denoise: DenoiseFn,
    x: torch.Tensor,
    schedule: NoiseSchedule,
    steps: int = 200,
    generator: torch.Generator | None = None,
    inpaint: Inpaint | None = None,
    resample: int = 1,
    start_time: float = 1.0,
    resample_window: tuple[float, float] = (0.0, 1.0),
) -> Iterator[Frame]:
    """Ancestral sampling (Ho et al.) over ``steps`` evenly spaced times; ``resample``, ``start_time`` and
    ``resample_window`` as in ``ddim``."""
    yield from ddim(
        denoise, x, schedule, steps=steps, eta=1.0, generator=generator, inpaint=inpaint, resample=resample,
        start_time=start_time, resample_window=resample_window,
    )


SAMPLERS = {"ddim": ddim, "ddpm": ddpm}


def run_to_end(frames: Iterator[Frame]) -> torch.Tensor:
    """Exhaust a sampler and return its final clean grid."""
    last = None
    for last in frames:  # noqa: B007 (only the final frame is wanted)
        pass
    if last is None:
        raise GCDError("the sampler produced no frames")
    return last.x0
