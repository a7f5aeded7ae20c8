"""The suite itself: no test holds a date that will pass."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
# The tests whose outcome depends on what day it is: redelivery windows, grace periods, the deadline, ages.
TIME_SENSITIVE = ["tests/test_redelivery.py", "tests/test_grace.py", "tests/test_compliance.py",
                  "tests/test_operator_controls.py", "tests/test_entry_points.py", "tests/test_hardened.py"]


@pytest.mark.e2e
def test_the_time_sensitive_tests_pass_a_year_from_now():
    # Every clock in the child process (ours, moto's, botocore's signing) runs a year ahead.
    env = {**os.environ, "TEST_CLOCK_SHIFT_DAYS": "366"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                           "-x", *TIME_SENSITIVE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
