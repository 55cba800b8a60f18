"""Load test of the dashboard: several browser sessions generate at the same time against one server.

    python benchmarks/app_load.py --sessions 5 --steps 30 | tee benchmarks/results/app_load_cpu.txt

Serves ``app/main.py`` on 127.0.0.1 only (the checkpoint the app loads: ``$GCD_CHECKPOINT`` or its default) and
opens one headless Chromium (``/usr/bin/chromium`` or ``$GCD_CHROMIUM``, through Playwright) with a separate
browser context, hence a separate server session, per user. Each session asks for its own sample count
(1, 2, 3, ...), seed and step count (``--steps`` + its index); all press Generate within a fraction of a second.
The script waits for every run to end (bounded by ``--timeout``), checks that each page shows its own run (its
step count on the counter, its sample count in the results table) and that no page logged an error or fetched
anything from outside the server, and prints per session the time from its click to its first frame and to its
results, measured in the browser, beside the server's own figures.

The server samples one network step at a time for all sessions together (``app.state.STEP_LOCK``), so the
sessions share the machine's sampling throughput: the total time grows with the number of sessions.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from app.driver import DashboardPage, DashboardServer, launch_chromium, why_no_browser  # noqa: E402


@dataclass
class Session:
    index: int
    seed: int
    samples: int
    steps: int
    tab: DashboardPage | None = None
    mark: int = 0  # where this run begins in the page's status log
    clicked: float = 0.0  # wall clock (s) just before Generate was pressed
    status: str = ""
    first_frame_s: float | None = None  # click -> first step on this page's counter
    total_s: float | None = None  # click -> final step on the counter
    results_s: float | None = None  # click -> the results table filled (seen by polling)
    server_first_frame_s: float | None = None
    server_elapsed_s: float | None = None
    rows: int = 0
    atoms: str = ""
    problems: str = ""


def run(args: argparse.Namespace) -> int:
    from playwright.sync_api import sync_playwright

    sessions = [Session(i, args.seed + i, 1 + i % 8, args.steps + i) for i in range(args.sessions)]
    deadline = time.monotonic() + args.timeout
    server_args = ["--num-threads", str(args.server_threads)] if args.server_threads else []
    started = time.perf_counter()
    with DashboardServer(extra_args=server_args) as server, sync_playwright() as playwright:
        server_up = time.perf_counter() - started
        browser = launch_chromium(playwright)
        opened = time.perf_counter()
        for session in sessions:  # configure every page first, so that the clicks come together
            tab = DashboardPage.open(browser, server.url, viewport=args.viewport)
            tab.set_slider("Sampler steps", session.steps)
            tab.set_slider("Samples", session.samples)
            tab.set_seed(session.seed)
            session.tab = tab
        open_s = time.perf_counter() - opened
        cpu_before = cpu_split(server.process.pid)
        wall_before = time.perf_counter()
        for session in sessions:  # press them all first; only then wait for the pages to show their runs
            session.mark = session.tab.page.evaluate("() => window.gcdStatusLog.length")
            session.clicked = time.time()
            session.tab.button("Generate").click()
        click_spread = sessions[-1].clicked - sessions[0].clicked

        pending = list(sessions)
        while pending and time.monotonic() < deadline:
            for session in list(pending):
                state = session.tab.status()
                if state.status in ("done", "cancelled", "error"):
                    session.status = state.status
                    if state.status == "done":
                        with contextlib.suppress(TimeoutError):  # reported by the check below
                            session.tab.wait_table(session.samples, timeout=max(deadline - time.monotonic(), 1))
                    session.results_s = time.time() - session.clicked
                    pending.remove(session)
            time.sleep(0.2)
        for session in pending:
            session.status = f"unfinished after {args.timeout:.0f} s"
            session.tab.button("Cancel").click()
        cpu_after = cpu_split(server.process.pid)
        runs_wall = time.perf_counter() - wall_before
        cpu = (cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1], runs_wall)

        for session in sessions:
            collect(session)
        browser.close()
    total = time.perf_counter() - started
    report(args, sessions, server_up, open_s, click_spread, total, cpu)
    return 0 if all(not s.problems for s in sessions) else 1


def _descendants(root: int) -> list[int]:
    """Processes below ``root`` (Linux /proc; [] elsewhere)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time (s) the processes have used so far (Linux /proc; 0 elsewhere)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, ValueError, IndexError):
            continue
    return total / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.0


def cpu_split(server_pid: int) -> tuple[float, float]:
    """CPU seconds used so far by the server and by everything else this script started (the browser)."""
    others = [pid for pid in _descendants(os.getpid()) if pid != server_pid]
    return cpu_seconds([server_pid]), cpu_seconds(others)


def collect(session: Session) -> None:
    tab = session.tab
    times = tab.log(session.mark)
    steps = [step for _, step, _ in times]
    first = next((t for t, step, _ in times if step >= 1), None)
    last = next((t for t, step, _ in times if step == session.steps), None)
    session.first_frame_s = first - session.clicked if first is not None else None
    session.total_s = last - session.clicked if last is not None else None
    text = tab.step_text()
    if match := re.search(r"first frame after ([\d.]+) s", text):
        session.server_first_frame_s = float(match.group(1))
    if match := re.search(r"· ([\d.]+) s$", text.strip()):
        session.server_elapsed_s = float(match.group(1))
    samples = tab.table_column("sample")
    session.rows = len(samples)
    session.atoms = ",".join(tab.table_column("atoms"))
    problems = []
    if session.status != "done":
        problems.append(f"status {session.status}")
    state = tab.status()
    if (state.step, state.num_steps) != (session.steps, session.steps):
        problems.append(f"counter shows step {state.step} / {state.num_steps}, not this session's {session.steps}")
    if samples != [str(i) for i in range(session.samples)]:
        problems.append(f"table has {session.rows} rows, not this session's {session.samples}")
    if steps != sorted(steps):
        problems.append(f"counter went backwards: {steps}")
    if tab.console_errors:
        problems.append(f"console errors: {tab.console_errors[:3]}")
    if tab.blocked:
        problems.append(f"fetched from outside the server: {tab.blocked[:3]}")
    session.problems = "; ".join(problems)


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def report(args, sessions: list[Session], server_up: float, open_s: float, spread: float, total: float, cpu) -> None:
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    print(f"# app load test: {len(sessions)} concurrent browser sessions, one panel serve on 127.0.0.1")
    print(f"date {time.strftime('%Y-%m-%d %H:%M')}; {platform.platform()}; {os.cpu_count()} CPUs; "
          f"load average before/after {args.load_before} / {' '.join(f'{v:.2f}' for v in load)}")
    print(f"server: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')}; checkpoint: "
          f"{os.environ.get('GCD_CHECKPOINT') or 'app default'}; one headless Chromium (software WebGL) on the "
          f"same machine, pages {args.viewport['width']}x{args.viewport['height']}")
    print(f"server up (first session built) {server_up:.1f} s; {len(sessions)} pages opened and set up in "
          f"{open_s:.1f} s; the {len(sessions)} Generate clicks spread over {spread:.2f} s")
    print()
    header = ("session", "seed", "samples", "steps", "first frame (s)", "server 1st frame (s)", "all steps (s)",
              "results (s)", "server run (s)", "rows", "atoms per sample", "check")
    rows = [header]
    for s in sessions:
        rows.append((str(s.index), str(s.seed), str(s.samples), str(s.steps), fmt(s.first_frame_s),
                     fmt(s.server_first_frame_s), fmt(s.total_s), fmt(s.results_s), fmt(s.server_elapsed_s),
                     str(s.rows), s.atoms, s.problems or "ok"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for i, row in enumerate(rows):
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    firsts = [s.first_frame_s for s in sessions if s.first_frame_s is not None]
    totals = [s.results_s for s in sessions if s.results_s is not None]
    print()
    if firsts and totals:
        print(f"first frame: median {statistics.median(firsts):.2f} s, max {max(firsts):.2f} s; "
              f"results: median {statistics.median(totals):.2f} s, max {max(totals):.2f} s; "
              f"sampler steps x samples in all: {sum(s.steps * s.samples for s in sessions)}; wall {total:.1f} s")
    server_cpu, browser_cpu, runs_wall = cpu
    print(f"from the clicks to the last results: {runs_wall:.1f} s wall; CPU time in it: server {server_cpu:.1f} s, "
          f"browser (all pages, drawing the viewers in software WebGL) {browser_cpu:.1f} s, on {os.cpu_count()} CPUs")
    print("all sessions ok" if all(not s.problems for s in sessions) else "SOME SESSIONS FAILED (see check)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30, help="sampler steps of session 0; session i runs steps + i")
    parser.add_argument("--seed", type=int, default=100, help="seed of session 0; session i uses seed + i")
    parser.add_argument("--timeout", type=float, default=600, help="seconds for all runs to end, after the clicks")
    parser.add_argument("--server-threads", type=int, default=0, help="panel serve --num-threads (0: default)")
    parser.add_argument(
        "--viewport", default="1280x900", help="browser page size WxH; the browser draws every page's viewers"
    )
    args = parser.parse_args(argv)
    width, _, height = args.viewport.partition("x")
    args.viewport = {"width": int(width), "height": int(height)}
    if args.sessions < 1 or not 10 <= args.steps <= 1000 - args.sessions:
        parser.error("need at least one session and 10 <= steps <= 1000 - sessions")
    reason = why_no_browser()
    if reason:
        raise SystemExit(reason)
    args.load_before = " ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    raise SystemExit(run(args))


if __name__ == "__main__":
    main()
