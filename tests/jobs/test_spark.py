from __future__ import annotations

import os
import subprocess
import sys

PROBE = (
    "from datetime import datetime; from jobs.spark import use_utc_clock; "
    "before = datetime(2026, 1, 1).timestamp(); use_utc_clock(); "
    "print(before, datetime(2026, 1, 1).timestamp())"
)


def test_naive_window_bounds_are_read_as_utc_on_a_server_in_another_zone():
    env = {**os.environ, "TZ": "America/New_York"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    before, after = (float(v) for v in out.stdout.split())
    assert before == 1767243600.0  # midnight in New York: five hours after midnight UTC
    assert after == 1767225600.0  # 2026-01-01T00:00:00Z
