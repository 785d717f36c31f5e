"""Spark session factory.

In: :class:`jobs.config.SparkSettings`. Out: a ``SparkSession`` for local mode (default
``local[*]``), a standalone/YARN/Kubernetes master, or a Spark Connect server (``remote``).
Called once per process by the CLI, the flows and the tests' session fixture. Jobs only use the
DataFrame API, so every job runs unchanged over Spark Connect.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pyspark.sql import SparkSession

from jobs.config import SparkSettings


class JavaMissingError(RuntimeError):
    """Raised when no Java 17+ runtime is available for local Spark."""


def check_java() -> str:
    """Return the Java version string, or raise with a one-line fix if Java 17+ is missing."""
    java = shutil.which("java")
    if os.environ.get("JAVA_HOME"):
        java = str(Path(os.environ["JAVA_HOME"]) / "bin" / "java")
    if not java or not Path(java).exists():
        raise JavaMissingError(
            "Java 17+ not found: install it (Debian: apt-get install -y openjdk-17-jre-headless)"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    text = out.stderr or out.stdout
    first = text.splitlines()[0] if text else ""
    try:
        version = first.split('"')[1]
        major = int(version.split(".")[0])
    except (IndexError, ValueError):
        return first
    if major < 17:
        raise JavaMissingError(
            f"Java {version} found, Spark 4 needs 17+: "
            "apt-get install -y openjdk-17-jre-headless and set JAVA_HOME"
        )
    return version


def use_utc_clock() -> None:
    """Make this process (and the Spark JVM and Python workers it starts) keep UTC time.

    Run dates are UTC days, and the jobs build window bounds as naive datetimes, which Python
    (``datetime.timestamp``, PySpark's ``F.lit``) reads in the process's local zone. On a server
    whose zone is not UTC every window would shift by the offset; pinning ``TZ`` avoids it.
    """
    if os.environ.get("TZ") != "UTC":
        os.environ["TZ"] = "UTC"
        time.tzset()


def build_session(settings: SparkSettings, checkpoint_dir: Path | None = None) -> SparkSession:
    """Create or reuse the Spark session described by the settings.

    Args:
        settings: master / remote URL and tuning.
        checkpoint_dir: folder for DataFrame checkpoints of iterative graph algorithms.

    Returns:
        The active Spark session.
    """
    use_utc_clock()
    if settings.remote:
        builder = SparkSession.builder.remote(settings.remote)
    else:
        check_java()
        # Python workers must use this interpreter (it has lightgbm, pandas, pyarrow).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        builder = (
            SparkSession.builder.master(settings.master)
            .config("spark.driver.memory", settings.driver_memory)
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .config("spark.sql.adaptive.enabled", "true")
            .config("spark.driver.extraJavaOptions", "-Dlog4j2.level=WARN")
        )
    builder = builder.appName(settings.app_name).config(
        "spark.sql.shuffle.partitions", str(settings.shuffle_partitions)
    )
    builder = builder.config("spark.sql.session.timeZone", "UTC")
    for key, value in settings.conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    if not settings.remote:
        spark.sparkContext.setLogLevel("WARN")
        if checkpoint_dir is not None:
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
            spark.sparkContext.setCheckpointDir(str(checkpoint_dir))
    return spark
