"""The child process of a dashboard FEFF check (:mod:`app.feff_check`). A module of its own, importing only
``gcd_core.physics.feff``, so that the spawned process starts in a fraction of a second instead of loading torch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ase import Atoms

from gcd_core.errors import GCDError
from gcd_core.physics.feff import FeffSettings, feff_site_spectrum


def run_sites(jobs: list[tuple[int, Atoms, int]], settings: FeffSettings, cache_dir: Path, results: Any) -> None:
    """The child process: each job's site spectrum onto ``results`` as ("site", sample, site, spectrum), a site FEFF
    cannot do as ("failed", sample, site, reason) and on to the next, then ("done",); anything else that goes wrong
    as ("error", message), which ends it."""
    if hasattr(os, "setsid"):
        os.setsid()  # its own process group: a cancel signals FEFF's stage workers with it
    try:
        for sample, atoms, site in jobs:
            try:
                results.put(("site", sample, site, feff_site_spectrum(atoms, site, settings, cache_dir)))
            except GCDError as exc:  # this site (e.g. overlapping atoms near it); the others may still work
                results.put(("failed", sample, site, str(exc)))
    except Exception as exc:
        results.put(("error", f"unexpected FEFF failure: {type(exc).__name__}: {exc}"))
        return
    results.put(("done",))
