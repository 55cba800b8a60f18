"""Screenshot of the dashboard after a short generation: ``python scripts/screenshots.py``.

Serves ``app/main.py`` on loopback (the checkpoint the app loads: ``$GCD_CHECKPOINT`` or its default), runs one
generation in headless Chromium (``/usr/bin/chromium`` or ``$GCD_CHROMIUM``, through Playwright) and saves the
whole page as ``docs/screenshots/crystal.png``, reduced to a 256-colour palette to stay small. Needs 3Dmol.js
(``python -m app.fetch_js``) for the atoms viewer.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from app.driver import DashboardPage, DashboardServer, launch_chromium, why_no_browser  # noqa: E402
from app.fetch_js import JS_PATH  # noqa: E402


def save_png(png: bytes, path: Path, colours: int) -> int:
    """Write ``png`` reduced to a palette of ``colours`` (0 keeps it as it is); returns the file size."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    if colours:
        image = image.quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)
    return path.stat().st_size


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots" / "crystal.png")
    parser.add_argument("--steps", type=int, default=100, help="sampler steps (10-1000)")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=1280, help="browser viewport width (px)")
    parser.add_argument("--colours", type=int, default=256, help="palette size of the PNG (0: full colour)")
    args = parser.parse_args(argv)

    reason = why_no_browser()
    if reason:
        raise SystemExit(reason)
    if not JS_PATH.is_file():
        raise SystemExit("3Dmol.js is not installed (python -m app.fetch_js); the atoms viewer would be empty")
    from playwright.sync_api import sync_playwright

    started = time.perf_counter()
    with DashboardServer() as server, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        tab = DashboardPage.open(browser, server.url, viewport={"width": args.width, "height": 900})
        tab.set_slider("Sampler steps", args.steps)
        tab.set_slider("Samples", args.samples)
        tab.set_seed(args.seed)
        tab.generate()
        status = tab.wait_status(("done", "error", "cancelled"), timeout=600)
        if status.status != "done":
            raise SystemExit(f"the generation ended {status.status}")
        tab.wait_table(args.samples)
        frame = tab.page.frame_locator("iframe.gcd-atoms")
        frame.locator(f"body[data-rendered='yes'][data-step='{status.num_steps}']").wait_for()
        tab.page.wait_for_timeout(2000)  # the last volume and atoms renders settle
        png = tab.page.screenshot(full_page=True, animations="disabled")
        problems = tab.console_errors + [f"blocked: {url}" for url in tab.blocked]
        browser.close()
    size = save_png(png, args.out, args.colours)
    elapsed = time.perf_counter() - started
    print(f"{args.out} ({size // 1024} KiB) after {elapsed:.0f} s; page problems: {problems or 'none'}")


if __name__ == "__main__":
    main()
