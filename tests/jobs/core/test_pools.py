"""Scheduler pools: side work runs in its own FAIR pool, and the caller's pool is restored."""

from __future__ import annotations

import pytest

from jobs.core.pools import POOL_PROPERTY, SIDE_POOL, scheduler_pool, side_work


def test_sessions_schedule_fair_so_a_pool_can_take_an_idle_core(spark):
    assert spark.sparkContext.getConf().get("spark.scheduler.mode") == "FAIR"


def test_side_work_runs_its_jobs_in_the_side_pool_and_leaves_the_caller_alone(spark):
    context = spark.sparkContext

    def work():
        pool = context.getLocalProperty(POOL_PROPERTY)
        return pool, spark.range(1000).selectExpr("sum(id)").first()[0]

    with scheduler_pool(spark, "leiden"):
        future = side_work(spark, work)
        assert context.getLocalProperty(POOL_PROPERTY) == "leiden"
        assert spark.range(10).count() == 10
        assert future.result(timeout=120) == (SIDE_POOL, 499500)
    assert context.getLocalProperty(POOL_PROPERTY) is None  # restored
    # the scheduler made both pools when their jobs arrived: the property reached it
    scheduler = context._jsc.sc()
    assert scheduler.getPoolForName(SIDE_POOL).isDefined()
    assert scheduler.getPoolForName("leiden").isDefined()


def test_a_failure_of_side_work_is_raised_by_its_future(spark):
    def broken():
        raise RuntimeError("side work broke")

    with pytest.raises(RuntimeError, match="side work broke"):
        side_work(spark, broken).result(timeout=60)
