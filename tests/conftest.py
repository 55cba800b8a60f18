import warnings

import pytest

from gcd_core.representation import GridStretchWarning


@pytest.fixture(autouse=True)
def _no_stretch_warnings():
    # test cells are often not whole numbers of voxels on purpose; the warning itself is tested explicitly
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GridStretchWarning)
        yield
