import warnings

import numpy as np
import pytest
from ase import Atoms

from gcd_core.representation import GridStretchWarning


@pytest.fixture(autouse=True)
def _no_stretch_warnings():
    # test cells are often not whole numbers of voxels on purpose; the warning itself is tested explicitly
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GridStretchWarning)
        yield


@pytest.fixture
def ring_with_loose_ends() -> Atoms:
    """Carbon in a 10.512 A cell (24 voxels of 0.438 A): a six-membered ring (1.42 A bonds, two each), a chain end
    bonded to one ring atom only (which so has three), and a lone atom."""
    angles = np.arange(6) * np.pi / 3
    ring = np.stack([1.42 * np.cos(angles), 1.42 * np.sin(angles), np.zeros(6)], axis=1) + 5.0
    return Atoms("C8", positions=np.vstack([ring, ring[0] + [1.45, 0.0, 0.0], [1.0, 1.0, 9.0]]), cell=[10.512] * 3,
                 pbc=True)


@pytest.fixture
def tiny_feff():
    """FEFF10 settings for a tiny cluster (17 atoms of diamond: absorber + 4 + 12) without a core hole: a real FEFF
    run in about a second."""
    from gcd_core.physics.feff import FeffSettings

    return FeffSettings(cluster_radius=2.6, scf_radius=2.0, fms_radius=2.6, core_hole="none", xkmax=3.0)
