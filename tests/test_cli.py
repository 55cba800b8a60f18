"""The ``gcd`` command end to end on a tiny CPU model: train, resume, inspect, generate, errors; io."""

from __future__ import annotations

import contextlib
import csv
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch

from gcd_core.cli import main
from gcd_core.data.amorphous import DEFAULT_ROOT
from gcd_core.data.bicrystal import gb_density
from gcd_core.data.crystals import crystal
from gcd_core.errors import GCDError
from gcd_core.io import read_structures, write_structures
from gcd_core.model import read_checkpoint

TINY = [
    "--crystal",
    "bcc",
    "--supercell",
    "2",
    "--voxel-size",
    "0.79125",
    "--base-channels",
    "8",
    "--batch-size",
    "2",
]
CELL = (6.33, 6.33, 6.33)  # bcc W 2x2x2: an 8^3 grid, a multiple of the net's stride 4
# --merge-distance keeps an untrained model's samples small: ASE's CIF reader is quadratic in the atom count
GEN = ["--steps", "3", "--num-samples", "2", "--merge-distance", "2.0"]


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    # A tiny net gains nothing from threads, and on a busy 2-core machine two OpenMP threads per process can
    # be many times slower than one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    # runs after conftest's autouse fixture (which asks for 2 threads), so it wins
    with _one_thread():
        yield


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "model"
    with _one_thread():
        assert main(["train", str(out), *TINY, "--steps", "5"]) == 0
    return out


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A class-conditional model trained from a structure file whose frames carry info["kind"]."""
    root = tmp_path_factory.mktemp("labelled")
    frames = []
    for kind, shift in (("left", 0.0), ("right", 0.4)):
        atoms = crystal("bcc", 2, translation=(shift, 0, 0))
        atoms.info["kind"] = kind
        frames.append(atoms)
    data = root / "data.extxyz"
    ase.io.write(data, frames, format="extxyz")
    out = root / "model"
    argv = [
        "train",
        str(out),
        "--structures",
        str(data),
        "--labels-from-info",
        "kind",
        "--voxel-size",
        "0.79125",
        "--base-channels",
        "8",
        "--batch-size",
        "2",
        "--steps",
        "2",
    ]
    with _one_thread():
        assert main(argv) == 0
    return out


def _error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """Run a command that must fail; returns its single error line."""
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code != 0
    assert len(lines) == 1, err
    assert lines[0].startswith("gcd: error: ")
    assert "Traceback" not in err
    return lines[0]


# ----------------------------------------------------------------------------------------------- train
def test_train_writes_model_and_metadata(trained: Path) -> None:
    for name in ("checkpoint.pt", "model.pt", "model.json", "loss_log.csv"):
        assert (trained / name).is_file(), name
    meta = json.loads((trained / "model.json").read_text())
    assert meta["command"].startswith(f"gcd train {trained} --crystal bcc")
    assert meta["steps"] == 5
    assert np.isfinite(meta["final_loss"])
    assert meta["loss_curve"] and meta["loss_curve"][-1][0] == 5
    assert meta["data"]["source"] == "crystal" and meta["data"]["num_structures"] == 1
    assert meta["train_cells"] == [list(CELL)]
    assert meta["device"] == "cpu" and meta["torch_version"] == str(torch.__version__)
    model = read_checkpoint(trained / "model.pt")
    assert "optimizer" not in model
    assert model["metadata"]["command"] == meta["command"]
    assert model["metadata"]["train_cells"] == [list(CELL)]


def test_train_resumes_from_checkpoint(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "model"
    shutil.copytree(trained, out)
    before = read_checkpoint(out / "checkpoint.pt")
    assert main(["train", str(out), *TINY, "--steps", "8"]) == 0
    after = read_checkpoint(out / "checkpoint.pt")
    assert (before["step"], after["step"]) == (5, 8)
    assert len(after["loss_log"]) > len(before["loss_log"])
    assert after["loss_log"][: len(before["loss_log"])] == before["loss_log"]
    assert json.loads((out / "model.json").read_text())["steps"] == 8
    assert "trained to step 8" in capsys.readouterr().out


def test_train_refuses_other_configuration(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "model"
    shutil.copytree(trained, out)
    argv = ["train", str(out), *TINY, "--steps", "6", "--prediction", "eps"]
    assert "different model configuration" in _error(capsys, argv)


def test_train_refuses_density_balancing_outside_carbon(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["train", str(tmp_path / "model"), *TINY, "--steps", "1", "--balance-densities"]
    assert "--balance-densities applies to --carbon training" in _error(capsys, argv)
    argv = ["train", str(tmp_path / "model"), *TINY, "--steps", "1", "--time-range", "0.7", "0.2"]
    assert "--time-range 0.7 0.2: needs 0 <= LO < HI <= 1" in _error(capsys, argv)


def test_train_self_conditioned_from_a_plain_model_then_generate_reproducibly(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "self_conditioned"
    argv = ["train", str(out), *TINY, "--steps", "3", "--self-condition", "--init-from", str(trained / "model.pt")]
    assert main(argv) == 0
    grown = read_checkpoint(out / "model.pt")
    assert grown["config"]["net"]["self_condition"] is True
    assert grown["metadata"]["data"]["init_from"] == str(trained / "model.pt")
    samples = []
    for run in ("a", "b"):
        target = tmp_path / f"{run}.extxyz"
        gen = ["generate", str(out / "model.pt"), "--out", str(target), "--cell", *map(str, CELL), *GEN, "--one-file"]
        assert main([*gen, "--seed", "5"]) == 0
        samples.append(ase.io.read(target, index=":"))
    assert [a.positions.tolist() for a in samples[0]] == [a.positions.tolist() for a in samples[1]]
    wider = ["train", str(tmp_path / "wide"), *TINY, "--base-channels", "16", "--init-from", str(trained / "model.pt")]
    line = _error(capsys, [*wider, "--steps", "1"])
    assert f"--init-from {trained / 'model.pt'}: cannot start a network" in line


def test_train_with_split_sites_records_it_and_refuses_the_smooth_encoding(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "split"
    assert main(["train", str(out), *TINY, "--steps", "2", "--split-sites", "0.5"]) == 0
    saved = read_checkpoint(out / "checkpoint.pt")
    assert saved["train"]["split_sites"] == 0.5 and saved["train"]["split_sites_below"] == 0.5
    assert "--split-sites 0.5" in read_checkpoint(out / "model.pt")["metadata"]["command"]
    argv = ["train", str(tmp_path / "smooth"), *TINY, "--steps", "1", "--split-sites", "0.5", "--encoding", "smooth"]
    assert "split_sites needs the sharp encoding and x0 prediction" in _error(capsys, argv)


# ----------------------------------------------------------------------------------------------- inspect
def test_inspect_text(trained: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["inspect", str(trained / "model.pt")]) == 0
    out = capsys.readouterr().out
    for text in (
        "species       W",
        "voxel size    0.79125 A",
        "sharp",
        "parameters",
        "cosine",
        "x0",
        "conditioning:   none",
        "steps         5",
        "final loss",
        "gcd train",
        "6.33 x 6.33 x 6.33",
    ):
        assert text in out, text


def test_inspect_json(trained: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["inspect", str(trained / "checkpoint.pt"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "training checkpoint" and info["step"] == 5
    assert info["config"]["grid"]["species"] == ["W"]
    assert info["config"]["net"]["base_channels"] == 8
    assert info["parameters"] > 0
    assert info["metadata"]["train_cells"] == [list(CELL)]


# ----------------------------------------------------------------------------------------------- generate
@pytest.mark.parametrize(
    ("fmt", "one_file"), [("cif", False), ("cif", True), ("extxyz", False), ("extxyz", True), ("vasp", False)]
)
def test_generate_formats(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture, fmt: str, one_file: bool
) -> None:
    cell = (6.33, 6.33, 12.66)
    out = tmp_path / (f"all.{fmt}" if one_file else "samples")
    argv = [
        "generate",
        str(trained / "model.pt"),
        "--out",
        str(out),
        "--cell",
        *map(str, cell),
        *GEN,
        "--format",
        fmt,
        "--seed",
        "3",
    ]
    assert main(argv + (["--one-file"] if one_file else [])) == 0
    summary = capsys.readouterr().out.strip().splitlines()
    assert len(summary) == 2
    if one_file:
        frames = ase.io.read(out, index=":", format=fmt)
    else:
        files = sorted(out.iterdir())
        assert [f.name for f in files] == [f"sample_0000.{fmt}", f"sample_0001.{fmt}"]
        frames = [ase.io.read(f, format=fmt) for f in files]
    assert len(frames) == 2
    for line, atoms in zip(summary, frames, strict=True):
        assert np.allclose(atoms.cell.lengths(), cell) and np.allclose(atoms.cell.angles(), 90)
        assert int(line.split()[1]) == len(atoms)
        if fmt == "extxyz":
            assert "occupancy" in atoms.arrays


def test_generate_supercell_of_training_cell(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "s.extxyz"
    argv = [
        "generate",
        str(trained / "model.pt"),
        "--out",
        str(out),
        "--supercell",
        "2",
        "1",
        "1",
        "--steps",
        "2",
        "--one-file",
    ]
    assert main(argv) == 0
    atoms = ase.io.read(out)
    assert np.allclose(atoms.cell.lengths(), (12.66, 6.33, 6.33))


def test_generate_with_label(labelled: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    checkpoint = str(labelled / "model.pt")
    assert main(["inspect", checkpoint]) == 0
    assert "labels ['left', 'right']" in capsys.readouterr().out
    out = tmp_path / "l.extxyz"
    argv = [
        "generate",
        checkpoint,
        "--out",
        str(out),
        "--supercell",
        "1",
        "--label",
        "right",
        "--guidance-scale",
        "2",
        "--steps",
        "2",
        "--resample",
        "2",
        "--resample-window",
        "0",
        "0.5",
        "--one-file",
    ]
    assert main(argv) == 0
    assert np.allclose(ase.io.read(out).cell.lengths(), CELL)
    argv[argv.index("0.5")] = "1.5"
    assert "--resample-window: must lie in [0, 1], got 1.5" in _error(capsys, argv)
    argv[argv.index("1.5")] = "0.5"
    argv[argv.index("0")] = "0.7"
    assert "resample_window must be (lo, hi) with 0 <= lo <= hi <= 1, got (0.7, 0.5)" in _error(capsys, argv)
    argv[argv.index("0.7")] = "0"
    argv[argv.index("right")] = "up"
    message = _error(capsys, argv)
    assert "unknown label 'up'" in message and "right" in message


def test_phase_conditional_crystals_each_on_their_own_voxels(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "phases"
    argv = ["train", str(out), "--crystal", "bcc", "hcp", "--cell-multiples", "1", "2", "--base-channels", "8"]
    assert main([*argv, "--batch-size", "8", "--steps", "2"]) == 0
    checkpoint = str(out / "model.pt")
    capsys.readouterr()
    assert main(["inspect", checkpoint]) == 0
    text = capsys.readouterr().out
    assert "labels ['bcc', 'hcp']" in text and "Mg on [0.8025, 0.92665, 1.3025] A voxels" in text
    metadata = json.loads((out / "model.json").read_text())
    assert metadata["data"]["label_cells"]["hcp"] == pytest.approx([6.42, 22.23953, 10.42], abs=1e-5)
    assert len(metadata["train_cells"]) == 4  # two phases x two sizes
    from gcd_core.model import GCDModel

    model = GCDModel.load(out / "model.pt", device="cpu")
    unlabelled = model.training_cell(None)  # the shared 8^3 grid on the model's own (first class's) voxels
    assert model.grid.layout(unlabelled, warn=False).shape == (8, 8, 8)
    sample = tmp_path / "hcp.extxyz"
    generate = ["generate", checkpoint, "--label", "hcp", "--supercell", "2", "--steps", "2", "--out", str(sample)]
    assert main([*generate, "--merge-distance", "2.0", "--one-file"]) == 0
    atoms = ase.io.read(sample)
    assert np.allclose(atoms.cell.lengths(), (12.84, 44.47907, 20.84), atol=1e-4)
    assert set(atoms.get_chemical_symbols()) <= {"Mg"}


# ----------------------------------------------------------------------------------------------- errors
def test_error_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    message = _error(
        capsys, ["generate", str(tmp_path / "nope.pt"), "--out", str(tmp_path), "--cell", *"888"]
    )
    assert "does not exist" in message


def test_error_not_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bogus = tmp_path / "notes.pt"
    bogus.write_text("not a checkpoint\n")
    assert "not a" in _error(capsys, ["inspect", str(bogus)])
    torch.save({"weights": torch.zeros(2)}, bogus)
    assert "not a gcd checkpoint" in _error(capsys, ["generate", str(bogus), "--out", "x", "--cell", *"888"])


def test_error_bad_cells(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["generate", str(trained / "model.pt"), "--out", str(tmp_path / "o")]
    assert "positive" in _error(capsys, [*base, "--cell", "-6.33", "6.33", "6.33"])
    message = _error(capsys, [*base, "--cell", "7", "6.33", "6.33"])  # 9 voxels: not a multiple of 4
    assert "multiples of 4" in message and "[6.33, 6.33, 6.33]" in message
    assert "invalid float" in _error(capsys, [*base, "--cell", "6.33", "x", "6.33"])
    assert not (tmp_path / "o").exists()


def test_error_label_on_unconditional_model(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = [
        "generate",
        str(trained / "model.pt"),
        "--out",
        str(tmp_path),
        "--cell",
        *map(str, CELL),
        "--label",
        "a",
    ]
    assert "not trained with class labels" in _error(capsys, argv)


def test_error_vasp_one_file_several_samples(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = [
        "generate",
        str(trained / "model.pt"),
        "--out",
        str(tmp_path / "POSCAR"),
        "--cell",
        *map(str, CELL),
        "--format",
        "vasp",
        "--one-file",
        "--num-samples",
        "2",
    ]
    assert "one structure per file" in _error(capsys, argv)


def test_error_training_inputs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = str(tmp_path / "m")
    assert "invalid choice: 'bct'" in _error(
        capsys, ["train", out, "--crystal", "bct", "--voxel-size", "0.5"]
    )
    assert "does not exist" in _error(
        capsys, ["train", out, "--structures", str(tmp_path / "x.cif"), "--voxel-size", "0.5"]
    )
    assert "positive" in _error(capsys, ["train", out, *TINY, "--steps", "-3"])
    data = tmp_path / "w.extxyz"
    ase.io.write(data, crystal("bcc", 2))
    assert "--voxel-size is required" in _error(capsys, ["train", out, "--structures", str(data)])
    assert "--element, --a and --c" in _error(capsys, ["train", out, "--crystal", "bcc", "fcc", "--a", "3"])
    assert "COMMAND" in _error(capsys, [])
    assert not (tmp_path / "m").exists()


# ----------------------------------------------------------------------------------------------- help
def test_help_and_version(capsys: pytest.CaptureFixture) -> None:
    for argv in (["--help"], ["train", "--help"], ["generate", "--help"], ["inspect", "--help"]):
        assert main(argv) == 0
        assert "usage: gcd" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("gcd ")


def test_module_entry_point() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gcd_core.cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "train" in done.stdout and "generate" in done.stdout and "inspect" in done.stdout
    done = subprocess.run(
        [sys.executable, "-m", "gcd_core.cli", "inspect", "/nonexistent.pt"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and done.stderr.strip().splitlines() == [
        "gcd: error: checkpoint /nonexistent.pt does not exist"
    ]


# ----------------------------------------------------------------------------------------------- io
def test_io_round_trip_and_errors(tmp_path: Path) -> None:
    atoms = crystal("bcc", 2)
    atoms.set_array("occupancy", np.linspace(0.5, 1, len(atoms)))
    files = write_structures([atoms, atoms], tmp_path / "dir", "extxyz")
    write_structures([atoms], tmp_path / "dir" / "POSCAR", "vasp", one_file=True)
    (tmp_path / "dir" / "notes.txt").write_text("ignored")
    assert len(files) == 2
    read = read_structures(tmp_path / "dir")
    assert len(read) == 3 and all(len(a) == len(atoms) for a in read)
    assert np.allclose(read[1].arrays["occupancy"], atoms.arrays["occupancy"])  # read[0]: POSCAR
    with pytest.raises(GCDError, match="one structure per file"):
        write_structures([atoms, atoms], tmp_path / "x.vasp", "vasp", one_file=True)
    with pytest.raises(GCDError, match="no atoms"):
        write_structures([atoms[:0]], tmp_path / "e", "cif")
    with pytest.raises(GCDError, match="does not exist"):
        read_structures(tmp_path / "missing.cif")
    broken = tmp_path / "broken.cif"
    broken.write_text("this is not a cif\n")
    with pytest.raises(GCDError, match="broken.cif"):
        read_structures(broken)
    (tmp_path / "empty").mkdir()
    with pytest.raises(GCDError, match="no structure files"):
        read_structures(tmp_path / "empty")


# ---------------------------------------------------------------------------------------- spectrum targets
@pytest.mark.skipif(not DEFAULT_ROOT.is_dir(), reason="needs ../shared/data/a-C")
def test_spectrum_conditioned_carbon_model_trains_and_samples_toward_a_target(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "carbon"
    argv = ["train", str(out), "--carbon", "--spectrum-condition", "--voxel-size", "0.6", "--channel-mults", "1", "2"]
    assert main([*argv, "--base-channels", "8", "--steps", "2", "--batch-size", "2"]) == 0
    metadata = json.loads((out / "model.json").read_text())
    assert metadata["data"]["source"] == "carbon" and len(metadata["data"]["held_out"]) == 6
    assert not set(metadata["data"]["train"]) & set(metadata["data"]["held_out"])  # split by whole cells
    capsys.readouterr()
    assert main(["inspect", str(out / "model.pt")]) == 0
    assert "vector xanes [100]" in capsys.readouterr().out

    model = str(out / "model.pt")
    sample = tmp_path / "sample.extxyz"
    generate = ["generate", model, "--cell", "12", "12", "12", "--steps", "2", "--out", str(sample), "--one-file"]
    # 12 A is 20 voxels of 0.6 A: it fits; 12.5 A (20.8) does not, unless the grid is fitted
    assert main([*generate, "--target-structure", "d3.5_2", "--spectrum-guidance", "1"]) == 0
    assert ase.io.read(sample).cell.lengths() == pytest.approx([12, 12, 12])
    stretched = [*generate[:2], "--cell", "12.5", "12.5", "12.5", *generate[6:]]
    assert "multiples of 2" in _error(capsys, stretched)
    assert main([*stretched, "--fit-grid"]) == 0

    spectrum = tmp_path / "target.txt"
    spectrum.write_text("\n".join(f"{e} {np.exp(-((e - 290) / 5) ** 2)}" for e in np.linspace(270, 320, 60)))
    assert main([*generate, "--target-spectrum", str(spectrum), "--guidance-scale", "2"]) == 0
    spectrum.write_text("energy intensity\n285 1\n")
    assert "target.txt" in _error(capsys, [*generate, "--target-spectrum", str(spectrum)])
    assert "no a-C cell named" in _error(capsys, [*generate, "--target-structure", "d9.9_1"])
    assert "needs a target" in _error(capsys, [*generate, "--spectrum-guidance", "2"])


@pytest.mark.skipif(not DEFAULT_ROOT.is_dir(), reason="needs ../shared/data/a-C")
def test_xanes_command_prints_spectrum_features_and_writes_them(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "spectra.txt"
    capsys.readouterr()
    assert main(["xanes", str(DEFAULT_ROOT / "train" / "d0.0_18.vasp"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "forward model: pi* intensity" in text and "sigma* maximum" in text
    assert "216 atoms, 3.49 g/cm3, sp / sp2 / sp3 0.00 / 0.06 / 0.94" in text  # the cell's density, 93.5 % sp3
    table = np.loadtxt(out)
    assert table.shape == (100, 2) and np.trapezoid(table[:, 1], table[:, 0]) == pytest.approx(1.0, abs=1e-4)
    two = tmp_path / "two.extxyz"
    ase.io.write(two, [crystal("diamond", 3), crystal("diamond", 3)])
    assert "holds 2 structures" in _error(capsys, ["xanes", str(two)])


@pytest.mark.skipif(not __import__("gcd_core.physics.eam").physics.eam.lammps_available(), reason="needs LAMMPS")
def test_gb_search_train_and_generate_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A short GB search feeds a tiny GB model, which in-paints GBs that are relaxed, scored and plotted."""
    from gcd_core.data.gb_search import lowest_per_n, read_gb_table, read_search_summary

    search = tmp_path / "search"
    summary = tmp_path / "summary.json"
    assert main(["gb-search", "cu_sigma5_tilt", str(search), "--samples", "3", "--anneal-fraction", "0",
                 "--bins", "4", "--summary", str(summary)]) == 0
    assert "lowest E_gb" in capsys.readouterr().out
    written = read_search_summary(summary)  # the lowest of each bin, as the table holds them
    rows = read_gb_table(search)
    assert written["samples"] == 3 and written["command"].startswith("gcd gb-search cu_sigma5_tilt")
    assert [b["e_gb"] for b in written["lowest"]] == [r["e_gb"] for r in lowest_per_n(rows, 4).values()]
    assert all(b["n_low"] <= b["n"] < b["n_high"] for b in written["lowest"])
    model = tmp_path / "model"
    assert main(["train", str(model), "--gb-search", str(search), "--gb-condition-n", "--base-channels", "4",
                 "--channel-mults", "1", "2", "--steps", "2", "--batch-size", "1"]) == 0
    metadata = json.loads((model / "model.json").read_text())
    assert set(metadata["data"]["gb_shifts"]) == {"cu_sigma5_tilt"}
    out = tmp_path / "generated"
    assert main(["gb-generate", "cu_sigma5_tilt", str(out), "--model", str(model / "model.pt"), "--samples", "2",
                 "--steps", "2", "--resample", "1", "--target-n", "0.5", "--search", str(search),
                 "--plot", str(out / "e_gb.png"), "--refine", "1", "--parents", "1", "--children", "1"]) == 0
    rows = (out / "gb_generated.csv").read_text().splitlines()
    assert len(rows) == 4 and (out / "e_gb.png").stat().st_size > 1000
    assert [row.split(",")[-1] for row in rows[1:3]] == ["-1", "-1"] and rows[3].split(",")[-1] in ("0", "1")
    for sample in range(3):
        atoms = ase.io.read(out / "structures" / f"{sample}.extxyz")
        assert atoms.info["gb_system"] == "cu_sigma5_tilt" and "e_gb" in atoms.info
        assert gb_density(atoms) == 0.5  # the target [n], imposed (on the refined sample too)
    capsys.readouterr()
    survey = tmp_path / "survey"  # one sample per [n] bin, then a variation of its own and a hop into each bin
    assert main(["gb-generate", "cu_sigma5_tilt", str(survey), "--model", str(model / "model.pt"), "--samples", "1",
                 "--steps", "2", "--resample", "1", "--bins", "2", "--refine", "1", "--parents", "1", "--children",
                 "1", "--hops", "1"]) == 0
    text = capsys.readouterr().out
    assert "0.00-0.50" in text and "0.50-1.00" in text
    with (survey / "gb_generated.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["target_bin"] for row in rows] == ["0", "1", "0", "0", "1", "1"]
    assert all(int(float(row["n"]) * 2) == int(row["target_bin"]) for row in rows)  # imposed: every [n] in its bin


def test_gb_commands_refuse_bad_input_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["gb-generate", "cu_sigma5_tilt", str(tmp_path), "--search", str(tmp_path / "none")]) == 1
    assert "run a GB search" in capsys.readouterr().err
    assert main(["gb-generate", "cu_sigma5_tilt", str(tmp_path), "--model", str(tmp_path / "none.pt")]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["gb-generate", "cu_sigma5_tilt", str(tmp_path), "--refine", "1", "--refine-time", "2"]) == 2
    assert "--refine-time: must be a noise time in (0, 1], got 2" in capsys.readouterr().err
    assert main(["gb-generate", "cu_sigma5_tilt", str(tmp_path), "--bins", "4", "--target-n", "0.5"]) == 2
    assert "--bins sets each sample's [n]" in capsys.readouterr().err
    assert main(["gb-generate", "cu_sigma5_tilt", str(tmp_path), "--hops", "2"]) == 2
    assert "give --bins" in capsys.readouterr().err
    assert main(["gb-search", "al_sigma3", str(tmp_path)]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "m"), "--crystal", "bcc", "--gb-condition-n"]) == 1
    assert "--gb-condition-n" in capsys.readouterr().err


def test_generate_with_site_exclusion(trained: Path, tmp_path: Path) -> None:
    """``--exclusion-distance`` reaches the sampler: no two atoms of the output closer than it."""
    from ase.neighborlist import neighbor_list

    out = tmp_path / "x.extxyz"
    argv = ["generate", str(trained / "model.pt"), "--out", str(out), "--cell", *map(str, CELL), "--steps", "3",
            "--num-samples", "2", "--exclusion-distance", "1.5", "--one-file"]
    assert main(argv) == 0
    structures = ase.io.read(out, index=":")
    assert sum(len(a) for a in structures) > 0
    assert all(not len(neighbor_list("d", a, 1.5)) for a in structures)
    assert main([*argv[:-4], "--exclusion-distance", "0", "--one-file"]) == 2


def test_generate_with_bragg_guidance(trained: Path, labelled: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    """``--bragg-refine`` guides toward the reflections of the model's phase (here BCC W, from its metadata); a
    class that is not a crystal phase, or a cell of no whole number of its cells, is refused by name."""
    out = tmp_path / "b.extxyz"
    argv = ["generate", str(trained / "model.pt"), "--out", str(out), "--cell", *map(str, CELL), *GEN,
            "--bragg-refine", "2", "--one-file"]
    assert main(argv) == 0
    assert len(ase.io.read(out, index=":")) == 2
    assert main([*argv[:5], "7", "7", "7", *argv[8:], "--fit-grid"]) == 1  # 2.2 BCC cells on stretched voxels
    assert "whole reference cells" in capsys.readouterr().err
    argv = ["generate", str(labelled / "model.pt"), "--out", str(out), "--supercell", "1", "--label", "right",
            *GEN, "--bragg-refine", "2"]
    assert main(argv) == 1
    assert "needs a crystal phase label" in capsys.readouterr().err


def test_generate_with_sp3_guidance(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "g.extxyz"
    argv = ["generate", str(trained / "model.pt"), "--out", str(out), "--cell", *map(str, CELL), "--steps", "3",
            "--merge-distance", "2.0", "--sp3-guidance", "5", "--sp3-refine", "2"]
    assert main(argv) == 1  # no target spectrum and no --target-sp3
    assert "needs --target-sp3" in capsys.readouterr().err
    assert main([*argv, "--target-sp3", "0.5"]) == 0
    assert "sp3 guidance toward 0.50" in capsys.readouterr().err
    assert out.exists()


def test_generate_polish_refuses_a_model_of_another_element(trained: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "g.extxyz"
    argv = ["generate", str(trained / "model.pt"), "--out", str(out), "--cell", *map(str, CELL), *GEN, "--polish"]
    assert main(argv) == 1  # the shipped refiner knows carbon; this model makes tungsten: refused before sampling
    assert "trained on C only; this model makes W" in capsys.readouterr().err
    assert main([*argv, "--polish-noise", "0.5"]) == 1
    assert "within the trained" in capsys.readouterr().err
    assert not out.exists()


def test_generate_with_bonding_guidance(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "g.extxyz"
    argv = ["generate", str(trained / "model.pt"), "--out", str(out), "--cell", *map(str, CELL), "--steps", "3",
            "--merge-distance", "2.0", "--bonding-guidance", "5", "--bonding-refine", "2"]
    assert main(argv) == 1  # no target spectrum and no --target-bonding
    assert "needs --target-bonding" in capsys.readouterr().err
    assert main([*argv, "--target-bonding", "0.3", "0.3", "0.3"]) == 1  # fractions that do not add up to 1
    assert "adding up to 1" in capsys.readouterr().err
    assert main([*argv, "--target-bonding", "0.1", "0.7", "0.2"]) == 0
    assert "bonding guidance toward sp / sp2 / sp3 0.10 / 0.70 / 0.20" in capsys.readouterr().err
    assert out.exists()
