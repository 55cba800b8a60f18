"""The checkpoints shipped in assets/ load safely, describe themselves and generate what they promise."""

import json
from pathlib import Path

import pytest
import torch

from gcd_core.data.crystals import PHASES
from gcd_core.generate import GenerationRequest, generate
from gcd_core.model import GCDModel
from gcd_core.physics import judge_phase

ASSETS = Path(__file__).resolve().parents[1] / "assets"
PHASES_MODEL = ASSETS / "crystal_phases.pt"


@pytest.mark.parametrize("checkpoint", sorted(ASSETS.glob("*.pt")), ids=lambda p: p.name)
def test_checkpoint_is_small_loads_with_weights_only_and_has_metadata(checkpoint):
    assert checkpoint.stat().st_size < 20 * 2**20
    raw = torch.load(checkpoint, weights_only=True)
    assert "optimizer" not in raw
    meta = json.loads(checkpoint.with_suffix(".json").read_text())
    for key in ("command", "data", "steps", "final_loss", "date"):
        assert key in meta, f"{checkpoint.with_suffix('.json').name} lacks {key}"


# HCP is left out: the shipped model gets its atom count right but misplaces the B layer (0 % perfect in
# benchmarks/crystal_success.py; README, "Crystals"), so there is no passing seed to pin.
@pytest.mark.parametrize("phase", ["bcc", "sc", "fcc", "diamond"])
def test_shipped_crystal_model_generates_each_perfect_phase_from_a_fixed_seed(phase):
    model = GCDModel.load(PHASES_MODEL, device="cpu")
    grid = model.grid_for(phase)
    assert grid.species == (PHASES[phase].element,)
    cell = model.training_cell(phase)
    request = GenerationRequest(cell, num_samples=4, steps=50, resample=2, seed=0, label=phase)  # the benchmark's
    samples = generate(model, request)
    verdicts = [judge_phase(a, phase) for a in samples]
    assert all(v.perfect for v in verdicts), [v.summary() for v in verdicts]


CARBON_MODEL = ASSETS / "carbon_xanes.pt"
BOX = (12.264,) * 3  # 28 voxels of 0.438 A: about a training cell, with the atom count left to the model


def test_shipped_carbon_model_gives_carbon_and_its_gradient_guidance_moves_the_spectrum_to_the_target():
    from gcd_core.checkpoint import EXAMPLE_SPECTRA_DIR
    from gcd_core.guidance import spectral_error, spectrum_guidance
    from gcd_core.physics import hybridisation, mass_density
    from gcd_core.physics.spectra import read_spectrum
    from gcd_core.physics.xanes import XanesForwardModel

    model = GCDModel.load(CARBON_MODEL, device="cpu")
    forward = XanesForwardModel.load(ASSETS / "xanes_forward.pt")
    target = read_spectrum(next(EXAMPLE_SPECTRA_DIR.glob("a-C_3.5gcc_*.txt")))
    request = GenerationRequest(BOX, num_samples=2, steps=20, sampler="ddim", seed=0, fit_to_stride=True)
    plain = generate(model, request)
    guided = generate(
        model, request, gradient_guidance=spectrum_guidance(model.grid, forward, target, BOX), gradient_scale=20.0
    )
    for atoms in plain + guided:  # carbon, at a density carbon can have, mostly two- to fourfold bonded
        assert 1.0 < mass_density(atoms) < 4.0 and hybridisation(atoms).under < 0.05
    before, after = spectral_error(forward, plain, target), spectral_error(forward, guided, target)
    assert max(after) < min(before), (before, after)  # the same seeds, each guided sample closer to the target
