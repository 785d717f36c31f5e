from __future__ import annotations

import os
import subprocess
import sys

PROBE = (
    "from datetime import datetime; from jobs.core.session import use_utc_clock; "
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


def test_pinned_jvm_packages_match_the_installed_python_packages():
    from importlib.metadata import version
    from pathlib import Path

    import pyspark

    from jobs.core.session import JVM_PACKAGES

    jars = Path(pyspark.__file__).parent / "jars"
    (hadoop_api,) = jars.glob("hadoop-client-api-*.jar")
    hadoop = hadoop_api.name.removeprefix("hadoop-client-api-").removesuffix(".jar")
    assert f"org.apache.hadoop:hadoop-aws:{hadoop}" in JVM_PACKAGES["s3a"].coordinates
    assert list(jars.glob("scala-library-2.13.*.jar"))  # PySpark 4 runs Scala 2.13
    (graphframes,) = JVM_PACKAGES["graphframes"].coordinates
    assert graphframes == f"io.graphframes:graphframes-spark4_2.13:{version('graphframes-py')}"


def test_packages_are_refused_clearly_where_they_cannot_be_added(spark):
    import pytest

    from jobs.core.config import SparkSettings
    from jobs.core.session import PackageUnavailableError, build_session, package_coordinates

    with pytest.raises(ValueError, match="unknown JVM package 'delta'"):
        package_coordinates(["delta"])
    with pytest.raises(ValueError, match="Spark Connect server loads its own packages"):
        build_session(SparkSettings(remote="sc://127.0.0.1:1", packages=["s3a"]))
    # the test session runs without the package: a second factory call cannot add it
    settings = SparkSettings(master="local[2]", shuffle_partitions=2, packages=["graphframes"])
    with pytest.raises(
        PackageUnavailableError, match=r"graphframes \(io.graphframes:graphframes-spark4_2.13"
    ):
        build_session(settings)


def test_a_local_session_runs_its_jvm_on_the_parallel_collector(spark):
    beans = spark.sparkContext._jvm.java.lang.management.ManagementFactory
    collectors = {bean.getName() for bean in beans.getGarbageCollectorMXBeans()}
    assert collectors == {"PS Scavenge", "PS MarkSweep"}  # G1 would name "G1 Young Generation"
