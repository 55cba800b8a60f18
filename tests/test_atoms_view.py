"""The atoms viewer (py3Dmol, 3Dmol.js from the server) without a browser: its documents, its updates during a
run, the missing-JS message, the route that serves 3Dmol.js, and the installer's checks."""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms

pytest.importorskip("panel")
pytest.importorskip("py3Dmol")

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `app` is a folder of the repository, not an installed package
    sys.path.insert(0, str(REPO))

import panel as pn  # noqa: E402

import app.atoms_view as atoms_view  # noqa: E402
import app.fetch_js as fetch_js  # noqa: E402
from app.views import Dashboard  # noqa: E402
from gcd_core.data.crystals import crystal  # noqa: E402
from gcd_core.diffusion.schedules import CosineSchedule  # noqa: E402
from gcd_core.model import GCDModel  # noqa: E402
from gcd_core.nn.unet import UNet3D  # noqa: E402
from gcd_core.representation.grid import VoxelGrid  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = GCDModel(
        UNet3D(in_channels=4, out_channels=4, base_channels=8),
        VoxelGrid(("W",), 0.79125),
        CosineSchedule(),
        "x0",
        metadata={"train_cells": [[6.33, 6.33, 6.33]]},
    )
    path = tmp_path_factory.mktemp("atoms_view") / "tiny.pt"
    model.save(path)
    return path


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def js_present(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A stand-in 3Dmol.js file, so the view behaves as where the installer has run."""
    path = tmp_path / "3Dmol-min.js"
    path.write_text("/* stand-in */")
    monkeypatch.setattr(atoms_view, "JS_PATH", path)
    return path


def published(caption_html: str) -> dict:
    """The structure a caption's script hands to the viewer document."""
    match = re.search(r"store\[\"[^\"]+\"\] = (\{.*\}); window\.dispatchEvent", caption_html, re.S)
    assert match, caption_html
    return json.loads(match.group(1).replace("<\\/", "</"))


# ------------------------------------------------------------------------------------------------ documents
def test_extended_xyz_holds_the_lattice_and_caps_large_structures() -> None:
    bcc = crystal("bcc", 2)
    text, shown = atoms_view.extended_xyz(bcc)
    lines = text.splitlines()
    assert shown == len(bcc) == int(lines[0]) and len(lines) == len(bcc) + 2
    lattice = re.search(r'Lattice="([^"]+)"', lines[1]).group(1)
    np.testing.assert_allclose(np.array(lattice.split(), float).reshape(3, 3), bcc.cell[:], atol=1e-5)

    big = crystal("bcc", 2).repeat((8, 8, 8))  # 8192 atoms
    text, shown = atoms_view.extended_xyz(big, max_atoms=500)
    assert shown == 500 and int(text.splitlines()[0]) == 500
    xs = np.array([line.split()[1] for line in text.splitlines()[2:]], float)
    assert xs.max() < 0.2 * big.cell.lengths()[0]  # a slab at the a = 0 face, not scattered atoms


def test_cell_edges_are_the_twelve_edges_of_the_cell() -> None:
    cell = np.array([[4.0, 0, 0], [1.0, 5.0, 0], [0, 0, 6.0]])
    edges = atoms_view.cell_edges(cell)
    lengths = sorted(round(float(np.linalg.norm(np.subtract(b, a))), 6) for a, b in edges)
    expected = sorted(round(float(np.linalg.norm(v)), 6) for v in cell for _ in range(4))
    assert len(edges) == 12 and lengths == expected


def test_viewer_document_loads_3dmol_from_the_given_url_only() -> None:
    document = atoms_view.viewer_document("view-1", "components/x/3Dmol-min.js?v=1")
    assert "loadScriptAsync('components/x/3Dmol-min.js?v=1')" in document  # py3Dmol's loader, our URL
    assert not re.search(r"https?://", document), "the viewer must not load anything from outside the server"
    assert '"view-1"' in document and "gcd-atoms" in document and 'data-rendered="no"' in document
    frame = atoms_view.iframe(document)
    assert frame.startswith('<iframe class="gcd-atoms"') and "<script>" not in frame  # escaped into srcdoc


def test_publish_script_cannot_close_its_script_element() -> None:
    atoms = Atoms("W", positions=[[0, 0, 0]], cell=[3, 3, 3], pbc=True)
    atoms.info["note"] = "</script>"  # not published, but symbols and numbers are all that may go out
    script = atoms_view.publish_script("v", atoms, step=4, seq=7)
    assert script.count("</script>") == 1 and script.endswith("</script>")
    state = published(script)
    assert state["atoms"] == state["shown"] == 1 and state["step"] == 4 and state["seq"] == 7
    assert len(state["edges"]) == 12 and state["xyz"].startswith("1\n")
    empty = published(atoms_view.publish_script("v", Atoms(cell=[3, 3, 3], pbc=True), step=1, seq=1))
    assert empty["atoms"] == 0 and empty["xyz"] == "" and len(empty["edges"]) == 12  # the cell still shows


# ------------------------------------------------------------------------------------------------- the view
def test_view_follows_the_run_and_ends_on_the_final_structure(checkpoint: Path, js_present: Path) -> None:
    dashboard = Dashboard(checkpoint)
    dashboard.settings.param.update(steps=12, num_samples=2, seed=1)
    view = dashboard.atoms
    assert view.pane.visible and not view.missing.visible
    assert "gcd-atoms" in view.pane.object and view.view_id in view.pane.object
    frames: list[tuple[int, int]] = []
    dashboard.run.param.watch(
        lambda event: frames.append((dashboard.run.preview_step, len(event.new))) if event.new is not None else None,
        "preview_atoms",
    )

    assert dashboard.run.generate_blocking() == "done"

    assert frames[0][0] == 1 and frames[-1][0] == 12  # decoded at the first frame (and at the push rate) and at the end
    final = dashboard.run.structures[0]
    assert dashboard.run.preview_atoms is final
    state = published(view.caption.object)
    assert state["atoms"] == len(final) and state["step"] == 12
    assert f"{len(final)} atoms" in view.caption_text() and "final structure" in view.caption_text()

    dashboard.live.sample.value = 1  # another sample after the run: its final structure
    assert dashboard.run.preview_atoms is dashboard.run.structures[1]
    assert published(view.caption.object)["atoms"] == len(dashboard.run.structures[1])


def test_view_of_a_cancelled_run_shows_its_last_prediction(checkpoint: Path, js_present: Path) -> None:
    dashboard = Dashboard(checkpoint)
    dashboard.settings.param.update(steps=40, num_samples=1)
    run = dashboard.run
    run.param.watch(lambda event: run.cancel() if event.new == 1 else None, "step")
    assert run.generate_blocking() == "cancelled"
    assert run.preview_atoms is not None and run.preview_step == 1
    assert "step 1 / 40" in dashboard.atoms.caption_text() and "clean prediction" in dashboard.atoms.caption_text()


def test_missing_3dmol_js_says_so_and_the_rest_works(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(atoms_view, "JS_PATH", tmp_path / "absent.js")
    dashboard = Dashboard(checkpoint)
    view = dashboard.atoms
    assert view.missing.visible and "python -m app.fetch_js" in view.missing.object
    assert not view.pane.visible  # no blank box
    dashboard.settings.param.update(steps=10, num_samples=1)
    assert dashboard.run.generate_blocking() == "done"
    assert len(dashboard.results.table.value) == 1
    assert "atoms" in view.caption.object and "<script>" not in view.caption.object
    pn.panel(dashboard).get_root()  # the page renders


# ------------------------------------------------------------------------------------------------ serving
@pytest.mark.skipif(not fetch_js.JS_PATH.is_file(), reason="3Dmol.js is not installed: python -m app.fetch_js")
def test_server_hands_out_3dmol_js_without_static_dirs(checkpoint: Path) -> None:
    urls: list[str] = []

    def page() -> pn.viewable.Viewable:
        urls.append(atoms_view.script_url())  # as a session computes it, relative to the page
        return pn.pane.Markdown("x")

    from app.driver import free_port

    port = free_port()
    server = pn.serve({"main": page}, port=port, address="127.0.0.1", threaded=True, show=False)
    try:
        deadline = time.monotonic() + 30
        while not urls and time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/main", timeout=5).close()
            except OSError:
                time.sleep(0.2)
        url = urllib.request.urljoin(f"http://127.0.0.1:{port}/main", urls[0])
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200 and response.read() == fetch_js.JS_PATH.read_bytes()
        other = url.replace("3Dmol-min.js", "3Dmol.version")  # only the listed file is served
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(other, timeout=10)
    finally:
        server.stop()


def test_installer_refuses_a_tarball_that_does_not_match_the_pin() -> None:
    with pytest.raises(SystemExit, match="does not match"):
        fetch_js._check_integrity(b"not the 3dmol package")


@pytest.mark.skipif(not fetch_js.JS_PATH.is_file(), reason="3Dmol.js is not installed: python -m app.fetch_js")
def test_outside_a_panel_server_the_viewer_carries_3dmol_js_itself() -> None:
    """A notebook has no Panel server and so no component-resource route: the script goes in as a data URL."""
    import base64

    url = atoms_view.script_url()
    prefix = "data:text/javascript;base64,"
    assert url.startswith(prefix)
    assert base64.b64decode(url[len(prefix):]) == fetch_js.JS_PATH.read_bytes()
    assert f"loadScriptAsync('{url}')" in atoms_view.viewer_document("view-1", url)
