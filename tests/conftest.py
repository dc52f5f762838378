import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import Sidecar  # noqa: E402


@pytest.fixture
def make_sidecar(tmp_path):
    """Build sidecars under a real supervisord; every one is cleaned up, pass or fail."""
    made = []

    def make(**kwargs):
        folder = tmp_path / f"s{len(made)}"
        folder.mkdir()
        sc = Sidecar(str(folder), **kwargs)
        made.append(sc)
        return sc

    yield make
    for sc in made:
        sc.cleanup()


@pytest.fixture
def make_fleet(tmp_path):
    """Build fleets (several profiles, one listener) under a real supervisord; cleaned up, pass or fail."""
    from harness import Fleet

    made = []

    def make(**kwargs):
        folder = tmp_path / f"f{len(made)}"
        folder.mkdir()
        fl = Fleet(str(folder), **kwargs)
        made.append(fl)
        return fl

    yield make
    for fl in made:
        fl.cleanup()
