"""``benchmarks/bench_cores.py``: the machine's cores side by side against one alone."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bench_cores  # noqa: E402


def test_effective_cores_are_processes_times_alone_over_side_by_side(monkeypatch):
    walls = {1: iter([1.0, 1.2, 0.9]), 2: iter([1.25, 2.0, 1.5])}
    monkeypatch.setattr(bench_cores, "side_by_side", lambda kind, n, scale: next(walls[n]))
    got = bench_cores.measure(("compute",), processes=2, repeats=3, scale=1.0)["compute"]
    assert got["alone_median"] == 1.0
    assert got["side_by_side_median"] == 1.5
    assert got["effective_cores"] == pytest.approx(2 * 1.0 / 1.5, abs=0.01)


def test_real_processes_do_the_work_and_report_it():
    got = bench_cores.measure(bench_cores.KINDS, processes=2, repeats=1, scale=0.05)
    for kind in bench_cores.KINDS:
        figures = got[kind]
        assert figures["alone_median"] > 0 and figures["side_by_side_median"] > 0
        # two processes do at least the work of one and at most that of two, give or take noise
        assert 0.3 < figures["effective_cores"] < 3.0, figures


def test_unknown_work_is_refused():
    with pytest.raises(ValueError, match="unknown kind"):
        bench_cores.work("disk", 1.0)


def test_work_failing_in_a_child_is_reported_not_waited_for():
    with pytest.raises(RuntimeError, match="unknown kind"):
        bench_cores.side_by_side("disk", processes=1, scale=1.0)
