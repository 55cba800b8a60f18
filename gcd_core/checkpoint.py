"""Reading checkpoint files safely (``torch.load(weights_only=True)``) with clear errors, for every model family."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from gcd_core.errors import GCDError

# trained models shipped with the source tree (assets/ beside gcd_core/)
ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"
DEFAULT_CRYSTAL_MODEL = ASSETS_DIR / "crystal_phases.pt"
DEFAULT_XANES_MODEL = ASSETS_DIR / "xanes_forward.pt"
DEFAULT_POLISH_MODEL = ASSETS_DIR / "carbon_polish.pt"  # the atom-space position refiner for carbon
DEFAULT_CARBON_MODEL = ASSETS_DIR / "carbon_xanes.pt"
DEFAULT_GB_MODEL = ASSETS_DIR / "gb_sigma5.pt"
EXAMPLE_SPECTRA_DIR = ASSETS_DIR / "spectra"
GB_SEARCH_SUMMARIES_DIR = ASSETS_DIR / "gb_search"  # SYSTEM.json: the GB search's lowest E_gb per [n] bin

CHECKPOINT_FORMAT = "gcd-checkpoint"
CHECKPOINT_VERSION = 1


def read_checkpoint(
    path: str | Path, format_tag: str = CHECKPOINT_FORMAT, version: int = CHECKPOINT_VERSION, kind: str = "gcd"
) -> dict:
    """Load a checkpoint dict safely (``weights_only=True``), with clear errors for wrong files.

    ``format_tag``, ``version`` and ``kind`` (the name used in messages) let other checkpoint families, such as
    the point-cloud baseline's, share the same checks.
    """
    path = Path(path)
    if not path.is_file():
        raise GCDError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for non-checkpoint files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GCDError(f"{path} is not a readable {kind} checkpoint ({reason[:200]})") from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != format_tag:
        raise GCDError(f"{path} is not a {kind} checkpoint (no '{format_tag}' format tag)")
    if checkpoint.get("version", 0) > version:
        raise GCDError(f"{path} was written by a newer gcd ({kind} checkpoint version {checkpoint['version']})")
    return checkpoint


def write_checkpoint(path: str | Path, checkpoint: dict) -> None:
    """Save a checkpoint dict (tensors and JSON-like values only, so ``weights_only`` loading works), creating the
    folder; written to a temporary file first, so a crash never leaves a half-written checkpoint behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    torch.save(checkpoint, partial)
    os.replace(partial, path)
