"""Device choice: CUDA when present, CPU otherwise, always overridable."""

from __future__ import annotations

import torch

from gcd_core.errors import GCDError


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Return ``device`` as a ``torch.device``; ``None`` or ``"auto"`` picks CUDA when available."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise GCDError(f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N' or 'auto'") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise GCDError(f"device {device!r} was asked for but CUDA is not available on this machine")
    return resolved


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A seeded random generator on ``device`` (a fresh random seed when ``seed`` is None)."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(int(seed))
    return generator
