"""The quick-start notebooks run from top to bottom (nbclient, a fresh IPython kernel, the repository root as
working directory) without a cell error, within a minute each, and are kept in git without outputs."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("panel")

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 120  # a cell; the whole notebook should take under a minute on one CPU thread
PANEL_MIMETYPE = "application/vnd.holoviews_exec.v0+json"  # how Panel objects render in a notebook


def kernel_manager(tmp_path: Path):
    """A kernel of this interpreter: ipykernel's spec written for ``sys.executable`` into a folder of our own,
    so that neither an installed ``python3`` kernel spec nor its ``python`` on PATH can pick another Python."""
    from ipykernel.kernelspec import write_kernel_spec
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    folder = write_kernel_spec(tmp_path / "kernels" / "gcd-python")
    assert json.loads((Path(folder) / "kernel.json").read_text())["argv"][0] == sys.executable
    specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
    return KernelManager(kernel_name="gcd-python", kernel_spec_manager=specs)


def test_quick_start_notebooks_exist() -> None:
    expected = {"quickstart_crystals.ipynb", "quickstart_carbon.ipynb", "quickstart_gb.ipynb"}
    assert {path.name for path in NOTEBOOKS} >= expected


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_is_saved_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, f"{path.name} has no code"
    dirty = [i for i, cell in enumerate(code) if cell.outputs or cell.execution_count is not None]
    assert not dirty, f"{path.name}: code cells {dirty} hold outputs; clear them before committing"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel inherits it: the timing below is for one thread
    notebook = nbformat.read(path, as_version=4)
    km = kernel_manager(tmp_path)
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        km=km,
        resources={"metadata": {"path": str(REPO)}},  # the working directory of the kernel
        allow_errors=False,  # the first failing cell raises CellExecutionError with its traceback
    )
    started = time.perf_counter()
    try:
        client.execute()
    finally:
        if km.has_kernel:  # nbclient shuts down only kernels it made itself
            km.shutdown_kernel(now=True)
    seconds = time.perf_counter() - started
    print(f"{path.name}: {seconds:.1f} s")  # shown with pytest -s

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    errors = [output for output in outputs if output.output_type == "error"]
    assert not errors, errors
    text = "".join(output.get("text", "") for output in outputs if output.output_type == "stream")
    assert "Traceback" not in text, text
    # the last cell shows dashboard components: a Panel object, rendered inline
    last = [cell for cell in notebook.cells if cell.cell_type == "code"][-1]
    bundles = [output.get("data", {}) for output in last.outputs if output.output_type == "execute_result"]
    assert bundles and PANEL_MIMETYPE in bundles[0] and "text/html" in bundles[0], json.dumps(last.outputs)[:500]
    # inline=True: Bokeh's and Panel's JavaScript come inside the outputs; nothing is loaded from a URL (the
    # bundles themselves mention CDNs, e.g. for MathJax, which only load when a plot asks for them)
    html = "".join(str(output.get("data", {}).get("text/html", "")) for output in outputs)
    assert not re.findall(r"""<(?:script|link)[^>]+(?:src|href)=["']https?://[^"']+""", html)
    loaders = [str(output.get("data", {}).get("application/javascript", "")) for output in outputs]
    assert any("inline_js" in js for js in loaders), "Panel's loader is not among the outputs"
    for js in loaders:
        fetched = re.findall(r"""(?:js_urls|css_urls|js_modules)\s*=\s*\[\s*["'](https?://[^"']+)""", js)
        assert not fetched, f"the loader fetches {fetched}: pn.extension(..., inline=True) missing?"

    # ... showing the notebook's run: the results table's rows (crystals), the drawn target's curve (carbon), the
    # E_gb plot, drawn only once the run has rows (GB)
    shown = {"quickstart_crystals": "229 Im-3m", "quickstart_carbon": "target: drawn",
             "quickstart_gb": "E_gb against [n]: W Sigma5"}.get(path.stem)
    if shown:
        assert shown in bundles[0]["text/html"], f"the last cell's output does not show {shown!r}"

    files = {"quickstart_crystals": "bcc.cif", "quickstart_carbon": "a-C.cif", "quickstart_gb": "gb_cu.extxyz"}
    name = files.get(path.stem)
    if name:
        import ase.io

        written = REPO / "runs" / "quickstart" / name
        assert written.is_file() and written.stat().st_mtime > time.time() - seconds - 60
        assert len(ase.io.read(written)) > 0
