"""The fast planted bugs of scripts/mutation_check.py (each a source edit its tests must catch), run as CI runs
them; the whole list runs by hand (``python scripts/mutation_check.py``)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_fast_planted_bugs_are_all_caught():
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "mutation_check.py"), "--fast"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "planted bugs caught" in done.stdout and "MISS" not in done.stdout
