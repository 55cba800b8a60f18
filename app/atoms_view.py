"""The atoms viewer: the shown sample's decoded atoms and its unit cell, drawn by py3Dmol (3Dmol.js).

3Dmol.js comes from this server, never from a CDN: ``python -m app.fetch_js`` installs it into
``app/static/vendor/`` and Panel's component-resource route (``/components/<module>/<class>/<attribute>/<path>``,
on every ``panel serve`` and ``pn.serve`` server) hands out exactly the file listed on :class:`ThreeDmolJS`, so
``panel serve app/main.py`` needs no ``--static-dirs``.

The view is a whole HTML document in an ``<iframe srcdoc=...>`` (Panel renders panes inside a shadow DOM,
where 3Dmol's script cannot find a bare div), made once per session. Each structure after that goes to it as a
small script that Panel's HTML pane runs on the page (:func:`publish_script`): the iframe keeps its WebGL
context and the camera the user has turned, however many frames stream through.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import time
import uuid

import numpy as np
import panel as pn
import param
from ase import Atoms

from app.fetch_js import JS_PATH, VERSION
from app.state import GenerationRun

log = logging.getLogger(__name__)

MAX_VIEW_ATOMS = 2000  # larger structures show a slab of this many atoms (the table still counts them all)
VIEW_INTERVAL_S = 1.0  # while a run streams, redraw at most this often (~0.2 s each in software WebGL)
VIEW_HEIGHT = 460
BACKGROUND = "#20222b"  # the volume viewer's background
PLACEHOLDER = (
    "<p>Press <b>Generate</b>: the atoms decoded from the shown sample's clean prediction appear here with the "
    "unit cell, first as noise, then as a crystal.</p>"
)
MISSING_JS_TEXT = (
    "**The atoms viewer is not available**: 3Dmol.js is not installed on this server. Install it with "
    "`python -m app.fetch_js` (it fetches the npm package `3dmol` into `app/static/vendor/`) and reload the page. "
    "Everything else works without it."
)


class ThreeDmolJS:
    """Lists the one file Panel's component-resource route may serve for the viewer (see the module doc)."""

    _js = ["static/vendor/3Dmol-min.js"]  # relative to this module's folder; JS_PATH is the same file


def script_url() -> str:
    """URL of the local 3Dmol.js: under ``panel serve``, the server's component-resource route relative to the page
    (so a ``--prefix`` or a proxy path keeps working); elsewhere (a notebook: no Panel server, so no such route)
    the file itself as a ``data:`` URL, which keeps the viewer offline at the cost of ~0.7 MB in the output."""
    if not _served_by_panel():
        return f"data:text/javascript;base64,{base64.b64encode(JS_PATH.read_bytes()).decode('ascii')}"
    from panel.io.resources import component_resource_path

    url = component_resource_path(ThreeDmolJS, "_js", ThreeDmolJS._js[0])
    return f"{url}?v={VERSION}"  # a versioned URL: the browser keeps the file instead of asking on every frame


def _served_by_panel() -> bool:
    document = pn.state.curdoc
    return document is not None and document.session_context is not None


def extended_xyz(atoms: Atoms, max_atoms: int = MAX_VIEW_ATOMS) -> tuple[str, int]:
    """Extended XYZ text of (at most ``max_atoms`` of) ``atoms`` with its lattice; returns (text, atoms shown).

    Above the cap the viewer shows the slab of atoms nearest the cell's a = 0 face rather than random ones.
    """
    positions = atoms.get_positions()
    symbols = atoms.get_chemical_symbols()
    order = np.arange(len(atoms))
    if len(atoms) > max_atoms:
        order = np.argsort(atoms.get_scaled_positions(wrap=True)[:, 0], kind="stable")[:max_atoms]
    lattice = " ".join(f"{v:.6f}" for v in np.asarray(atoms.cell).reshape(-1))
    lines = [str(len(order)), f'Lattice="{lattice}" Properties=species:S:1:pos:R:3 pbc="T T T"']
    lines += [f"{symbols[i]} {positions[i, 0]:.5f} {positions[i, 1]:.5f} {positions[i, 2]:.5f}" for i in order]
    return "\n".join(lines) + "\n", len(order)


def cell_edges(cell: np.ndarray) -> list[tuple[list[float], list[float]]]:
    """The 12 edges of the parallelepiped spanned by the rows of ``cell`` (A), as (start, end) pairs."""
    corners = {(i, j, k): np.array([i, j, k], dtype=float) @ cell for i in (0, 1) for j in (0, 1) for k in (0, 1)}
    edges = []
    for (i, j, k), start in corners.items():
        for axis in range(3):
            index = [i, j, k]
            if index[axis] == 0:
                index[axis] = 1
                edges.append((start.tolist(), corners[tuple(index)].tolist()))
    return edges


def viewer_document(view_id: str, js_url: str, height: int = VIEW_HEIGHT) -> str:
    """The viewer's standalone HTML document: an empty py3Dmol view (3Dmol.js loaded from ``js_url``) that draws
    whatever :func:`publish_script` hands it, keeping one WebGL context and the user's camera across frames.

    ``<body>`` reports what it shows for tests: ``data-rendered`` ("no", "loaded" once 3Dmol.js runs, "yes" once
    it has drawn, or "failed" when 3Dmol.js cannot be loaded, with a message in place of the view),
    ``data-atoms``, ``data-shown``, ``data-step`` and ``data-draws`` (how many structures it has drawn).
    """
    import py3Dmol

    view = py3Dmol.view(width="100%", height=f"{height}px", js=js_url)
    view.setBackgroundColor(BACKGROUND)
    body = view.write_html()  # py3Dmol's own markup: the viewer's div and the script that loads 3Dmol.js
    viewer = f"viewer_{view.uniqueid}"  # the global py3Dmol's script creates the viewer in
    failed_text = html.escape("Could not load 3Dmol.js from this server; run `python -m app.fetch_js` and reload.")
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><style>
html, body {{ margin: 0; padding: 0; overflow: hidden; background: {BACKGROUND}; }}
#gcd-failed {{ display: none; color: #eee; font: 14px sans-serif; padding: 1em; }}
</style></head>
<body data-rendered="no" data-atoms="" data-shown="" data-step="" data-draws="0">
<div id="gcd-failed">{failed_text}</div>
<script>
window.addEventListener("error", function (event) {{
  if (event.target && event.target.tagName === "SCRIPT") {{
    document.body.dataset.rendered = "failed";
    document.getElementById("gcd-failed").style.display = "block";
  }}
}}, true);
</script>
{body}
<script>
(function () {{
  var VIEW_ID = {json.dumps(view_id)}, ready = false, drawn = null, framed = null, draws = 0;
  function draw() {{
    var store = window.parent.gcdAtoms || {{}}, state = store[VIEW_ID], viewer = window[{json.dumps(viewer)}];
    if (!ready || !state || !viewer || state.seq === drawn) return;
    drawn = state.seq;
    viewer.removeAllModels();
    viewer.removeAllShapes();
    if (state.xyz) {{
      viewer.addModel(state.xyz, "xyz", {{assignBonds: false}});
      viewer.setStyle({{}}, {{sphere: {{scale: 0.3, colorscheme: "Jmol"}}}});
    }}
    state.edges.forEach(function (edge) {{
      viewer.addCylinder({{start: {{x: edge[0][0], y: edge[0][1], z: edge[0][2]}},
                          end: {{x: edge[1][0], y: edge[1][1], z: edge[1][2]}},
                          radius: 0.04, color: "#d8d8d8", fromCap: 1, toCap: 1}});
    }});
    if (framed !== state.cell) {{  // a new cell: frame it; otherwise keep the user's camera
      if (framed === null) {{ viewer.rotate(-20, "x"); viewer.rotate(25, "y"); }}
      viewer.zoomTo();
      framed = state.cell;
    }}
    viewer.render();
    var data = document.body.dataset;
    data.atoms = state.atoms; data.shown = state.shown; data.step = state.step; data.draws = ++draws;
    data.rendered = "yes";
  }}
  function onPublish(event) {{ if (event.detail === VIEW_ID) draw(); }}
  window.parent.addEventListener("gcd-atoms", onPublish);
  window.addEventListener("pagehide", function () {{ window.parent.removeEventListener("gcd-atoms", onPublish); }});
  $3Dmolpromise.then(function () {{
    ready = true;
    if (document.body.dataset.rendered === "no") document.body.dataset.rendered = "loaded";
    draw();
  }});
}})();
</script>
</body></html>"""


def publish_script(view_id: str, atoms: Atoms, step: int, seq: int, max_atoms: int = MAX_VIEW_ATOMS) -> str:
    """A ``<script>`` for the page (Panel's HTML pane runs scripts) that hands one structure to the viewer
    document ``view_id``: it stores the structure on the page's window and signals the viewer's iframe."""
    xyz, shown = extended_xyz(atoms, max_atoms) if len(atoms) else ("", 0)
    cell = np.asarray(atoms.cell)
    state = {
        "seq": seq,
        "xyz": xyz,
        "edges": cell_edges(cell),
        "cell": " ".join(f"{v:.4f}" for v in cell.reshape(-1)),
        "atoms": len(atoms),
        "shown": shown,
        "step": step,
    }
    payload = json.dumps(state).replace("</", "<\\/")  # nothing in the data may close the script element
    key = json.dumps(view_id)
    return (
        "<script>(function () { var store = window.gcdAtoms = window.gcdAtoms || {}; "
        f"store[{key}] = {payload}; "
        f'window.dispatchEvent(new CustomEvent("gcd-atoms", {{detail: {key}}})); }})();</script>'
    )


def iframe(document: str, height: int = VIEW_HEIGHT) -> str:
    return (
        f'<iframe class="gcd-atoms" title="atoms viewer" srcdoc="{html.escape(document, quote=True)}" '
        f'style="width: 100%; height: {height}px; border: 0; display: block;"></iframe>'
    )


class AtomsView(pn.viewable.Viewer):
    """The decoded atoms of the shown sample with the unit cell: redrawn while frames stream and at the end.

    The viewer document is built once per session; every structure after that goes to it as a small script in
    the caption pane, so the browser keeps one WebGL context and the camera the user has turned.
    """

    def __init__(self, run: GenerationRun, **params) -> None:
        super().__init__(**params)
        self.run = run
        self.view_id = f"gcd-atoms-{uuid.uuid4().hex}"
        available = self.js_available()
        self.missing = pn.pane.Alert(MISSING_JS_TEXT, alert_type="warning", visible=not available)
        self.pane = pn.pane.HTML(
            iframe(viewer_document(self.view_id, script_url())) if available else "",
            height=VIEW_HEIGHT,
            sizing_mode="stretch_width",
            styles={"background": BACKGROUND},
            visible=available,  # without 3Dmol.js: the alert and the caption, not a blank box
        )
        self.caption = pn.pane.HTML(PLACEHOLDER, sizing_mode="stretch_width")
        self._last_draw = -float("inf")
        self._drawn: tuple[int, int, int] | None = None  # (id of the atoms, step, sample) last sent
        self._seq = 0
        run.param.watch(self._update, ["preview_atoms", "status"])
        self._update()  # a view made after a run (a notebook cell) shows its structure

    @staticmethod
    def js_available() -> bool:
        return JS_PATH.is_file()

    def caption_text(self) -> str:
        """What the caption says about the structure on show (plain text)."""
        run, atoms = self.run, self.run.preview_atoms
        if atoms is None:
            return ""
        shown = min(len(atoms), MAX_VIEW_ATOMS)
        text = f"sample {run.preview_sample} · step {run.preview_step} / {run.num_steps} · {len(atoms)} atoms"
        if shown < len(atoms):
            text += f" (showing the {shown} nearest the a = 0 face)"
        final = run.status == "done" and run.preview_step == run.num_steps
        if final and atoms.info.get("relaxed"):  # a grain boundary after LAMMPS
            return text + f" · final structure, relaxed, E_gb {float(atoms.info['e_gb']):.3f} J/m²"
        return text + (" · final structure" if final else " · decoded from the clean prediction")

    def _update(self, *events: param.parameterized.Event) -> None:
        run = self.run
        atoms = run.preview_atoms
        if atoms is None:
            if run.status == "running":
                self._drawn = None
                self.caption.object = "<p>waiting for the first frame…</p>"
            return
        key = (id(atoms), run.preview_step, run.preview_sample)
        now = time.monotonic()
        if key == self._drawn:
            return
        if run.status == "running" and now - self._last_draw < VIEW_INTERVAL_S:
            return  # a later frame (the final one at the latest) is drawn instead
        self._last_draw = now
        self._drawn = key
        self._seq += 1
        caption = f"<p class='gcd-atoms-caption'>{html.escape(self.caption_text())}</p>"
        if not self.js_available():  # removed while the server runs: say so rather than draw nothing
            self.missing.visible, self.pane.visible = True, False
            self.caption.object = caption
            return
        try:
            script = publish_script(self.view_id, atoms, run.preview_step, self._seq)
        except Exception as exc:  # the viewer must never take the page down
            log.exception("preparing the atoms view failed")
            script = f"<p style='color: #c00'>The atoms view failed: {html.escape(str(exc))}</p>"
        self.caption.object = caption + script

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column("### Atoms", self.missing, self.pane, self.caption, sizing_mode="stretch_width")
