"""Run a quick-start notebook in a live JupyterLab, offline, and report what its outputs drew.

Opens JupyterLab in headless Chromium (Debian's ``/usr/bin/chromium``, or ``$GCD_CHROMIUM``; never
``playwright install``), opens the notebook, runs all cells (Run > Run All Cells) and waits until the kernel is
idle. Every browser request to a host other than localhost / 127.0.0.1 is aborted and recorded (the check is
"offline"), as are console errors and uncaught page errors. It counts what rendered (Bokeh roots and elements,
Panel layouts and widgets, canvases, Tabulator tables and rows, py3Dmol viewers) and takes full-page screenshots.
Then, with the kernel still live, it uses the dashboard components in the last output: where the notebook shows
the target drawing plot (the carbon notebook) it drags one of its points and checks that the kernel redraws the
target through it; it moves the **Samples** slider one step, presses **Generate** and watches the buttons, any
step counter / progress bar, the results table and the plots until the run ends. The kernel session it started
is shut down at the end; the notebook file is never saved (it refuses a server whose JupyterLab autosaves, which
would write the outputs into the notebook).

Start JupyterLab from the repository root with autosave off, e.g.::

    mkdir -p /tmp/gcd-jlab/settings/@jupyterlab/docmanager-extension
    echo '{"autosave": false}' > /tmp/gcd-jlab/settings/@jupyterlab/docmanager-extension/plugin.jupyterlab-settings
    OMP_NUM_THREADS=1 jupyter lab --no-browser --port 8899 --IdentityProvider.token=gcdtest \\
        --ServerApp.root_dir="$PWD" --LabApp.user_settings_dir=/tmp/gcd-jlab/settings &

(add ``--allow-root`` as root), then::

    python scripts/jupyterlab_check.py --url http://127.0.0.1:8899 --token gcdtest \\
        --notebook notebooks/quickstart_crystals.ipynb --out runs/jupyterlab_check

It prints a summary, writes ``report.json`` and the screenshots to ``--out/<notebook name>/``, and exits 1 on a
console error, a blocked request, a cell that did not run cleanly, no Bokeh output, or an interaction that failed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from app.driver import launch_chromium  # noqa: E402

LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
VIEWPORT = {"width": 1400, "height": 1000}
MAX_SCREENSHOT_HEIGHT = 16000  # px; a taller notebook is cut off at the bottom
DRAWING_PLOT_NAME = "gcd-target-drawing"  # app.views.DRAWING_PLOT_NAME (not imported: app.views needs torch)
STEP_TEXT = re.compile(r"step \d+ / \d+")
# JupyterLab's notifications (the "official Jupyter news" question) sit on top of the outputs in screenshots
HIDE_TOASTS_CSS = ".Toastify { display: none !important; }"

# What rendered, counted with Playwright's CSS engine (it looks inside Bokeh's open shadow roots)
RENDER_SELECTORS = {
    "bokeh_elements": "[class*='bk-']",
    "panel_layouts": "[class*='bk-panel-models-layout-']",
    "panel_widgets": "[class*='bk-panel-models-widgets-'], .bk-input-group, .bk-btn",
    "buttons": ".bk-btn",
    "sliders": ".noUi-target",
    "canvases": "canvas",
    "tabulator_tables": ".tabulator",
    "tabulator_rows": ".tabulator-row",
    "py3dmol_viewers": "[id^='3dmolviewer'], .viewer_3Dmoljs",
}

# Per code cell: the execution prompt, the outputs' MIME types (JupyterLab's data-mime-type; the pyviz
# extension's outputs carry none) and the text of stderr / error outputs
CELLS_JS = r"""() => Array.from(document.querySelectorAll(".jp-Notebook .jp-CodeCell")).map((cell) => ({
  prompt: (cell.querySelector(".jp-InputArea-prompt")?.textContent ?? "").trim(),
  outputs: Array.from(cell.querySelectorAll(".jp-OutputArea-output")).map((out) =>
    out.dataset.mimeType ?? (out.querySelector(".bk-root, [class*='bk-']") || out.shadowRoot ? "bokeh" : "other")),
  stderr: Array.from(cell.querySelectorAll(
      ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")).map((out) => out.textContent),
}))"""

BOKEH_JS = r"""() => {
  if (!window.Bokeh || !Bokeh.index) return {version: null, roots: 0, figures: []};
  const figures = [];
  for (const view of Bokeh.index.query((v) => v.frame !== undefined && v.canvas_view !== undefined)) {
    const lines = view.model.renderers.filter((r) => r.type === "GlyphRenderer");
    figures.push({name: view.model.name, title: view.model.title?.text ?? "", glyph_renderers: lines.length});
  }
  return {version: Bokeh.version, roots: Bokeh.index.roots.length, figures};
}"""

# The drawing plot's draggable points and its drawn curve (the line labelled "target (drawn)"), in data
# coordinates and page pixels
DRAWING_JS = r"""(name) => {
  const plot = Bokeh.index.query_one((v) => v.frame !== undefined && v.canvas_view !== undefined &&
                                             v.model.name === name);
  if (!plot) return null;
  const tool = plot.model.toolbar.tools.find((t) => t.type === "PointDrawTool");
  const points = tool.renderers[0], glyph = points.glyph, data = points.data_source.data;
  const box = plot.canvas_view.el.getBoundingClientRect();
  const {x_scale, y_scale} = plot.frame;
  const xs = Array.from(data[glyph.x.field]), ys = Array.from(data[glyph.y.field]);
  let curve = null;
  for (const legend of plot.model.center.filter((m) => m.type === "Legend"))
    for (const item of legend.items)
      if ((item.label?.value ?? item.label) === "target (drawn)") curve = item.renderers[0];
  const cdata = curve ? curve.data_source.data : null;
  return {
    title: plot.model.title.text,
    points: xs.map((x, i) => [x, ys[i], box.left + x_scale.compute(x), box.top + y_scale.compute(ys[i])]),
    curve: cdata ? [Array.from(cdata[curve.glyph.x.field]), Array.from(cdata[curve.glyph.y.field])] : null,
  };
}"""

# How tall the page must be to show the whole notebook (JupyterLab scrolls the notebook inside the page): the
# notebook scrolled to its top, the bottom of its last cell plus room for the status bar
NOTEBOOK_HEIGHT_JS = r"""() => {
  const scroller = document.querySelector(".jp-NotebookPanel .jp-WindowedPanel-outer");
  const cells = document.querySelectorAll(".jp-NotebookPanel .jp-Cell");
  if (!scroller || !cells.length) return 0;
  scroller.scrollTop = 0;
  return Math.ceil(cells[cells.length - 1].getBoundingClientRect().bottom) + 60;
}"""

SCROLL_TO_PLOT_JS = r"""(name) => {
  const plot = Bokeh.index.query_one((v) => v.canvas_view !== undefined && v.model.name === name);
  plot?.canvas_view.el.scrollIntoView({block: "center"});
}"""


@dataclass
class Report:
    notebook: str
    jupyterlab: str = ""
    server: str = ""
    kernel: str = ""
    bokeh: str | None = None
    run_all_s: float = 0.0
    cells: list[dict[str, Any]] = field(default_factory=list)
    rendered: dict[str, int] = field(default_factory=dict)
    figures: list[dict[str, Any]] = field(default_factory=list)
    notifications: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    console_warnings: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    generate: dict[str, Any] | None = None
    drag: dict[str, Any] | None = None
    screenshots: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class Server:
    """The Jupyter server's REST API, authenticated with the token."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def request(self, path: str, method: str = "GET") -> Any:
        request = urllib.request.Request(f"{self.url}{path}", method=method)
        request.add_header("Authorization", f"token {self.token}")
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def sessions(self) -> set[str]:
        return {session["id"] for session in self.request("/api/sessions")}

    def last_modified(self, notebook: str) -> str:
        return self.request(f"/api/contents/{urllib.parse.quote(notebook)}?content=0")["last_modified"]

    def autosaves(self) -> bool:
        plugin = self.request("/lab/api/settings/@jupyterlab/docmanager-extension:plugin")
        default = plugin["schema"]["properties"]["autosave"].get("default", True)
        return bool(plugin["settings"].get("autosave", default))


class Check:
    """One browser tab on JupyterLab with one notebook, and what it logged and tried to fetch."""

    def __init__(self, page: Any, report: Report, out: Path) -> None:
        self.page = page
        self.report = report
        self.out = out
        self.phase = "load"  # what the check is doing, noted with every error and blocked request
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: report.console_errors.append(f"[{self.phase}] page error: {error}"))
        page.on("websocket", self._on_websocket)

    # ------------------------------------------------------------------------------------------ logging
    def _on_console(self, message: Any) -> None:
        if message.type == "error":
            self.report.console_errors.append(f"[{self.phase}] {message.text}")
        elif message.type == "warning":
            self.report.console_warnings.append(f"[{self.phase}] {message.text}")

    def _on_websocket(self, socket: Any) -> None:  # route() does not see websockets: record foreign ones
        if not is_local(socket.url):
            self.report.blocked.append(f"[{self.phase}] websocket (not blocked): {socket.url}")

    def route(self, route: Any) -> None:
        url = route.request.url
        if url.startswith(("data:", "blob:", "about:")) or is_local(url):
            route.continue_()
        else:
            self.report.blocked.append(f"[{self.phase}] {url}")
            route.abort()

    # ------------------------------------------------------------------------------------------- kernel
    def kernel_status(self) -> str:
        """The status bar's kernel status, e.g. "Idle", "Busy", "Initializing" ("" before it shows)."""
        texts = self.page.locator(".jp-StatusBar-TextItem", has_text=" | ").all_inner_texts()
        return texts[0].rsplit(" | ", 1)[-1].strip() if texts else ""

    def wait_kernel_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.kernel_status() != "Idle":
            if time.monotonic() > deadline:
                raise TimeoutError(f"the kernel is {self.kernel_status()!r}, not idle, after {timeout:.0f} s")
            time.sleep(0.25)

    def run_all(self, timeout: float) -> float:
        """Run > Run All Cells; returns the seconds until the kernel is idle with no cell queued, for 2 s."""
        self.page.get_by_role("menuitem", name="Run", exact=True).click()
        self.page.locator("li[data-command='runmenu:run-all']").click()
        started = time.monotonic()
        quiet_since: float | None = None
        while True:
            now = time.monotonic()
            prompts = self.page.locator(".jp-CodeCell .jp-InputArea-prompt").all_inner_texts()
            busy = self.kernel_status() != "Idle" or any("*" in p for p in prompts)
            if busy:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= 2.0:
                return quiet_since - started
            if now - started > timeout:
                raise TimeoutError(f"cells still running after {timeout:.0f} s: {prompts}")
            time.sleep(0.25)

    # ---------------------------------------------------------------------------------------- rendering
    def collect(self) -> None:
        report = self.report
        report.cells = self.page.evaluate(CELLS_JS)
        report.rendered = {key: self.page.locator(sel).count() for key, sel in RENDER_SELECTORS.items()}
        bokeh = self.page.evaluate(BOKEH_JS)
        report.bokeh = bokeh["version"]
        report.rendered["bokeh_roots"] = bokeh["roots"]
        report.figures = bokeh["figures"]
        report.notifications = [" ".join(t.split()) for t in self.page.locator(".Toastify__toast").all_inner_texts()]
        for index, cell in enumerate(report.cells):
            if not re.fullmatch(r"\[\d+\]:", cell["prompt"]):
                report.problems.append(f"code cell {index} did not run (prompt {cell['prompt']!r})")
            for text in cell["stderr"]:
                if "Traceback" in text or "Error" in text:
                    report.problems.append(f"code cell {index} failed: {text.strip()[-300:]}")
        if report.rendered["bokeh_roots"] == 0 and report.rendered["bokeh_elements"] == 0:
            report.problems.append("no Bokeh / Panel output rendered")

    def screenshot(self, name: str) -> None:
        """The whole notebook: the viewport made as tall as the notebook's scrolled content, then restored."""
        self.page.add_style_tag(content=HIDE_TOASTS_CSS)
        for _ in range(3):  # cells drawn for the first time may change the height: measure again
            height = self.page.evaluate(NOTEBOOK_HEIGHT_JS)
            tall = min(max(VIEWPORT["height"], height), MAX_SCREENSHOT_HEIGHT)
            if tall == self.page.viewport_size["height"]:
                break
            self.page.set_viewport_size({"width": VIEWPORT["width"], "height": tall})
            self.page.wait_for_timeout(2500)  # Bokeh re-lays out its roots for the new size
        path = self.out / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.page.set_viewport_size(VIEWPORT)
        self.page.wait_for_timeout(1000)
        self.report.screenshots.append(str(path))

    def screenshot_last_output(self, name: str) -> None:
        path = self.out / f"{name}.png"
        self.last_output().screenshot(path=str(path))
        self.report.screenshots.append(str(path))

    # --------------------------------------------------------------------------------------- dashboard
    def last_output(self) -> Any:
        """The output area of the notebook's last code cell (the dashboard components)."""
        return self.page.locator(".jp-CodeCell").last.locator(".jp-OutputArea")

    def dashboard_state(self) -> dict[str, Any]:
        """What a user sees of a run in the last output: buttons, step counter, progress bar, table rows."""
        output = self.last_output()
        generate = output.locator(".bk-btn", has_text="Generate")
        cancel = output.locator(".bk-btn", has_text="Cancel")
        steps = output.get_by_text(STEP_TEXT).all_inner_texts()
        progress = output.locator("progress")
        return {
            "generate_disabled": generate.first.is_disabled() if generate.count() else None,
            "cancel_disabled": cancel.first.is_disabled() if cancel.count() else None,
            "step_text": steps[0].strip() if steps else None,
            "progress": progress.first.get_attribute("value") if progress.count() else None,
            "table_rows": output.locator(".tabulator-row").count(),
            "first_row": (output.locator(".tabulator-row").first.inner_text().replace("\n", " ").strip()
                          if output.locator(".tabulator-row").count() else ""),
            "figures": {f["title"] or f["name"]: f["glyph_renderers"] for f in self.page.evaluate(BOKEH_JS)["figures"]},
        }

    def bump_samples(self) -> int | None:
        """Move the last output's Samples slider one step right with the keyboard; returns its new value."""
        handle = self.last_output().locator(".bk-input-group", has_text="Samples").get_by_role("slider")
        if handle.count() == 0:
            return None
        handle.first.focus()
        before = handle.first.get_attribute("aria-valuenow")
        handle.first.press("ArrowRight")
        self.page.wait_for_timeout(1000)  # the new value reaches the kernel
        after = handle.first.get_attribute("aria-valuenow")
        return int(float(after)) if after is not None and after != before else None

    def generate(self, timeout: float) -> dict[str, Any]:
        """Press Generate in the last output and record every change of what the run shows until it ends."""
        result: dict[str, Any] = {"pressed": False}
        button = self.last_output().locator(".bk-btn", has_text="Generate")
        if button.count() == 0:
            result["note"] = "no Generate button in the last output"
            return result
        result["samples_set_to"] = self.bump_samples()
        before = self.dashboard_state()
        result["before"] = before
        button.first.click()
        result["pressed"] = True
        started = time.monotonic()
        timeline: list[tuple[float, dict[str, Any]]] = []
        last: dict[str, Any] | None = None
        seen_running = False
        while time.monotonic() - started < timeout:
            state = self.dashboard_state()
            if state != last:
                timeline.append((round(time.monotonic() - started, 2), state))
                last = state
            seen_running = seen_running or state["generate_disabled"] is True
            if seen_running and state["generate_disabled"] is False:
                self.page.wait_for_timeout(2000)  # Tabulator and plots draw after the status changes
                timeline.append((round(time.monotonic() - started, 2), self.dashboard_state()))
                break
            time.sleep(0.1)
        result["timeline"] = timeline
        result["seconds"] = round(time.monotonic() - started, 1)
        result["ran"] = seen_running
        after = timeline[-1][1] if timeline else before
        result["finished"] = seen_running and after["generate_disabled"] is False
        expected_rows = result["samples_set_to"]
        result["table_updated"] = (
            after["table_rows"] == expected_rows if expected_rows is not None and before["table_rows"] else None
        )
        result["figures_lost"] = sorted(set(before["figures"]) - set(after["figures"]))
        if not result["finished"]:
            self.report.problems.append(f"Generate: no run started and ended within {timeout:.0f} s")
        elif result["table_updated"] is False:
            self.report.problems.append(f"Generate: the table shows {after['table_rows']} rows, not {expected_rows}")
        if result["finished"] and result["figures_lost"]:
            self.report.problems.append(f"Generate: figures not drawn again after the run: {result['figures_lost']}")
        return result

    def drag_point(self, energy: float = 305.0, pixels: float = 50.0, timeout: float = 30.0) -> dict[str, Any] | None:
        """Drag the drawing plot's point nearest ``energy`` (eV) up by ``pixels`` and wait for the kernel's
        redrawn target curve; None when the notebook shows no drawing plot."""
        if not self.page.evaluate("() => !!window.Bokeh"):
            return None
        self.page.evaluate(SCROLL_TO_PLOT_JS, DRAWING_PLOT_NAME)
        self.page.wait_for_timeout(1000)
        before = self.page.evaluate(DRAWING_JS, DRAWING_PLOT_NAME)
        if before is None:
            return None
        index = min(range(len(before["points"])), key=lambda i: abs(before["points"][i][0] - energy))
        point_energy, intensity, x, y = before["points"][index]
        self.page.mouse.move(x, y)
        self.page.mouse.down()
        self.page.mouse.move(x, y - pixels, steps=8)
        self.page.mouse.up()
        started = time.monotonic()
        after = before
        while time.monotonic() - started < timeout:
            after = self.page.evaluate(DRAWING_JS, DRAWING_PLOT_NAME) or before
            if after["curve"] != before["curve"]:
                break
            time.sleep(0.2)
        redrawn = after["curve"] is not None and after["curve"] != before["curve"]
        # the drawn target at each control point's energy, before and after: what the drag changed
        changed = {
            round(e, 1): [round(curve_at(before, e), 4), round(curve_at(after, e), 4)]
            for e, *_ in before["points"]
            if abs(curve_at(before, e) - curve_at(after, e)) > 1e-4
        } if redrawn else {}
        target = self.last_output().get_by_text(re.compile(r"^Target: ")).all_inner_texts()
        result = {
            "point": round(point_energy, 2),
            "point_y": [round(intensity, 4), round(after["points"][index][1], 4)],
            "redrawn": redrawn,
            "redrawn_s": round(time.monotonic() - started, 1),
            "curve_changed_at": changed,
            "settings_target_text": target[0].strip() if target else None,
        }
        if not redrawn:
            self.report.problems.append(f"drag: the drawn target did not change within {timeout:.0f} s")
        return result


def curve_at(state: dict[str, Any], energy: float) -> float:
    """The drawing plot's drawn target curve at the grid energy nearest ``energy`` (nan without a curve)."""
    if not state["curve"]:
        return float("nan")
    return min(zip(*state["curve"], strict=True), key=lambda p: abs(p[0] - energy))[1]


def is_local(url: str) -> bool:
    return (urllib.parse.urlsplit(url).hostname or "") in LOCAL_HOSTS


def check(args: argparse.Namespace) -> Report:
    server = Server(args.url, args.token)
    notebook = args.notebook.strip("/")
    report = Report(notebook=notebook)
    report.server = server.request("/api")["version"]
    if server.autosaves() and not args.allow_autosave:
        raise SystemExit(
            "this JupyterLab autosaves: it would write the outputs into the notebook. Start it with a user settings "
            "dir where autosave is off (see this script's docstring), or pass --allow-autosave"
        )
    modified = server.last_modified(notebook)
    sessions = server.sessions()
    out = args.out / Path(notebook).stem
    out.mkdir(parents=True, exist_ok=True)

    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        context = browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        tab = Check(page, report, out)
        context.route("**/*", tab.route)
        try:
            query = urllib.parse.urlencode({"token": args.token})
            page.goto(f"{server.url}/lab/tree/{urllib.parse.quote(notebook)}?reset&{query}")
            page.wait_for_selector(".jp-NotebookPanel .jp-Notebook", timeout=120_000)
            report.jupyterlab = page.evaluate(
                "() => JSON.parse(document.getElementById('jupyter-config-data').textContent).appVersion"
            )
            tab.wait_kernel_idle(args.timeout)
            report.kernel = page.locator(".jp-StatusBar-TextItem", has_text=" | ").first.inner_text()
            tab.phase = "run all"
            report.run_all_s = round(tab.run_all(args.timeout), 1)
            page.wait_for_timeout(5000)  # BokehJS builds the outputs' views
            tab.collect()
            tab.screenshot("1-run-all")
            tab.screenshot_last_output("1-last-output")
            if args.drag:  # first: the notebook says "drag the red points and press Generate again"
                tab.phase = "drag"
                report.drag = tab.drag_point()
                if report.drag is not None:
                    tab.screenshot_last_output("2-last-output-after-drag")
            if args.generate:
                tab.phase = "generate"
                report.generate = tab.generate(args.generate_timeout)
                tab.screenshot_last_output("3-last-output-after-generate")
            tab.phase = "end"
            tab.screenshot("4-final")
        finally:
            context.close()
            browser.close()
            for session in server.sessions() - sessions:  # the kernel this check started
                server.request(f"/api/sessions/{session}", method="DELETE")
    if server.last_modified(notebook) != modified:
        report.problems.append(f"{notebook} was saved during the check (autosave?): clear its outputs")
    if report.console_errors:
        report.problems.append(f"{len(report.console_errors)} console errors")
    if report.blocked:
        report.problems.append(f"{len(report.blocked)} requests to other hosts")
    (out / "report.json").write_text(json.dumps(asdict(report), indent=1))
    return report


def summary(report: Report) -> str:
    lines = [
        f"{report.notebook}: JupyterLab {report.jupyterlab} (server {report.server}), BokehJS {report.bokeh}, "
        f"kernel {report.kernel!r}; Run All took {report.run_all_s} s",
        "  rendered: " + ", ".join(f"{key} {value}" for key, value in report.rendered.items()),
        "  figures: " + "; ".join(f"{f['title'] or f['name'] or '?'!r} ({f['glyph_renderers']} glyphs)"
                                  for f in report.figures),
        f"  console errors: {len(report.console_errors)}, warnings: {len(report.console_warnings)}, "
        f"blocked requests: {len(report.blocked)}",
        *(f"    error: {text[:300]}" for text in report.console_errors),
        *(f"    blocked: {url}" for url in report.blocked),
        *(f"  notification: {text}" for text in report.notifications),
    ]
    if report.generate is not None:
        g = report.generate
        lines.append(f"  Generate: pressed {g['pressed']}, ran {g.get('ran')}, finished {g.get('finished')} in "
                     f"{g.get('seconds')} s, samples set to {g.get('samples_set_to')}, table updated "
                     f"{g.get('table_updated')}, figures lost {g.get('figures_lost')}")
        for moment, state in g.get("timeline", []):
            lines.append(f"    t={moment:6.2f}s {state}")
    if report.drag is not None:
        lines.append(f"  drag: {report.drag}")
    lines += [f"  screenshot: {path}" for path in report.screenshots]
    lines += [f"  PROBLEM: {text}" for text in report.problems] or ["  no problems"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8899", help="JupyterLab's base URL")
    parser.add_argument("--token", required=True, help="the Jupyter server's token")
    parser.add_argument("--notebook", required=True, help="path relative to the server's root directory")
    parser.add_argument("--out", type=Path, default=Path("runs/jupyterlab_check"), help="screenshots and report")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for the kernel and Run All")
    parser.add_argument("--generate", action=argparse.BooleanOptionalAction, default=True,
                        help="press Generate in the last output (where there is one)")
    parser.add_argument("--generate-timeout", type=float, default=120.0)
    parser.add_argument("--drag", action=argparse.BooleanOptionalAction, default=True,
                        help="drag a point of the target drawing plot (where there is one)")
    parser.add_argument("--allow-autosave", action="store_true",
                        help="run even though JupyterLab autosaves (it may write outputs into the notebook)")
    args = parser.parse_args()
    report = check(args)
    print(summary(report))
    sys.exit(1 if report.problems else 0)


if __name__ == "__main__":
    main()
