"""FEFF10 check of the XANES forward model: input text, one cheap real run, the cache, the missing-package message."""

import sys

import numpy as np
import pytest
from ase.build import bulk

from gcd_core.errors import GCDError
from gcd_core.physics import feff
from gcd_core.physics.feff import FeffSettings, feff_input, feff_site_spectrum, feff_structure_spectrum
from gcd_core.physics.spectra import ENERGY_GRID


def diamond():
    return bulk("C", "diamond", a=3.567, cubic=True)


def _atom_rows(text: str) -> list[list[str]]:
    lines = text.splitlines()
    start = lines.index("ATOMS") + 1
    return [line.split() for line in lines[start : lines.index("END")]]


def test_input_for_diamond_has_every_shell_and_the_absorber_at_the_origin():
    # shells of diamond within 3.6 A: 4 at 1.54, 12 at 2.52, 12 at 2.96, 6 at 3.57 A, plus the absorber
    rows = _atom_rows(feff_input(diamond(), 0, FeffSettings(cluster_radius=3.6, scf_radius=2.0, fms_radius=3.6)))
    assert len(rows) == 1 + 4 + 12 + 12 + 6
    assert [float(v) for v in rows[0][:3]] == [0.0, 0.0, 0.0] and rows[0][3] == "0"
    assert all(row[3] == "1" for row in rows[1:])
    distances = [float(row[5]) for row in rows[1:]]
    assert distances == sorted(distances) and distances[0] == pytest.approx(1.5445, abs=1e-3)
    # equivalent sites give the same text (one cache entry); a bigger cell gives the same cluster
    assert feff_input(diamond(), 0) == feff_input(diamond(), 2) == feff_input(diamond().repeat(2), 0)


def test_settings_are_checked():
    with pytest.raises(GCDError, match="radii"):
        FeffSettings(cluster_radius=3.0, fms_radius=4.0)
    with pytest.raises(GCDError, match="core_hole"):
        FeffSettings(core_hole="full")


def test_cheap_run_is_unit_area_and_cached(tmp_path, monkeypatch, tiny_feff):
    pytest.importorskip("feff10")
    spectrum = feff_site_spectrum(diamond(), 0, tiny_feff, cache_dir=tmp_path)
    assert spectrum.shape == (len(ENERGY_GRID),) and np.all(np.isfinite(spectrum))
    assert np.trapezoid(spectrum, ENERGY_GRID) == pytest.approx(1.0, abs=1e-6)
    assert len(list(tmp_path.glob("*.npy"))) == 1

    def no_rerun(text):
        raise AssertionError("FEFF ran again instead of reading the cache")

    monkeypatch.setattr(feff, "_run_feff", no_rerun)
    assert np.array_equal(feff_site_spectrum(diamond(), 0, tiny_feff, cache_dir=tmp_path), spectrum)
    # the even sites of the cubic cell are one sublattice (same cluster, same cache entry as site 0)
    mean, per_site, sites = feff_structure_spectrum(diamond(), [0, 2, 4], tiny_feff, cache_dir=tmp_path)
    assert per_site.shape == (3, len(ENERGY_GRID)) and sites.tolist() == [0, 2, 4]
    assert np.allclose(mean, spectrum)


def test_missing_package_names_the_wheel(monkeypatch, tmp_path, tiny_feff):
    monkeypatch.setitem(sys.modules, "feff10", None)  # makes `import feff10` raise ImportError
    with pytest.raises(GCDError, match="pip install feff10-rs"):
        feff_site_spectrum(diamond(), 0, tiny_feff, cache_dir=tmp_path)


def test_sampled_sites_are_distinct_and_reproducible(monkeypatch):
    omega = np.linspace(270.0, 330.0, 200)
    monkeypatch.setattr(feff, "_run_feff", lambda text: np.stack([omega, np.exp(-((omega - 285.0) ** 2))]))
    atoms = diamond().repeat(2)
    _, per_site, sites = feff_structure_spectrum(atoms, 5, FeffSettings(), seed=3)
    assert per_site.shape == (5, len(ENERGY_GRID)) and len(set(sites.tolist())) == 5
    assert sites.tolist() == feff_structure_spectrum(atoms, 5, FeffSettings(), seed=3)[2].tolist()


def overlapping(atoms, site: int, gap: float = 0.5):
    """``atoms`` with one more carbon ``gap`` A from ``site``: a failed sample's doubled atom."""
    extra = atoms.copy()
    extra.append("C")
    extra.positions[-1] = atoms.positions[site] + [gap, 0.0, 0.0]
    return extra


def test_overlapping_atoms_are_refused_by_name_before_feff_runs(monkeypatch):
    monkeypatch.setattr(feff, "_run_feff", lambda text: pytest.fail("FEFF ran on overlapping atoms"))
    atoms = overlapping(diamond().repeat(2), 0)
    with pytest.raises(GCDError, match=r"site 1: two atoms 0.50 A apart within 3 A of it overlap"):
        feff_input(atoms, 1)  # a neighbour of the doubled atom: the pair lies inside its SCF sphere
    far = int(np.argmax(atoms.get_distances(0, range(len(atoms) - 1), mic=True)))
    assert feff_input(atoms, far)  # 6 A away: its SCF sphere holds no overlap


def test_failed_sites_are_left_out_when_asked(monkeypatch):
    omega = np.linspace(270.0, 330.0, 200)
    monkeypatch.setattr(feff, "_run_feff", lambda text: np.stack([omega, np.exp(-((omega - 285.0) ** 2))]))
    atoms = overlapping(diamond().repeat(2), 0)
    far = int(np.argmax(atoms.get_distances(0, range(len(atoms) - 1), mic=True)))
    with pytest.raises(GCDError, match="overlap"):
        feff_structure_spectrum(atoms, [0, far])
    with pytest.warns(UserWarning, match="left out 1 of 2 sites"):
        _, per_site, sites = feff_structure_spectrum(atoms, [0, far], skip_failed=True)
    assert sites.tolist() == [far] and per_site.shape == (1, len(ENERGY_GRID))
    with pytest.raises(GCDError, match="every sampled site"):
        feff_structure_spectrum(atoms, [0, 1], skip_failed=True)
