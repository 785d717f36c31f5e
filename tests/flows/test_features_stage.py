"""The features stage runs the group anomaly and the neighbourhoods at once, and fails whole.

Re-runs the features stage of the shared small world's run in a copy of its run folder. The
group anomaly (Spark work) runs in a second thread while the driver computes the neighbourhoods:
here each waits at one barrier for the other before doing its work, so the stage finishes only
when both are under way at the same time, and its table must equal the one the shared run
wrote. A failure on either side must fail the stage with that error, and only once the other
side has finished: no thread keeps writing into the run folder after the stage has failed.
"""

from __future__ import annotations

import shutil
import threading
from datetime import date

import pytest
from pyspark.testing import assertDataFrameEqual

from flows.runtime import layout_for
from jobs.core.config import load_settings
from jobs.core.stage import StageContext
from jobs.features import stage as features

pytestmark = pytest.mark.e2e


@pytest.fixture
def rerun(spark, small_world, tmp_path):
    """A features-stage context over a copy of the small world's run folder."""
    day = small_world.summary["run_date"]
    shutil.copytree(small_world.home / "runs" / f"dt={day}", tmp_path / "runs" / f"dt={day}")
    settings = load_settings(lake={"home": str(tmp_path)})
    run_date = date.fromisoformat(day)
    return StageContext(spark, settings, layout_for(settings, run_date), run_date)


def test_the_anomaly_and_the_neighbourhoods_run_at_once_and_write_the_same_table(
    spark, small_world, rerun, monkeypatch
):
    meet = threading.Barrier(2, timeout=120)
    real_anomaly, real_neighbours = features.group_anomaly, features.neighbour_aggregates

    def anomaly(*args, **kwargs):
        meet.wait()  # broken (and raising) when the other side never comes
        return real_anomaly(*args, **kwargs)

    def neighbours(*args, **kwargs):
        meet.wait()
        return real_neighbours(*args, **kwargs)

    monkeypatch.setattr(features, "group_anomaly", anomaly)
    monkeypatch.setattr(features, "neighbour_aggregates", neighbours)
    summary = features.run(rerun)
    assert summary["accounts"] == small_world.spec.accounts
    shared = layout_for(
        load_settings(lake={"home": str(small_world.home)}), rerun.run_date
    ).features
    assertDataFrameEqual(
        spark.read.parquet(str(rerun.layout.features)), spark.read.parquet(str(shared))
    )


def test_a_failure_on_either_side_fails_the_stage_once_the_other_side_is_done(rerun, monkeypatch):
    real_anomaly, real_neighbours = features.group_anomaly, features.neighbour_aggregates
    failed, done = threading.Event(), threading.Event()

    def late_anomaly(*args, **kwargs):
        failed.wait(timeout=120)  # starts its work only after the other side has failed
        table = real_anomaly(*args, **kwargs)
        done.set()
        return table

    def broken_neighbours(*args, **kwargs):
        failed.set()
        raise RuntimeError("the neighbourhoods broke")

    monkeypatch.setattr(features, "group_anomaly", late_anomaly)
    monkeypatch.setattr(features, "neighbour_aggregates", broken_neighbours)
    with pytest.raises(RuntimeError, match="the neighbourhoods broke"):
        features.run(rerun)
    assert done.is_set(), "the stage failed while its anomaly thread was still running"

    def broken_anomaly(*args, **kwargs):
        raise RuntimeError("the anomaly broke")

    monkeypatch.setattr(features, "group_anomaly", broken_anomaly)
    monkeypatch.setattr(features, "neighbour_aggregates", real_neighbours)
    with pytest.raises(RuntimeError, match="the anomaly broke"):
        features.run(rerun)
