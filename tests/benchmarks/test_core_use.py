"""``benchmarks/core_use.py``: each part's Spark task seconds and idle core seconds.

The arithmetic on tasks and spans made up here, and the reading of a real event log: a Spark
session in a child process (event logging is fixed when a session starts, and the suite's own
session is already running) writes one, and its tasks are found again inside the run's span.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from core_use import core_use, core_use_table, event_log_conf, local_cores, task_spans  # noqa: E402


def test_a_part_gets_the_task_seconds_inside_its_span_and_the_idle_rest():
    tasks = [(0.0, 10.0), (0.0, 4.0), (4.0, 10.0), (10.0, 12.0), (15.0, 16.0)]
    spans = {
        "communities": [("components", 0.0, 4.0), ("refined", 4.0, 14.0)],
        "features": [("account_features", 14.0, 15.5), ("features", 15.5, 18.0)],
    }
    use = core_use(tasks, spans, cores=2)
    parts = use["stages"]["communities"]["parts"]
    # components: two tasks over all four seconds; refined: one core from 4 to 10, then 2 s
    assert parts["components"] == {"wall": 4.0, "task_seconds": 8.0, "idle_core_seconds": 0.0}
    assert parts["refined"] == {"wall": 10.0, "task_seconds": 14.0, "idle_core_seconds": 6.0}
    # a task across two parts is split between them
    features = use["stages"]["features"]["parts"]
    assert features["account_features"]["task_seconds"] == 0.5
    assert features["features"]["task_seconds"] == 0.5
    assert use["total"] == {"wall": 18.0, "task_seconds": 23.0, "idle_core_seconds": 13.0}
    table = core_use_table(use)
    assert "| | refined | 10.0 | 14.0 | 1.40 | 6.0 |" in table


def test_a_part_named_twice_adds_up():
    spans = {"publish": [("a", 0.0, 1.0), ("b", 1.0, 2.0), ("a", 2.0, 3.0)]}
    use = core_use([(0.0, 3.0)], spans, 1)
    assert use["stages"]["publish"]["parts"]["a"]["task_seconds"] == 2.0
    assert list(use["stages"]["publish"]["parts"]) == ["a", "b"]


def test_local_cores_read_the_master():
    assert local_cores("local") == 1
    assert local_cores("local[3]") == 3
    assert local_cores("local[2, 4]") == 2
    assert local_cores("local[*]") >= 1
    assert local_cores("spark://127.0.0.1:7077") is None


@pytest.mark.timeout(300)
def test_the_tasks_of_a_real_event_log_fall_inside_the_run(tmp_path):
    folder = tmp_path / "eventlog"
    folder.mkdir()
    script = f"""
from pyspark.sql import SparkSession
builder = SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
for key, value in {event_log_conf(folder)!r}.items():
    builder = builder.config(key, value)
spark = builder.getOrCreate()
spark.range(200000).repartition(4).selectExpr("sum(id)").collect()
spark.stop()
"""
    start = time.time()
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=240)
    end = time.time()
    tasks = task_spans(folder)
    assert len(tasks) >= 5  # at least the range's 2 map tasks and the 4 repartitioned ones
    assert all(start <= launch <= finish <= end for launch, finish in tasks)
    use = core_use(tasks, {"run": [("all", start, end)]}, 2)
    assert use["total"]["task_seconds"] == pytest.approx(sum(f - s for s, f in tasks), abs=0.1)
    assert use["total"]["task_seconds"] > 0
