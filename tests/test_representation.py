"""Tests for atoms <-> voxel grids: round trips, errors, decode thresholds, augmentation, density views."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.geometry import get_distances

from gcd_core.data.crystals import crystal
from gcd_core.errors import GCDError, VoxelCollisionError
from gcd_core.representation import (
    GridStretchWarning,
    VoxelGrid,
    apply_symmetry_to_atoms,
    apply_symmetry_to_grid,
    cell_lengths_of,
    density_view,
    grid_symmetries,
    largest_safe_voxel_size,
    merge_close_atoms,
    split_sites,
    translate_atoms,
    translate_grid,
)
from gcd_core.representation.grid import render_blobs

TOL = 1e-5  # A
ignore_stretch = pytest.mark.filterwarnings("ignore::gcd_core.representation.grid.GridStretchWarning")


@pytest.fixture(autouse=True)
def _one_thread():
    """These tensors are tiny: a second OpenMP thread only adds synchronisation (badly so on a busy machine).

    Function scope, so that it runs after any conftest fixture that sets the thread count.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------- helpers
def _lengths(atoms: Atoms) -> np.ndarray:
    return np.array(cell_lengths_of(atoms))


def _min_image(delta: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    return delta - lengths * np.round(delta / lengths)


def assert_same_structure(expected: Atoms, actual: Atoms, tol: float = TOL) -> None:
    """Same count, same species and, atom by atom (one-to-one), positions equal modulo the cell."""
    assert len(actual) == len(expected), f"{len(actual)} atoms decoded, {len(expected)} expected"
    lengths = _lengths(expected)
    np.testing.assert_allclose(_lengths(actual), lengths, atol=1e-9)
    exp_sym = np.array(expected.get_chemical_symbols())
    act_sym = np.array(actual.get_chemical_symbols())
    assert sorted(exp_sym) == sorted(act_sym)
    if len(expected) == 0:
        return
    delta = _min_image(expected.positions[:, None, :] - actual.positions[None, :, :], lengths)
    dist = np.linalg.norm(delta, axis=-1)
    dist[exp_sym[:, None] != act_sym[None, :]] = np.inf
    match = dist.argmin(axis=1)
    assert len(set(match.tolist())) == len(expected), "two expected atoms matched one decoded atom"
    worst = dist[np.arange(len(expected)), match].max()
    assert worst < tol, f"worst position error {worst:.3g} A"


def random_structure(
    rng: np.random.Generator,
    n: int,
    lengths=(7.0, 8.0, 9.0),
    species=("Ni", "Al"),
    min_distance: float = 2.0,
) -> Atoms:
    """``n`` atoms of random species at random positions at least ``min_distance`` apart (minimum image)."""
    lengths = np.asarray(lengths, dtype=float)
    positions: list[np.ndarray] = []
    while len(positions) < n:
        p = rng.random(3) * lengths
        if all(np.linalg.norm(_min_image(p - q, lengths)) >= min_distance for q in positions):
            positions.append(p)
    symbols = [species[i % len(species)] for i in range(n)]
    rng.shuffle(symbols)
    return Atoms(symbols, positions=positions, cell=np.diag(lengths), pbc=True)


def rattled(atoms: Atoms, stdev: float, seed: int) -> Atoms:
    out = atoms.copy()
    out.rattle(stdev=stdev, seed=seed)
    out.wrap()
    return out


def _roundtrip(vg: VoxelGrid, atoms: Atoms) -> Atoms:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GridStretchWarning)
        grid = vg.encode(atoms)
    return vg.decode(grid, cell_lengths_of(atoms))[0]


def _chebyshev_same_species(atoms: Atoms) -> float:
    lengths = _lengths(atoms)
    best = math.inf
    for i in range(len(atoms)):
        for j in range(i + 1, len(atoms)):
            if atoms.numbers[i] == atoms.numbers[j]:
                d = np.abs(_min_image(atoms.positions[j] - atoms.positions[i], lengths)).max()
                best = min(best, float(d))
    return best


# ------------------------------------------------------------------------------------------------- structures
def _structures() -> dict[str, Atoms]:
    rng = np.random.default_rng(7)
    return {
        "bcc_W_translated": crystal("bcc", 2, translation=rng.random(3) * 3.0),
        "diamond_C": crystal("diamond", 2),
        "diamond_C_translated": crystal("diamond", 2, translation=(0.211, 1.37, 2.9)),
        "hcp_Mg": crystal("hcp", 2),
        "random_NiAl": random_structure(rng, 24),
        "rattled_bcc_W": rattled(crystal("bcc", 2), 0.08, seed=3),
        "rattled_diamond_C": rattled(crystal("diamond", 2, translation=(0.4, 0.1, 0.9)), 0.05, seed=4),
        "rattled_hcp_Mg": rattled(crystal("hcp", (2, 1, 2)), 0.1, seed=5),
    }


STRUCTURES = _structures()
# smooth: same-species neighbours must stay >= ~3.5 voxels apart for the peaks to be resolved
SMOOTH_VOXEL = {"C": 0.33, "W": 0.4, "Mg": 0.4, "Ni": 0.4, "Al": 0.4}


def test_test_structures_are_what_they_claim():
    lengths = _lengths(STRUCTURES["hcp_Mg"])
    assert len({round(v, 6) for v in lengths}) == 3, "HCP cell should be orthorhombic, not cubic"
    assert len(set(STRUCTURES["random_NiAl"].get_chemical_symbols())) == 2
    assert len(set(np.round(_lengths(STRUCTURES["random_NiAl"]), 6))) == 3
    assert len(STRUCTURES["bcc_W_translated"]) == 16 and len(STRUCTURES["diamond_C"]) == 64


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_roundtrip_sharp(name):
    atoms = STRUCTURES[name]
    safe = largest_safe_voxel_size(atoms)
    voxel = min(0.5, 0.8 * safe)
    vg = VoxelGrid(tuple(sorted(set(atoms.get_chemical_symbols()))), voxel, "sharp")
    assert max(vg.layout(_lengths(atoms), warn=False).voxel_edges) < safe
    assert_same_structure(atoms, _roundtrip(vg, atoms))


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_roundtrip_smooth(name):
    atoms = STRUCTURES[name]
    species = tuple(sorted(set(atoms.get_chemical_symbols())))
    voxel = min(SMOOTH_VOXEL[s] for s in species)
    vg = VoxelGrid(species, voxel, "smooth")
    edge = max(vg.layout(_lengths(atoms), warn=False).voxel_edges)
    from ase.neighborlist import neighbor_list

    i, j, d = neighbor_list("ijd", atoms, 5.0)
    same = atoms.numbers[i] == atoms.numbers[j]
    assert d[same].min() / edge >= 3.5, "test voxel too coarse for this structure"
    decoded = _roundtrip(vg, atoms)
    assert_same_structure(atoms, decoded)
    np.testing.assert_allclose(decoded.arrays["occupancy"], 1.0, atol=1e-4)


def test_smooth_roundtrip_atoms_on_voxel_borders():
    """Atoms exactly on voxel borders and centres (commensurate grids) decode exactly too."""
    atoms = crystal("diamond", 2)
    for voxel in (0.3, 7.134 / 20, 7.134 / 22):
        vg = VoxelGrid(("C",), voxel, "smooth")
        assert_same_structure(atoms, _roundtrip(vg, atoms))


def test_roundtrip_empty_structure():
    atoms = Atoms(cell=[5.0, 5.0, 5.0], pbc=True)
    for encoding in ("sharp", "smooth"):
        vg = VoxelGrid(("W",), 0.5, encoding)
        decoded = _roundtrip(vg, atoms)
        assert len(decoded) == 0


# ------------------------------------------------------------------------------------------------- collisions
@pytest.mark.parametrize("encoding", ["sharp", "smooth"])
def test_collision_error_names_atoms_and_a_separating_edge(encoding):
    lengths = np.array([6.0, 6.0, 6.0])
    positions = np.array(
        [
            [0.2, 0.2, 0.2],
            [3.1, 0.3, 4.4],
            [1.1, 1.1, 1.1],
            [5.0, 5.2, 0.5],
            [4.1, 2.2, 3.3],
            [1.36789, 1.2, 1.31],
        ]
    )
    atoms = Atoms("W6", positions=positions, cell=np.diag(lengths), pbc=True)
    vg = VoxelGrid(("W",), 0.5, encoding)
    with pytest.raises(VoxelCollisionError) as info:
        vg.encode(atoms)
    message = str(info.value)
    assert re.search(r"atoms 2 \(W at .*\) and 5 \(W at", message), message
    edge = float(re.search(r"a voxel edge below ([0-9.]+) A", message).group(1))
    separation = float(np.abs(positions[5] - positions[2]).max())  # Chebyshev 0.26789 A: no rounding up
    assert edge <= separation + 1e-12, "the stated edge would not separate them"
    assert edge >= separation - 1e-4, "the stated edge is needlessly small"
    assert isinstance(info.value, GCDError)


@pytest.mark.parametrize("encoding", ["sharp", "smooth"])
def test_collision_edge_really_separates_the_pair(encoding):
    rng = np.random.default_rng(11)
    cell = 6.0
    a = np.array([1.2, 1.2, 1.05])
    b = a + np.array([0.23, -0.11, 0.178889])  # Chebyshev 0.23, both in voxel (2, 2, 2) of 0.5 A
    atoms = Atoms("W2", positions=[a, b], cell=[cell] * 3, pbc=True)
    with pytest.raises(VoxelCollisionError) as info:
        VoxelGrid(("W",), 0.5, encoding).encode(atoms)
    edge = float(re.search(r"a voxel edge below ([0-9.]+) A", str(info.value)).group(1))
    n = math.ceil(cell / (0.99 * edge))
    vg = VoxelGrid(("W",), cell / n, encoding)  # a whole number of voxels: no stretch, real edge 0.99 * edge
    for _ in range(25):
        moved = atoms.copy()
        moved.positions += rng.random(3) * cell
        moved.wrap()
        grid = vg.encode(moved)  # must not raise for any translation
        if encoding == "sharp":  # smooth peaks this close merge (by design); only the encoding is at stake
            assert len(vg.decode(grid, [cell] * 3)[0]) == 2


def test_collision_check_is_per_species():
    atoms = Atoms("WMo", positions=[[1.0, 1.0, 1.0], [1.1, 1.1, 1.1]], cell=[5.0] * 3, pbc=True)
    vg = VoxelGrid(("W", "Mo"), 0.5, "sharp")
    decoded = vg.decode(vg.encode(atoms), [5.0] * 3)[0]
    assert_same_structure(atoms, decoded)


def test_largest_safe_voxel_size_is_exact_for_crystals():
    assert largest_safe_voxel_size(crystal("bcc", 2)) == pytest.approx(3.165 / 2)
    assert largest_safe_voxel_size(crystal("diamond", 2)) == pytest.approx(3.567 / 4)


def test_largest_safe_voxel_size_sees_pairs_beyond_the_euclidean_cutoff():
    # A-B: Chebyshev 3.9 within the 4 A search radius; A-C: Chebyshev 2.4 but 4.16 A apart
    atoms = Atoms("W3", positions=[[1, 1, 1], [7.1, 1, 1], [3.4, 3.4, 3.4]], cell=[10.0] * 3, pbc=True)
    safe = largest_safe_voxel_size(atoms)
    assert safe <= _chebyshev_same_species(atoms) + 1e-9
    assert safe == pytest.approx(2.4)


def test_largest_safe_voxel_size_keeps_random_structures_apart():
    rng = np.random.default_rng(3)
    for _ in range(5):
        atoms = random_structure(rng, 12, lengths=(9.0, 10.0, 11.0), species=("W",), min_distance=2.5)
        assert largest_safe_voxel_size(atoms) <= _chebyshev_same_species(atoms) + 1e-9


# ------------------------------------------------------------------------------------------------- layout
@pytest.mark.parametrize("encoding", ["sharp", "smooth"])
def test_stretched_grid_warns_reports_stretch_and_decodes_exactly(encoding):
    lengths = (6.1, 6.0, 5.83)
    voxel = 0.5 if encoding == "sharp" else 0.4
    vg = VoxelGrid(("Ni", "Al"), voxel, encoding)
    with pytest.warns(GridStretchWarning, match="not a whole number"):
        layout = vg.layout(lengths)
    expected_n = [round(v / voxel) for v in lengths]
    assert list(layout.shape) == expected_n
    for k in range(3):
        assert layout.voxel_edges[k] == pytest.approx(lengths[k] / expected_n[k], rel=1e-12)
        assert layout.stretch[k] == pytest.approx(lengths[k] / expected_n[k] / voxel - 1, abs=1e-12)
    assert layout.stretch[1] == pytest.approx(0.0, abs=1e-12)
    assert layout.max_abs_stretch == pytest.approx(max(abs(s) for s in layout.stretch))

    atoms = random_structure(np.random.default_rng(5), 10, lengths=lengths, min_distance=1.9)
    with pytest.warns(GridStretchWarning):
        grid = vg.encode(atoms)
    assert tuple(grid.shape[2:]) == layout.shape
    assert_same_structure(atoms, vg.decode(grid, lengths)[0])


def test_whole_number_of_voxels_does_not_warn():
    vg = VoxelGrid(("W",), 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layout = vg.layout((6.0, 5.0, 7.5))
        vg.encode(Atoms("W", positions=[[1, 2, 3]], cell=[6.0, 5.0, 7.5], pbc=True))
    assert layout.shape == (12, 10, 15) and layout.max_abs_stretch < 1e-12


def test_non_orthogonal_cell_is_a_clear_error():
    primitive = bulk("Cu", "fcc", a=3.615)
    vg = VoxelGrid(("Cu",), 0.4)
    with pytest.raises(GCDError, match="not orthorhombic"):
        vg.encode(primitive)
    with pytest.raises(GCDError, match="supercell"):
        cell_lengths_of(primitive)


def test_cell_errors():
    with pytest.raises(GCDError, match="no cell"):
        cell_lengths_of(Atoms("W", positions=[[0, 0, 0]]))
    with pytest.raises(GCDError):
        VoxelGrid(("W",), 0.5).layout((1.0, -2.0, 3.0))


# ------------------------------------------------------------------------------------------------- batches
@pytest.mark.parametrize("encoding", ["sharp", "smooth"])
def test_batched_encode_equals_single_encodes(encoding):
    rng = np.random.default_rng(21)
    cells = [(6.0, 7.0, 8.0), (6.1, 6.9, 8.05), (5.9, 7.0, 7.95)]  # same grid shape at 0.5 A
    voxel = 0.5
    structures = [random_structure(rng, 8, lengths=c, min_distance=2.0) for c in cells]
    vg = VoxelGrid(("Ni", "Al"), voxel, encoding)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GridStretchWarning)
        batch = vg.encode(structures)
        singles = [vg.encode(s) for s in structures]
    assert batch.shape == (3, vg.n_channels, 12, 14, 16)
    for b, single in enumerate(singles):
        assert torch.equal(batch[b : b + 1], single)
    decoded = vg.decode(batch, cells)
    for atoms, out in zip(structures, decoded, strict=True):
        assert_same_structure(atoms, out)


def test_batched_encode_mismatched_shapes_and_unknown_species():
    vg = VoxelGrid(("W",), 0.5)
    small = Atoms("W", positions=[[1, 1, 1]], cell=[6.0] * 3, pbc=True)
    large = Atoms("W", positions=[[1, 1, 1]], cell=[8.0] * 3, pbc=True)
    with pytest.raises(GCDError, match="share a grid shape"):
        vg.encode([small, large])
    with pytest.raises(GCDError, match=r"\['Mo'\]"):
        vg.encode(Atoms("WMo", positions=[[1, 1, 1], [3, 3, 3]], cell=[6.0] * 3, pbc=True))
    with pytest.raises(GCDError, match="empty"):
        vg.encode([])


def test_decode_shape_and_cell_errors():
    vg = VoxelGrid(("W",), 0.5)
    grid = vg.encode(Atoms("W", positions=[[1, 1, 1]], cell=[6.0] * 3, pbc=True))
    with pytest.raises(GCDError):
        vg.decode(grid[:, :2], [6.0] * 3)
    with pytest.raises(GCDError, match="cells given"):
        vg.decode(torch.cat([grid, grid]), [[6.0] * 3] * 3)
    assert len(vg.decode(grid[0], [6.0] * 3)) == 1  # an unbatched [C, X, Y, Z] grid works


# ------------------------------------------------------------------------------------------------- thresholds
def test_sharp_decode_count_follows_occupancy():
    atoms = random_structure(np.random.default_rng(2), 10, lengths=(6.0, 6.0, 6.0), species=("W",))
    vg = VoxelGrid(("W",), 0.5, "sharp")
    grid = vg.encode(atoms)
    occupied = (grid[0, 0] > 0.5).nonzero()
    assert len(occupied) == 10

    fewer = grid.clone()
    i, j, k = occupied[3].tolist()
    fewer[0, 0, i, j, k] = 0.0
    assert len(vg.decode(fewer, [6.0] * 3)[0]) == 9

    empty = (grid[0, 0] == 0).nonzero()[0].tolist()
    more = grid.clone()
    more[0, 0, empty[0], empty[1], empty[2]] = 0.9
    decoded = vg.decode(more, [6.0] * 3)[0]
    assert len(decoded) == 11
    assert sorted(decoded.arrays["occupancy"].round(6).tolist()) == [0.9] + [1.0] * 10

    faint = grid.clone()
    faint[0, 0, empty[0], empty[1], empty[2]] = 0.4
    assert len(vg.decode(faint, [6.0] * 3)[0]) == 10
    low = VoxelGrid(("W",), 0.5, "sharp", threshold=0.3)
    assert len(low.decode(faint, [6.0] * 3)[0]) == 11


def test_smooth_decode_count_follows_occupancy():
    lengths = (6.0, 6.0, 6.0)
    atoms = random_structure(np.random.default_rng(4), 6, lengths=lengths, species=("W",), min_distance=2.2)
    vg = VoxelGrid(("W",), 0.4, "smooth")
    grid = vg.encode(atoms)

    # take one atom's blob away: one atom fewer, the others still exact
    layout = vg.layout(lengths, warn=False)
    pos = torch.tensor(atoms.positions[2:3] / np.array(layout.voxel_edges))
    fewer = grid.clone()
    fewer[0, 0] -= render_blobs(pos, layout.shape, vg.blob_sigma).float()
    rest = atoms[[i for i in range(len(atoms)) if i != 2]]
    assert_same_structure(rest, vg.decode(fewer, lengths)[0], tol=1e-4)

    # add a faint atom where there is room: occupancy 0.9 counts, 0.4 does not
    extra = Atoms("W", positions=[[0.0, 0.0, 0.0]], cell=lengths, pbc=True)
    gaps = [
        np.linalg.norm(_min_image(atoms.positions - p, np.array(lengths)), axis=1).min()
        for p in np.random.default_rng(0).random((500, 3)) * 6.0
    ]
    best = int(np.argmax(gaps))
    extra.positions[0] = np.random.default_rng(0).random((500, 3))[best] * 6.0
    assert gaps[best] > 2.0
    more = grid + 0.9 * vg.encode(extra)
    decoded = vg.decode(more, lengths)[0]
    assert len(decoded) == len(atoms) + 1
    assert sorted(decoded.arrays["occupancy"])[0] == pytest.approx(0.9, abs=1e-3)
    assert len(vg.decode(grid + 0.4 * vg.encode(extra), lengths)[0]) == len(atoms)


def test_merge_close_atoms_keeps_the_higher_occupancy():
    atoms = Atoms(
        "W3", positions=[[1.0, 1.0, 1.0], [1.4, 1.0, 1.0], [4.0, 4.0, 4.0]], cell=[8.0] * 3, pbc=True
    )
    atoms.set_array("occupancy", np.array([0.6, 0.95, 0.7]))
    merged = merge_close_atoms(atoms, 1.0)
    assert len(merged) == 2
    np.testing.assert_allclose(sorted(merged.arrays["occupancy"]), [0.7, 0.95])
    np.testing.assert_allclose(merged.positions[np.argmax(merged.arrays["occupancy"])], [1.4, 1.0, 1.0])
    # across the periodic boundary too
    wrapped = Atoms("W2", positions=[[0.1, 3.0, 3.0], [7.8, 3.0, 3.0]], cell=[8.0] * 3, pbc=True)
    wrapped.set_array("occupancy", np.array([0.55, 0.8]))
    kept = merge_close_atoms(wrapped, 1.0)
    assert len(kept) == 1 and kept.arrays["occupancy"][0] == pytest.approx(0.8)


def test_merge_close_atoms_ignores_an_atoms_own_periodic_image():
    # the cell is shorter than the merge distance: each atom sees its own images, which are no rivals
    atoms = Atoms("W2", positions=[[0.0, 0.0, 0.0], [0.9, 0.9, 0.9]], cell=[1.8] * 3, pbc=True)
    atoms.set_array("occupancy", np.array([0.9, 0.6]))
    merged = merge_close_atoms(atoms, 2.0)
    assert len(merged) == 1
    assert merged.arrays["occupancy"][0] == pytest.approx(0.9)


def test_decode_merge_distance():
    vg = VoxelGrid(("W",), 0.5, "sharp")
    grid = vg.encode(Atoms(cell=[6.0] * 3, pbc=True))
    grid[0, 0, 3, 3, 3] = 0.7
    grid[0, 0, 4, 3, 3] = 0.9
    assert len(vg.decode(grid, [6.0] * 3)[0]) == 2
    merged = vg.decode(grid, [6.0] * 3, merge_distance=1.0)[0]
    assert len(merged) == 1
    assert merged.arrays["occupancy"][0] == pytest.approx(0.9)
    np.testing.assert_allclose(merged.positions[0], [2.25, 1.75, 1.75])


# ---------------------------------------------------------------------------------------------- augmentation
def test_grid_symmetry_counts():
    assert len(grid_symmetries((10, 10, 10))) == 48
    assert len(grid_symmetries((10, 12, 10))) == 16
    assert len(grid_symmetries((12, 10, 10))) == 16
    assert len(grid_symmetries((8, 10, 12))) == 8
    assert len(grid_symmetries((10, 10, 10), (5.0, 5.0, 5.05))) == 16  # same grid, different cell edges
    ops = grid_symmetries((10, 10, 12))
    assert len(set(ops)) == 16 and sum(op.is_identity for op in ops) == 1
    assert all(op.perm[2] == 2 for op in ops)


def _position_sets_equal(a: Atoms, b: Atoms) -> None:
    assert_same_structure(a, b, tol=TOL)


@pytest.mark.parametrize("encoding", ["sharp", "smooth"])
def test_every_cubic_symmetry_commutes_with_encoding(encoding):
    lengths = (6.0, 6.0, 6.0)
    atoms = random_structure(np.random.default_rng(13), 9, lengths=lengths, min_distance=2.0)
    vg = VoxelGrid(("Ni", "Al"), 0.5 if encoding == "sharp" else 0.4, encoding)
    grid = vg.encode(atoms)
    ops = grid_symmetries(grid.shape[2:], lengths)
    assert len(ops) == 48
    for op in ops:
        moved_grid = apply_symmetry_to_grid(grid, op, vg)
        moved_atoms = apply_symmetry_to_atoms(atoms, op)
        via_grid = vg.decode(moved_grid, lengths)[0]
        via_atoms = vg.decode(vg.encode(moved_atoms), lengths)[0]
        _position_sets_equal(via_atoms, via_grid)
        _position_sets_equal(moved_atoms, via_grid)
        # for atoms off the voxel borders the grids themselves agree
        assert torch.allclose(moved_grid, vg.encode(moved_atoms), atol=1e-5)


@pytest.mark.parametrize("encoding", ["sharp", "smooth"])
def test_tetragonal_symmetries_commute_with_encoding(encoding):
    lengths = (6.0, 7.2, 6.0)
    atoms = random_structure(np.random.default_rng(17), 9, lengths=lengths, min_distance=2.0)
    vg = VoxelGrid(("Ni", "Al"), 0.4, encoding)
    grid = vg.encode(atoms)
    ops = grid_symmetries(grid.shape[2:], lengths)
    assert len(ops) == 16
    for op in ops:
        via_grid = vg.decode(apply_symmetry_to_grid(grid, op, vg), lengths)[0]
        moved_atoms = apply_symmetry_to_atoms(atoms, op)
        assert tuple(_lengths(moved_atoms)) == pytest.approx(lengths)
        _position_sets_equal(vg.decode(vg.encode(moved_atoms), lengths)[0], via_grid)


def test_symmetry_of_a_non_cubic_cell_moves_the_cell_lengths():
    atoms = random_structure(np.random.default_rng(1), 5, lengths=(5.0, 6.0, 7.0))
    from gcd_core.representation import GridSymmetry

    op = GridSymmetry((2, 0, 1), (True, False, True))
    moved = apply_symmetry_to_atoms(atoms, op)
    np.testing.assert_allclose(_lengths(moved), [7.0, 5.0, 6.0])
    vg = VoxelGrid(("Ni", "Al"), 0.5)
    grid = apply_symmetry_to_grid(vg.encode(atoms), op, vg)
    assert tuple(grid.shape[2:]) == (14, 10, 12)
    _position_sets_equal(moved, vg.decode(grid, _lengths(moved))[0])


@pytest.mark.parametrize("encoding", ["sharp", "smooth"])
@pytest.mark.parametrize("shift", [(3, -2, 5), (0, 0, -13), (1.37, -2.5, 0.25), (0.5, 0.0, -0.75)])
def test_translation_commutes_with_encoding(encoding, shift):
    lengths = (6.0, 7.0, 6.5)
    atoms = random_structure(np.random.default_rng(19), 9, lengths=lengths, min_distance=2.0)
    vg = VoxelGrid(("Ni", "Al"), 0.5, encoding)
    grid = vg.encode(atoms)
    moved_grid = translate_grid(grid, shift, vg, lengths)
    moved_atoms = translate_atoms(atoms, shift, vg)
    np.testing.assert_allclose(
        _min_image(moved_atoms.positions - atoms.positions - np.array(shift) * 0.5, np.array(lengths)),
        0,
        atol=1e-9,
    )
    via_grid = vg.decode(moved_grid, lengths)[0]
    _position_sets_equal(vg.decode(vg.encode(moved_atoms), lengths)[0], via_grid)
    _position_sets_equal(moved_atoms, via_grid)
    assert moved_grid.shape == grid.shape and moved_grid.dtype == grid.dtype
    if all(float(s).is_integer() for s in shift):
        assert torch.allclose(moved_grid, vg.encode(moved_atoms), atol=1e-5)


@ignore_stretch
def test_translation_uses_the_stretched_voxel_edge():
    lengths = (6.1, 7.0, 5.83)  # 12 x 14 x 12 voxels of 0.5 A, stretched
    atoms = random_structure(np.random.default_rng(23), 8, lengths=lengths, min_distance=2.0)
    vg = VoxelGrid(("Ni", "Al"), 0.5, "sharp")
    edges = np.array(vg.layout(lengths, warn=False).voxel_edges)
    moved_atoms = translate_atoms(atoms, (2, 1, -3), vg)
    np.testing.assert_allclose(
        _min_image(moved_atoms.positions - atoms.positions - edges * [2, 1, -3], np.array(lengths)),
        0,
        atol=1e-9,
    )
    moved_grid = translate_grid(vg.encode(atoms), (2, 1, -3), vg, lengths)
    _position_sets_equal(moved_atoms, vg.decode(moved_grid, lengths)[0])


def test_random_augment_is_an_isometry_onto_a_grid_symmetry():
    from gcd_core.representation import random_augment

    atoms = random_structure(np.random.default_rng(47), 8, lengths=(6.0, 6.0, 7.0), min_distance=2.0)
    vg = VoxelGrid(("Ni", "Al"), 0.5)
    generator = np.random.default_rng(0)
    seen = set()
    for _ in range(12):
        out, op = random_augment(atoms, vg, generator)
        seen.add(op)
        assert op in grid_symmetries((12, 12, 14), (6.0, 6.0, 7.0))
        np.testing.assert_allclose(_lengths(out), _lengths(atoms)[list(op.perm)])
        assert sorted(out.get_chemical_symbols()) == sorted(atoms.get_chemical_symbols())
        np.testing.assert_allclose(
            np.sort(out.get_all_distances(mic=True).ravel()),
            np.sort(atoms.get_all_distances(mic=True).ravel()),
            atol=1e-9,
        )
        assert np.all(out.get_scaled_positions(wrap=False) >= 0) and np.all(out.get_scaled_positions() < 1)
        assert_same_structure(out, _roundtrip(vg, out))
    assert len(seen) > 1
    plain, op = random_augment(atoms, vg, generator, symmetry=False)
    assert op.is_identity


# ------------------------------------------------------------------------------------------------- devices
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("encoding", ["sharp", "smooth"])
def test_cpu_and_cuda_agree(encoding):
    atoms = random_structure(np.random.default_rng(29), 16, lengths=(7.0, 8.0, 9.0))
    vg = VoxelGrid(("Ni", "Al"), 0.5 if encoding == "sharp" else 0.4, encoding)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GridStretchWarning)
        cpu = vg.encode(atoms, device="cpu")
        cuda = vg.encode(atoms, device="cuda")
    assert cuda.device.type == "cuda"
    assert torch.allclose(cpu, cuda.cpu(), atol=1e-6)
    lengths = cell_lengths_of(atoms)
    from_cpu = vg.decode(cpu, lengths)[0]
    from_cuda = vg.decode(cuda, lengths)[0]
    assert_same_structure(atoms, from_cuda)
    assert_same_structure(from_cpu, from_cuda, tol=1e-6)
    # augmentations on the device too
    op = grid_symmetries(cpu.shape[2:], lengths)[5]
    assert torch.allclose(
        apply_symmetry_to_grid(cpu, op, vg), apply_symmetry_to_grid(cuda, op, vg).cpu(), atol=1e-6
    )
    shifted = translate_grid(cuda, (1.5, -2.25, 3.0), vg, lengths)
    assert shifted.device.type == "cuda"
    assert torch.allclose(translate_grid(cpu, (1.5, -2.25, 3.0), vg, lengths), shifted.cpu(), atol=1e-5)
    assert np.allclose(density_view(cpu[0], vg), density_view(cuda[0], vg), atol=1e-6)


# ---------------------------------------------------------------------------------------------- density view
@pytest.mark.parametrize("upsample", [1, 2, 3])
def test_density_view_sharp(upsample):
    lengths = np.array([6.0, 6.0, 7.0])
    atoms = random_structure(np.random.default_rng(31), 7, lengths=lengths, species=("W",), min_distance=2.0)
    vg = VoxelGrid(("W",), 0.5, "sharp")
    grid = vg.encode(atoms)[0]
    density = density_view(grid, vg, upsample=upsample)
    assert isinstance(density, np.ndarray) and density.dtype == np.float32
    assert density.shape == tuple(n * upsample for n in grid.shape[1:])
    assert density.min() >= 0
    assert density.sum() == pytest.approx(len(atoms), rel=1e-2)  # unit weight per atom, blur conserves mass
    # a batched [1, C, X, Y, Z] grid gives the same view
    np.testing.assert_array_equal(density_view(grid[None], vg, upsample=upsample), density)


@pytest.mark.parametrize("encoding", ["sharp", "smooth"])
def test_density_mass_is_proportional_to_atom_count(encoding):
    lengths = (6.0, 6.0, 6.0)
    vg = VoxelGrid(("Ni", "Al"), 0.5, encoding)
    rng = np.random.default_rng(37)
    per_atom = []
    for n in (1, 4, 9):
        atoms = random_structure(rng, n, lengths=lengths, min_distance=2.0)
        per_atom.append(density_view(vg.encode(atoms)[0], vg, upsample=2).sum() / n)
    assert max(per_atom) == pytest.approx(min(per_atom), rel=1e-2)
    empty = density_view(vg.encode(Atoms(cell=lengths, pbc=True))[0], vg, upsample=2)
    assert empty.max() == 0


@pytest.mark.parametrize(("encoding", "upsample"), [("sharp", 1), ("sharp", 2), ("sharp", 3), ("smooth", 2)])
def test_density_maximum_lies_at_the_atom(encoding, upsample):
    lengths = np.array([6.0, 6.0, 6.0])
    vg = VoxelGrid(("W",), 0.5, encoding)
    fine = 0.5 / upsample
    rng = np.random.default_rng(41)
    for _ in range(10):
        atoms = Atoms("W", positions=[rng.random(3) * lengths], cell=lengths, pbc=True)
        density = density_view(vg.encode(atoms)[0], vg, upsample=upsample)
        index = np.array(np.unravel_index(np.argmax(density), density.shape))
        centre = (index + 0.5) * fine  # element j of the view is the fine voxel [j, j + 1) * fine
        error = np.abs(_min_image(centre - atoms.positions[0], lengths))
        assert error.max() <= 0.5 * fine + 1e-6, f"maximum {error.max() / fine:.2f} fine voxels off"


def test_density_maxima_of_a_crystal_sit_on_its_atoms():
    atoms = crystal("bcc", 2, translation=(0.31, 0.77, 1.13))
    lengths = _lengths(atoms)
    vg = VoxelGrid(("W",), 0.3165, "sharp")
    density = density_view(vg.encode(atoms)[0], vg, upsample=2)
    fine = lengths / np.array(density.shape)
    for position in atoms.positions:
        index = np.floor(position / fine).astype(int)
        window = np.take(density, range(index[0] - 2, index[0] + 3), axis=0, mode="wrap")
        window = np.take(window, range(index[1] - 2, index[1] + 3), axis=1, mode="wrap")
        window = np.take(window, range(index[2] - 2, index[2] + 3), axis=2, mode="wrap")
        best = np.array(np.unravel_index(np.argmax(window), window.shape)) - 2 + index
        error = np.abs(_min_image((best + 0.5) * fine - position, lengths))
        assert np.all(error <= fine / 2 + 1e-6)
        assert window.max() > 0.5 * density.max()


@pytest.mark.parametrize("encoding", ["sharp", "smooth"])
def test_density_view_is_periodic(encoding):
    """Rolling the grid by whole voxels rolls the view: the cell faces are not edges."""
    lengths = (6.0, 6.0, 6.0)
    atoms = random_structure(np.random.default_rng(43), 6, lengths=lengths, species=("W",), min_distance=2.0)
    vg = VoxelGrid(("W",), 0.5, encoding)
    grid = vg.encode(atoms)[0]
    density = density_view(grid, vg, upsample=2)
    rolled = density_view(torch.roll(grid, shifts=(3, -5, 1), dims=(1, 2, 3)), vg, upsample=2)
    np.testing.assert_allclose(np.roll(density, (6, -10, 2), axis=(0, 1, 2)), rolled, atol=1e-6)


def test_density_of_a_noisy_grid_is_a_non_negative_haze():
    vg = VoxelGrid(("W", "Mo"), 0.5, "sharp")
    noisy = torch.rand(vg.n_channels, 8, 8, 8, generator=torch.Generator().manual_seed(0)) * 1.4 - 0.2
    density = density_view(noisy, vg, upsample=2)
    assert density.shape == (16, 16, 16) and density.min() >= 0
    assert density.sum() == pytest.approx(float(noisy[:2].clamp(0, 1).sum()), rel=1e-2)


# ------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("threshold", [0.0, 1.0, -0.1, 1.5])
def test_threshold_outside_unit_interval(threshold):
    with pytest.raises(GCDError, match="threshold"):
        VoxelGrid(("W",), 0.5, threshold=threshold)


def test_bad_grid_parameters():
    with pytest.raises(GCDError, match="encoding"):
        VoxelGrid(("W",), 0.5, encoding="fuzzy")
    with pytest.raises(GCDError, match="voxel_size"):
        VoxelGrid(("W",), 0.0)
    with pytest.raises(GCDError, match="species"):
        VoxelGrid(("W", "W"), 0.5)
    with pytest.raises(GCDError, match="species"):
        VoxelGrid((), 0.5)
    with pytest.raises(GCDError, match="blob_sigma"):
        VoxelGrid(("W",), 0.5, encoding="smooth", blob_sigma=5.0)
    with pytest.raises(GCDError, match="offset channels"):
        VoxelGrid(("W",), 0.5, encoding="smooth").offset_channels(0)


def test_empty_structure_list():
    for encoding in ("sharp", "smooth"):
        with pytest.raises(GCDError, match="empty"):
            VoxelGrid(("W",), 0.5, encoding).encode([])


def test_config_round_trip_and_channels():
    vg = VoxelGrid(["W", "Mo"], 0.4, "smooth", blob_sigma=1.2, threshold=0.4)
    assert VoxelGrid.from_config(vg.to_config()) == vg
    assert vg.n_channels == 2 and VoxelGrid(("W", "Mo"), 0.4).n_channels == 8
    assert VoxelGrid("W", 0.5).species == ("W",)
    sharp = VoxelGrid(("W", "Mo"), 0.4)
    assert sharp.offset_channels(1) == slice(5, 8)
    x = torch.rand(2, 8, 3, 3, 3)
    assert torch.allclose(VoxelGrid.to_data_space(VoxelGrid.to_model_space(x)), x)
    weights = sharp.loss_weights(x, occupied_weight=4.0)
    assert torch.allclose(weights[:, :2], 1 + 4 * x[:, :2])
    assert torch.allclose(weights[:, 5:8], 5 * x[:, 1:2].expand(-1, 3, -1, -1, -1))


# ------------------------------------------------------------------------------------------ split sites
def _split_pairs(clean: torch.Tensor, split: torch.Tensor) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(atom voxel, ghost voxel) index pairs of a split grid (one species), read off what changed."""
    occupied = clean[0, 0] > 0.5
    ghosts = ((split[0, 0] > 0) & ~occupied).nonzero().tolist()
    shape = clean.shape[2:]
    pairs = []
    for ghost in ghosts:
        neighbours = [
            tuple((g + d * (axis == k)) % n for k, (g, n) in enumerate(zip(ghost, shape, strict=True)))
            for axis in range(3)
            for d in (-1, 1)
        ]
        sources = [v for v in neighbours if occupied[v]]
        assert len(sources) >= 1, f"ghost {ghost} has no atom beside it"
        pairs.append((sources[0], tuple(ghost)))
    return pairs


@pytest.mark.parametrize(("shift", "axis", "face"), [((0.76, 0.4, 0.3), 0, 0.0), ((0.4, 0.3, 0.05), 2, 1.0)])
def test_split_sites_doubles_atoms_across_their_nearest_face(shift, axis, face):
    """Atoms near the +x face get a ghost in the +x neighbour with its x offset on the shared face; near -z, in
    the -z neighbour at z offset 1. The rest of the grid is untouched; decoded, every extra atom sits within a
    voxel of a real one, and the real atoms stay."""
    voxels = VoxelGrid(("Po",), 0.8375)
    atoms = crystal("sc", 2, translation=np.array(shift) * 0.8375)
    clean = voxels.encode([atoms])
    total = 0
    for seed in range(6):
        split = split_sites(clean, voxels, torch.Generator().manual_seed(seed), structure_probability=1.0)
        pairs = _split_pairs(clean, split)
        total += len(pairs)
        changed = (split != clean).any(1)[0]
        assert int(changed.sum()) == 2 * len(pairs)
        for source, ghost in pairs:
            delta = [(g - s + 1) % n - 1 for g, s, n in zip(ghost, source, clean.shape[2:], strict=True)]
            expected = [0, 0, 0]
            expected[axis] = 1 if face == 0.0 else -1
            assert delta == expected
            ghost_offset = split[0, 1:4][(slice(None), *ghost)]
            source_offset = clean[0, 1:4][(slice(None), *source)]
            assert float(ghost_offset[axis]) == face
            others = [k for k in range(3) if k != axis]
            torch.testing.assert_close(ghost_offset[others], source_offset[others])
            assert 0.3 <= float(split[0, 0][ghost]) <= 1.0
            assert 0.5 <= float(split[0, 0][source]) <= 1.0
        decoded = voxels.decode(split, atoms.cell.lengths())[0]
        assert len(decoded) >= len(atoms)
        _, d = get_distances(decoded.positions, atoms.positions, cell=atoms.cell, pbc=True)
        assert d.min(axis=1).max() < 0.8375  # every decoded atom, ghosts included, is within a voxel of an atom
        assert d.min(axis=0).max() < 1e-4  # and every real atom is still decoded where it was
    assert total > 0, "six seeds at structure probability 1 split no site"


def test_split_sites_leaves_occupied_voxels_alone_and_checks_its_input():
    voxels = VoxelGrid(("W",), 1.0)
    # two atoms in neighbouring voxels along x, the first near the face they share: no room for its ghost there
    atoms = Atoms("W2", positions=[[0.95, 4.5, 4.5], [1.6, 4.5, 4.5]], cell=[8, 8, 8], pbc=True)
    clean = voxels.encode([atoms])
    first_split = 0
    for seed in range(10):
        split = split_sites(clean, voxels, torch.Generator().manual_seed(seed), structure_probability=1.0)
        # the second atom may be split itself (its occupancy drops to >= 0.5), but never overwritten by a ghost
        assert float(split[0, 0, 1, 4, 4]) >= 0.5 and torch.equal(split[0, 1:, 1, 4, 4], clean[0, 1:, 1, 4, 4])
        first_split += float(split[0, 0, 0, 4, 4]) < 1.0
    assert first_split == 0, "an atom whose ghost has no room is left whole"
    assert torch.equal(split_sites(clean, voxels, torch.Generator(), structure_probability=0.0), clean)
    with pytest.raises(GCDError, match="sharp encoding"):
        split_sites(clean[:, :1], VoxelGrid(("W",), 1.0, encoding="smooth"))
    with pytest.raises(GCDError, match="expected a grid"):
        split_sites(clean[0], voxels)
    with pytest.raises(GCDError, match="structure_probability"):
        split_sites(clean, voxels, structure_probability=1.5)
    with pytest.raises(GCDError, match="ghost_occupancy"):
        split_sites(clean, voxels, ghost_occupancy=(0.8, 0.2))
