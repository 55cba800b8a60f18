"""Execute a notebook and open its outputs in headless Chromium with the network blocked.

A check of what ``pn.extension(..., inline=True)`` promises, without JupyterLab: the executed outputs (Panel's
loader scripts and the rendered HTML, in order) are pasted into one static page, as nbconvert or a notebook viewer
would show them, and opened with every request outside the page refused. It reports the Bokeh roots and canvases
drawn, console errors and refused requests, and exits 1 on any error or request. A live kernel (widgets talking
back) is not part of it.

    python scripts/render_notebook_offline.py notebooks/quickstart_carbon.ipynb --png /tmp/carbon.png
"""

from __future__ import annotations

import argparse
import html
import sys
import tempfile
from pathlib import Path

import nbclient
import nbformat

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from app.driver import launch_chromium  # noqa: E402


def execute(path: Path, timeout: int = 300) -> nbformat.NotebookNode:
    """The notebook run from the repository root in a kernel of this interpreter."""
    from ipykernel.kernelspec import write_kernel_spec
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    notebook = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as tmp:
        write_kernel_spec(Path(tmp) / "gcd-python")
        km = KernelManager(kernel_name="gcd-python", kernel_spec_manager=KernelSpecManager(kernel_dirs=[tmp]))
        client = nbclient.NotebookClient(notebook, timeout=timeout, km=km, resources={"metadata": {"path": str(REPO)}})
        try:
            client.execute()
        finally:
            if km.has_kernel:
                km.shutdown_kernel(now=True)
    return notebook


def static_page(notebook: nbformat.NotebookNode) -> str:
    """One HTML page of the notebook's outputs in order: scripts run, HTML shown, text as <pre>."""
    parts = ["<!doctype html><html><head><meta charset='utf-8'></head><body>"]
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "application/javascript" in data:
                parts.append(f"<script type='text/javascript'>{data['application/javascript']}</script>")
            elif "text/html" in data:
                parts.append(data["text/html"])
            elif output.get("output_type") == "stream":
                parts.append(f"<pre>{html.escape(output['text'])}</pre>")
    return "\n".join([*parts, "</body></html>"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--html", type=Path, help="keep the static page here")
    parser.add_argument("--png", type=Path, help="a full-page screenshot")
    args = parser.parse_args()

    page_path = args.html or Path(tempfile.mkdtemp()) / "notebook.html"
    page_path.write_text(static_page(execute(args.notebook)))

    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    refused: list[str] = []

    def route(request_route) -> None:
        url = request_route.request.url
        if url.startswith(("file:", "data:", "blob:", "about:")):
            request_route.continue_()
        else:
            refused.append(url)
            request_route.abort()

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.route("**/*", route)
        page = context.new_page()
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(page_path.resolve().as_uri())
        page.wait_for_timeout(8000)  # BokehJS builds every output's views
        roots = page.evaluate("() => window.Bokeh ? Bokeh.index.roots.length : 0")
        canvases = page.locator("canvas").count()
        if args.png:
            page.screenshot(path=str(args.png), full_page=True)
        browser.close()
    print(f"{args.notebook}: {roots} Bokeh roots, {canvases} canvases, {len(errors)} console errors, "
          f"{len(refused)} refused requests")
    for line in errors + refused:
        print("  ", line)
    sys.exit(1 if errors or refused or roots == 0 else 0)


if __name__ == "__main__":
    main()
