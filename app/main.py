"""The dashboard page: ``panel serve app/main.py`` (checkpoint from ``$GCD_CHECKPOINT``, default the shipped one).

Bokeh runs this file once per browser session, so every session builds its own state here; the model is
loaded once per process by :func:`app.state.load_model`. The atoms viewer's 3Dmol.js (``python -m app.fetch_js``)
is served by Panel's component-resource route (:mod:`app.atoms_view`), so no ``--static-dirs`` is needed.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `panel serve app/main.py` runs this file as a script: make `import app` work from any working directory
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import panel as pn  # noqa: E402

from app.state import SHIPPED_MODELS  # noqa: E402
from app.views import TITLE, Dashboard, session_dispatch  # noqa: E402

pn.extension("vtk", "tabulator")


def requested_model() -> str | None:
    """The shipped model named by the page's ``?model=`` argument (crystals, carbon or gb; each may be pointed
    elsewhere with ``$GCD_CHECKPOINT_<NAME>``); None for the default. Only these names are taken: a URL must not
    make the server open arbitrary files."""
    args = pn.state.session_args if pn.state.curdoc is not None else {}
    values = args.get("model") or []
    name = values[0].decode(errors="replace") if values else None
    return name if name in SHIPPED_MODELS else None


def create_app(checkpoint: str | Path | None = None) -> Dashboard:
    """Build one session's dashboard (a Panel viewable)."""
    dashboard = Dashboard(checkpoint or requested_model(), dispatch=session_dispatch())
    if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
        pn.state.on_session_destroyed(lambda context: dashboard.on_session_destroyed())
    return dashboard


if __name__.startswith("bokeh"):
    create_app().servable(title=TITLE)
