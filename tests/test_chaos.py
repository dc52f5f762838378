"""A short chaos run inside `make test` (`make chaos` runs 200 faults): zero violations."""

import os
import random

import pytest

from chaos import FAULTS, run_chaos

pytestmark = pytest.mark.integration


def test_chaos_short_run(tmp_path):
    """Every kind of fault, the three recovered from without a person included."""
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1, 10**6))
    faults = int(os.environ.get("CHAOS_FAULTS") or 24)
    print(f"chaos seed {seed} (reproduce: CHAOS_SEED={seed} make test, or python tests/chaos.py --seed {seed})")
    chaos = run_chaos(str(tmp_path), faults, seed)
    print(chaos.table(seed))
    assert sum(chaos.faults.values()) == faults
    assert [k for k in FAULTS if not chaos.faults[k]] == []  # every kind, whatever the seed (its order varies)
    # the default render: supervisord owns the port, so each foreign fault started supervisord beside the
    # foreign server (not a plain stop and start)
    assert chaos.started_beside == chaos.faults["foreign_port"] + chaos.faults["foreign_health"]
    assert chaos.checks > faults
    assert chaos.violations == [], f"seed {seed}: {chaos.violations}"
