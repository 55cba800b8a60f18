import numpy as np
import pytest
import torch

from gcd_core.data import crystal
from gcd_core.diffusion import CosineSchedule
from gcd_core.errors import GCDError
from gcd_core.generate import GenerationRequest, generate
from gcd_core.model import Conditioning, GCDModel, read_checkpoint
from gcd_core.nn.unet import UNet3D
from gcd_core.representation import VoxelGrid
from gcd_core.training import EMA, TrainConfig, VoxelDataset, train

VOXEL = 3.165 / 4


def tiny_model(labels=(), seed=0) -> GCDModel:
    torch.manual_seed(seed)
    grid = VoxelGrid(("W",), VOXEL)
    net = UNet3D(
        in_channels=grid.n_channels, out_channels=grid.n_channels, base_channels=8, num_classes=len(labels)
    )
    return GCDModel(net, grid, CosineSchedule(), "x0", Conditioning(labels=list(labels)))


def tiny_config(steps: int) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=2, warmup_steps=2, checkpoint_every=3, log_every=1)


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    data = VoxelDataset([crystal("bcc", 2)], tiny_model().grid, stride=4)
    straight = train(tiny_model(), data, tiny_config(6), tmp_path / "a", progress=False)
    train(tiny_model(), data, tiny_config(3), tmp_path / "b", progress=False)
    resumed = train(tiny_model(), data, tiny_config(6), tmp_path / "b", progress=False)
    assert straight.steps_done == resumed.steps_done == 6
    for key, value in straight.model.net.state_dict().items():
        torch.testing.assert_close(value, resumed.model.net.state_dict()[key], rtol=1e-5, atol=1e-6)
    saved = read_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert saved["step"] == 6 and [e["step"] for e in saved["loss_log"]] == [1, 2, 3, 4, 5, 6]
    assert (tmp_path / "b" / "loss_log.csv").read_text().count("\n") == 7


def test_resume_refuses_a_different_model(tmp_path):
    data = VoxelDataset([crystal("bcc", 2)], tiny_model().grid, stride=4)
    train(tiny_model(), data, tiny_config(2), tmp_path, progress=False)
    other = tiny_model()
    other.schedule = CosineSchedule(offset=0.02)
    with pytest.raises(GCDError, match="different model configuration"):
        train(other, data, tiny_config(4), tmp_path, progress=False)


def test_checkpoint_carries_its_config_and_loads_safely(tmp_path):
    model = tiny_model(labels=("bcc", "fcc"))
    data = VoxelDataset([crystal("bcc", 2)], model.grid, labels=[0], stride=4)
    result = train(model, data, tiny_config(2), tmp_path, progress=False)
    loaded = GCDModel.load(tmp_path / "checkpoint.pt")
    assert loaded.config() == result.model.config()
    assert loaded.grid.voxel_size == pytest.approx(VOXEL) and loaded.grid.species == ("W",)
    assert loaded.conditioning.labels == ["bcc", "fcc"]
    assert loaded.metadata["train_cells"] == [[6.33, 6.33, 6.33]]
    for key, value in result.model.net.state_dict().items():  # the loaded model uses the EMA weights
        torch.testing.assert_close(value, loaded.net.state_dict()[key])
    inference = tmp_path / "model.pt"
    loaded.save(inference)
    assert "optimizer" not in torch.load(inference, weights_only=True)


def test_conditional_training_needs_dropout(tmp_path):
    model = tiny_model(labels=("bcc",))
    data = VoxelDataset([crystal("bcc", 2)], model.grid, labels=[0], stride=4)
    config = tiny_config(2)
    config.drop_probability = 0.0
    with pytest.raises(GCDError, match="drop_probability"):
        train(model, data, config, tmp_path, progress=False)


def test_dataset_batches_group_by_grid_shape_and_check_inputs():
    grid = VoxelGrid(("W",), VOXEL)
    data = VoxelDataset([crystal("bcc", 2), crystal("bcc", 3), crystal("bcc", 2)], grid, labels=[0, 1, 0], stride=4)
    rng = np.random.default_rng(0)
    shapes = set()
    for _ in range(20):
        x, cond = data.batch(3, rng)
        assert x.shape[0] == 3 and cond["label"].shape == (3,)
        shapes.add(tuple(x.shape[2:]))
        assert torch.all(x[:, 0].sum(dim=(1, 2, 3)) == (16 if x.shape[2] == 8 else 54))
    assert shapes == {(8, 8, 8), (12, 12, 12)}
    with pytest.raises(GCDError, match="multiples of 8"):
        VoxelDataset([crystal("bcc", 3)], grid, stride=8)
    with pytest.raises(GCDError, match="voxel edge below"):
        VoxelDataset([crystal("bcc", 2)], VoxelGrid(("W",), 3.165 / 2), stride=1)
    with pytest.raises(GCDError, match="labels has 1 entries"):
        VoxelDataset([crystal("bcc", 2)] * 2, grid, labels=[0])


def test_weighted_structures_are_drawn_in_proportion():
    grid = VoxelGrid(("W",), VOXEL)
    cells = [crystal("bcc", 2), crystal("bcc", 3), crystal("bcc", 2)]
    data = VoxelDataset(cells, grid, labels=[0, 1, 2], stride=4, weights=[1, 1, 6])
    rng = np.random.default_rng(0)
    labels = np.concatenate([data.batch(1, rng)[1]["label"].numpy() for _ in range(800)])
    counts = np.bincount(labels, minlength=3) / len(labels)
    np.testing.assert_allclose(counts, [1 / 8, 1 / 8, 6 / 8], atol=0.04)
    with pytest.raises(GCDError, match="positive and finite"):
        VoxelDataset(cells, grid, stride=4, weights=[1, 0, 1])


def test_ema_follows_the_weights_with_its_decay():
    layer = torch.nn.Linear(2, 2)
    ema = EMA(layer, decay=0.5)
    start = {k: v.clone() for k, v in layer.state_dict().items()}
    with torch.no_grad():
        layer.weight.add_(1.0)
    ema.update(layer, step=100)  # warm-up over: decay = 0.5
    torch.testing.assert_close(ema.state["weight"], start["weight"] + 0.5)


def test_same_seed_same_structure_and_other_seed_differs():
    model = tiny_model()
    request = GenerationRequest((6.33,) * 3, num_samples=2, steps=4, seed=7, sampler="ddpm")
    first = generate(model, request)
    again = generate(model, request)
    other = generate(model, GenerationRequest((6.33,) * 3, num_samples=2, steps=4, seed=8, sampler="ddpm"))
    for a, b in zip(first, again, strict=True):
        assert len(a) == len(b) and np.array_equal(a.positions, b.positions)
    pairs = zip(first, other, strict=True)
    differs = [len(a) != len(c) or not np.array_equal(a.positions, c.positions) for a, c in pairs]
    assert any(differs)


def test_generation_rejects_cells_the_network_cannot_tile():
    with pytest.raises(GCDError, match="nearest such cell"):
        generate(tiny_model(), GenerationRequest((5.0, 6.33, 6.33), steps=2))
    with pytest.raises(GCDError, match="unknown label"):
        generate(tiny_model(labels=("bcc",)), GenerationRequest((6.33,) * 3, steps=2, label="fcc"))
    with pytest.raises(GCDError, match="not trained with class labels"):
        generate(tiny_model(), GenerationRequest((6.33,) * 3, steps=2, label="bcc"))


def test_classes_on_their_own_voxels_train_and_generate_in_their_own_units():
    """A phase-conditional model: each class has its own voxel edge (HCP anisotropic) and element."""
    from gcd_core.data.crystals import phase_voxel_size, training_supercell

    phases = ["bcc", "hcp", "diamond"]
    label_grids = {p: {"voxel_size": list(phase_voxel_size(p)), "species": [crystal(p, 1)[0].symbol]} for p in phases}
    torch.manual_seed(0)
    grid = VoxelGrid(("W",), VOXEL)
    net = UNet3D(in_channels=4, out_channels=4, base_channels=8, num_classes=len(phases))
    model = GCDModel(net, grid, CosineSchedule(), "x0", Conditioning(labels=phases, label_grids=label_grids))
    assert model.grid_for("hcp").nominal_edges == pytest.approx((0.8025, 0.92665, 1.3025), abs=1e-5)
    assert model.grid_for("diamond").species == ("C",) and model.grid_for(None) is grid

    structures = [crystal(p, training_supercell(p, m)) for p in phases for m in (1, 2)]
    grids = [model.grid_for(a.info["phase"]) for a in structures]
    data = VoxelDataset(
        structures, grid, labels=[phases.index(a.info["phase"]) for a in structures], stride=4,
        structure_grids=grids, equal_voxels=True,
    )
    # bcc and diamond on 8^3 and 16^3 voxels; hcp (6 voxels per sqrt(3) a) on 8 x 24 x 8 and 16 x 48 x 16
    assert set(data.buckets) == {(8, 8, 8), (16, 16, 16), (8, 24, 8), (16, 48, 16)}
    rng = np.random.default_rng(0)
    for _ in range(12):
        x, cond = data.batch(8, rng)
        assert x.shape[0] == data.batch_size_for(tuple(x.shape[2:]), 8)  # equal voxels per batch
        if x.shape[2] == 8:  # atoms in the 1x cells of bcc, hcp (four layers), diamond: 16, 64, 8
            counts = x[:, 0].sum(dim=(1, 2, 3)).tolist()
            assert counts == [(16, 64, 8)[label] for label in cond["label"].tolist()]

    # generation lays the requested cell on the class's voxels and decodes with its element
    request = GenerationRequest(tuple(crystal("hcp", (4, 2, 2)).cell.lengths()), steps=2, label="hcp")
    out = generate(model, request)
    assert set(out[0].get_chemical_symbols()) <= {"Mg"}
    with pytest.raises(GCDError, match="label_grids names"):
        GCDModel(net, grid, CosineSchedule(), "x0", Conditioning(labels=["bcc"], label_grids={"fcc": {}}))
    # round trip through a checkpoint keeps the per-class grids
    again = GCDModel.from_config(model.config())
    assert again.grid_for("hcp") == model.grid_for("hcp")


def test_anisotropic_voxels_round_trip_exactly():
    from gcd_core.data.crystals import phase_voxel_size

    atoms = crystal("hcp", (2, 1, 1), translation=(0.3, 0.2, 0.1))
    grid = VoxelGrid(("Mg",), phase_voxel_size("hcp"))
    assert grid.layout(atoms.cell.lengths()).shape == (8, 6, 4)
    decoded = grid.decode(grid.encode([atoms]), atoms.cell.lengths())[0]
    assert len(decoded) == len(atoms)
    distances = decoded.positions[:, None] - atoms.positions[None]
    assert np.abs(distances).sum(-1).min(axis=1).max() < 1e-5
    with pytest.raises(GCDError, match="one edge or three"):
        VoxelGrid(("Mg",), (0.8, 0.7))
    assert VoxelGrid.from_config(grid.to_config()) == grid


def test_steps_are_fitted_to_the_time_budget_so_the_learning_rate_decays(tmp_path, monkeypatch):
    import gcd_core.training.trainer as trainer

    class Clock:  # 0.1 s per reading; with a log line every step, 0.2 s per step
        now = 0.0

        def perf_counter(self) -> float:
            self.now += 0.1
            return self.now

    monkeypatch.setattr(trainer, "time", Clock())
    monkeypatch.setattr(trainer, "REFIT_EVERY", 4)
    data = VoxelDataset([crystal("bcc", 2)], tiny_model().grid, stride=4)
    config = TrainConfig(
        steps=1000, batch_size=1, warmup_steps=2, log_every=1, checkpoint_every=1000, time_budget_s=10.0,
        fit_steps_to_budget=True,
    )
    result = train(tiny_model(), data, config, tmp_path, progress=False)
    assert 45 <= result.steps_done <= 51  # what 10 s allow, not the 1000 planned
    assert result.loss_log[-1]["lr"] < 0.15 * config.lr  # the cosine reached its end (10 % floor)
