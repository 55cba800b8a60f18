"""Variance-preserving noise schedules over continuous time ``t`` in [0, 1].

``x_t = alpha(t) x_0 + sigma(t) eps`` with ``alpha^2 + sigma^2 = 1``. A schedule knows nothing of models; it is
stored in checkpoints as ``to_config()`` and rebuilt with ``schedule_from_config``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from gcd_core.errors import GCDError

_MIN_ALPHA_BAR = 1e-8


class NoiseSchedule:
    """Base class: subclasses define ``alpha_bar(t)``, the signal variance at time ``t``."""

    name: str = ""

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha_bar = self.alpha_bar(t).clamp(_MIN_ALPHA_BAR, 1.0)
        return alpha_bar.sqrt(), (1 - alpha_bar).sqrt()

    def add_noise(
        self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """``q(x_t | x_0)`` for a batch, ``t`` of shape ``[B]``."""
        alpha, sigma = (v.view(-1, *([1] * (x0.dim() - 1))) for v in self.alpha_sigma(t))
        return alpha * x0 + sigma * noise

    def timesteps(self, steps: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """``steps + 1`` times from 1 down to 0 for a sampler."""
        if steps < 1:
            raise GCDError(f"a sampler needs at least one step, got {steps}")
        return torch.linspace(1.0, 0.0, steps + 1, device=device, dtype=torch.float64)

    def to_config(self) -> dict:
        return {"name": self.name, **asdict(self)}  # type: ignore[call-overload]


@dataclass(frozen=True)
class CosineSchedule(NoiseSchedule):
    """Nichol & Dhariwal's cosine schedule."""

    offset: float = 0.008
    name = "cosine"

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        f = torch.cos((t + self.offset) / (1 + self.offset) * math.pi / 2) ** 2
        f0 = math.cos(self.offset / (1 + self.offset) * math.pi / 2) ** 2
        return f / f0


@dataclass(frozen=True)
class LinearSchedule(NoiseSchedule):
    """DDPM's linear beta schedule (``beta_start`` to ``beta_end`` over ``num_steps``), made continuous."""

    beta_start: float = 1e-4
    beta_end: float = 0.02
    num_steps: int = 1000
    name = "linear"

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        b0, b1 = self.beta_start * self.num_steps, self.beta_end * self.num_steps
        return torch.exp(-(b0 * t + 0.5 * (b1 - b0) * t**2))


SCHEDULES: dict[str, type[NoiseSchedule]] = {"cosine": CosineSchedule, "linear": LinearSchedule}


def schedule_from_config(config: dict | str) -> NoiseSchedule:
    """Rebuild a schedule from ``to_config()`` output or a bare name."""
    if isinstance(config, str):
        config = {"name": config}
    config = dict(config)
    name = config.pop("name", None)
    if name not in SCHEDULES:
        raise GCDError(f"unknown noise schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    try:
        return SCHEDULES[name](**config)
    except TypeError as exc:  # a parameter this schedule does not have
        raise GCDError(f"bad parameters {config} for the {name!r} noise schedule: {exc}") from exc
