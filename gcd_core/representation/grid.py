"""Atoms <-> periodic voxel grids with a free atom count.

A periodic orthorhombic cell is cut into ``n_x x n_y x n_z`` voxels; voxel ``i`` along an axis covers
``[i h, (i + 1) h)``. Two occupancy encodings are supported, chosen per model and recorded in checkpoints:

* ``sharp``: per species one occupancy channel (1 in the voxel holding an atom, 0 elsewhere) and three offset
  channels (the atom's position inside its voxel as a fraction of the edge, 0.5 in empty voxels). Channel layout:
  ``[occ_0 .. occ_{S-1}, off_0x, off_0y, off_0z, off_1x, ...]``.
* ``smooth``: per species one channel holding a periodic Gaussian blob (sigma in voxels) centred on each atom,
  sampled at voxel centres; decoded by peak finding with a sub-voxel log-parabola fit, refined by subtracting
  the neighbours' tails so that clean grids round-trip exactly.

Grids in *data space* hold values in [0, 1]; diffusion works in *model space*, ``2 x - 1``.
All tensors are ``[batch, channel, x, y, z]`` torch tensors on any device.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from ase import Atoms

from gcd_core.errors import GCDError, VoxelCollisionError

ENCODINGS = ("sharp", "smooth")
# blobs are plain Gaussians out to _BLOB_RADIUS_SIGMAS sigma (and at least _BLOB_MIN_RADIUS voxels, so
# that the 7-point peak stencil always sees the pure Gaussian), then a smooth window takes them to zero
# over _BLOB_TAPER voxels; the decoder renders the same kernel
_BLOB_RADIUS_SIGMAS = 3.0
_BLOB_MIN_RADIUS = 2.0
_BLOB_TAPER = 1.0


class GridStretchWarning(UserWarning):
    """The cell edge is not a whole number of voxels, so the voxels are slightly stretched."""


@dataclass(frozen=True)
class GridLayout:
    """How one cell maps onto the grid: voxel counts, the real voxel edges and their stretch."""

    shape: tuple[int, int, int]
    cell_lengths: tuple[float, float, float]
    voxel_edges: tuple[float, float, float]
    stretch: tuple[float, float, float]  # real voxel edge / nominal voxel edge - 1, per axis

    @property
    def max_abs_stretch(self) -> float:
        return max(abs(s) for s in self.stretch)


def cell_lengths_of(atoms: Atoms) -> tuple[float, float, float]:
    """Edge lengths of an orthorhombic cell; a clear error for any other cell."""
    cell = np.asarray(atoms.cell)
    if np.abs(cell).sum() == 0:
        raise GCDError("the structure has no cell; give it a periodic orthorhombic cell first")
    lengths = np.linalg.norm(cell, axis=1)
    if not np.allclose(cell, np.diag(np.diag(cell)), atol=1e-6 * max(lengths.max(), 1.0)):
        raise GCDError(
            "the cell is not orthorhombic with axes along x, y, z (cell angles "
            f"{np.round(atoms.cell.angles(), 3).tolist()} deg); voxel grids need an orthorhombic supercell, "
            "e.g. from ase.build.make_supercell or ase.build.find_optimal_cell_shape, rotated onto the axes"
        )
    if np.any(np.diag(cell) <= 0):
        raise GCDError(f"cell edges must be positive, got {np.diag(cell).tolist()}")
    return tuple(float(v) for v in np.diag(cell))


@dataclass(frozen=True)
class VoxelGrid:
    """The voxel representation of one model: species, voxel edge and occupancy encoding."""

    species: tuple[str, ...]
    voxel_size: float | tuple[float, float, float]  # one edge, or one per axis (anisotropic voxels)
    encoding: str = "sharp"
    blob_sigma: float = 1.0  # smooth only, in voxels
    threshold: float = 0.5  # occupancy (data space) above which a voxel or a peak becomes an atom
    refine_iterations: int = 2  # smooth only: neighbour-tail corrections (2 reach ~1e-8 A on clean grids)

    def __post_init__(self) -> None:
        if isinstance(self.species, str):
            object.__setattr__(self, "species", (self.species,))
        object.__setattr__(self, "species", tuple(self.species))
        if not self.species or len(set(self.species)) != len(self.species):
            raise GCDError(f"species must be a non-empty list of distinct symbols, got {self.species}")
        if self.encoding not in ENCODINGS:
            raise GCDError(f"unknown occupancy encoding {self.encoding!r}; choose one of {ENCODINGS}")
        if isinstance(self.voxel_size, Sequence):
            if len(self.voxel_size) != 3:
                raise GCDError(f"voxel_size must be one edge or three (x, y, z), got {list(self.voxel_size)}")
            object.__setattr__(self, "voxel_size", tuple(float(v) for v in self.voxel_size))
        else:
            object.__setattr__(self, "voxel_size", float(self.voxel_size))
        if not all(v > 0 for v in self.nominal_edges):
            raise GCDError(f"voxel_size must be positive, got {self.voxel_size}")
        if not 0 < self.threshold < 1:
            raise GCDError(f"threshold must lie in (0, 1), got {self.threshold}")
        if self.encoding == "smooth" and not 0.3 <= self.blob_sigma <= 3:
            raise GCDError(f"blob_sigma must lie in [0.3, 3] voxels, got {self.blob_sigma}")

    # ----------------------------------------------------------------------------------------------- layout
    @property
    def nominal_edges(self) -> tuple[float, float, float]:
        """The voxel edge along x, y and z (A)."""
        size = self.voxel_size
        return size if isinstance(size, tuple) else (size, size, size)

    @property
    def n_species(self) -> int:
        return len(self.species)

    @property
    def n_channels(self) -> int:
        return self.n_species * (4 if self.encoding == "sharp" else 1)

    @property
    def occupancy_channels(self) -> slice:
        return slice(0, self.n_species)

    def offset_channels(self, species_index: int) -> slice:
        if self.encoding != "sharp":
            raise GCDError("only the sharp encoding has offset channels")
        start = self.n_species + 3 * species_index
        return slice(start, start + 3)

    def layout(self, cell_lengths: Sequence[float], warn: bool = True, multiple_of: int = 1) -> GridLayout:
        """Voxel counts for a cell: the nearest whole number per axis (the nearest multiple of ``multiple_of``,
        for a network that halves the grid); the stretch is reported."""
        lengths = tuple(float(v) for v in cell_lengths)
        if len(lengths) != 3 or not all(v > 0 for v in lengths):
            raise GCDError(f"cell lengths must be three positive numbers, got {cell_lengths}")
        nominal = self.nominal_edges
        m = int(multiple_of)
        shape = tuple(max(m, m * round(v / h / m)) for v, h in zip(lengths, nominal, strict=True))
        edges = tuple(v / n for v, n in zip(lengths, shape, strict=True))
        stretch = tuple(e / h - 1 for e, h in zip(edges, nominal, strict=True))
        layout = GridLayout(shape, lengths, edges, stretch)  # type: ignore[arg-type]
        if warn and layout.max_abs_stretch > 1e-6:
            warnings.warn(
                f"cell {np.round(lengths, 4).tolist()} A is not a whole number of {self.voxel_size} A voxels: "
                f"grid {shape} stretches the voxels by {np.round(np.array(stretch) * 100, 3).tolist()} %",
                GridStretchWarning,
                stacklevel=3,
            )
        return layout

    # ----------------------------------------------------------------------------------------------- spaces
    @staticmethod
    def to_model_space(grid: torch.Tensor) -> torch.Tensor:
        return grid * 2 - 1

    @staticmethod
    def to_data_space(grid: torch.Tensor) -> torch.Tensor:
        return (grid + 1) / 2

    def loss_weights(self, clean: torch.Tensor, occupied_weight: float) -> torch.Tensor:
        """Per-element loss weights for a clean data-space batch.

        Occupancy channels weigh ``1 + occupied_weight * occupancy`` (occupied voxels are rare, so plain MSE
        learns "all empty"); offset channels count only where an atom sits, since elsewhere they mean nothing.
        """
        occupancy = clean[:, self.occupancy_channels].clamp(0, 1)
        weights = torch.empty_like(clean)
        weights[:, self.occupancy_channels] = 1 + occupied_weight * occupancy
        if self.encoding == "sharp":
            for s in range(self.n_species):
                weights[:, self.offset_channels(s)] = (1 + occupied_weight) * occupancy[:, s : s + 1]
        return weights

    # ----------------------------------------------------------------------------------------------- encode
    def encode(
        self,
        structures: Atoms | Sequence[Atoms],
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        multiple_of: int = 1,
    ) -> torch.Tensor:
        """Encode one structure or a batch of structures with the same grid shape into ``[B, C, X, Y, Z]``
        (voxel counts rounded to multiples of ``multiple_of``, see :meth:`layout`)."""
        batch = [structures] if isinstance(structures, Atoms) else list(structures)
        if not batch:
            raise GCDError("nothing to encode: the list of structures is empty")
        layouts = [self.layout(cell_lengths_of(a), multiple_of=multiple_of) for a in batch]
        shape = layouts[0].shape
        for n, lay in enumerate(layouts):
            if lay.shape != shape:
                raise GCDError(
                    f"structures in one batch must share a grid shape: structure 0 gives {shape}, "
                    f"structure {n} gives {lay.shape}"
                )
        out = torch.zeros((len(batch), self.n_channels, *shape), dtype=dtype, device=device)
        if self.encoding == "sharp":
            out[:, self.n_species :] = 0.5
        for b, atoms in enumerate(batch):
            frac, species_index = self._fractional_and_species(atoms)
            grid_pos = torch.as_tensor(frac, dtype=torch.float64, device=out.device) * torch.tensor(
                shape, dtype=torch.float64, device=out.device
            )
            species_t = torch.as_tensor(species_index, device=out.device)
            if self.encoding == "sharp":
                self._encode_sharp(out[b], grid_pos, species_t, atoms, layouts[b])
            else:
                self._check_collisions(grid_pos, species_t, shape, atoms, layouts[b])
                for s in range(self.n_species):
                    out[b, s] = render_blobs(grid_pos[species_t == s], shape, self.blob_sigma).to(dtype)
        return out

    def _fractional_and_species(self, atoms: Atoms) -> tuple[np.ndarray, np.ndarray]:
        symbols = atoms.get_chemical_symbols()
        unknown = sorted(set(symbols) - set(self.species))
        if unknown:
            raise GCDError(f"species {unknown} are not in this grid's species {list(self.species)}")
        lookup = {sym: i for i, sym in enumerate(self.species)}
        frac = np.asarray(atoms.cell.scaled_positions(atoms.positions), dtype=np.float64) % 1.0
        frac[frac >= 1.0] = 0.0  # -1e-17 % 1 rounds to 1.0
        return frac, np.fromiter((lookup[s] for s in symbols), dtype=np.int64, count=len(symbols))

    def _encode_sharp(
        self, out: torch.Tensor, grid_pos: torch.Tensor, species: torch.Tensor, atoms: Atoms, layout: GridLayout
    ) -> None:
        shape = layout.shape
        index = grid_pos.floor().long()
        index = torch.minimum(index, torch.tensor(shape, device=index.device) - 1)
        offset = grid_pos - index
        self._check_collisions(grid_pos, species, shape, atoms, layout)
        i, j, k = index.unbind(1)
        out[species, i, j, k] = 1.0
        for axis in range(3):
            out[self.n_species + 3 * species + axis, i, j, k] = offset[:, axis].to(out.dtype)

    def _check_collisions(
        self, grid_pos: torch.Tensor, species: torch.Tensor, shape: tuple[int, ...], atoms: Atoms, layout: GridLayout
    ) -> None:
        index = torch.minimum(grid_pos.floor().long(), torch.tensor(shape, device=grid_pos.device) - 1)
        flat = ((species * shape[0] + index[:, 0]) * shape[1] + index[:, 1]) * shape[2] + index[:, 2]
        order = torch.argsort(flat, stable=True)
        sorted_flat = flat[order]
        same = (sorted_flat[1:] == sorted_flat[:-1]).nonzero()
        if len(same) == 0:
            return
        first, second = sorted(int(v) for v in order[same[0, 0] : same[0, 0] + 2].cpu())
        delta = atoms.positions[second] - atoms.positions[first]
        lengths = np.array(layout.cell_lengths)
        delta -= lengths * np.round(delta / lengths)
        # rounded down, so that every edge below the printed value really does separate them
        separating = math.floor(float(np.abs(delta).max()) * 1e4) / 1e4
        raise VoxelCollisionError(
            f"atoms {first} ({atoms[first].symbol} at {np.round(atoms.positions[first], 4).tolist()}) and "
            f"{second} ({atoms[second].symbol} at {np.round(atoms.positions[second], 4).tolist()}) fall in the "
            f"same voxel {tuple(int(v) for v in index[first].cpu())} ({len(same)} such pair(s)); "
            f"a voxel edge below {separating:.4f} A separates them (this grid uses {max(layout.voxel_edges):.4f} A)"
        )

    # ----------------------------------------------------------------------------------------------- decode
    def decode(
        self,
        grid: torch.Tensor,
        cell_lengths: Sequence[float] | Sequence[Sequence[float]],
        merge_distance: float | None = None,
    ) -> list[Atoms]:
        """Decode a data-space grid ``[B, C, X, Y, Z]`` (or ``[C, X, Y, Z]``) into structures.

        ``cell_lengths`` is one cell for the whole batch or one per structure. The atom count is whatever the
        occupancy says. ``merge_distance`` (A), if given, merges atoms closer than that, keeping the one of
        higher occupancy. Each atom's occupancy is kept in ``atoms.arrays["occupancy"]``.
        """
        if grid.dim() == 4:
            grid = grid.unsqueeze(0)
        if grid.dim() != 5 or grid.shape[1] != self.n_channels:
            raise GCDError(f"expected a grid [B, {self.n_channels}, X, Y, Z], got {tuple(grid.shape)}")
        lengths = np.asarray(cell_lengths, dtype=np.float64)
        per_structure = lengths.reshape(-1, 3) if lengths.ndim == 2 else np.tile(lengths, (grid.shape[0], 1))
        if per_structure.shape[0] != grid.shape[0]:
            raise GCDError(f"{per_structure.shape[0]} cells given for a batch of {grid.shape[0]} grids")
        grid = grid.detach()
        structures = []
        for b in range(grid.shape[0]):
            symbols: list[str] = []
            frac_parts: list[np.ndarray] = []
            occ_parts: list[np.ndarray] = []
            for s, symbol in enumerate(self.species):
                if self.encoding == "sharp":
                    frac, occ = self._decode_sharp(grid[b], s)
                else:
                    frac, occ = self._decode_smooth(grid[b, s])
                symbols += [symbol] * len(frac)
                frac_parts.append(frac)
                occ_parts.append(occ)
            frac_all = np.concatenate(frac_parts) if frac_parts else np.zeros((0, 3))
            frac_all = frac_all % 1.0
            frac_all[frac_all >= 1.0] = 0.0  # -1e-17 % 1 rounds to 1.0
            atoms = Atoms(symbols, scaled_positions=frac_all, cell=np.diag(per_structure[b]), pbc=True)
            atoms.set_array("occupancy", np.concatenate(occ_parts).astype(np.float64))
            if merge_distance:
                atoms = merge_close_atoms(atoms, merge_distance)
            structures.append(atoms)
        return structures

    def _decode_sharp(self, grid: torch.Tensor, s: int) -> tuple[np.ndarray, np.ndarray]:
        _, frac, occupancy = self.sharp_sites(grid, s, self.threshold)
        return frac, occupancy

    def sharp_sites(
        self, grid: torch.Tensor, species_index: int, threshold: float
    ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """The sites a sharp data-space grid ``[C, X, Y, Z]`` holds for one species at occupancy above
        ``threshold``: voxel indices ``[N, 3]``, fractional positions (voxel corner plus offset) and occupancies."""
        occupancy = grid[species_index]
        index = (occupancy > threshold).nonzero()
        i, j, k = index.unbind(1)
        offset = grid[self.offset_channels(species_index)][:, i, j, k].T.clamp(0, 1).double()
        shape = torch.tensor(occupancy.shape, dtype=torch.float64, device=grid.device)
        frac = (index.double() + offset) / shape
        return index, frac.cpu().numpy(), occupancy[i, j, k].double().cpu().numpy()

    def _decode_smooth(self, field: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        field = field.double()
        shape = field.shape
        peaks = local_maxima(field, self.threshold)
        centre = peaks.nonzero()
        if len(centre) == 0:
            return np.zeros((0, 3)), np.zeros(0)
        sigma = self.blob_sigma
        centre_f = centre.double() + 0.5
        stencil = _axis_stencil(field.device)  # [7, 3]: centre, -x, +x, -y, +y, -z, +z
        points = (centre[:, None, :] + stencil[None]) % torch.tensor(shape, device=field.device)
        observed = field[points[..., 0], points[..., 1], points[..., 2]]  # [N, 7]
        # positions are in voxel units (voxel i spans [i, i + 1)); the first fit ignores the neighbours' tails,
        # each further one subtracts the tails rendered from the previous estimates
        position, amplitude = _log_parabola_fit(observed.clamp_min(1e-12).log(), centre_f)
        for _ in range(self.refine_iterations):
            own = amplitude[:, None] * _gaussian_at(points, position, shape, sigma)
            rendered = render_blobs(position, shape, sigma, amplitude)
            others = rendered[points[..., 0], points[..., 1], points[..., 2]] - own
            position, amplitude = _log_parabola_fit((observed - others).clamp_min(1e-12).log(), centre_f)
        frac = position / torch.tensor(shape, dtype=torch.float64, device=field.device)
        return frac.cpu().numpy(), amplitude.clamp(0, None).cpu().numpy()

    # ----------------------------------------------------------------------------------------------- config
    def to_config(self) -> dict:
        config = asdict(self)
        config["species"] = list(self.species)
        if isinstance(self.voxel_size, tuple):
            config["voxel_size"] = list(self.voxel_size)
        return config

    @classmethod
    def from_config(cls, config: dict) -> VoxelGrid:
        return cls(**{**config, "species": tuple(config["species"])})

    def with_options(self, **changes: object) -> VoxelGrid:
        """A copy with some fields changed (e.g. the voxel edge and species of one class of a model)."""
        return replace(self, **changes)


# --------------------------------------------------------------------------------------------------- helpers
def _axis_stencil(device: torch.device) -> torch.Tensor:
    return torch.tensor(
        [[0, 0, 0], [-1, 0, 0], [1, 0, 0], [0, -1, 0], [0, 1, 0], [0, 0, -1], [0, 0, 1]], device=device
    )


def _blob_radii(sigma: float) -> tuple[float, float]:
    """Where the window of a blob starts and where the blob ends, in voxels."""
    inner = max(_BLOB_RADIUS_SIGMAS * sigma, _BLOB_MIN_RADIUS)
    return inner, inner + _BLOB_TAPER


def _blob_profile(distance_sq: torch.Tensor, sigma: float) -> torch.Tensor:
    """The blob at squared distances (voxels^2): a Gaussian times a window that is continuous with its slopes.

    A hard cut would make the rendered field jump whenever an atom's estimate crosses a voxel border or a
    voxel centre crosses the cut, so a decoder estimate off by 1e-12 could no longer reproduce the field of an
    atom sitting exactly on such a border (common in crystals on commensurate grids).
    """
    inner, outer = _blob_radii(sigma)
    s = ((distance_sq.sqrt() - inner) / (outer - inner)).clamp(0, 1)
    window = 1 - s**3 * (10 - 15 * s + 6 * s**2)
    return torch.exp(-distance_sq / (2 * sigma**2)) * window


def _gaussian_at(points: torch.Tensor, centres: torch.Tensor, shape: Sequence[int], sigma: float) -> torch.Tensor:
    """Periodic (minimum image) blob of each centre evaluated at its voxel-centre points ``[N, P, 3]``."""
    size = torch.tensor(shape, dtype=torch.float64, device=centres.device)
    delta = points.double() + 0.5 - centres[:, None, :]
    delta = delta - size * torch.round(delta / size)
    return _blob_profile((delta**2).sum(-1), sigma)


def _log_parabola_fit(log_values: torch.Tensor, centre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Peak position and height from log values at the 7-point axis stencil; exact for a Gaussian."""
    l0 = log_values[:, 0:1]
    minus, plus = log_values[:, 1::2], log_values[:, 2::2]  # [N, 3] each
    curvature = minus - 2 * l0 + plus
    concave = curvature < -1e-9
    shift = torch.where(concave, (minus - plus) / (2 * curvature.clamp(max=-1e-9)), torch.zeros_like(curvature))
    shift = shift.clamp(-1, 1)
    log_peak = l0[:, 0] - (torch.where(concave, curvature, torch.zeros_like(curvature)) * shift**2 / 2).sum(1)
    return centre + shift, log_peak.exp()


def render_blobs(
    grid_positions: torch.Tensor,
    shape: Sequence[int],
    sigma: float,
    amplitude: torch.Tensor | None = None,
    chunk: int = 32768,
) -> torch.Tensor:
    """Sum of periodic Gaussian blobs (sigma in voxels) sampled at voxel centres.

    ``grid_positions`` are atom positions in voxel units ``[N, 3]`` (voxel ``i`` spans ``[i, i+1)``).
    """
    device = grid_positions.device
    nx, ny, nz = (int(v) for v in shape)
    out = torch.zeros(nx * ny * nz, dtype=torch.float64, device=device)
    if len(grid_positions) == 0:
        return out.view(nx, ny, nz)
    # every voxel centre within the blob's reach of any point of the base voxel
    reach = _blob_radii(sigma)[1] + math.sqrt(3) / 2
    radius = int(math.ceil(reach))
    span = torch.arange(-radius, radius + 1, device=device)
    stencil = torch.stack(torch.meshgrid(span, span, span, indexing="ij"), -1).reshape(-1, 3)
    keep = (stencil.double() ** 2).sum(1) <= reach**2
    stencil = stencil[keep]
    size = torch.tensor(shape, device=device)
    pos = grid_positions.double()
    amp = torch.ones(len(pos), dtype=torch.float64, device=device) if amplitude is None else amplitude.double()
    for start in range(0, len(pos), chunk):
        p = pos[start : start + chunk]
        base = (p - 0.5).round().long()  # voxel whose centre is nearest
        points = base[:, None, :] + stencil[None]
        delta = points.double() + 0.5 - p[:, None, :]
        values = amp[start : start + chunk, None] * _blob_profile((delta**2).sum(-1), sigma)
        points = points % size
        flat = (points[..., 0] * ny + points[..., 1]) * nz + points[..., 2]
        out.index_add_(0, flat.reshape(-1), values.reshape(-1))
    return out.view(nx, ny, nz)


def local_maxima(field: torch.Tensor, threshold: float) -> torch.Tensor:
    """Voxels above ``threshold`` that are maxima of their periodic 3x3x3 neighbourhood; ties keep one voxel."""
    padded = F.pad(field[None, None], (1, 1, 1, 1, 1, 1), mode="circular")
    neighbourhood_max = F.max_pool3d(padded, 3, stride=1)[0, 0]
    peaks = (field >= neighbourhood_max) & (field > threshold)
    # plateaus (equal neighbouring maxima): drop a peak when a lexicographically earlier neighbour is one too
    earlier = [(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1) if (a, b, c) < (0, 0, 0)]
    tied = torch.zeros_like(peaks)
    for shift in earlier:
        tied |= torch.roll(peaks, shifts=tuple(-v for v in shift), dims=(0, 1, 2))
    return peaks & ~tied


def merge_close_atoms(atoms: Atoms, distance: float) -> Atoms:
    """Keep, of any atoms closer than ``distance`` (A), the one with the larger occupancy."""
    from ase.neighborlist import neighbor_list

    if len(atoms) < 2:
        return atoms
    lengths = atoms.cell.lengths()
    orthorhombic = np.allclose(atoms.cell.array, np.diag(lengths))
    if atoms.pbc.all() and orthorhombic and lengths.min() > 2 * distance:
        # a periodic k-d tree: ~15x faster than ASE's neighbour list on a noisy frame's thousands of atoms
        from scipy.spatial import cKDTree

        pairs = cKDTree(atoms.positions % lengths, boxsize=lengths).query_pairs(distance, output_type="ndarray")
        first, second = np.concatenate([pairs[:, 0], pairs[:, 1]]), np.concatenate([pairs[:, 1], pairs[:, 0]])
    else:
        first, second = neighbor_list("ij", atoms, distance, self_interaction=False)
    keep = first != second  # an atom's own periodic image (cells shorter than ``distance``) is no rival
    first, second = first[keep], second[keep]
    if len(first) == 0:
        return atoms
    occupancy = atoms.arrays.get("occupancy", np.ones(len(atoms)))
    order = np.argsort(first, kind="stable")  # neighbours of atom a: second[starts[a]:starts[a + 1]]
    second = second[order]
    starts = np.searchsorted(first[order], np.arange(len(atoms) + 1))
    removed = np.zeros(len(atoms), dtype=bool)
    for atom in np.argsort(-occupancy, kind="stable"):
        if not removed[atom]:
            removed[second[starts[atom]:starts[atom + 1]]] = True
    return atoms[~removed]


def largest_safe_voxel_size(atoms: Atoms) -> float:
    """Largest voxel edge that keeps every same-species pair in separate voxels under any translation.

    Two atoms can share a voxel only when all three minimum-image separations are below the edge, so the
    answer is the smallest Chebyshev distance over same-species pairs.
    """
    from ase.neighborlist import neighbor_list

    lengths = np.array(cell_lengths_of(atoms))
    cutoff = float(min(lengths.min() / 2, 4.0))
    numbers = atoms.numbers
    found = math.inf
    for _ in range(2):
        first, second, vectors = neighbor_list("ijD", atoms, cutoff)
        same = numbers[first] == numbers[second]
        if not same.any():
            return cutoff / math.sqrt(3)
        found = float(np.abs(vectors[same]).max(axis=1).min())
        # a pair beyond the (Euclidean) cutoff can still be Chebyshev-closer than ``found`` unless
        # found * sqrt(3) <= cutoff; one more search out to that radius then sees every closer pair
        if found * math.sqrt(3) <= cutoff * (1 + 1e-12):
            return found
        cutoff = found * math.sqrt(3) * (1 + 1e-9)
    return found
