"""Panel components of the dashboard, each a ``pn.viewable.Viewer`` around the session's state.

Views change their widgets only from parameter watchers of :class:`~app.state.GenerationRun`; in a server
session the run applies its updates on the event loop, so no widget is touched from the worker thread.
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import panel as pn
import param

from app.atoms_view import AtomsView
from app.feff_check import FEFF_COLUMNS, FeffCheck
from app.state import (
    CARBON_COLUMNS,
    DRAWN_LABEL,
    GB_COLUMNS,
    RESULT_COLUMNS,
    SHIPPED_MODEL_ENV,
    SHIPPED_MODELS,
    Dispatch,
    GBRun,
    GBSettings,
    GenerationRun,
    GenerationSettings,
    bend_spectrum,
    export_cif,
    ideal_count,
    is_gb_model,
    load_model,
    reference_of,
    resolve_checkpoint,
)
from app.vtk_patch import VTK_VOLUME_PATCH
from gcd_core.data.bicrystal import GB_SYSTEMS, atoms_per_plane, gb_system
from gcd_core.data.gb_windows import generated_slab, window_spec, window_voxel_size
from gcd_core.device import resolve_device
from gcd_core.errors import GCDError
from gcd_core.io import sample_name
from gcd_core.model import GCDModel
from gcd_core.physics.feff import feff10_missing
from gcd_core.physics.spectra import ENERGY_GRID

log = logging.getLogger(__name__)

TITLE = "gcd — grand canonical diffusion"
# While a run streams, the volume changes at most this often (the final frame always goes): the page draws it
# with software WebGL on machines without a GPU, and a browser that falls behind queues every frame.
VOLUME_INTERVAL_S = 1.0
VOLUME_COLORMAP = "Rainbow Desaturated"  # vtk.js preset names only; matplotlib names such as Viridis are refused
STATUS_TEXT = {
    "idle": "ready",
    "running": "running",
    "done": "done",
    "cancelled": "cancelled",
    "error": "failed",
}


def session_dispatch() -> Dispatch | None:
    """Hand callbacks from any thread to the current session's event loop; None outside a server session.

    ``pn.state.execute(..., schedule=True)`` is Panel's way to run a callback on a session's event loop
    (it wraps Bokeh's thread-safe ``doc.add_next_tick_callback``); ``hold`` sends all the changes a callback
    makes in one message.
    """
    doc = pn.state.curdoc
    if doc is None or doc.session_context is None:
        return None
    from panel.io.state import set_curdoc

    def run_held(callback: Callable[[], None]) -> None:
        with pn.io.hold(doc):
            callback()

    def dispatch(callback: Callable[[], None]) -> None:
        try:
            with set_curdoc(doc):
                pn.state.execute(lambda: run_held(callback), schedule=True)
        except Exception:  # the session may be gone (browser closed); the worker must not die of it
            log.debug("could not schedule an update on a closed session", exc_info=True)

    return dispatch


# ------------------------------------------------------------------------------------------------ settings
class RunControls(pn.viewable.Viewer):
    """Generate and Cancel for a run, enabled as its status allows; the settings panels build on it."""

    def __init__(self, run: GenerationRun, **params) -> None:
        super().__init__(**params)
        self.run = run
        self.generate_button = pn.widgets.Button(label="▶ Generate", color="primary")
        self.cancel_button = pn.widgets.Button(label="■ Cancel", color="warning")
        self.generate_button.on_click(self._on_generate)
        self.cancel_button.on_click(self._on_cancel)
        run.param.watch(self._update_buttons, ["status", "cancel_requested"])
        self._update_buttons()

    def _on_generate(self, event: object = None) -> None:
        try:
            self.run.start()
        except GCDError as exc:
            self.run.error = str(exc)
        except Exception as exc:  # e.g. no thread could be started: say so on the page
            log.exception("starting a generation failed")
            self.run.param.update(status="error", error=f"could not start the generation: {exc}")

    def _on_cancel(self, event: object = None) -> None:
        self.run.cancel()

    def _update_buttons(self, *events: param.parameterized.Event) -> None:
        running = self.run.status == "running"
        self.generate_button.disabled = running or self.run.model is None
        self.cancel_button.disabled = not running or self.run.cancel_requested
        self.cancel_button.label = "Cancelling…" if running and self.run.cancel_requested else "Cancel"

    def buttons(self) -> pn.Row:
        return pn.Row(self.generate_button, self.cancel_button)


class SettingsPanel(RunControls):
    """Generation settings, Generate and Cancel, and what the chosen cell means for the grid."""

    def __init__(self, run: GenerationRun, **params) -> None:
        super().__init__(run, **params)
        settings = run.settings
        self.supercell = pn.widgets.IntSlider.from_param(settings.param.supercell, label="Supercell (× training cell)")
        self.num_samples = pn.widgets.IntSlider.from_param(settings.param.num_samples, label="Samples")
        self.steps = pn.widgets.IntSlider.from_param(settings.param.steps, label="Sampler steps")
        self.seed = pn.widgets.IntInput.from_param(settings.param.seed, label="Seed")
        self.sampler = pn.widgets.RadioButtonGroup.from_param(settings.param.sampler, label="Sampler")
        self.resample = pn.widgets.IntSlider.from_param(settings.param.resample, label="Resample (heals defects)")
        self.resample_late_only = pn.widgets.Checkbox.from_param(
            settings.param.resample_late_only, name="Resample only the late steps (t ≤ 0.25)"
        )
        labels = [v for v in settings.param.phase.objects if v is not None]
        self.site_exclusion = pn.widgets.Checkbox.from_param(
            settings.param.site_exclusion, name="Site exclusion (one atom per split site)",
            visible=not settings.amorphous,
        )
        self.bragg_guidance = pn.widgets.Checkbox.from_param(
            settings.param.bragg_guidance, name="Bragg guidance (one grain of the phase)",
            visible=not settings.amorphous,
        )
        self.phase = pn.widgets.Select(
            label="Phase",
            options={**{label: label for label in labels}, "any (unconditional)": None},
            value=settings.phase,
            visible=bool(labels),
        )
        self.phase.link(settings, value="phase")
        amorphous = settings.amorphous
        self.guidance = pn.widgets.FloatSlider.from_param(
            settings.param.guidance_scale,
            label="Guidance strength (spectrum, classifier-free)" if amorphous else "Guidance strength (phase)",
            step=0.5,
            visible=bool(labels) or amorphous,
        )
        self.supercell.visible = not amorphous
        # amorphous carbon: a free box, a target spectrum (example or upload) and gradient guidance
        self.box_edge = pn.widgets.FloatSlider.from_param(
            settings.param.box_edge, label="Box edge (Å; the atom count is free)", step=0.438, visible=amorphous
        )
        self.target = pn.widgets.Select(
            label="Target spectrum (example)",
            options={"none (unconditional)": None, **{name: name for name in settings.param.target.objects if name}},
            value=settings.target,
            visible=amorphous,
        )
        self.target.link(settings, value="target")
        # ... and back: a drawing or an upload clears the example, so choosing that example again reloads it
        settings.param.watch(self._show_example, ["target"])
        self.upload = pn.widgets.FileInput(accept=".txt,.csv,.dat,.xmu", visible=amorphous, label="Upload a spectrum")
        self.upload.param.watch(self._on_upload, "value")
        self.target_info = pn.pane.Markdown(sizing_mode="stretch_width", visible=amorphous)
        self.spectrum_guidance = pn.widgets.FloatSlider.from_param(
            settings.param.spectrum_guidance, label="Gradient guidance (forward model)", step=1.0, visible=amorphous
        )
        self.sp3_guidance = pn.widgets.FloatSlider.from_param(
            settings.param.sp3_guidance, label="sp3 guidance (target's pi* peak)", step=10.0, visible=amorphous
        )
        self.bonding_guidance = pn.widgets.FloatSlider.from_param(
            settings.param.bonding_guidance, label="Bonding guidance (target's sp / sp2 / sp3)", step=10.0,
            visible=amorphous,
        )
        self.prune_dangling = pn.widgets.Checkbox.from_param(
            settings.param.prune_dangling, name="Prune dangling carbons (under two bonds, late steps)",
            visible=amorphous,
        )
        self.polish_positions = pn.widgets.Checkbox.from_param(
            settings.param.polish_positions, name="Polish positions (atom-space refiner, after decoding)",
            visible=amorphous,
        )
        self.cell_info = pn.pane.Markdown(sizing_mode="stretch_width")
        settings.param.watch(self._update_cell_info, ["supercell", "phase", "box_edge"])
        settings.param.watch(self._update_target_info, ["target_spectrum", "target_label"])
        self._update_target_info()
        self._update_cell_info()

    def _on_upload(self, event: param.parameterized.Event) -> None:
        if not event.new:
            return
        try:
            self.run.settings.upload_target(event.new, self.upload.filename or "upload")
        except GCDError as exc:  # a bad file: say why; the previous target stays
            self.run.error = f"Target spectrum not used: {exc}"
            return
        self.run.error = ""
        if self.target.value is not None:
            self.target.value = None

    def _show_example(self, event: param.parameterized.Event) -> None:
        self.target.value = event.new

    def _update_target_info(self, *events: param.parameterized.Event) -> None:
        settings = self.run.settings
        if settings.target_spectrum is None:
            self.target_info.object = "No target: unconditional"
            return
        sp, sp2, sp3 = (round(100 * f) for f in settings.target_bonding)
        self.target_info.object = (
            f"Target: {settings.target_label} (sp / sp2 / sp3 {sp} / {sp2} / {sp3} % as it indicates; sp3 from its "
            "pi* peak)"
        )

    def _update_cell_info(self, *events: param.parameterized.Event) -> None:
        model = self.run.model
        if model is None:
            self.cell_info.object = ""
            return
        try:
            cell = self.run.settings.cell_lengths(model)
        except GCDError as exc:
            self.cell_info.object = f"⚠ {exc}"
            return
        phase = self.run.settings.phase
        multiple = model.net.stride if self.run.settings.amorphous else 1
        shape = model.grid_for(phase).layout(cell, warn=False, multiple_of=multiple).shape
        text = f"cell {' × '.join(f'{v:.2f}' for v in cell)} Å, grid {' × '.join(map(str, shape))} voxels"
        reference = reference_of(model, phase)
        ideal = ideal_count(reference, cell)
        if ideal is not None:
            text += f"; ideal {reference.phase}: {ideal:g} atoms"
        self.cell_info.object = text

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            "### Generation",
            self.phase,
            self.supercell,
            self.box_edge,
            self.cell_info,
            self.target,
            self.upload,
            self.target_info,
            self.spectrum_guidance,
            self.sp3_guidance,
            self.bonding_guidance,
            self.num_samples,
            self.steps,
            self.sampler,
            self.resample,
            self.resample_late_only,
            self.site_exclusion,
            self.bragg_guidance,
            self.prune_dangling,
            self.polish_positions,
            self.guidance,
            self.seed,
            self.buttons(),
            sizing_mode="stretch_width",
        )


GB_RELAX_HELP = (
    "Each sample is relaxed with LAMMPS as the GB search relaxes its samples (EAM; bottom grain slab fixed, top "
    "slab moving as one block) and scored by its GB energy E_gb, about 0.5-3 s per sample."
)


class GBSettingsPanel(RunControls):
    """Grain-boundary settings: the GB system, an optional target [n], sampling, relaxation; Generate, Cancel."""

    def __init__(self, run: GBRun, **params) -> None:
        super().__init__(run, **params)
        settings: GBSettings = run.settings
        systems = [key for key in settings.param.system.objects if key is not None]
        self.system = pn.widgets.Select(
            label="GB system",
            options={GB_SYSTEMS[key].title if key in GB_SYSTEMS else key: key for key in systems},
            value=settings.system,
            disabled=not systems,
        )
        self.system.link(settings, value="system")
        self.use_target_n = pn.widgets.Checkbox.from_param(
            settings.param.use_target_n, name="Target [n] (else the model chooses)"
        )
        self.target_n = pn.widgets.FloatSlider.from_param(
            settings.param.target_n, label="Target [n]", step=0.01, disabled=not settings.use_target_n
        )
        self.num_samples = pn.widgets.IntSlider.from_param(settings.param.num_samples, label="Samples")
        self.steps = pn.widgets.IntSlider.from_param(settings.param.steps, label="Sampler steps")
        self.sampler = pn.widgets.RadioButtonGroup.from_param(settings.param.sampler, label="Sampler")
        self.resample = pn.widgets.IntSlider.from_param(settings.param.resample, label="Resample (heals the seams)")
        self.seed = pn.widgets.IntInput.from_param(settings.param.seed, label="Seed")
        self.relax = pn.widgets.Checkbox.from_param(
            settings.param.relax, name="Relax (LAMMPS) and score E_gb", disabled=bool(settings.relax_unavailable)
        )
        self.relax_note = pn.pane.Markdown(sizing_mode="stretch_width")
        self.vary_lowest = pn.widgets.Checkbox.from_param(
            settings.param.vary_lowest, name="Vary the last run's lowest relaxed GB (partial diffusion from t = 0.4)"
        )
        self.system_info = pn.pane.Markdown(sizing_mode="stretch_width")
        settings.param.watch(self._update_target_n, ["use_target_n"])
        settings.param.watch(self._update_relax_note, ["relax", "relax_unavailable"])
        settings.param.watch(self._update_system_info, ["system"])
        self._update_relax_note()
        self._update_system_info()

    def _update_target_n(self, *events: param.parameterized.Event) -> None:
        self.target_n.disabled = not self.run.settings.use_target_n

    def _update_relax_note(self, *events: param.parameterized.Event) -> None:
        settings = self.run.settings
        if settings.relax_unavailable:
            self.relax_note.object = (
                f"⚠ **No relaxation**: {settings.relax_unavailable}. Samples are shown as generated, without E_gb."
            )
        elif settings.relax:
            self.relax_note.object = GB_RELAX_HELP
        else:
            self.relax_note.object = "Relaxation off: samples are shown as generated, without E_gb."

    def _update_system_info(self, *events: param.parameterized.Event) -> None:
        key = self.run.settings.system
        if key not in GB_SYSTEMS:
            self.system_info.object = ""
            return
        system, spec = gb_system(key), window_spec(key)
        start, stop = generated_slab(key)
        edge = window_voxel_size(key)[2]
        per_plane = atoms_per_plane(system, spec.repeat)
        self.system_info.object = (
            f"{system.element} ({system.lattice}), {spec.repeat[0]} × {spec.repeat[1]} in-plane periods: "
            f"{per_plane} atoms per bulk plane, so [n] moves in steps of 1/{per_plane}. The sampler makes the "
            f"{(stop - start) * edge:.1f} Å slab about the boundary; the grains beside it stay as they are. A "
            "target [n] is imposed on the slab's atom count; how many whole planes it holds stays the model's choice."
        )

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            "### Grain boundary",
            self.system,
            self.system_info,
            self.use_target_n,
            self.target_n,
            self.num_samples,
            self.steps,
            self.sampler,
            self.resample,
            self.seed,
            self.relax,
            self.relax_note,
            self.vary_lowest,
            self.buttons(),
            sizing_mode="stretch_width",
        )


# ---------------------------------------------------------------------------------------------------- live
class LiveView(pn.viewable.Viewer):
    """The annealing density of one sample (VTK volume), the step counter and a progress bar."""

    show_volume = param.Boolean(
        default=True,
        doc="Draw the density as a VTK volume. Off in JupyterLab offline, where vtk.js does not load: the step "
        "counter, the progress bar and the sample slider stay.",
    )

    def __init__(self, run: GenerationRun, **params) -> None:
        super().__init__(**params)
        self.run = run
        # vtk.js cannot start from an empty volume (and the pane cannot take its first volume once it is on a
        # page), so the viewer is made with the first frame and replaces this placeholder
        self.volume: pn.pane.VTKVolume | None = None
        self.placeholder = pn.pane.Markdown(
            "Press **Generate**: the clean prediction of the selected sample appears here and sharpens from "
            "haze into atoms while the sampler anneals.",
            height=460,
            sizing_mode="stretch_width",
        )
        self.viewer = pn.Column(self.placeholder, sizing_mode="stretch_width", visible=self.show_volume)
        gb = run.mode == "gb"
        self.title = "### Live occupancy of the GB window" if gb else "### Live density"
        self.note = pn.pane.Markdown(
            "The window about the boundary: the grains at its ends are known voxels and stay fixed, the slab in "
            "the middle is generated. Beside it, the whole bicrystal with this slab pasted in.",
            visible=gb,
            sizing_mode="stretch_width",
        )
        self.step_text = pn.pane.Markdown("step 0 / 0", sizing_mode="stretch_width", min_width=220)
        self.vtk_fix = pn.pane.HTML(VTK_VOLUME_PATCH, width=0, height=0, margin=0)
        self.progress = pn.indicators.Progress(value=0, max=1, bar_color="primary", sizing_mode="stretch_width")
        self.sample = pn.widgets.IntSlider(label="Shown sample", start=0, end=1, value=0, disabled=True)
        self.sample.param.watch(self._on_sample, ["value"])
        self._shown_density = None
        self._volume_shown_at = -math.inf
        run.param.watch(self._update_density, ["density", "status"])
        run.param.watch(
            self._update_progress, ["step", "num_steps", "status", "t", "first_frame_s", "elapsed_s", "activity"]
        )
        run.param.watch(self._update_sample_range, ["num_samples"])
        run.param.watch(self._show_sample, ["preview_sample"])  # e.g. a point picked in the E_gb plot
        self._update_progress()

    def _on_sample(self, event: param.parameterized.Event) -> None:
        self.run.preview_sample = int(event.new)

    def _show_sample(self, event: param.parameterized.Event) -> None:
        if self.sample.value != event.new and event.new <= self.sample.end:
            self.sample.value = int(event.new)

    def _update_density(self, *events: param.parameterized.Event) -> None:
        density = self.run.density
        if not self.show_volume or density is None or density is self._shown_density:
            return
        now = time.monotonic()
        if self.run.status == "running" and now - self._volume_shown_at < VOLUME_INTERVAL_S:
            return  # a later frame (the final one at the latest) goes instead
        self._shown_density, self._volume_shown_at = density, now
        spacing = self.run.voxel_edges or (1.0, 1.0, 1.0)
        if self.volume is None:
            self.volume = pn.pane.VTKVolume(
                density,
                spacing=spacing,
                colormap=VOLUME_COLORMAP,
                height=460,
                sizing_mode="stretch_width",
                render_background="#20222b",
                controller_expanded=False,
                orientation_widget=True,
                shadow=False,
                **(self._side_view(density.shape, spacing) if self.run.mode == "gb" else {}),
            )
            self.viewer.objects = [self.volume]
        else:
            self.volume.param.update(spacing=spacing, object=density)

    @staticmethod
    def _side_view(shape: tuple[int, ...], spacing: tuple[float, ...]) -> dict:
        """VTKVolume options for a GB window: a camera looking along y with z up, so that the GB plane (normal z)
        is a band across the middle. The origin is pinned at 0 (Panel's default puts it at half the voxel count,
        in A) so that the camera can aim at the volume's centre."""
        extent = [(n - 1) * edge for n, edge in zip(shape, spacing, strict=True)]
        centre = [0.5 * e for e in extent]
        distance = 2.6 * max(extent)
        camera = {"position": [centre[0], centre[1] - distance, centre[2]], "focalPoint": centre, "viewUp": [0, 0, 1]}
        return {"origin": (0.0, 0.0, 0.0), "camera": camera}

    def _update_progress(self, *events: param.parameterized.Event) -> None:
        run = self.run
        self.progress.max = max(run.num_steps, 1)
        self.progress.value = min(run.step, self.progress.max)
        parts = [f"**step {run.step} / {run.num_steps}**", f"t = {run.t:.3f}", STATUS_TEXT[run.status]]
        if run.activity:
            parts.append(run.activity)
        if run.first_frame_s is not None:
            parts.append(f"first frame after {run.first_frame_s:.2f} s")
        if run.step:
            parts.append(f"{run.elapsed_s:.1f} s")
        self.step_text.object = " · ".join(parts)
        self.progress.bar_color = {"cancelled": "warning", "error": "danger", "done": "success"}.get(
            run.status, "primary"
        )

    def _update_sample_range(self, *events: param.parameterized.Event) -> None:
        count = max(self.run.num_samples, 1)
        # a one-value slider cannot render (start == end), so it stays 0..1 and disabled for one sample
        self.sample.param.update(end=max(count - 1, 1), disabled=count < 2)
        if self.sample.value > count - 1:
            self.sample.value = 0

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            self.title,
            self.note,
            self.viewer,
            pn.Row(self.step_text, self.sample, sizing_mode="stretch_width"),
            self.progress,
            *([self.vtk_fix] if self.show_volume else []),
            sizing_mode="stretch_width",
        )


# ------------------------------------------------------------------------------------------------- results
class ResultsTable(pn.viewable.Viewer):
    """One row per generated structure: atom count against the ideal crystal, density, space group."""

    def __init__(self, run: GenerationRun, **params) -> None:
        super().__init__(**params)
        self.run = run
        self.columns = list({"amorphous": CARBON_COLUMNS, "gb": GB_COLUMNS}.get(run.mode, RESULT_COLUMNS))
        self.table = pn.widgets.Tabulator(
            pd.DataFrame(columns=self.columns),
            selectable="checkbox",
            disabled=True,  # read-only, but rows can still be selected
            show_index=False,
            layout="fit_data_stretch",
            sizing_mode="stretch_width",
            height=280,
        )
        self.reference_note = pn.pane.Markdown(self._reference_text(), sizing_mode="stretch_width")
        run.param.watch(self._update_rows, ["rows"])
        if run.rows:  # made after a run (e.g. in a notebook): show its rows
            self._update_rows()

    def _reference_text(self) -> str:
        if self.run.mode == "gb":
            return (
                "Each GB's atom count, its GB atom density [n] (atoms beyond whole bulk planes, as a fraction of "
                "one plane) and its GB energy E_gb after relaxation (J/m², over every atom more than 6 Å from the "
                "free surfaces). *relaxed* says whether the structure in the row (and in the export) is relaxed, and "
                "why not."
            )
        if self.run.mode == "amorphous":
            return (
                "Each structure's density, the fractions of its carbons with two (sp), three (sp2), four (sp3) and "
                "under two bonds (under-bonded: dangling; bonds under 1.85 Å), its mean coordination, and the "
                "relative L2 error of its forward-model spectrum against the target."
            )
        ref = self.run.reference
        if ref.phase is None:
            return "No reference crystal is recorded for this model: the table shows space groups only."
        source = "assumed for a tungsten model that records no phase" if ref.assumed else "from the checkpoint"
        return (
            f"Reference: {ref.phase} ({source}), space group {ref.space_group}. A sample is *perfect* when it "
            "holds the ideal number of atoms for its cell and spglib (symprec 0.1 Å) finds that space group."
        )

    def _update_rows(self, *events: param.parameterized.Event) -> None:
        self.reference_note.object = self._reference_text()  # the run's class may differ from the last one
        self.table.selection = []
        self.table.value = pd.DataFrame(self.run.rows, columns=self.columns)

    @property
    def selected(self) -> list[int]:
        """Sample indices of the selected rows."""
        frame = self.table.value
        return [int(frame.iloc[i]["sample"]) for i in self.table.selection if i < len(frame)]

    def selected_or_all(self) -> list[int]:
        """The selected rows' samples, or every sample when none is selected (what export and checks act on)."""
        return self.selected or list(range(len(self.run.structures)))

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column("### Results", self.reference_note, self.table, sizing_mode="stretch_width")


# ------------------------------------------------------------------------------------------------- drawing
CONTROL_POINTS = 21  # about 2 eV apart over the 40 eV grid
DRAWING_PLOT_NAME = "gcd-target-drawing"  # the Bokeh figure's name, for the browser tests to find it
DRAWING_ERROR_PREFIX = "Drawn target not used: "
DRAWING_HEIGHT = 300


class TargetDrawing(pn.viewable.Viewer):
    """Amorphous runs: the target spectrum as a curve with draggable control points (HoloViews ``PointDraw``).

    The points start on the current target (an example, an upload, or zero for none); dragging one bends the
    target through it and keeps its shape between points (:func:`app.state.bend_spectrum`), and the bent curve
    becomes the target (:meth:`GenerationSettings.set_drawn_target`, which refuses a negative or empty curve
    through the page's error alert). A new example or upload starts a new drawing.
    """

    def __init__(self, run: GenerationRun, **params) -> None:
        super().__init__(**params)
        self.run = run
        self.settings = run.settings
        self.plot = pn.pane.HoloViews(sizing_mode="stretch_width")
        self.reset_button = pn.widgets.Button(label="Reset drawing", disabled=True)
        self.reset_button.on_click(self._on_reset)
        self.note = pn.pane.Markdown(sizing_mode="stretch_width")
        self.stream = None  # the PointDraw stream of the current drawing
        self._base: np.ndarray | None = None  # the target the drawing started from (None: from zero)
        self._base_label = ""
        self._base_example: str | None = None
        self.settings.param.watch(self._on_target, ["target_spectrum", "target_label"])
        self._start_drawing()

    @property
    def control_points(self) -> tuple[np.ndarray, np.ndarray]:
        """(energies, intensities) of the control points as the plot has them now."""
        return self._points_of(self.stream.data if self.stream is not None else None)

    def _start_points(self) -> tuple[np.ndarray, np.ndarray]:
        energies = np.linspace(ENERGY_GRID[0], ENERGY_GRID[-1], CONTROL_POINTS)
        base = np.zeros(len(ENERGY_GRID)) if self._base is None else self._base
        return energies, np.interp(energies, ENERGY_GRID, base)

    def _on_target(self, *events: param.parameterized.Event) -> None:
        if not self.settings.target_label.startswith(DRAWN_LABEL):  # our own drawing keeps its points
            self._start_drawing()

    def _start_drawing(self) -> None:
        """Control points on the current target, and a fresh PointDraw stream for them."""
        import holoviews as hv
        import holoviews.plotting.bokeh  # noqa: F401  (registers the renderer that .opts() needs)

        settings = self.settings
        self._base = None if settings.target_spectrum is None else np.array(settings.target_spectrum, dtype=float)
        self._base_label = settings.target_label if self._base is not None else ""
        self._base_example = settings.target
        energies, intensities = self._start_points()
        kdims = [hv.Dimension("energy", label="energy (eV)"), hv.Dimension("intensity")]
        points = hv.Points((energies, intensities), kdims=kdims).opts(
            size=9, color="#d62728", line_color="white", active_tools=["point_draw"], tools=["hover"]
        )
        # add=False: a click beside the curve must not add a point; dragged points may cross their neighbours
        # (bend_spectrum sorts them by energy)
        self.stream = hv.streams.PointDraw(source=points, add=False, drag=True, num_objects=CONTROL_POINTS)
        self.stream.add_subscriber(self._on_drawn)
        drawn = hv.DynamicMap(self._drawn_curve, streams=[self.stream])
        top = max(0.08, 1.5 * float(np.max(intensities)))  # room to pull a peak up; a little below zero too
        start = hv.Curve((ENERGY_GRID, self._base if self._base is not None else np.zeros(len(ENERGY_GRID))),
                         kdims[0], kdims[1], label="start").opts(color="grey", line_dash="dashed")
        title = f"Target: drag the points to reshape {self._base_label or 'a spectrum from zero'}"
        self.plot.object = (start * drawn * points).opts(
            title=title,
            responsive=True,
            height=DRAWING_HEIGHT,  # a fixed height: with the pane's height instead, an update collapsed the figure
            xlim=(float(ENERGY_GRID[0]) - 1, float(ENERGY_GRID[-1]) + 1),
            ylim=(-0.1 * top, top),
            legend_position="top_right",
            hooks=[_figure_namer(DRAWING_PLOT_NAME)],
        )
        self.reset_button.disabled = True
        self.note.object = (
            "Drag a red point to bend the target through it; between points the curve keeps the shape it started "
            "with. The model sees only the shape: the target is scaled to unit area."
        )

    def _drawn_curve(self, data: dict | None = None):
        import holoviews as hv

        energies, intensities = self._points_of(data)
        curve_energies, curve = bend_spectrum(self._base, energies, intensities)
        return hv.Curve((curve_energies, curve), "energy", "intensity", label="target (drawn)").opts(
            color="black", line_width=2
        )

    def _points_of(self, data: dict | None) -> tuple[np.ndarray, np.ndarray]:
        if not data:
            return self._start_points()
        return np.asarray(data["energy"], dtype=float), np.asarray(data["intensity"], dtype=float)

    def _on_drawn(self, data: dict | None = None) -> None:
        """A point moved (a PointDraw event): the bent curve becomes the target, or the alert says why not."""
        self.reset_button.disabled = False  # a refused drag leaves its points where they are: offer the way back
        energies, intensities = self._points_of(data)
        curve_energies, curve = bend_spectrum(self._base, energies, intensities)
        try:
            self.settings.set_drawn_target(curve_energies, curve, source=self._base_label)
        except GCDError as exc:
            self.run.error = f"{DRAWING_ERROR_PREFIX}{exc}"
            return
        self.run.error = ""

    def _on_reset(self, event: object = None) -> None:
        """Back to the target the drawing started from, with the points on it."""
        if self.run.error.startswith(DRAWING_ERROR_PREFIX):
            self.run.error = ""
        if not self.settings.target_label.startswith(DRAWN_LABEL):
            self._start_drawing()  # only refused drags: the target never changed, the points go back
        elif self._base_example is not None:
            self.settings.target = self._base_example  # reloads the example, which starts the drawing again
        else:
            base = None if self._base is None else self._base.copy()
            self.settings.param.update(target_spectrum=base, target_label=self._base_label)  # idem

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            "### Target spectrum",
            self.plot,
            pn.Row(self.reset_button, self.note, sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )


def _figure_namer(name: str) -> Callable:
    """A HoloViews hook that names the Bokeh figure, so that a browser test can find its view."""

    def hook(plot, element) -> None:
        plot.state.name = name

    return hook


# ------------------------------------------------------------------------------------------------- compare
class CompareView(pn.viewable.Viewer):
    """Amorphous runs: the target spectrum over each structure's forward-model spectrum, and their g(r)."""

    def __init__(self, run: GenerationRun, **params) -> None:
        super().__init__(**params)
        self.run = run
        self.spectra = pn.pane.HoloViews(sizing_mode="stretch_width", height=300)
        self.rdf = pn.pane.HoloViews(sizing_mode="stretch_width", height=300)
        run.param.watch(self._update, ["spectra", "rdfs"])
        self._update()

    def _update(self, *events: param.parameterized.Event) -> None:
        import holoviews as hv
        import holoviews.plotting.bokeh  # noqa: F401  (registers the renderer that .opts() needs)

        curves = []
        if self.run.target_spectrum is not None:
            # "drawn (reshaped example graphite)" -> "target: drawn": the legend must not crowd the plot
            kind = self.run.target_label.split(" (")[0]
            label = f"target: {kind}" if kind else "target"
            curves.append(hv.Curve((ENERGY_GRID, self.run.target_spectrum), "energy (eV)", "intensity", label=label)
                          .opts(color="black", line_width=3))
        for index, spectrum in enumerate(self.run.spectra):
            curves.append(hv.Curve((ENERGY_GRID, spectrum), "energy (eV)", "intensity", label=f"sample {index}"))
        self.spectra.object = hv.Overlay(curves).opts(
            title="XANES: target and forward model of each sample", responsive=True, legend_position="top_right"
        ) if curves else None
        rdfs = [hv.Curve((r, g), "r (Å)", "g(r)", label=f"sample {i}") for i, (r, g) in enumerate(self.run.rdfs)]
        self.rdf.object = hv.Overlay(rdfs).opts(title="Radial distribution", responsive=True) if rdfs else None

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            "### Compare", pn.Row(self.spectra, self.rdf, sizing_mode="stretch_width"), sizing_mode="stretch_width"
        )


# ---------------------------------------------------------------------------------------------------- FEFF
FEFF_PLOT_NAME = "gcd-feff-check"  # the Bokeh figure's name, for the browser tests to find it
FEFF_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


class FeffPanel(pn.viewable.Viewer):
    """Amorphous runs: FEFF10 full multiple scattering on sampled sites of the chosen structures, each beside the
    forward model's spectrum of the same sites; slow (seconds a site), cancellable, cached on disk."""

    def __init__(self, run: GenerationRun, results: ResultsTable, check: FeffCheck, **params) -> None:
        super().__init__(**params)
        self.run, self.results, self.check = run, results, check
        self.sites = pn.widgets.IntSlider.from_param(check.param.sites_per_structure, label="Sites per structure")
        self.check_button = pn.widgets.Button(label="Check with FEFF10", color="primary")
        self.cancel_button = pn.widgets.Button(label="■ Cancel", color="warning")
        self.check_button.on_click(self._on_check)
        self.cancel_button.on_click(lambda event: self.check.cancel())
        self.note = pn.pane.Markdown(sizing_mode="stretch_width")
        self.progress = pn.pane.Markdown(sizing_mode="stretch_width")
        self.alert = pn.pane.Alert(alert_type="danger", visible=False, sizing_mode="stretch_width")
        self.skipped = pn.pane.Alert(alert_type="warning", visible=False, sizing_mode="stretch_width")
        self.plot = pn.pane.HoloViews(sizing_mode="stretch_width", height=300)
        self.table = pn.widgets.Tabulator(
            pd.DataFrame(columns=list(FEFF_COLUMNS)), disabled=True, show_index=False,
            layout="fit_data_stretch", sizing_mode="stretch_width", height=120,
        )
        self._missing = feff10_missing()
        run.param.watch(self._on_structures, ["structures"])
        results.table.param.watch(self._update_note, ["selection"])
        check.param.watch(self._update_note, ["sites_per_structure"])
        check.param.watch(self._update_progress,
                          ["status", "done_sites", "total_sites", "waiting", "error", "failures"])
        check.param.watch(self._update_results, ["feff_spectra", "rows"])
        self._update_note()
        self._update_progress()
        self._update_results()

    def _on_check(self, event: object = None) -> None:
        try:
            self.check.start(self.run.structures, self.results.selected_or_all())
        except GCDError as exc:
            self.check.param.update(error=str(exc))

    def _on_structures(self, *events: param.parameterized.Event) -> None:
        self.check.reset()  # its results belong to structures that are gone
        self._update_note()

    def _update_note(self, *events: param.parameterized.Event) -> None:
        samples = self.results.selected_or_all()
        if self._missing:
            self.note.object = self._missing
        elif not samples:
            self.note.object = "Generate structures first, then check their spectra against FEFF10."
        else:
            sites = self.check.sites_per_structure * len(samples)
            which = "selected" if self.results.selected else "all"
            self.note.object = (
                f"FEFF10 (full multiple scattering, screened core hole) on {self.check.sites_per_structure} random "
                f"carbon site(s) of each of {len(samples)} structure(s) ({which}; select rows to check only those): "
                f"{sites} site(s), 5-25 s each on one core. Each site's result is cached in "
                f"`{self.check.cache_dir}`, so a repeated check returns at once. Dashed: the forward model on the "
                "same sites."
            )
        self._update_buttons()

    def _update_buttons(self) -> None:
        running = self.check.running
        self.check_button.disabled = running or bool(self._missing) or not self.run.structures
        self.cancel_button.disabled = not running

    def _update_progress(self, *events: param.parameterized.Event) -> None:
        check = self.check
        if check.waiting:
            text = "FEFF: waiting for another session's check to finish"
        elif check.status == "running":
            text = f"FEFF: {check.done_sites} / {check.total_sites} sites, running"
        elif check.status in ("done", "cancelled") and check.total_sites:
            text = (f"FEFF: {check.done_sites} / {check.total_sites} sites, {STATUS_TEXT[check.status]} "
                    f"({check.elapsed_s:.0f} s)")
        else:
            text = ""
        self.progress.object = text
        self.alert.param.update(object=check.error, visible=bool(check.error))
        skipped = f"FEFF could not do {len(check.failures)} site(s), left out of both means: " + "; ".join(
            check.failures)
        self.skipped.param.update(object=skipped, visible=bool(check.failures))
        self._update_buttons()

    def _update_results(self, *events: param.parameterized.Event) -> None:
        import holoviews as hv
        import holoviews.plotting.bokeh  # noqa: F401  (registers the renderer that .opts() needs)

        self.table.value = pd.DataFrame(self.check.rows, columns=list(FEFF_COLUMNS))
        if not self.check.feff_spectra:
            self.plot.object = None
            return
        curves = []
        if self.run.target_spectrum is not None:
            curves.append(hv.Curve((ENERGY_GRID, self.run.target_spectrum), "energy (eV)", "intensity", label="target")
                          .opts(color="black", line_width=3))
        for position, (sample, spectrum) in enumerate(sorted(self.check.feff_spectra.items())):
            color = FEFF_COLORS[position % len(FEFF_COLORS)]
            model = self.check.model_spectra[sample]
            curves.append(hv.Curve((ENERGY_GRID, spectrum), "energy (eV)", "intensity", label=f"sample {sample}: FEFF")
                          .opts(color=color, line_width=2))
            curves.append(hv.Curve((ENERGY_GRID, model), "energy (eV)", "intensity", label=f"sample {sample}: model")
                          .opts(color=color, line_dash="dashed"))
        self.plot.object = hv.Overlay(curves).opts(
            title="FEFF10 (solid) and forward model (dashed)", responsive=True,
            legend_position="top_right", hooks=[_figure_namer(FEFF_PLOT_NAME)],
        )

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            "### Check with FEFF10",
            self.note,
            pn.Row(self.sites, self.check_button, self.cancel_button),
            self.progress,
            self.alert,
            self.skipped,
            self.plot,
            self.table,
            sizing_mode="stretch_width",
        )


# ---------------------------------------------------------------------------------------------- GB energies
GB_PLOT_NAME = "gcd-gb-energies"  # the Bokeh figure's name, for the browser tests to find it
GB_PLOT_HEIGHT = 320


class GBEnergyPlot(pn.viewable.Viewer):
    """GB runs: E_gb against [n] of the run's relaxed samples, with the lowest E_gb the model saw in training as a
    reference line. Hovering a point names its sample; clicking one shows that sample in the viewers."""

    def __init__(self, run: GBRun, **params) -> None:
        super().__init__(**params)
        self.run = run
        self.plot = pn.pane.HoloViews(sizing_mode="stretch_width", visible=False)
        self.note = pn.pane.Markdown(sizing_mode="stretch_width")
        self.selection = None  # the Selection1D stream of the current points
        self._points: list[dict] = []
        run.param.watch(self._update, ["rows"])
        self._update()

    def _update(self, *events: param.parameterized.Event) -> None:
        import holoviews as hv
        import holoviews.plotting.bokeh  # noqa: F401  (registers the renderer that .opts() needs)

        run = self.run
        self._points = run.energy_points()
        if not run.rows:
            self.plot.visible = False
            self.plot.object = None
            self.note.object = "After a run: each relaxed sample's E_gb against its [n]."
            return
        n = hv.Dimension("n", label="[n]")
        energy = hv.Dimension("e_gb", label="E_gb (J/m²)")
        data = pd.DataFrame(self._points, columns=["n", "e_gb", "sample", "atoms"])
        scatter = hv.Scatter(data, kdims=[n], vdims=[energy, "sample", "atoms"], label="generated, relaxed").opts(
            size=11, color="#2f5d8f", line_color="white", tools=["hover", "tap"], nonselection_alpha=0.4
        )
        self.selection = hv.streams.Selection1D(source=scatter)
        self.selection.add_subscriber(self._on_pick)
        layers = [scatter]
        if run.lowest_e_gb is not None:
            layers.append(
                hv.Curve([(0.0, run.lowest_e_gb), (1.0, run.lowest_e_gb)], n, energy,
                         label=f"lowest in training: {run.lowest_e_gb:.3f} J/m²")
                .opts(color="grey", line_dash="dashed", line_width=2)
            )
        if run.search_lowest is not None:
            layers.append(_search_steps(run.search_lowest, n, energy))
        system = GB_SYSTEMS[run.system].title if run.system in GB_SYSTEMS else run.system
        self.plot.object = hv.Overlay(layers).opts(
            title=f"E_gb against [n]: {system}",
            responsive=True,
            height=GB_PLOT_HEIGHT,  # on the element: a pane height collapsed the figure on update (see drawing)
            xlim=(0.0, 1.0),
            legend_position="right",  # outside the axes: a legend inside hid points (and took their clicks)
            hooks=[_figure_namer(GB_PLOT_NAME)],
        )
        self.plot.visible = True
        missing = len(run.rows) - len(self._points)
        text = "Hover a point for its sample; click it to show that sample above."
        if missing:
            text += f" {missing} sample(s) have no E_gb (see *relaxed* in the table) and are not plotted."
        if run.lowest_e_gb is None:
            text += " The model records no training E_gb for this system, so there is no reference line."
        if run.search_lowest is not None:
            search = run.search_lowest
            text += (f" Orange steps: the lowest E_gb per [n] bin the grand canonical GB search found "
                     f"({search['samples']} samples; `{search['command']}`), the reference a generated GB is "
                     "judged against.")
        self.note.object = text

    def _on_pick(self, index: list[int] | None = None) -> None:
        """A point was clicked: show its sample in the volume and atoms viewers."""
        if not index or self.run.status == "running" or index[0] >= len(self._points):
            return
        self.run.preview_sample = int(self._points[index[0]]["sample"])

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column("### E_gb against [n]", self.note, self.plot, sizing_mode="stretch_width")


def _search_steps(summary: dict, n: object, energy: object):
    """The GB search's lowest E_gb per [n] bin as a step line (one flat segment per bin; gaps where a bin is empty)."""
    import holoviews as hv

    xs, ys = [], []
    for previous, current in zip([None, *summary["lowest"]], summary["lowest"], strict=False):
        if previous is not None and previous["n_high"] < current["n_low"] - 1e-9:
            xs.append(np.nan)  # an empty bin: break the line
            ys.append(np.nan)
        xs += [current["n_low"], current["n_high"]]
        ys += [current["e_gb"], current["e_gb"]]
    return hv.Curve((xs, ys), n, energy, label="GB search: lowest per [n] bin").opts(color="#ff7f0e", line_width=2)


GB_EXPORT_HELP = (
    "A GB is periodic in its plane and open along the normal (pbc T T F); CIF knows only periodic cells, so the "
    "file holds the same cell periodic along z too (its two free surfaces meet across the top face). Relaxed "
    "rows export the relaxed structure."
)


class ExportPanel(pn.viewable.Viewer):
    """CIF download of the selected rows (all rows when none is selected): one .cif, or a .zip of several."""

    def __init__(self, run: GenerationRun, results: ResultsTable, **params) -> None:
        super().__init__(**params)
        self.run = run
        self.results = results
        self.download = pn.widgets.FileDownload(
            callback=self._make_file,
            filename="gcd_structures.zip",
            label="Download CIF",
            color="success",
            disabled=True,
        )
        self.note = pn.pane.Markdown(sizing_mode="stretch_width")
        self.help = pn.pane.Markdown(GB_EXPORT_HELP, visible=run.mode == "gb", sizing_mode="stretch_width")
        self.alert = pn.pane.Alert(alert_type="danger", visible=False, sizing_mode="stretch_width")
        run.param.watch(self._update, ["structures"])
        results.table.param.watch(self._update, ["selection"])
        self._update()

    def indices(self) -> list[int]:
        """The samples to export: the selected rows, or every sample when none is selected."""
        return self.results.selected_or_all()

    def _update(self, *events: param.parameterized.Event) -> None:
        indices = self.indices()
        empty = [i for i in indices if len(self.run.structures[i]) == 0]
        self.alert.visible = False
        if not indices:
            self.download.disabled = True
            self.note.object = "Generate structures first."
            return
        self.download.filename = sample_name(indices[0], "cif") if len(indices) == 1 else "gcd_structures.zip"
        self.download.label = f"Download {self.download.filename}"
        if empty:
            self.download.disabled = True
            self.note.object = f"Sample(s) {empty} hold no atoms, and CIF cannot describe an empty cell."
            return
        self.download.disabled = False
        which = "selected" if self.results.selected else "all"
        self.note.object = f"{len(indices)} structure(s), {which}; select rows to export only those."

    def _make_file(self) -> io.BytesIO:
        try:
            filename, data = export_cif(self.run.structures, self.indices())
        except GCDError as exc:
            self.alert.param.update(object=f"Export failed: {exc}", visible=True)
            self.download.filename = "export_error.txt"
            return io.BytesIO(str(exc).encode())
        self.download.filename = filename
        return io.BytesIO(data)

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            "### Export", self.note, self.download, self.help, self.alert, sizing_mode="stretch_width"
        )


# ----------------------------------------------------------------------------------------------- dashboard
class Dashboard(pn.viewable.Viewer):
    """Everything one browser session sees; build one per session (the model underneath is shared)."""

    def __init__(self, checkpoint: str | Path | None = None, dispatch: Dispatch | None = None, **params) -> None:
        super().__init__(**params)
        self.checkpoint = resolve_checkpoint(checkpoint)
        self.model: GCDModel | None = None
        self.load_error = ""
        try:
            self.model = load_model(self.checkpoint)
        except GCDError as exc:
            shipped = str(checkpoint) if str(checkpoint) in SHIPPED_MODELS else None
            variable = SHIPPED_MODEL_ENV.format(name=shipped.upper()) if shipped else "GCD_CHECKPOINT"
            self.load_error = (
                f"Could not load the model: {exc}. Point the environment variable {variable} at a gcd "
                "checkpoint (a .pt file written by `gcd train`) and reload the page."
            )
        except Exception as exc:  # e.g. an unknown device in GCD_DEVICE: show it rather than a blank page
            log.exception("loading the model failed")
            self.load_error = f"Could not load the model: {type(exc).__name__}: {exc}"
        gb = is_gb_model(self.model)
        if gb:  # a grain-boundary model: its own settings and run, the same viewers, an E_gb plot
            self.settings = GBSettings()
            self.run = GBRun(self.model, self.settings, dispatch=dispatch, model_error=self.load_error)
            self.settings_panel = GBSettingsPanel(self.run)
        else:
            self.settings = GenerationSettings()
            self.run = GenerationRun(self.model, self.settings, dispatch=dispatch, model_error=self.load_error)
            self.settings_panel = SettingsPanel(self.run)
        self.live = LiveView(self.run)
        self.atoms = AtomsView(self.run)
        self.results = ResultsTable(self.run)
        self.export = ExportPanel(self.run, self.results)
        amorphous = self.run.mode == "amorphous"
        self.compare = CompareView(self.run) if amorphous else None
        self.feff = FeffPanel(self.run, self.results, FeffCheck(dispatch=dispatch)) if amorphous else None
        self.drawing = TargetDrawing(self.run) if amorphous else None
        self.energies = GBEnergyPlot(self.run) if gb else None
        self.alert = pn.pane.Alert(alert_type="danger", sizing_mode="stretch_width", visible=False)
        self.run.param.watch(self._update_alert, ["error"])
        self._update_alert()

    @property
    def error_message(self) -> str:
        """What the page's error alert says ('' when it is hidden)."""
        return self.alert.object if self.alert.visible else ""

    @property
    def device(self) -> str:
        return str(self.model.device) if self.model is not None else str(resolve_device(None))

    def _update_alert(self, *events: param.parameterized.Event) -> None:
        message = self.run.error or self.load_error
        self.alert.param.update(object=message, visible=bool(message))

    def model_info(self) -> pn.pane.Markdown:
        """Checkpoint, species, training cell and device, for the sidebar."""
        lines = [f"**Checkpoint**: `{self.checkpoint.name}`", f"**Device**: {self.device}"]
        if self.model is not None and self.run.mode == "gb":
            settings = self.settings
            titles = [GB_SYSTEMS[key].title if key in GB_SYSTEMS else key for key in self.model.conditioning.labels]
            lines.append(f"**GB systems**: {', '.join(titles)}")
            lines.append(f"**[n] conditioning**: {'yes' if settings.n_conditioning else 'no'}")
            relaxation = f"unavailable: {settings.relax_unavailable}" if settings.relax_unavailable else "LAMMPS, EAM"
            lines.append(f"**Relaxation**: {relaxation}")
        elif self.model is not None:
            labels = self.model.conditioning.labels
            if labels:
                lines.append(f"**Classes**: {', '.join(labels)}")
            else:
                lines.append(f"**Species**: {', '.join(self.model.grid.species)} ({self.model.grid.encoding})")
                cell = self.model.training_cell()
                if cell:
                    lines.append(f"**Training cell**: {' × '.join(f'{v:.2f}' for v in cell)} Å")
        return pn.pane.Markdown("  \n".join(lines), sizing_mode="stretch_width")

    def __panel__(self) -> pn.viewable.Viewable:
        # A plain layout rather than a template: Panel's Fast templates load their font from Google, and the
        # page must not fetch anything from outside the server.
        header = pn.Row(
            pn.pane.HTML(f"<h2 style='margin: 0'>{TITLE}</h2>", styles={"color": "white"}),
            pn.layout.HSpacer(),
            pn.pane.HTML(
                "<a href='?model=crystals' style='color: white'>crystals</a> · "
                "<a href='?model=carbon' style='color: white'>amorphous carbon (XANES)</a> · "
                "<a href='?model=gb' style='color: white'>grain boundaries</a>",
                align="center",
            ),
            pn.pane.HTML(f"device: <b>{self.device}</b>", styles={"color": "white"}, align="center"),
            styles={"background": "#2f5d8f", "padding": "6px 16px"},
            sizing_mode="stretch_width",
        )
        sidebar = pn.Column(self.settings_panel, pn.layout.Divider(), self.model_info(), width=340)
        viewers = pn.Row(self.live, self.atoms, sizing_mode="stretch_width")
        parts = [self.alert, *([self.drawing] if self.drawing else []), viewers, self.results]
        parts += [*([self.compare, self.feff] if self.compare else []), *([self.energies] if self.energies else []),
                  self.export]
        main = pn.Column(*parts, sizing_mode="stretch_width")
        return pn.Column(header, pn.Row(sidebar, main, sizing_mode="stretch_width"), sizing_mode="stretch_width")

    def on_session_destroyed(self) -> None:
        """Stop this session's run (and FEFF check) when its browser tab goes away."""
        self.run.cancel()
        if self.feff is not None:
            self.feff.check.cancel()
