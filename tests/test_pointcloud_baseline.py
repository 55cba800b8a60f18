"""The point-cloud BASELINE (gcd_core.baselines): periodic graph, equivariance, DSM loss, sampler, checkpoints."""

import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list

from gcd_core.baselines import (
    PointCloudBaseline,
    PointCloudScoreNet,
    PointCloudTrainConfig,
    denoising_score_matching_loss,
    periodic_radius_graph,
    train_pointcloud,
    wrapped_normal_score,
)
from gcd_core.data import crystal
from gcd_core.errors import GCDError


def _edge_set(i, j, vectors) -> list[tuple]:
    rounded = np.round(np.asarray(vectors, dtype=float), 4)
    return sorted((int(a), int(b), *v) for a, b, v in zip(i, j, rounded, strict=True))


@pytest.mark.parametrize(
    "lengths, cutoff",
    [((7.0, 8.0, 9.5), 3.0), ((3.0, 4.0, 5.5), 3.5), ((2.2, 6.0, 2.9), 4.0)],  # the last two: cell < 2 cutoff
)
def test_periodic_graph_matches_ase_neighbour_list(lengths, cutoff):
    rng = np.random.default_rng(1)
    atoms = Atoms("W7", positions=rng.random((7, 3)) * lengths, cell=lengths, pbc=True)
    atoms.positions += rng.normal(0.0, 3.0, (7, 3))  # unwrapped input must work too
    i, j, D = neighbor_list("ijD", atoms, cutoff)
    positions = torch.tensor(atoms.positions, dtype=torch.float64)
    graph = periodic_radius_graph(positions, lengths, cutoff)
    assert graph.num_edges == len(i) > 0
    assert _edge_set(graph.src, graph.dst, graph.vectors(positions)) == _edge_set(i, j, D)


def test_periodic_graph_batches_structures_and_checks_inputs():
    rng = np.random.default_rng(2)
    first = Atoms("W5", positions=rng.random((5, 3)) * 4.0, cell=[4.0] * 3, pbc=True)
    second = Atoms("W9", positions=rng.random((9, 3)) * 6.5, cell=[6.5, 6.0, 7.0], pbc=True)
    positions = torch.tensor(np.concatenate([first.positions, second.positions]), dtype=torch.float64)
    batch = torch.tensor([0] * 5 + [1] * 9)
    graph = periodic_radius_graph(positions, [[4.0] * 3, [6.5, 6.0, 7.0]], 3.2, batch)
    expected = []
    for offset, atoms in [(0, first), (5, second)]:
        i, j, D = neighbor_list("ijD", atoms, 3.2)
        expected += _edge_set(i + offset, j + offset, D)
    assert _edge_set(graph.src, graph.dst, graph.vectors(positions)) == sorted(expected)
    with pytest.raises(GCDError, match="sorted"):
        periodic_radius_graph(positions, [[4.0] * 3, [6.5, 6.0, 7.0]], 3.2, batch.flip(0))
    with pytest.raises(GCDError, match="batch index"):
        periodic_radius_graph(positions, [[4.0] * 3, [6.5, 6.0, 7.0]], 3.2)
    with pytest.raises(GCDError, match="positive"):
        periodic_radius_graph(positions, [4.0, 4.0, 0.0], 3.2)


def _tiny_net(seed: int = 0, **kwargs) -> PointCloudScoreNet:
    torch.manual_seed(seed)
    return PointCloudScoreNet(**{"hidden": 16, "num_blocks": 2, "cutoff": 3.0, "num_rbf": 8, **kwargs}).double()


@pytest.mark.parametrize("frame", ["none", "cubic", "axes"])
def test_score_net_is_translation_invariant_and_permutation_and_rotation_equivariant(frame):
    net = _tiny_net(num_species=2, vector_channels=4, frame=frame)
    L = 5.0  # smaller than twice the cutoff: several images per pair
    rng = np.random.default_rng(3)
    x = torch.tensor(rng.random((10, 3)) * L)
    species = torch.tensor(rng.integers(0, 2, 10))
    box = torch.tensor([[L, L, L]], dtype=torch.float64)
    t = torch.tensor([0.37], dtype=torch.float64)
    out = net(x, box, t, species)
    assert out.shape == (10, 3) and out.abs().sum() > 0

    shifted = torch.remainder(x + torch.tensor([2.9, -4.1, 0.7], dtype=torch.float64), L)  # across the boundary
    torch.testing.assert_close(net(shifted, box, t, species), out, atol=1e-9, rtol=1e-7)

    order = torch.tensor(rng.permutation(10))
    torch.testing.assert_close(net(x[order], box, t, species[order]), out[order], atol=1e-9, rtol=1e-7)

    flipped = torch.remainder(torch.stack([L - x[:, 0], x[:, 1], x[:, 2]], dim=1), L)  # a mirror of the cell
    expected = torch.stack([-out[:, 0], out[:, 1], out[:, 2]], dim=1)
    torch.testing.assert_close(net(flipped, box, t, species), expected, atol=1e-9, rtol=1e-7)

    rotated = torch.remainder(torch.stack([-x[:, 1], x[:, 0], x[:, 2]], dim=1), L)  # 90 degrees about z
    expected = torch.stack([-out[:, 1], out[:, 0], out[:, 2]], dim=1)
    if frame == "axes":  # sees x and y apart: only the flips are exact symmetries
        assert not torch.allclose(net(rotated, box, t, species), expected, atol=1e-6)
    else:
        torch.testing.assert_close(net(rotated, box, t, species), expected, atol=1e-9, rtol=1e-7)


def test_config_round_trip_and_bad_arguments():
    net = PointCloudScoreNet(hidden=24, num_blocks=3, cutoff=3.5)
    again = PointCloudScoreNet(**net.config)
    assert again.config == net.config
    assert again.load_state_dict(net.state_dict()) is not None
    with pytest.raises(GCDError):
        PointCloudScoreNet(cutoff=0.0)
    with pytest.raises(GCDError, match="frame"):
        PointCloudScoreNet(frame="spherical")


def test_wrapped_normal_score_matches_the_periodic_density():
    L = torch.tensor([[3.0, 3.0, 3.0]], dtype=torch.float64)
    delta = torch.tensor([[0.4, -1.3, 2.9]], dtype=torch.float64)
    small = wrapped_normal_score(delta, torch.tensor([0.05], dtype=torch.float64), L)
    wrapped = delta - torch.round(delta / L) * L
    torch.testing.assert_close(small, -wrapped / 0.05**2)
    # wide kernel: compare with d/dx log sum_k N(x + kL) by finite differences, one axis at a time
    sigma = 1.7
    big = wrapped_normal_score(delta, torch.tensor([sigma], dtype=torch.float64), L)
    for axis in range(3):

        def log_density(x, axis=axis):
            k = np.arange(-20, 21)
            return math.log(np.exp(-((x + k * 3.0) ** 2) / (2 * sigma**2)).sum())

        x, h = float(delta[0, axis]), 1e-5
        numeric = (log_density(x + h) - log_density(x - h)) / (2 * h)
        assert float(big[0, axis]) == pytest.approx(numeric, rel=1e-5, abs=1e-7)


def test_dsm_loss_is_zero_for_the_oracle_and_training_lowers_it():
    atoms = crystal("bcc", 1)
    box = torch.tensor(atoms.cell.lengths()[None], dtype=torch.float32)
    x0 = torch.tensor(atoms.positions, dtype=torch.float32)
    batch = torch.zeros(len(atoms), dtype=torch.long)

    def oracle(x_t, t, x_0):
        sigma = (0.8 * t)[batch]
        return wrapped_normal_score(x_t - x_0, sigma, box[batch])

    generator = torch.Generator().manual_seed(0)
    assert float(denoising_score_matching_loss(oracle, x0, box, batch, generator=generator)) < 1e-10

    data = [crystal("bcc", 1, translation=(0.3, 0.1, 0.0))]
    config = PointCloudTrainConfig(steps=30, batch_size=8, lr=3e-3, warmup_steps=3, ema_decay=0.5, log_every=1)
    torch.manual_seed(0)
    net_config = {"hidden": 32, "num_blocks": 2, "cutoff": 3.5, "num_rbf": 12}
    untrained = PointCloudBaseline(PointCloudScoreNet(num_species=1, **net_config), [74])
    initial = {k: v.clone() for k, v in untrained.net.state_dict().items()}
    trained = train_pointcloud(data, config, None, net_config=net_config)
    trained_state = {k: v.clone() for k, v in trained.net.state_dict().items()}

    def eval_loss(state):
        model = PointCloudBaseline(PointCloudScoreNet(num_species=1, **net_config), [74])
        model.net.load_state_dict(state)
        total = 0.0
        with torch.no_grad():
            for seed in range(8):  # the same noise and times for both models
                t = torch.tensor([0.05 + 0.12 * seed])
                gen = torch.Generator().manual_seed(seed)
                total += float(
                    denoising_score_matching_loss(
                        lambda x_t, t, _x0, m=model: m.score(x_t, box, t), x0, box, batch, generator=gen, t=t
                    )
                )
        return total / 8

    assert eval_loss(trained_state) < 0.8 * eval_loss(initial)
    assert trained.metadata["steps"] == 30 and len(trained.metadata["loss_log"]) == 30


def _tiny_baseline(seed: int = 0) -> PointCloudBaseline:
    torch.manual_seed(seed)
    return PointCloudBaseline(PointCloudScoreNet(hidden=16, num_blocks=2, cutoff=3.5, num_rbf=8), [74])


def test_sampler_is_seeded_keeps_the_count_and_stays_in_the_cell():
    model = _tiny_baseline()
    cell = (6.33, 6.33, 5.0)
    first = model.sample(cell, 11, num_samples=3, steps=8, restarts=1, restart_steps=4, seed=5)
    again = model.sample(cell, 11, num_samples=3, steps=8, restarts=1, restart_steps=4, seed=5)
    other = model.sample(cell, 11, num_samples=3, steps=8, restarts=1, restart_steps=4, seed=6)
    assert len(first) == 3
    for a, b, c in zip(first, again, other, strict=True):
        assert len(a) == 11 and set(a.numbers) == {74} and a.pbc.all()
        np.testing.assert_allclose(a.cell.lengths(), cell)
        np.testing.assert_array_equal(a.positions, b.positions)
        assert not np.allclose(a.positions, c.positions)
        assert (a.positions >= 0).all() and (a.positions < np.array(cell)).all()
    frames = list(model.sample_frames(cell, 11, num_samples=2, steps=8, restarts=2, restart_steps=4, seed=1))
    assert [f.step for f in frames] == list(range(1, 17)) and frames[-1].done
    assert [f.round for f in frames] == [0] * 8 + [1] * 4 + [2] * 4
    assert frames[-1].positions.shape == (2, 11, 3) and frames[7].t == pytest.approx(model.t_eps)
    euler = model.sample(cell, 11, num_samples=2, steps=8, seed=5, integrator="euler")
    np.testing.assert_array_equal(
        euler[1].positions, model.sample(cell, 11, num_samples=2, steps=8, seed=5, integrator="euler")[1].positions
    )
    assert (euler[1].positions >= 0).all() and (euler[1].positions < np.array(cell)).all()
    with pytest.raises(GCDError, match="integrator"):
        model.sample(cell, 2, steps=2, integrator="heun")
    with pytest.raises(GCDError, match="atomic numbers"):
        model.sample(cell, 2, numbers=[74, 26], steps=2)
    with pytest.raises(GCDError):
        model.sample(cell, 0, steps=2)


def test_bragg_refinement_of_the_clean_estimate_orders_the_baselines_samples():
    """The voxel sampler's Bragg refinement, given to the baseline (its clean estimates, Tweedie's): an untrained
    tiny net's 16 W atoms come out far more ordered on the BCC lattice than without it, and still seeded."""
    from gcd_core.data.crystals import conventional_cell
    from gcd_core.guidance import bragg_refinement_of_positions
    from gcd_core.physics.diffraction import bragg_order

    model = _tiny_baseline()
    reference = conventional_cell("bcc")
    cell = (6.33, 6.33, 6.33)
    refinement = bragg_refinement_of_positions(reference, cell)
    plain = model.sample(cell, 16, num_samples=2, steps=16, seed=3)
    guided = model.sample(cell, 16, num_samples=2, steps=16, seed=3, estimate_refinement=refinement)
    again = model.sample(cell, 16, num_samples=2, steps=16, seed=3, estimate_refinement=refinement)
    for a, b, c in zip(plain, guided, again, strict=True):
        assert bragg_order(a, reference) < 0.5 < 0.8 < bragg_order(b, reference)
        np.testing.assert_array_equal(b.positions, c.positions)


def test_save_load_round_trip_with_weights_only(tmp_path):
    model = _tiny_baseline(seed=3)
    model.metadata["note"] = "baseline"
    path = tmp_path / "baseline.pt"
    model.save(path)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "gcd-pointcloud-baseline" and raw["config"] == model.config()
    loaded = PointCloudBaseline.load(path)
    assert loaded.config() == model.config() and loaded.metadata["note"] == "baseline"
    for key, value in model.net.state_dict().items():
        torch.testing.assert_close(loaded.net.state_dict()[key], value)
    cell = (5.0, 5.0, 5.0)
    np.testing.assert_array_equal(
        loaded.sample(cell, 6, steps=4, seed=2)[0].positions, model.sample(cell, 6, steps=4, seed=2)[0].positions
    )
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(GCDError, match="not a readable"):
        PointCloudBaseline.load(tmp_path / "junk.pt")
    with pytest.raises(GCDError, match="does not exist"):
        PointCloudBaseline.load(tmp_path / "missing.pt")


def test_training_writes_a_loadable_checkpoint(tmp_path):
    config = PointCloudTrainConfig(steps=3, batch_size=2, warmup_steps=1, log_every=1)
    model = train_pointcloud([crystal("bcc", 1)], config, tmp_path, net_config={"hidden": 8, "num_blocks": 1})
    loaded = PointCloudBaseline.load(tmp_path / "pointcloud_baseline.pt")
    assert loaded.config() == model.config() and loaded.metadata["steps"] == 3
    with pytest.raises(GCDError, match="orthorhombic"):
        skewed = crystal("bcc", 1)
        skewed.set_cell(skewed.cell.array + np.array([[0, 0.5, 0], [0, 0, 0], [0, 0, 0]]))
        train_pointcloud([skewed], config, None)
