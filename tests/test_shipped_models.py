"""The checkpoints shipped in assets/ load safely, describe themselves and generate what they promise."""

import json
from pathlib import Path

import pytest
import torch

from gcd_core.generate import GenerationRequest, generate
from gcd_core.model import GCDModel
from gcd_core.physics import judge_phase

ASSETS = Path(__file__).resolve().parents[1] / "assets"
BCC_W = ASSETS / "crystal_bcc_W.pt"


@pytest.mark.parametrize("checkpoint", sorted(ASSETS.glob("*.pt")), ids=lambda p: p.name)
def test_checkpoint_is_small_loads_with_weights_only_and_has_metadata(checkpoint):
    assert checkpoint.stat().st_size < 20 * 2**20
    raw = torch.load(checkpoint, weights_only=True)
    assert "optimizer" not in raw
    meta = json.loads(checkpoint.with_suffix(".json").read_text())
    for key in ("command", "data", "steps", "final_loss", "date"):
        assert key in meta, f"{checkpoint.with_suffix('.json').name} lacks {key}"


def test_shipped_bcc_model_generates_perfect_bcc_tungsten_from_a_fixed_seed():
    model = GCDModel.load(BCC_W, device="cpu")
    assert model.grid.species == ("W",)
    cell = tuple(model.metadata["train_cells"][0])
    samples = generate(model, GenerationRequest(cell, num_samples=4, steps=50, seed=0))
    verdicts = [judge_phase(a, "bcc") for a in samples]
    assert all(v.perfect for v in verdicts), [v.summary() for v in verdicts]
