"""Screenshots of the dashboard after a short generation in each mode: ``python scripts/screenshots.py``.

Serves ``app/main.py`` on loopback, runs one generation per mode in headless Chromium (``/usr/bin/chromium`` or
``$GCD_CHROMIUM``, through Playwright) and saves the whole page, reduced to a 256-colour palette to stay small:

- ``crystals`` (the page's default model: ``$GCD_CHECKPOINT`` or the shipped crystal model)
  -> ``docs/screenshot_crystals.png``
- ``carbon`` (``?model=carbon``, aimed at the 3.5 g/cm3 example spectrum, then the FEFF10 check of three sites of
  each sample) -> ``docs/screenshot_carbon.png``
- ``gb`` (``?model=gb``: the shipped GB model ``assets/gb_sigma5.pt``, or ``--gb-checkpoint``; when neither exists,
  a tiny untrained GB model built on the spot, which needs LAMMPS and makes junk in the GB slab)
  -> ``docs/screenshot_gb.png``

Needs 3Dmol.js (``python -m app.fetch_js``) for the atoms viewer. ``--modes gb`` takes one mode only.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from app.driver import (  # noqa: E402
    DashboardPage,
    DashboardServer,
    build_tiny_gb_model,
    launch_chromium,
    why_no_browser,
)
from app.fetch_js import JS_PATH  # noqa: E402
from app.state import shipped_model_path  # noqa: E402


@dataclass(frozen=True)
class Mode:
    """One page to photograph: its URL query, the run's settings and (carbon) the example target spectrum."""

    query: str
    steps: int
    samples: int
    target: str | None = None
    feff_sites: int = 0  # carbon: also run the FEFF10 check on this many sites of each sample


MODES = {
    "crystals": Mode("", steps=100, samples=4),
    "carbon": Mode("?model=carbon", steps=30, samples=2, target="a-C_3.5gcc_d0.0_18", feff_sites=3),
    "gb": Mode("?model=gb", steps=50, samples=4),
}


def save_png(png: bytes, path: Path, colours: int) -> int:
    """Write ``png`` reduced to a palette of ``colours`` (0 keeps it as it is); returns the file size."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    if colours:
        image = image.quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)
    return path.stat().st_size


def gb_checkpoint(given: Path | None, scratch: Path) -> tuple[Path, str]:
    """The GB model to photograph and a note on where it came from."""
    if given is not None:
        return given, f"given: {given}"
    shipped = shipped_model_path("gb")
    if shipped.is_file():
        return shipped, f"shipped: {shipped}"
    print(f"{shipped} is missing: building a tiny untrained GB model for the GB screenshot (about 10 s)")
    return build_tiny_gb_model(scratch), "a tiny untrained GB model (3-sample GB search, 2 training steps)"


def photograph(browser: Any, url: str, mode: Mode, seed: int, width: int, timeout: float) -> tuple[bytes, list[str]]:
    """Open the page, run one generation, wait until every view shows its end; the page's PNG and its problems."""
    tab = DashboardPage.open(browser, url + mode.query, viewport={"width": width, "height": 900})
    try:
        if mode.target:
            tab.page.locator("select").filter(has_text="none (unconditional)").select_option(label=mode.target)
            tab.page.get_by_text(f"Target: example {mode.target}").wait_for()
        tab.set_slider("Sampler steps", mode.steps)
        tab.set_slider("Samples", mode.samples)
        tab.set_seed(seed)
        tab.generate()
        status = tab.wait_status(("done", "error", "cancelled"), timeout=timeout)
        if status.status != "done":
            raise SystemExit(f"the {url + mode.query} generation ended {status.status}")
        tab.wait_table(mode.samples, timeout=timeout)
        frame = tab.page.frame_locator("iframe.gcd-atoms")
        frame.locator(f"body[data-rendered='yes'][data-step='{status.num_steps}']").wait_for()
        if mode.query == "?model=gb":
            from app.views import GB_PLOT_NAME

            deadline = time.monotonic() + 30
            while not tab.plot_points(GB_PLOT_NAME) and time.monotonic() < deadline:  # none if nothing relaxed
                time.sleep(0.2)
        if mode.target:
            tab.page.get_by_role("heading", name="Compare").wait_for()
        if mode.feff_sites:  # the FEFF10 check of a few sites of every sample (about 10 s a site)
            tab.set_slider("Sites per structure", mode.feff_sites)
            tab.button("Check with FEFF10").click()
            sites = mode.feff_sites * mode.samples
            tab.page.get_by_text(f"FEFF: {sites} / {sites} sites, done").wait_for(timeout=timeout * 1000)
        tab.page.evaluate("() => window.scrollTo(0, 0)")
        tab.page.wait_for_timeout(2000)  # the last volume, atoms and plot renders settle
        png = tab.page.screenshot(full_page=True, animations="disabled")
        return png, tab.console_errors + [f"blocked: {url}" for url in tab.blocked]
    finally:
        tab.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", choices=sorted(MODES), default=list(MODES))
    parser.add_argument("--out-dir", type=Path, default=REPO / "docs", help="writes screenshot_<mode>.png here")
    parser.add_argument("--steps", type=int, help="sampler steps for every mode (default: each mode's own)")
    parser.add_argument("--samples", type=int, help="samples for every mode (default: each mode's own)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gb-checkpoint", type=Path, help="the GB model (default: the shipped one, else a tiny one)")
    parser.add_argument("--width", type=int, default=1280, help="browser viewport width (px)")
    parser.add_argument("--colours", type=int, default=256, help="palette size of the PNG (0: full colour)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds one generation may take")
    args = parser.parse_args(argv)

    reason = why_no_browser()
    if reason:
        raise SystemExit(reason)
    if not JS_PATH.is_file():
        raise SystemExit("3Dmol.js is not installed (python -m app.fetch_js); the atoms viewer would be empty")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="gcd-screenshots-") as scratch:
        env, notes = {}, {}
        if "gb" in args.modes:
            checkpoint, notes["gb"] = gb_checkpoint(args.gb_checkpoint, Path(scratch))
            env["GCD_CHECKPOINT_GB"] = str(checkpoint)
        env["GCD_FEFF_CACHE"] = str(Path(scratch) / "feff_cache")  # FEFF runs for real, not from a user's cache
        with DashboardServer(env=env) as server, sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            for name in args.modes:
                mode = MODES[name]
                mode = dataclasses.replace(mode, steps=args.steps or mode.steps, samples=args.samples or mode.samples)
                started = time.perf_counter()
                png, problems = photograph(browser, server.url, mode, args.seed, args.width, args.timeout)
                path = args.out_dir / f"screenshot_{name}.png"
                size = save_png(png, path, args.colours)
                elapsed = time.perf_counter() - started
                note = f"; model {notes[name]}" if name in notes else ""
                print(f"{path} ({size // 1024} KiB, {mode.steps} steps, {mode.samples} samples) after {elapsed:.0f} s"
                      f"{note}; page problems: {problems or 'none'}")
            browser.close()


if __name__ == "__main__":
    main()
