import os
import sys

import pytest

# the helpers, and the tiers' modules (a test of one tier may reuse another's: test_nowait's QUIET)
for _folder in ("support", "unit", "integration", "e2e", "ecosystem"):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), _folder))

from harness import CpuHogs, Fleet, Sidecar  # noqa: E402

TIERS = ("unit", "integration", "e2e", "ecosystem")
# What changes the machine for everyone (Debian's python3 and its dist-packages, apt, the system's supervisor,
# system users): one worker runs these, one after the other, however many run the rest (make test: pytest-xdist).
SYSTEM_WIDE = ("test_ecosystem_debian.py", "test_ecosystem_debian_docs.py", "test_ecosystem_debian_plain.py")
SYSTEM_FIXTURES = {"user"}  # test_hostile's useradd: two at once may find /etc/passwd locked, and skip
# The CPU hogs of a busy host, and the real LiteLLM's waits measured against a quiet window: on 2 cores, two at
# once starve each other past what their timing allows (seen: three at once, a replacement 173 s to serve). One
# worker runs them, one after the other ("cpu-heavy"); another runs the real LiteLLM's other tests, which
# assert outcomes, not times ("litellm"), one after the other: the suite's longest path is then either of
# the two (about six minutes each), not both in a row; the other workers run the rest.
CPU_HEAVY_FIXTURES = {"cpu_hogs"}
TIMED_E2E = ("test_e2e_nowait.py", "test_e2e_warmup.py")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own, which reads the groups
def pytest_collection_modifyitems(config, items):
    """Each test carries its folder's marker (``-m unit``); the system-wide ones share an xdist group, the
    CPU-heavy ones another, the real LiteLLM's others a third."""
    for item in items:
        tier = os.path.basename(os.path.dirname(str(item.fspath)))
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
        if not config.pluginmanager.hasplugin("xdist"):  # the lowest versions' tier runs without it
            continue
        if os.path.basename(str(item.fspath)) in SYSTEM_WIDE or SYSTEM_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.xdist_group("system-wide"))
        elif CPU_HEAVY_FIXTURES & set(item.fixturenames) or os.path.basename(str(item.fspath)) in TIMED_E2E:
            item.add_marker(pytest.mark.xdist_group("cpu-heavy"))
        elif tier == "e2e":
            item.add_marker(pytest.mark.xdist_group("litellm"))


def pytest_collection_finish(session):
    """A group pytest-xdist did not apply (it names a group in the test's id) fails the run, never silently."""
    if not session.config.getoption("loadgroup", False):
        return
    lost = [item.nodeid for item in session.items if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
    if lost:
        raise pytest.UsageError(f"pytest-xdist did not group {lost[0]} (and {len(lost) - 1} more): "
                                "its --dist loadgroup needs pytest below 9.2 (setup.cfg's test extra)")


def _owned(tmp_path, kind, prefix):
    """Yield a factory of ``kind`` under real supervisords; every one is cleaned up, pass or fail."""
    made = []

    def make(**kwargs):
        folder = tmp_path / f"{prefix}{len(made)}"
        folder.mkdir()
        made.append(kind(str(folder), **kwargs))
        return made[-1]

    yield make
    for thing in made:
        thing.cleanup()


@pytest.fixture
def cpu_hogs():
    """A host busy with other work: a CPU-bound process on each of its cores, stopped whatever happens."""
    hogs = CpuHogs()
    try:
        yield hogs
    finally:
        hogs.stop()


@pytest.fixture
def make_sidecar(tmp_path):
    """Build sidecars under a real supervisord."""
    yield from _owned(tmp_path, Sidecar, "s")


@pytest.fixture
def make_fleet(tmp_path):
    """Build fleets (several profiles, one listener) under a real supervisord."""
    yield from _owned(tmp_path, Fleet, "f")
