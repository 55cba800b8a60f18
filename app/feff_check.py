"""Dashboard state for the FEFF10 check of generated carbon (no Panel in it): the forward model's spectrum of
sampled sites of each chosen structure beside FEFF10's full multiple scattering spectrum of the same sites.

FEFF takes seconds to a minute a site, prints its logs through the process's file descriptors and starts worker
processes of its own, so a server must not run it in a thread of its own process: :class:`FeffCheck` runs it in
one child process per check (its own process group, so Cancel stops FEFF's workers too), reads the site spectra
back through a queue in a thread, and hands every update to ``dispatch`` as :class:`app.state.GenerationRun` does.
Results are cached on disk (:func:`feff_cache_dir`), so a repeated check of the same sites returns at once; one
check runs at a time per server, others wait for it.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import param
from ase import Atoms

from app.feff_worker import run_sites
from app.state import STATUSES, Dispatch, call_now, load_forward_model, lock_slot
from gcd_core.errors import GCDError
from gcd_core.guidance import relative_error
from gcd_core.physics.feff import FeffSettings, chosen_sites, feff10_missing
from gcd_core.physics.spectra import normalise, pi_star_intensity, sigma_star_maximum

log = logging.getLogger(__name__)

CACHE_ENV = "GCD_FEFF_CACHE"
DEFAULT_SITES = 4
MAX_SITES = 32
FEFF_LOCK = threading.Lock()  # one check at a time per server: each is minutes of CPU
POLL_S = 0.1  # how often the reading thread looks at the queue, the child and Cancel
FEFF_COLUMNS = ("sample", "sites", "FEFF π* (×1e-3)", "model π* (×1e-3)", "FEFF σ* max (eV)", "model σ* max (eV)",
                "model vs FEFF")


def feff_cache_dir() -> Path:
    """Where FEFF results are cached: ``$GCD_FEFF_CACHE``, else ``gcd/feff`` in the user's cache directory."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gcd" / "feff"


def _stop(process: multiprocessing.process.BaseProcess) -> None:
    """End the child and its FEFF workers (its process group where it made one)."""
    if process.pid is not None and hasattr(os, "killpg"):
        try:
            if os.getpgid(process.pid) == process.pid:
                os.killpg(process.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    process.terminate()
    process.join(5)
    if process.is_alive():
        process.kill()
        process.join(5)


def _cleared() -> dict[str, Any]:
    """A check's results and progress before its first site (fresh containers each time)."""
    return dict(waiting=False, done_sites=0, feff_spectra={}, model_spectra={}, rows=[], failures=[], error="",
                elapsed_s=0.0)


class FeffCheck(param.Parameterized):
    """One session's FEFF10 check of chosen structures, running in a child process; cancellable."""

    sites_per_structure = param.Integer(default=DEFAULT_SITES, bounds=(1, MAX_SITES),
                                        doc="Carbon sites drawn at random from each structure (seed 0).")
    status = param.Selector(default="idle", objects=list(STATUSES))
    waiting = param.Boolean(default=False, doc="Queued behind another session's check.")
    done_sites = param.Integer(default=0, bounds=(0, None))
    total_sites = param.Integer(default=0, bounds=(0, None))
    sites = param.Dict(default={}, doc="sample -> its site indices, for the samples of the current (or last) check.")
    feff_spectra = param.Dict(default={}, doc="sample -> FEFF's mean spectrum over the sites computed so far.")
    model_spectra = param.Dict(default={}, doc="sample -> the forward model's mean spectrum over the same sites.")
    rows = param.List(default=[], doc="Table rows, one per sample with at least one FEFF site.")
    failures = param.List(default=[], doc="Sites FEFF could not do, each with its reason (the check goes on).")
    error = param.String(default="")
    elapsed_s = param.Number(default=0.0)

    def __init__(
        self,
        dispatch: Dispatch | None = None,
        settings: FeffSettings | None = None,
        cache_dir: str | Path | None = None,
        **params: Any,
    ) -> None:
        super().__init__(**params)
        self.settings = settings or FeffSettings()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else feff_cache_dir()
        self._dispatch: Dispatch = dispatch or call_now
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._token = 0  # the current check's number: updates a cancelled older check still sends are dropped

    @property
    def running(self) -> bool:
        """Whether the current check is running (an older, cancelled one may still be stopping)."""
        return self.status == "running"

    def start(self, structures: Sequence[Atoms], samples: Sequence[int]) -> bool:
        """Check ``samples`` of ``structures`` in the background; False when nothing started (the error says why)."""
        if self.running:
            raise GCDError("a FEFF check is already running in this session; cancel it first")
        try:
            plan = self._plan(structures, samples)
        except GCDError as exc:
            self.param.update(status="error", error=str(exc))
            return False
        self._cancel = threading.Event()  # a fresh one: a cancelled check's thread may still be stopping
        self._token += 1
        self.param.update(**_cleared(), status="running", total_sites=len(plan.jobs), sites=plan.sites())
        self._thread = threading.Thread(
            target=self._work, args=(plan, self._token, self._cancel), name="gcd-feff", daemon=True
        )
        self._thread.start()
        return True

    def cancel(self) -> None:
        """Stop the check; the FEFF run in progress is killed, the sites finished so far stay."""
        self._cancel.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the last check's thread to end."""
        thread = self._thread
        if thread is not None and thread.ident is not None:
            thread.join(timeout)

    def reset(self) -> None:
        """Forget the last check (its structures are gone); cancels one that runs, without waiting for it."""
        self.cancel()
        self._token += 1
        self.param.update(**_cleared(), status="idle", total_sites=0, sites={})

    # ------------------------------------------------------------------------------------------ worker
    def _plan(self, structures: Sequence[Atoms], samples: Sequence[int]) -> _Plan:
        """The sites to compute and the forward model's spectrum of each sample's sites; refuses what FEFF cannot
        do, by name."""
        missing = feff10_missing()
        if missing:
            raise GCDError(missing)
        if not samples:
            raise GCDError("no structure to check: generate structures first")
        forward = load_forward_model("cpu")
        plan = _Plan([], {})
        for sample in samples:
            if not 0 <= sample < len(structures):
                raise GCDError(f"sample {sample} does not exist (the run holds {len(structures)})")
            atoms = structures[sample]
            if not len(atoms):
                raise GCDError(f"sample {sample} holds no atoms: there is no site to check")
            chosen = chosen_sites(atoms, self.sites_per_structure, seed=0)
            plan.model_sites[sample] = dict(zip(chosen.tolist(), forward.site_spectra(atoms)[chosen], strict=True))
            plan.jobs.extend((sample, atoms, int(site)) for site in chosen)
        return plan

    def _work(self, plan: _Plan, token: int, cancel: threading.Event) -> None:
        started = time.perf_counter()

        def publish(**updates: Any) -> None:
            def apply() -> None:
                if token == self._token:  # a reset or a newer check makes this one's news stale
                    self.param.update(**updates)

            self._dispatch(apply)

        try:
            with lock_slot(FEFF_LOCK, cancel, on_wait=lambda: publish(waiting=True)) as granted:
                if not granted:
                    status, error = "cancelled", ""
                else:
                    publish(waiting=False)
                    status, error = self._run_child(plan, cancel, publish, started)
        except Exception as exc:  # a bug, but the page must say so and stay up
            log.exception("FEFF check failed")
            status, error = "error", f"unexpected error in the FEFF check: {type(exc).__name__}: {exc}"
        publish(status=status, error=error, waiting=False, elapsed_s=time.perf_counter() - started)

    def _run_child(
        self, plan: _Plan, cancel: threading.Event, publish: Callable[..., None], started: float
    ) -> tuple[str, str]:
        """Run the plan's jobs in a child process, publishing each site as it comes; (final status, error)."""
        context = multiprocessing.get_context("spawn")  # never fork a threaded server
        results = context.Queue()
        process = context.Process(
            target=run_sites, args=(plan.jobs, self.settings, self.cache_dir, results), name="gcd-feff", daemon=True
        )
        process.start()
        per_sample: dict[int, dict[int, np.ndarray]] = {}  # sample -> site -> FEFF's spectrum
        failures: list[str] = []
        try:
            while True:
                if cancel.is_set():
                    return "cancelled", ""
                try:
                    message = results.get(timeout=POLL_S)
                except queue.Empty:
                    if not process.is_alive() and results.empty():
                        return "error", f"the FEFF process ended unexpectedly (exit code {process.exitcode})"
                    continue
                if message[0] == "done":
                    return "done", ""
                if message[0] == "error":
                    return "error", f"FEFF check stopped: {message[1]}"
                kind, sample, site, value = message
                if kind == "failed":
                    failures.append(f"sample {sample}, {value}")
                else:
                    per_sample.setdefault(sample, {})[site] = value
                publish(**plan.updates(per_sample, failures), elapsed_s=time.perf_counter() - started)
        finally:
            _stop(process)
            results.close()


@dataclass
class _Plan:
    """One check's work: (sample, structure, site) jobs, and per sample the forward model's spectrum of each of its
    sites (site -> spectrum)."""

    jobs: list[tuple[int, Atoms, int]]
    model_sites: dict[int, dict[int, np.ndarray]]

    def sites(self) -> dict[int, list[int]]:
        """sample -> its site indices."""
        return {sample: list(spectra) for sample, spectra in self.model_sites.items()}

    def updates(self, per_sample: dict[int, dict[int, np.ndarray]], failures: list[str]) -> dict[str, Any]:
        """For each sample with finished sites, FEFF's and the forward model's mean spectrum over those same sites
        and its table row; the failures; the count of sites done (finished or failed)."""
        feff_spectra, model_spectra, rows = {}, {}, []
        for sample, finished in per_sample.items():
            feff = feff_spectra[sample] = normalise(np.mean(list(finished.values()), axis=0))
            model = model_spectra[sample] = normalise(np.mean([self.model_sites[sample][i] for i in finished], axis=0))
            values = (
                f"{len(finished)} / {len(self.model_sites[sample])}",
                round(1000 * pi_star_intensity(feff), 1), round(1000 * pi_star_intensity(model), 1),
                round(sigma_star_maximum(feff), 1), round(sigma_star_maximum(model), 1),
                round(relative_error(model, feff), 3),
            )
            rows.append({"sample": sample, **dict(zip(FEFF_COLUMNS[1:], values, strict=True))})
        done = sum(len(finished) for finished in per_sample.values()) + len(failures)
        return {"feff_spectra": feff_spectra, "model_spectra": model_spectra, "rows": rows, "failures": list(failures),
                "done_sites": done}
