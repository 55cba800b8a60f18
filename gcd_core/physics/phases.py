"""The phase judge: is a structure the ideal crystal of a given phase?

Three independent checks, combined in :class:`PhaseVerdict`:

* the atom count against the ideal count for the cell (``ideal_atom_count``);
* the spglib space group at a position tolerance ``symprec``;
* a per-atom structure type from local geometry (:func:`structure_types`), so that a verdict says *where* a
  structure departs from the phase, not only *that* it does.

Per-atom identification (all with adaptive, per-atom cutoffs, so independent of the lattice constant):

* FCC / HCP -- adaptive common-neighbour analysis (a-CNA, Stukowski, MSMSE 20, 045021 (2012)). The 12 nearest
  neighbours; two of them are bonded when closer than r_cut = (1 + sqrt 2)/2 * mean(12 nearest distances), i.e.
  halfway between the first and second FCC shells. For each neighbour the signature (number of common neighbours,
  bonds among them, bonds in the largest connected cluster of those bonds): FCC = 12 x (4,2,1);
  HCP = 6 x (4,2,1) + 6 x (4,2,2).
* BCC -- a-CNA on the 14 nearest (8 first + 6 second shell), r_cut = (1 + sqrt 2)/2 * (sum of the 8 nearest
  distances * 2/sqrt 3 + sum of the next 6) / 14 (each term estimates the lattice constant a; the cutoff lies
  between the second shell, a, and the third, sqrt 2 a; as in OVITO). BCC = 8 x (6,6,6) + 6 x (4,4,4).
* SC -- the same construction extended to the 18 nearest (6 first + 12 second shell; the third shell, sqrt 3 a,
  is well clear of the second, sqrt 2 a). r_cut = (1 + sqrt 2)/2 * (sum of the 6 nearest + sum of the next 12 /
  sqrt 2) / 18, between the bond a and the face diagonal sqrt 2 a. Derivation for the ideal lattice: a first
  neighbour, e.g. (1,0,0), is bonded to the four second neighbours (1,+-1,0), (1,0,+-1), which are mutually
  sqrt 2 a apart; a second neighbour, e.g. (1,1,0), is bonded to the two first neighbours (1,0,0), (0,1,0), also
  sqrt 2 a apart. SC = 6 x (4,0,0) + 12 x (2,0,0).
* cubic diamond -- "identify diamond structure" (Maras et al., CPC 205, 13 (2016), as in OVITO): the 4 nearest
  neighbours; each neighbour's own 4 nearest, minus the way back to the centre, give 12 second neighbours, which
  in cubic diamond form an FCC shell: a-CNA on them (cutoff from their mean distance) must give 12 x (4,2,1).
* anything else (including hexagonal diamond, ICO, defects, surfaces, amorphous) -> "other".

The tests are tried in that order and the first match wins (they are mutually exclusive on ideal lattices).
Thermal noise: signatures survive random displacements of ~0.05-0.1 A standard deviation at the default lattice
constants (bonded and non-bonded distances both sit ~0.5-0.7 A from the cutoff); at 0.1 A a small fraction of atoms
may flip to "other". Neighbours are found among explicit periodic images (any cell, any size), so the 1 x 1 x 1
conventional cells work, even the one-atom SC cell, whose neighbours are all images of itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from scipy.spatial import cKDTree

from gcd_core.data.crystals import PHASES, ideal_atom_count
from gcd_core.errors import GCDError
from gcd_core.physics.symmetry import DEFAULT_SYMPREC, space_group

STRUCTURE_TYPES: tuple[str, ...] = ("other", "sc", "bcc", "fcc", "hcp", "diamond")
_OTHER, _SC, _BCC, _FCC, _HCP, _DIAMOND = range(len(STRUCTURE_TYPES))

# Atoms off a whole number in ideal_atom_count still counted as "whole": cells come from voxel grids whose
# edges can be rounded a little, and 0.05 atoms is far below any real miscount.
COUNT_TOLERANCE = 0.05

_CNA_FACTOR = (1.0 + np.sqrt(2.0)) / 2.0  # halfway between the shells at r and sqrt(2) r
_MAX_NEIGHBOURS = 18  # the SC test needs the most
_BLOCK = 4096  # atoms per block in the classification, bounding memory for large cells


@dataclass
class PhaseVerdict:
    """How a structure compares with the ideal crystal of ``phase``."""

    phase: str
    n_atoms: int
    ideal_atoms: float
    count_ok: bool
    space_group: int
    space_group_symbol: str
    symprec: float
    expected_space_group: int
    structure_types: list[str]
    target_fraction: float
    perfect: bool

    def type_counts(self) -> dict[str, int]:
        """Atoms per structure type, most frequent first."""
        names, counts = np.unique(np.asarray(self.structure_types, dtype=object), return_counts=True)
        order = np.argsort(-counts, kind="stable")
        return {str(names[i]): int(counts[i]) for i in order}

    def summary(self) -> str:
        """One line for tables and the CLI."""
        verdict = "PERFECT" if self.perfect else "imperfect"
        count = "ok" if self.count_ok else "off"
        group = f"{self.space_group} {self.space_group_symbol}".strip() if self.space_group else "none"
        types = ", ".join(f"{name} {n}" for name, n in self.type_counts().items()) or "no atoms"
        return (
            f"{self.phase}: {verdict} | atoms {self.n_atoms} / ideal {self.ideal_atoms:.2f} ({count}) | "
            f"space group {group}, expected {self.expected_space_group} (symprec {self.symprec:g}) | "
            f"{self.phase} {100 * self.target_fraction:.1f}% ({types})"
        )


def judge_phase(atoms: Atoms, phase: str, symprec: float = DEFAULT_SYMPREC) -> PhaseVerdict:
    """Judge ``atoms`` against the ideal crystal of ``phase`` (a key of ``PHASES``).

    ``perfect`` needs the right atom count for the cell, the expected space group at ``symprec`` and every atom
    identified as ``phase``. The ideal count uses the cell edges, so it assumes an orthorhombic cell, as the
    generator makes, and the default lattice constants of ``PHASES``.
    """
    if phase not in PHASES:
        raise GCDError(f"unknown phase {phase!r}; choose one of {sorted(PHASES)}")
    n_atoms = len(atoms)
    ideal = ideal_atom_count(phase, atoms.cell.lengths())
    whole = round(ideal)
    # a cell expecting no atoms (an empty or tiny cell) never counts as right
    count_ok = bool(whole >= 1 and abs(ideal - whole) <= COUNT_TOLERANCE and n_atoms == whole)
    number, symbol = space_group(atoms, symprec)
    types = structure_types(atoms)
    fraction = float(np.mean([t == phase for t in types])) if types else 0.0
    expected = PHASES[phase].space_group
    return PhaseVerdict(
        phase=phase,
        n_atoms=n_atoms,
        ideal_atoms=ideal,
        count_ok=count_ok,
        space_group=number,
        space_group_symbol=symbol,
        symprec=float(symprec),
        expected_space_group=expected,
        structure_types=types,
        target_fraction=fraction,
        perfect=bool(count_ok and number == expected and fraction == 1.0),
    )


def structure_types(atoms: Atoms) -> list[str]:
    """Per-atom structure type, one of ``STRUCTURE_TYPES`` ("sc", "bcc", "fcc", "hcp", "diamond" or "other")."""
    return [STRUCTURE_TYPES[code] for code in _classify(atoms)]


# --- neighbours -------------------------------------------------------------------------------------------------


def _neighbour_table(atoms: Atoms, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` nearest neighbours of every atom among all periodic images, sorted by distance.

    Returns distances (n, k), atom indices (n, k; -1 where missing) and vectors from the atom (n, k, 3; NaN where
    missing). A neighbour can be a periodic image of the atom itself (small cells). Missing neighbours happen only
    along non-periodic directions with too few atoms.
    """
    n = len(atoms)
    cell = atoms.cell.array
    pbc = np.asarray(atoms.pbc, dtype=bool)
    volume = abs(np.linalg.det(cell))
    if pbc.any() and volume < 1e-9:
        raise GCDError("a periodic structure needs a cell of non-zero volume")
    if not pbc.any():
        images, owner = atoms.positions.copy(), np.arange(n)
        positions = images
        tree = cKDTree(images)
        dist, hit = tree.query(positions, k=k + 1)
    else:
        frac = np.linalg.solve(cell.T, atoms.positions.T).T
        frac[:, pbc] %= 1.0
        positions = frac @ cell
        # perpendicular heights of the cell: an image within distance r of an atom in the cell lies within
        # r / height in fractional coordinates of the cell along each axis
        heights = volume / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
        # first guess: the radius of a sphere holding k + 1 atoms at the mean density, with room to spare
        pad = 1.3 * (3.0 * (k + 1) * volume / (4.0 * np.pi * n)) ** (1.0 / 3.0)
        for _ in range(20):
            images, owner = _periodic_images(frac, cell, pbc, heights, pad)
            tree = cKDTree(images)
            dist, hit = tree.query(positions, k=k + 1)
            reach = dist[:, -1].max()
            if reach <= pad:
                break
            # the found points are genuine images, so the true k-th neighbour is no farther than ``reach``;
            # padding by that much makes the next query exact (doubling if some atom found too few)
            pad = reach * (1 + 1e-9) if np.isfinite(reach) else 2.0 * pad
    # drop the atom itself: its unshifted copy has index == the atom's index (unshifted copies come first); where
    # two atoms coincide it may not be the first hit, and where it is absent the last column goes
    own = hit == np.arange(n)[:, None]
    drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
    keep = np.ones(hit.shape, dtype=bool)
    keep[np.arange(n), drop] = False
    dist, hit = dist[keep].reshape(n, k), hit[keep].reshape(n, k)
    found = np.isfinite(dist)
    hit = np.where(found, hit, 0)
    index = np.where(found, owner[hit], -1)
    vectors = np.where(found[..., None], images[hit] - positions[:, None, :], np.nan)
    return dist, index, vectors


def _periodic_images(
    frac: np.ndarray, cell: np.ndarray, pbc: np.ndarray, heights: np.ndarray, pad: float
) -> tuple[np.ndarray, np.ndarray]:
    """Positions of all images within ``pad`` of the cell, unshifted copies first, and the atom each belongs to."""
    reach = np.where(pbc, np.ceil(pad / heights), 0).astype(int)
    axes = [np.arange(-m, m + 1) for m in reach]
    shifts = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    shifts = shifts[np.argsort(np.abs(shifts).sum(axis=1), kind="stable")]  # the zero shift first
    shifted = frac[None, :, :] + shifts[:, None, :]
    limit = np.where(pbc, pad / heights, np.inf)
    inside = np.all((shifted >= -limit) & (shifted <= 1.0 + limit), axis=2)
    inside[0] = True  # the atoms themselves, even off the cell along non-periodic axes
    owner = np.broadcast_to(np.arange(len(frac)), inside.shape)[inside]
    return shifted[inside] @ cell, owner


# --- common-neighbour analysis ------------------------------------------------------------------------------------


def _bonds(vectors: np.ndarray, cutoff: np.ndarray) -> np.ndarray:
    """(m, K, K) bonds among each atom's K neighbours: closer than the atom's cutoff, never to itself."""
    sq = np.einsum("mkc,mkc->mk", vectors, vectors)
    d2 = sq[:, :, None] + sq[:, None, :] - 2.0 * np.einsum("mkc,mlc->mkl", vectors, vectors)
    bonded = d2 <= (cutoff**2)[:, None, None]
    bonded[:, np.arange(vectors.shape[1]), np.arange(vectors.shape[1])] = False
    return bonded


def _common_and_bonds(bonded: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per neighbour: common neighbours, bonds among them, and the degree of each common neighbour (m, K, K)."""
    b = bonded.astype(np.float32)
    shared = np.matmul(b, b)  # shared[k, l]: neighbours bonded to both k and l
    degree = (b * shared).astype(np.int16)  # for l bonded to k: bonds of l inside k's common-neighbour set
    return bonded.sum(axis=2), degree.sum(axis=2) // 2, degree


def _longest_chain(bonded: np.ndarray, degree: np.ndarray) -> np.ndarray:
    """(m, K) bonds in the largest connected cluster of bonds among each neighbour's common neighbours."""
    m, K, _ = bonded.shape
    # adjacency among k's common neighbours, one graph per (atom, neighbour k)
    adjacency = (bonded[:, :, :, None] & bonded[:, :, None, :] & bonded[:, None, :, :]).reshape(m * K, K, K)
    labels = np.broadcast_to(np.arange(K, dtype=np.int8), (m * K, K)).copy()
    for _ in range(K):  # min-label propagation; converges within the graph diameter
        reached = np.where(adjacency, labels[:, None, :], np.int8(K)).min(axis=2)
        new = np.minimum(labels, reached)
        if np.array_equal(new, labels):
            break
        labels = new
    same = labels[:, :, None] == labels[:, None, :]
    cluster = (same * degree.reshape(m * K, 1, K)).sum(axis=2) // 2
    return cluster.max(axis=1).reshape(m, K)


def _signature_counts(
    vectors: np.ndarray, cutoff: np.ndarray, wanted: list[tuple[int, int, int]]
) -> tuple[np.ndarray, dict[tuple[int, int, int], np.ndarray]]:
    """Count neighbours with each wanted (common, bonds, chain) signature.

    Every structure tested here has all its neighbours in the wanted signatures, so only atoms whose neighbours
    all have a wanted (common, bonds) pair can match; the chain, the expensive part, is computed for those only.
    Returns those atoms (rows of ``vectors``) and, per signature, how many of their neighbours carry it.
    """
    bonded = _bonds(vectors, cutoff)
    common, nbonds, degree = _common_and_bonds(bonded)
    pairs = {(c, b): (common == c) & (nbonds == b) for c, b, _ in wanted}
    rows = np.flatnonzero(np.logical_or.reduce(list(pairs.values())).all(axis=1))
    chain = _longest_chain(bonded[rows], degree[rows])
    counts = {sig: (pairs[sig[:2]][rows] & (chain == sig[2])).sum(axis=1) for sig in wanted}
    return rows, counts


# --- classification -----------------------------------------------------------------------------------------------


def _classify(atoms: Atoms) -> np.ndarray:
    """Integer structure type per atom (indices into ``STRUCTURE_TYPES``)."""
    n = len(atoms)
    types = np.full(n, _OTHER, dtype=int)
    if n == 0:
        return types
    dist, index, vectors = _neighbour_table(atoms, _MAX_NEIGHBOURS)
    found = np.isfinite(dist)
    # coincident atoms (zero-length bonds) make every cutoff meaningless: leave them "other"
    sane = found[:, 0] & (dist[:, 0] > 1e-6)
    for start in range(0, n, _BLOCK):
        block = np.arange(start, min(start + _BLOCK, n))
        block = block[sane[block]]
        _classify_block(block, dist, index, vectors, found, types)
    return types


def _classify_block(
    block: np.ndarray, dist: np.ndarray, index: np.ndarray, vectors: np.ndarray, found: np.ndarray, types: np.ndarray
) -> None:
    """Assign types to the atoms ``block`` in place, trying FCC/HCP, BCC, SC, then diamond."""
    # FCC / HCP: a-CNA on the 12 nearest
    todo = block[found[block, 11]]
    if todo.size:
        cutoff = _CNA_FACTOR * dist[todo, :12].mean(axis=1)
        rows, counts = _signature_counts(vectors[todo, :12], cutoff, [(4, 2, 1), (4, 2, 2)])
        fcc = counts[(4, 2, 1)] == 12
        hcp = (counts[(4, 2, 1)] == 6) & (counts[(4, 2, 2)] == 6)
        types[todo[rows[fcc]]] = _FCC
        types[todo[rows[hcp]]] = _HCP

    # BCC: a-CNA on the 14 nearest; both shells rescaled to the lattice constant for the cutoff
    todo = block[(types[block] == _OTHER) & found[block, 13]]
    if todo.size:
        a = (dist[todo, :8].sum(axis=1) * 2.0 / np.sqrt(3.0) + dist[todo, 8:14].sum(axis=1)) / 14.0
        rows, counts = _signature_counts(vectors[todo, :14], _CNA_FACTOR * a, [(6, 6, 6), (4, 4, 4)])
        bcc = (counts[(6, 6, 6)] == 8) & (counts[(4, 4, 4)] == 6)
        types[todo[rows[bcc]]] = _BCC

    # SC: the same on the 18 nearest (6 + 12 face diagonals); no bonds among common neighbours, so chains are 0
    todo = block[(types[block] == _OTHER) & found[block, 17]]
    if todo.size:
        a = (dist[todo, :6].sum(axis=1) + dist[todo, 6:18].sum(axis=1) / np.sqrt(2.0)) / 18.0
        rows, counts = _signature_counts(vectors[todo, :18], _CNA_FACTOR * a, [(4, 0, 0), (2, 0, 0)])
        sc = (counts[(4, 0, 0)] == 6) & (counts[(2, 0, 0)] == 12)
        types[todo[rows[sc]]] = _SC

    # cubic diamond: the 12 second neighbours reached through the 4 nearest must form an FCC shell
    todo = block[(types[block] == _OTHER) & found[block, 3]]
    if todo.size:
        first = index[todo, :4]
        todo, first = todo[found[first, 3].all(axis=1)], first[found[first, 3].all(axis=1)]
    if todo.size:
        second = vectors[todo, :4, None, :] + vectors[first, :4]  # (m, 4 neighbours, their 4 nearest, 3)
        # the way back to the centre: a neighbour's neighbour that is the centre atom at zero offset
        back = (index[first, :4] == todo[:, None, None]) & (
            np.einsum("mijc,mijc->mij", second, second) < (1e-6 * dist[todo, :1, None]) ** 2
        )
        one_way_back = (back.sum(axis=2) == 1).all(axis=1)
        todo, second, back = todo[one_way_back], second[one_way_back], back[one_way_back]
        if todo.size:
            order = np.argsort(back, axis=2, kind="stable")[:, :, :3]  # the 3 forward neighbours of each
            second = np.take_along_axis(second, order[..., None], axis=2).reshape(len(todo), 12, 3)
            cutoff = _CNA_FACTOR * np.linalg.norm(second, axis=2).mean(axis=1)
            rows, counts = _signature_counts(second, cutoff, [(4, 2, 1)])
            types[todo[rows[counts[(4, 2, 1)] == 12]]] = _DIAMOND
