"""The dashboard in a real browser: Debian's Chromium driven by Playwright against ``panel serve app/main.py``.

Nothing here assumes a checkpoint: atom counts and cells are read from the page, so the tests hold for whatever
model the app serves (``$GCD_CHECKPOINT`` or the default). Runs stay short (10-30 sampler steps).
"""

from __future__ import annotations

import re
import time

import ase.io
import numpy as np
import pytest

from app.driver import DashboardPage
from app.fetch_js import JS_PATH
from app.views import FEFF_PLOT_NAME
from gcd_core.checkpoint import DEFAULT_CARBON_MODEL

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]  # a cold server start on a busy machine is slow

needs_3dmol = pytest.mark.skipif(not JS_PATH.is_file(), reason="3Dmol.js is not installed: python -m app.fetch_js")


def assert_clean(tab: DashboardPage) -> None:
    """No console errors, no uncaught exceptions, nothing fetched from outside the server."""
    assert tab.console_errors == [], tab.console_errors
    assert tab.blocked == [], f"the page tried to load from outside its server: {tab.blocked}"
    lost = [w for w in tab.warnings if "Too many active WebGL contexts" in w]
    assert not lost, "WebGL contexts leak (the vtk.js volume rebuilds without releasing them)"


def test_page_loads_clean(dashboard: DashboardPage) -> None:
    tab = dashboard
    assert "grand canonical diffusion" in tab.page.title()
    assert tab.button("Generate").is_enabled() and tab.button("Cancel").is_disabled()
    assert tab.status().status == "idle"
    assert all(v > 0 for v in tab.cell_lengths())
    if JS_PATH.is_file():  # 3Dmol.js came from the server and ran in the viewer's frame
        tab.page.frame_locator("iframe.gcd-atoms").locator("body[data-rendered='loaded']").wait_for()
    else:
        assert tab.page.get_by_text("3Dmol.js is not installed").is_visible()
    tab.page.wait_for_timeout(1000)  # late errors (fonts, stylesheets, the websocket) would show by now
    assert_clean(tab)


@needs_3dmol
def test_generate_streams_into_both_viewers_and_fills_the_table(dashboard: DashboardPage) -> None:
    tab = dashboard
    tab.set_slider("Sampler steps", 30)
    tab.set_slider("Samples", 2)
    assert tab.volume_canvases() == 0  # the volume viewer appears with the first frame
    tab.page.frame_locator("iframe.gcd-atoms").locator("body[data-rendered='loaded']").wait_for()  # 3Dmol.js is in
    mark = tab.generate()
    final = tab.wait_status(("done", "error", "cancelled"), timeout=90)
    assert final.status == "done" and final.step == final.num_steps == 30
    seen = [step for _, step, _ in tab.log(mark)]
    assert seen[0] == 0 and seen[-1] == 30 and seen == sorted(seen), seen
    assert any(0 < step < 30 for step in seen), f"no frame before the last reached the step counter: {seen}"

    assert tab.wait_table(2) == ["0", "1"]
    atoms = [int(v) for v in tab.table_column("atoms")]
    assert all(v.strip() for v in tab.table_column("space group"))
    assert tab.volume_canvases() >= 1
    patch, in_place = tab.page.evaluate("() => [window.gcdVtkVolumePatch, window.gcdVtkInPlaceUpdates || 0]")
    assert patch, "app/vtk_patch.py did not take: has Panel's VTKVolume view changed?"
    assert in_place >= 1, "the volume was not updated in place after its first frame"

    # the shown sample (0): drawn at an early frame and again at the end
    tab.page.frame_locator("iframe.gcd-atoms").locator("body[data-step='30']").wait_for()
    viewer = tab.atoms_viewer()
    assert viewer["rendered"] == "yes" and viewer["canvases"] == "1"
    assert int(viewer["draws"]) >= 2, viewer
    assert int(viewer["atoms"]) == atoms[0], (viewer, atoms)
    caption = tab.page.locator(".gcd-atoms-caption").inner_text()
    assert f"{atoms[0]} atoms" in caption and "final structure" in caption

    picture = tab.page.locator("iframe.gcd-atoms").screenshot()  # WebGL drew something, not a blank canvas
    assert _distinct_colours(picture) > 20
    volume = tab.page.locator(".bk-panel-models-vtk-VTKVolumePlot").first.screenshot()
    assert _distinct_colours(volume) > 20
    assert_clean(tab)


def test_cancel_stops_a_long_run_and_the_next_run_works(dashboard: DashboardPage) -> None:
    tab = dashboard
    tab.set_slider("Samples", 1)
    tab.set_slider("Sampler steps", 1000)
    tab.set_slider("Resample", 4)  # 4000 network evaluations: minutes, unless Cancel works
    tab.generate()
    running = tab.wait_status(("running",), timeout=30)
    while tab.status().step < 2:  # frames are arriving
        tab.page.wait_for_timeout(50)
    assert tab.button("Cancel").is_enabled() and tab.button("Generate").is_disabled()
    tab.button("Cancel").click()
    stopped = tab.wait_status(("cancelled", "done", "error"), timeout=30)
    assert stopped.status == "cancelled" and running.num_steps == 1000 and stopped.step < 1000
    assert tab.button("Generate").is_enabled() and tab.button("Cancel").is_disabled()
    assert tab.table_column("atoms") == []

    tab.set_slider("Sampler steps", 10)
    tab.set_slider("Resample", 1)
    tab.generate()
    again = tab.wait_status(("done", "error", "cancelled"), timeout=60)
    assert again.status == "done" and again.step == 10
    assert tab.wait_table(1) == ["0"]
    assert_clean(tab)


def test_export_of_a_selected_structure_as_cif(dashboard: DashboardPage, tmp_path) -> None:
    tab = dashboard
    tab.set_slider("Sampler steps", 10)
    tab.set_slider("Samples", 2)
    tab.set_seed(5)
    tab.generate()
    assert tab.wait_status(("done", "error", "cancelled"), timeout=60).status == "done"
    tab.wait_table(2)
    atoms = [int(v) for v in tab.table_column("atoms")]
    if atoms[1] == 0:
        pytest.skip("the model produced an empty sample 1, which CIF cannot describe")

    tab.page.locator(".tabulator-row").nth(1).locator("input[type='checkbox']").check()
    download_button = tab.button("Download sample_0001.cif")
    download_button.wait_for()
    with tab.page.expect_download() as download_info:
        download_button.click()
    download = download_info.value
    assert download.suggested_filename == "sample_0001.cif"
    path = tmp_path / download.suggested_filename
    download.save_as(path)

    structure = ase.io.read(path, format="cif")
    assert len(structure) == atoms[1]
    np.testing.assert_allclose(structure.cell.lengths(), tab.cell_lengths(), atol=0.006)  # the page shows 2 decimals
    np.testing.assert_allclose(structure.cell.angles(), [90, 90, 90], atol=1e-6)
    assert_clean(tab)


def _distinct_colours(png: bytes) -> int:
    from io import BytesIO

    from PIL import Image

    image = Image.open(BytesIO(png)).convert("RGB").resize((100, 100))
    return len(image.getcolors(maxcolors=100 * 100))


@pytest.mark.skipif(not DEFAULT_CARBON_MODEL.is_file(), reason="the shipped carbon model is missing")
def test_carbon_page_takes_a_target_refuses_a_malformed_upload_and_compares_spectra(
    chromium, dashboard_server, tmp_path
) -> None:
    tab = DashboardPage.open(chromium, dashboard_server.url + "?model=carbon")
    try:
        tab.page.locator("select").filter(has_text="none (unconditional)").select_option(label="a-C_3.5gcc_d0.0_18")
        tab.page.get_by_text("Target: example a-C_3.5gcc_d0.0_18").wait_for()

        broken = tmp_path / "broken.txt"
        broken.write_text("energy intensity\n285 1\n286 banana\n")
        tab.page.locator("input[type='file']").set_input_files(str(broken))
        tab.page.get_by_text(re.compile(r"broken\.txt, line 3: .* is not numbers")).wait_for()  # the page says why
        assert tab.page.get_by_text("Target: example a-C_3.5gcc_d0.0_18").is_visible()  # the old target stays

        tab.set_slider("Sampler steps", 10)
        tab.set_slider("Samples", 1)
        tab.generate()
        assert tab.wait_status(("done", "error", "cancelled"), timeout=120).status == "done"
        assert tab.wait_table(1) == ["0"]
        assert tab.table_column("spectral error")[0].strip()  # the forward model judged the sample
        tab.page.get_by_role("heading", name="Compare").wait_for()  # the spectra and g(r) plots' section

        # the FEFF10 check of one site, run by the server in a child process, plotted beside the forward model
        tab.set_slider("Sites per structure", 1)
        tab.button("Check with FEFF10").click()
        tab.page.get_by_text(re.compile(r"FEFF: 1 / 1 sites, done")).wait_for(timeout=180_000)
        curves = tab.plot_curves(FEFF_PLOT_NAME)
        assert {"sample 0: FEFF", "sample 0: model", "target"} <= set(curves), list(curves)
        assert tab.page.get_by_role("button", name="Check with FEFF10").is_enabled()
        assert_clean(tab)
    finally:
        tab.close()


@pytest.mark.skipif(not DEFAULT_CARBON_MODEL.is_file(), reason="the shipped carbon model is missing")
def test_carbon_page_draws_a_target_and_generates_toward_it(chromium, dashboard_server) -> None:
    """Drag a control point of the target plot with the mouse: the bent curve comes back from the server, becomes
    the target, and a guided run is judged against it and plotted with it."""
    from app.views import DRAWING_PLOT_NAME

    tab = DashboardPage.open(chromium, dashboard_server.url + "?model=carbon")
    try:
        tab.page.locator("select").filter(has_text="none (unconditional)").select_option(label="graphite")
        tab.page.get_by_text("Target: example graphite").wait_for()
        tab.wait_plot_title(DRAWING_PLOT_NAME, "graphite")  # the drawing starts again from the chosen example
        points = tab.draggable_points(DRAWING_PLOT_NAME)
        assert len(points) == 21
        index = min(range(len(points)), key=lambda i: abs(points[i][0] - 300.0))  # on graphite's sigma* shoulder
        energy, intensity, page_x, page_y = points[index]
        tab.drag((page_x, page_y), (page_x, page_y - 60))  # 60 px up

        tab.page.get_by_text("Target: drawn (reshaped example graphite)").wait_for()
        moved = tab.draggable_points(DRAWING_PLOT_NAME)[index]
        assert moved[0] == pytest.approx(energy, abs=0.5) and moved[1] > intensity + 0.005, (points[index], moved)
        # the server bent the target through the point and sent the curve back (only the server computes it)
        deadline = time.monotonic() + 20
        while True:
            drawn = tab.plot_curves(DRAWING_PLOT_NAME).get("target (drawn)")
            if drawn and np.interp(moved[0], *drawn) == pytest.approx(moved[1], rel=1e-6):
                break
            assert time.monotonic() < deadline, f"the drawn curve does not pass through the moved point {moved}"
            tab.page.wait_for_timeout(200)

        tab.set_slider("Box edge", 0)  # the smallest box the slider allows
        tab.set_slider("Samples", 1)
        tab.set_slider("Sampler steps", 10)
        tab.set_slider("Gradient guidance", 5)
        tab.generate()
        assert tab.wait_status(("done", "error", "cancelled"), timeout=120).status == "done"
        assert tab.wait_table(1) == ["0"]
        assert tab.table_column("spectral error")[0].strip()  # judged against the drawn target
        deadline = time.monotonic() + 20
        while "target: drawn" not in (curves := tab.plot_curves(title="XANES")):
            assert time.monotonic() < deadline, f"the comparison does not show the drawn target: {list(curves)}"
            tab.page.wait_for_timeout(200)
        assert "sample 0" in curves
        assert_clean(tab)
    finally:
        tab.close()


@needs_3dmol
def test_gb_page_anneals_relaxes_and_plots_e_gb_against_n(chromium, gb_dashboard_server, tmp_path) -> None:
    """?model=gb (a tiny GB model: junk in the slab, but every mechanic): the window's occupancy and the bicrystal
    stream while sampling, every sample is relaxed and scored, and the E_gb against [n] plot shows the scored ones;
    clicking a point shows that sample, and its CIF keeps the atoms and the cell."""
    from app.views import GB_PLOT_NAME

    tab = DashboardPage.open(chromium, gb_dashboard_server.url + "?model=gb")
    try:
        tab.page.get_by_role("heading", name="Grain boundary").wait_for()
        assert tab.page.locator("select").filter(has_text="Cu Sigma5 (210) [001] tilt").count() == 1
        tab.set_slider("Sampler steps", 10)
        tab.set_slider("Samples", 2)
        tab.checkbox("Target [n]").check()
        assert tab.widget("Target [n]").get_by_role("slider").get_attribute("aria-disabled") != "true"
        atoms_frame = tab.page.frame_locator("iframe.gcd-atoms")
        atoms_frame.locator("body[data-rendered='loaded']").wait_for()
        assert tab.volume_canvases() == 0
        mark = tab.generate()
        final = tab.wait_status(("done", "error", "cancelled"), timeout=180)
        assert final.status == "done" and final.step == final.num_steps == 10, tab.step_text()
        seen = [step for _, step, _ in tab.log(mark)]
        assert seen[0] == 0 and seen[-1] == 10 and seen == sorted(seen), seen
        assert re.search(r"· relaxed \d / 2", tab.step_text()), tab.step_text()

        assert tab.wait_table(2) == ["0", "1"]
        atoms = [int(v) for v in tab.table_column("atoms")]
        relaxed = tab.table_column("relaxed")
        energies = tab.table_column("E_gb (J/m²)")
        densities = [float(v) for v in tab.table_column("[n]")]
        assert all(0 <= n < 1 for n in densities)
        for energy, state in zip(energies, relaxed, strict=True):
            assert (state == "yes" and np.isfinite(float(energy))) or (state.startswith("failed") and not energy)
        scored = {i: float(e) for i, (e, state) in enumerate(zip(energies, relaxed, strict=True)) if state == "yes"}
        assert scored, f"no sample was relaxed: {relaxed}"

        # the live views: the window's volume and the whole bicrystal, drawn while sampling and at the end
        assert tab.volume_canvases() >= 1
        atoms_frame.locator("body[data-step='10']").wait_for()
        viewer = tab.atoms_viewer()
        assert int(viewer["draws"]) >= 2 and int(viewer["atoms"]) == atoms[0], viewer
        caption = tab.page.locator(".gcd-atoms-caption").inner_text()
        assert f"{atoms[0]} atoms" in caption and "final structure" in caption
        assert ("E_gb" in caption) == (0 in scored), caption

        # E_gb against [n]: one point per scored sample, where the table puts it
        deadline = time.monotonic() + 30
        while len(points := tab.plot_points(GB_PLOT_NAME)) != len(scored):
            assert time.monotonic() < deadline, f"the plot shows {len(points)} points, the table {scored}"
            tab.page.wait_for_timeout(200)
        for point in points:
            sample = int(point["sample"])
            assert point["e_gb"] == pytest.approx(scored[sample], abs=1e-4)
            assert point["n"] == pytest.approx(densities[sample], abs=1e-4)
        legend = tab.plot_curves(GB_PLOT_NAME)
        assert any(label.startswith("lowest in training") for label in legend), legend

        if 1 in scored:  # a click on sample 1's point shows sample 1 in the atoms viewer
            point = next(p for p in points if int(p["sample"]) == 1)
            tab.page.mouse.click(point["page_x"], point["page_y"])
            tab.page.locator(".gcd-atoms-caption", has_text="sample 1 ·").wait_for(timeout=20_000)
            assert tab.slider_value("Shown sample") == 1

        tab.page.locator(".tabulator-row").nth(0).locator("input[type='checkbox']").check()
        download_button = tab.button("Download sample_0000.cif")
        download_button.wait_for()
        with tab.page.expect_download() as download_info:
            download_button.click()
        path = tmp_path / download_info.value.suggested_filename
        download_info.value.save_as(path)
        structure = ase.io.read(path, format="cif")
        assert len(structure) == atoms[0]
        assert tab.page.get_by_text("CIF knows only periodic cells").is_visible()
        assert_clean(tab)
    finally:
        tab.close()
