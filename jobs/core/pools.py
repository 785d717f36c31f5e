"""Spark work beside a stage's one long task, in a scheduler pool of its own.

In: the session (classic sessions run the FAIR scheduler: :mod:`jobs.core.session`) and work to
run. Out: :func:`side_work` runs a callable in a thread whose Spark jobs go to the ``side`` pool,
and :func:`scheduler_pool` puts the calling thread's jobs in a named pool meanwhile. The pools
share the cores task by task: when a core frees, the pool with fewer running tasks gets it, so
the side work takes a core the other pool leaves idle (the largest component's Leiden, one
Python task for tens of seconds) without holding back the other pool's next stage by more than
a task. Under Spark Connect there is no pool to name: :func:`side_work` returns None and the
caller runs the work itself. Called by the communities stage (:mod:`jobs.communities.stage`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

from pyspark.sql import SparkSession

from jobs.core.session import is_connect

T = TypeVar("T")
POOL_PROPERTY = "spark.scheduler.pool"
SIDE_POOL = "side"


@contextmanager
def scheduler_pool(spark: SparkSession, pool: str) -> Iterator[None]:
    """This thread's Spark jobs go to ``pool`` inside the block (nothing under Spark Connect)."""
    if is_connect(spark):
        yield
        return
    context = spark.sparkContext
    before = context.getLocalProperty(POOL_PROPERTY)
    context.setLocalProperty(POOL_PROPERTY, pool)
    try:
        yield
    finally:
        context.setLocalProperty(POOL_PROPERTY, before)  # type: ignore[arg-type]


def side_work(spark: SparkSession, work: Callable[[], T]) -> Future[T] | None:
    """``work()`` in its own thread, its Spark jobs in the ``side`` pool; None under Connect.

    The caller must wait for the future (its exception is raised there).
    """
    if is_connect(spark):
        return None

    def run() -> T:
        with scheduler_pool(spark, SIDE_POOL):
            return work()

    pool = ThreadPoolExecutor(1, thread_name_prefix="side-work")
    future: Future[Any] = pool.submit(run)
    pool.shutdown(wait=False)  # the thread ends with the work
    return future
