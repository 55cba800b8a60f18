"""A periodic 3D U-Net that denoises voxel grids of atoms.

Every convolution wraps around the cell (circular padding), normalisation is GroupNorm (global
statistics, so translation invariant) and there is no attention, so the network is exactly
equivariant to periodic shifts by multiples of :attr:`UNet3D.stride` and runs on any grid whose
sides are multiples of that stride, including grids larger than it was trained on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gcd_core.errors import GCDError

__all__ = ["UNet3D"]


def _group_count(channels: int, groups: int) -> int:
    """Largest group count <= ``groups`` that divides ``channels`` (GroupNorm needs an exact split)."""
    for g in range(min(groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(_group_count(channels, groups), channels)


def _conv3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv3d:
    """3x3x3 conv that wraps around the periodic cell instead of seeing zeros at the faces."""
    return nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1, padding_mode="circular")


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer-style sin/cos features of ``1000 * t`` (``t`` in [0, 1]), shape ``[B, dim]``."""
    half = dim // 2
    # float32 regardless of autocast: bf16 cannot resolve 1000 * t to better than a few steps.
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / max(half, 1)
    )
    args = 1000.0 * t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with a FiLM (scale, shift) from the embedding after the second norm."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = _norm(in_channels, groups)
        self.conv1 = _conv3(in_channels, out_channels)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_channels)
        self.norm2 = _norm(out_channels, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _conv3(out_channels, out_channels)
        # A 1x1x1 conv needs no padding, so it keeps the block periodic.
        self.skip = nn.Conv3d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb_proj(F.silu(emb))[:, :, None, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return h + self.skip(x)


class _Downsample(nn.Module):
    """Stride-2 circular conv: halves every side, and a shift by 2 in becomes a shift by 1 out."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = _conv3(channels, channels, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _Upsample(nn.Module):
    """Nearest-neighbour x2 then a circular conv (no transposed conv, so no checkerboard artefacts)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = _conv3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


def _mlp(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))


class UNet3D(nn.Module):
    """Periodic 3D U-Net mapping ``[B, in_channels, X, Y, Z]`` to ``[B, out_channels, X, Y, Z]``.

    Conditioning (class label, vector, scalars) is optional; each kind the net was built for has a learned
    null embedding, used when that kind is passed as ``None`` or for rows where ``drop`` is True
    (classifier-free guidance). The constructor arguments are plain JSON values and :attr:`config`
    returns them, so ``UNet3D(**net.config)`` rebuilds the same architecture.

    Every parameter gets a gradient whenever all conditioning kinds the net has are passed (with or
    without ``drop``); a kind passed as ``None`` leaves its MLP unused, which DDP must be told about.

    ``self_condition`` (Chen et al., *Analog Bits*) adds ``in_channels`` more input channels that carry the
    net's own previous clean-grid estimate (zeros when there is none), so that each sampling step refines the
    last one's decisions (which of two voxels holds an atom, where the lattice sits) instead of making them anew.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        base_channels: int = 32,
        channel_mults: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 1,
        num_classes: int = 0,
        vector_dim: int = 0,
        num_scalars: int = 0,
        dropout: float = 0.0,
        groups: int = 8,
        self_condition: bool = False,
    ):
        super().__init__()
        mults = [int(m) for m in channel_mults]
        for name, value, low in (
            ("in_channels", in_channels, 1),
            ("out_channels", out_channels, 1),
            ("base_channels", base_channels, 1),
            ("num_res_blocks", num_res_blocks, 1),
            ("num_classes", num_classes, 0),
            ("vector_dim", vector_dim, 0),
            ("num_scalars", num_scalars, 0),
            ("groups", groups, 1),
        ):
            if int(value) != value or value < low:
                raise GCDError(f"UNet3D: {name} must be an integer >= {low}, got {value!r}")
        if not mults or min(mults) < 1:
            raise GCDError(
                f"UNet3D: channel_mults must be a non-empty list of positive integers, got {mults}"
            )
        if not 0.0 <= float(dropout) < 1.0:
            raise GCDError(f"UNet3D: dropout must be in [0, 1), got {dropout!r}")

        self._config: dict[str, Any] = {
            "in_channels": int(in_channels),
            "out_channels": int(out_channels),
            "base_channels": int(base_channels),
            "channel_mults": mults,
            "num_res_blocks": int(num_res_blocks),
            "num_classes": int(num_classes),
            "vector_dim": int(vector_dim),
            "num_scalars": int(num_scalars),
            "dropout": float(dropout),
            "groups": int(groups),
        }
        if self_condition:  # only when set, so configs saved before the option existed compare equal
            self._config["self_condition"] = True
        self.self_condition = bool(self_condition)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.num_classes = int(num_classes)
        self.vector_dim = int(vector_dim)
        self.num_scalars = int(num_scalars)

        base = int(base_channels)
        emb_dim = 4 * base
        self._freq_dim = 2 * ((base + 1) // 2)  # sin/cos pairs need an even width
        self.time_mlp = _mlp(self._freq_dim, emb_dim)

        # Conditioning: each kind has its own null embedding so that dropping one kind is well defined.
        self.label_emb = nn.Embedding(self.num_classes + 1, emb_dim) if self.num_classes else None
        if self.vector_dim:
            self.vector_mlp = _mlp(self.vector_dim, emb_dim)
            self.null_vector = nn.Parameter(0.02 * torch.randn(emb_dim))
        else:
            self.vector_mlp, self.null_vector = None, None
        if self.num_scalars:
            self.scalar_mlp = _mlp(self.num_scalars, emb_dim)
            self.null_scalars = nn.Parameter(0.02 * torch.randn(emb_dim))
        else:
            self.scalar_mlp, self.null_scalars = None, None

        def block(cin: int, cout: int) -> _ResBlock:
            return _ResBlock(cin, cout, emb_dim, int(groups), float(dropout))

        # Encoder (DDPM layout): every block and downsample output is kept as a skip connection.
        self.conv_in = _conv3(self.in_channels * (2 if self.self_condition else 1), base)
        self.down = nn.ModuleList()
        skip_channels = [base]
        ch = base
        for level, mult in enumerate(mults):
            for _ in range(num_res_blocks):
                self.down.append(block(ch, base * mult))
                ch = base * mult
                skip_channels.append(ch)
            if level < len(mults) - 1:
                self.down.append(_Downsample(ch))
                skip_channels.append(ch)

        self.mid = nn.ModuleList([block(ch, ch), block(ch, ch)])

        # Decoder: num_res_blocks + 1 blocks per level, each consuming one skip, in reverse order.
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(mults))):
            for _ in range(num_res_blocks + 1):
                self.up.append(block(ch + skip_channels.pop(), base * mult))
                ch = base * mult
            if level > 0:
                self.up.append(_Upsample(ch))

        self.norm_out = _norm(ch, int(groups))
        # Default init on purpose: the net predicts clean grids, and a zero-init head slows that down.
        self.conv_out = _conv3(ch, self.out_channels)

    @property
    def config(self) -> dict[str, Any]:
        """Constructor kwargs as plain JSON values; ``UNet3D(**net.config)`` rebuilds the architecture."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self._config.items()}

    def load_weights_from(self, other: UNet3D) -> None:
        """Copy ``other``'s weights; a net built as ``other`` plus ``self_condition`` gets zero weights on its
        estimate channels, so it starts out computing exactly what ``other`` does."""
        mine = {k: v for k, v in self.config.items() if k != "self_condition"}
        theirs = {k: v for k, v in other.config.items() if k != "self_condition"}
        if mine != theirs or (other.self_condition and not self.self_condition):
            raise GCDError(f"cannot start a network {self.config} from the weights of {other.config}")
        state = other.state_dict()
        if self.self_condition and not other.self_condition:
            weight = state["conv_in.weight"]
            state["conv_in.weight"] = torch.cat([weight, torch.zeros_like(weight)], dim=1)
        self.load_state_dict(state)

    @property
    def stride(self) -> int:
        """Every spatial side must be a multiple of this (one halving per level below the top)."""
        return 2 ** (len(self._config["channel_mults"]) - 1)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 5:
            raise GCDError(f"UNet3D expects x of shape [B, C, X, Y, Z], got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise GCDError(
                f"UNet3D was built for {self.in_channels} input channels, got x of shape {tuple(x.shape)}"
            )
        spatial = tuple(x.shape[2:])
        if any(s % self.stride for s in spatial):
            raise GCDError(
                f"grid shape {spatial} is not divisible by {self.stride}: this UNet3D has "
                f"{len(self._config['channel_mults'])} levels, so every side must be a multiple of "
                f"{self.stride}"
            )

    def _embed(
        self,
        t: torch.Tensor | float,
        batch: int,
        device: torch.device,
        label: torch.Tensor | None,
        vector: torch.Tensor | None,
        scalars: torch.Tensor | None,
        drop: torch.Tensor | None,
    ) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float32, device=device)
        if t.ndim == 0:
            t = t.expand(batch)
        t = t.reshape(-1)
        if t.shape[0] != batch:
            raise GCDError(f"t must be a float or have one value per batch row ({batch}), got {t.shape[0]}")
        emb = self.time_mlp(sinusoidal_embedding(t, self._freq_dim))

        if drop is not None:
            drop = torch.as_tensor(drop, device=device).to(torch.bool).reshape(-1)
            if drop.shape[0] != batch:
                raise GCDError(f"drop must have one entry per batch row ({batch}), got {drop.shape[0]}")
        else:
            # An all-False mask keeps the null parameters in the graph (zero grad, not None): DDP-friendly.
            drop = torch.zeros(batch, dtype=torch.bool, device=device)

        if self.label_emb is not None:
            null = torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
            if label is None:
                idx = null
            else:
                label = torch.as_tensor(label, device=device)
                if label.dtype.is_floating_point or label.dtype == torch.bool or label.shape != (batch,):
                    raise GCDError(
                        f"label must be an integer tensor of shape [{batch}], got {label.dtype} "
                        f"{tuple(label.shape)}"
                    )
                # Skipped under torch.compile: the check needs a host sync and breaks the graph.
                if not torch.compiler.is_compiling() and bool(
                    ((label < 0) | (label >= self.num_classes)).any()
                ):
                    raise GCDError(
                        f"label values must lie in [0, {self.num_classes}); use label=None or drop=True "
                        "for the unconditional (null) class"
                    )
                idx = torch.where(drop, null, label.long())
            emb = emb + self.label_emb(idx)
        elif label is not None:
            raise GCDError("label was given but this UNet3D was built with num_classes=0")

        emb = emb + self._embed_dense(
            "vector", vector, self.vector_mlp, self.null_vector, self.vector_dim, batch, drop, emb
        )
        emb = emb + self._embed_dense(
            "scalars", scalars, self.scalar_mlp, self.null_scalars, self.num_scalars, batch, drop, emb
        )
        return emb

    @staticmethod
    def _embed_dense(
        name: str,
        value: torch.Tensor | None,
        mlp: nn.Module | None,
        null: torch.Tensor | None,
        dim: int,
        batch: int,
        drop: torch.Tensor,
        like: torch.Tensor,
    ) -> torch.Tensor | float:
        """Embedding of a dense conditioning input (null rows where dropped); 0 if the net lacks that kind."""
        size_arg = "vector_dim" if name == "vector" else "num_scalars"
        if mlp is None or null is None:
            if value is not None:
                raise GCDError(f"{name} was given but this UNet3D was built with {size_arg}=0")
            return 0.0
        if value is None:
            return null.to(like.dtype).expand(batch, -1)
        value = torch.as_tensor(value, device=like.device)
        if value.shape != (batch, dim):
            raise GCDError(f"{name} must have shape [{batch}, {dim}], got {tuple(value.shape)}")
        out = mlp(value.to(torch.float32))
        return torch.where(drop[:, None], null.to(out.dtype), out)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor | float,
        label: torch.Tensor | None = None,
        vector: torch.Tensor | None = None,
        scalars: torch.Tensor | None = None,
        drop: torch.Tensor | None = None,
        estimate: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Denoise ``x`` at diffusion time ``t``; returns ``[B, out_channels, X, Y, Z]``.

        ``t``: float, 0-dim or ``[B]`` tensor in [0, 1]. ``label``: long ``[B]`` in [0, num_classes).
        ``vector``: ``[B, vector_dim]``. ``scalars``: ``[B, num_scalars]``. ``drop``: bool ``[B]``; True
        rows use the null embedding for every conditioning kind; a kind given as ``None`` is null for all
        rows. ``estimate``: the previous clean-grid estimate, shaped like ``x``, for a self-conditioned net
        (``None``: no estimate yet, read as zeros); a net without self-conditioning refuses one.
        """
        self._check_input(x)
        emb = self._embed(t, x.shape[0], x.device, label, vector, scalars, drop)
        if self.self_condition:
            if estimate is None:
                estimate = torch.zeros_like(x)
            elif estimate.shape != x.shape:
                raise GCDError(f"the estimate has shape {tuple(estimate.shape)}, x has {tuple(x.shape)}")
            x = torch.cat([x, estimate.to(x.dtype)], dim=1)
        elif estimate is not None:
            raise GCDError("this network was built without self_condition; it takes no estimate")

        h = self.conv_in(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, _ResBlock) else layer(h)
            skips.append(h)
        for layer in self.mid:
            h = layer(h, emb)
        for layer in self.up:
            is_block = isinstance(layer, _ResBlock)
            h = layer(torch.cat([h, skips.pop()], dim=1), emb) if is_block else layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))
