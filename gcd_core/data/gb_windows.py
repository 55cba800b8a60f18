"""Voxel windows around a grain boundary: what the GB diffusion model trains on and in-paints.

A window is the slab of a bicrystal within half a window height of the GB plane, made periodic along the normal
so that it lies on the model's periodic grid. Its two ends are bulk grain, which generation holds fixed (known
voxels); the middle, the GB region, is generated with a free atom count. The seam where the window wraps
(upper grain meeting lower grain, with an empty layer between) is always a known region, so the model never
has to make it.

Voxels per system fit the bicrystal's in-plane periods and its plane spacing exactly, so every bulk atom of a
grain sits at the same place in its voxel in every window of that system.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from ase import Atoms

from gcd_core.data.bicrystal import GBSystem, bicrystal, gb_system, plane_spacing
from gcd_core.errors import GCDError


@dataclass(frozen=True)
class GBWindowSpec:
    """How a system's GB is windowed: in-plane supercell, voxels per in-plane period and per atomic plane,
    the window height in planes and the half-width of the generated slab (A)."""

    repeat: tuple[int, int]
    voxels_per_period: tuple[int, int]
    voxels_per_plane: int
    planes: int
    generated_half_width: float


GB_WINDOWS: dict[str, GBWindowSpec] = {
    # 2 x 2 in-plane periods: 40 atoms per (002) plane, [n] in steps of 0.025; 0.63 x 0.63 x 0.79 A voxels
    "w_sigma5_twist": GBWindowSpec(repeat=(2, 2), voxels_per_period=(16, 16), voxels_per_plane=2, planes=12,
                                   generated_half_width=4.0),
    # 2 x 4 in-plane periods: 16 atoms per (210) plane, [n] in steps of 1/16; 0.67 x 0.60 x 0.81 A voxels
    "cu_sigma5_tilt": GBWindowSpec(repeat=(2, 4), voxels_per_period=(12, 6), voxels_per_plane=1, planes=24,
                                   generated_half_width=4.0),
}


def window_spec(system: GBSystem | str) -> GBWindowSpec:
    key = system if isinstance(system, str) else system.key
    gb_system(key)
    return GB_WINDOWS[key]


@functools.cache
def window_voxel_size(system: GBSystem | str) -> tuple[float, float, float]:
    """Voxel edges (x, y, z in A) of the system's GB windows."""
    system = gb_system(system) if isinstance(system, str) else system
    spec = window_spec(system)
    cell = bicrystal(system, (1, 1), thickness=1.0).cell.lengths()
    return (float(cell[0] / spec.voxels_per_period[0]), float(cell[1] / spec.voxels_per_period[1]),
            plane_spacing(system) / spec.voxels_per_plane)


def window_height(system: GBSystem | str) -> float:
    system = gb_system(system) if isinstance(system, str) else system
    return window_spec(system).planes * plane_spacing(system)


# The window's top layer is left empty: the upper grain's last atoms would otherwise meet the lower grain's first
# across the periodic seam at whatever distance the grains' relative translation gives, even on top of each other.
SEAM_CLEARANCE = 1.5  # A


def window_bottom(atoms: Atoms) -> float:
    """Height in the bicrystal where its window starts: half a window below the GB, nudged (by under one voxel)
    so that the lower grain's planes sit at voxel centres rather than on voxel faces, where rounding would put
    an atom now in one voxel, now in the next."""
    system = gb_system(str(atoms.info["gb_system"]))
    edge, spacing = window_voxel_size(system)[2], plane_spacing(system)
    half = window_height(system) / 2
    nudge = (edge / 2 - (half - spacing / 2)) % edge
    return float(atoms.info["gb_z"]) - half - nudge


def gb_window(atoms: Atoms) -> Atoms:
    """The window of a bicrystal (``info["gb_system"]``, ``info["gb_z"]``) around its GB: a periodic cell of the
    bicrystal's in-plane periods and the window height, starting at :func:`window_bottom`."""
    system = gb_system(str(atoms.info["gb_system"]))
    height = window_height(system)
    bottom = window_bottom(atoms)
    z = atoms.positions[:, 2] - bottom
    inside = (z >= 0) & (z < height - SEAM_CLEARANCE)
    window = atoms[inside]
    window.positions[:, 2] = z[inside]
    window.cell = np.diag([atoms.cell[0, 0], atoms.cell[1, 1], height])
    window.pbc = True
    window.info.update(atoms.info, gb_z=float(atoms.info["gb_z"]) - bottom, window_bottom=bottom)
    window.wrap()
    return window


def generated_slab(system: GBSystem | str) -> tuple[int, int]:
    """The voxel layers (start, stop along z) of a window that generation makes: whole voxels about the GB, the
    generated half-width rounded to voxels, so an atom is generated exactly when its voxel is."""
    system = gb_system(system) if isinstance(system, str) else system
    spec = window_spec(system)
    layers = spec.planes * spec.voxels_per_plane
    half = int(round(spec.generated_half_width / window_voxel_size(system)[2]))
    return layers // 2 - half, layers // 2 + half


def in_generated_slab(system: GBSystem | str, heights: np.ndarray) -> np.ndarray:
    """Which heights within a window (A from its bottom) fall in the generated slab."""
    start, stop = generated_slab(system)
    edge = window_voxel_size(system)[2]
    layer = np.floor(np.asarray(heights) / edge + 1e-9)
    return (layer >= start) & (layer < stop)


def paste_window(template: Atoms, window: Atoms) -> Atoms:
    """The bicrystal ``template`` with its GB slab replaced by the window's atoms in that slab (a generated
    window goes back into its full bicrystal for relaxation)."""
    system = str(template.info["gb_system"])
    bottom = window_bottom(template)
    if not np.allclose(template.cell.lengths()[:2], window.cell.lengths()[:2], atol=1e-6):
        raise GCDError(f"window {window.cell.lengths()[:2]} and bicrystal {template.cell.lengths()[:2]} differ "
                       f"in plane")
    keep = ~in_generated_slab(system, template.positions[:, 2] - bottom)
    slab = window[in_generated_slab(system, window.positions[:, 2])]
    merged = template[keep]
    grains = merged.get_array("grain") if "grain" in merged.arrays else None
    merged.extend(Atoms(slab.get_chemical_symbols(), positions=slab.positions + [0, 0, bottom]))
    if grains is not None:
        z = merged.positions[len(grains):, 2]
        merged.set_array("grain", np.concatenate([grains, (z > float(template.info["gb_z"])).astype(int)]))
    return merged
