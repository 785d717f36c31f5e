"""Spark session factory and the optional JVM packages it can add.

In: :class:`jobs.core.config.SparkSettings` (and the lake's S3 endpoint). Out: a ``SparkSession``
for local mode (default ``local[*]``), a standalone/YARN/Kubernetes master, or a Spark Connect
server (``remote``). Called once per process by the CLI, the flows and the tests' session fixture.
Jobs only use the DataFrame API, so every job runs unchanged over Spark Connect.

Optional JVM packages are named in ``spark.packages`` (``s3a``, ``graphframes``) and pinned here, in
:data:`JVM_PACKAGES`, to the versions that match the installed PySpark and graphframes-py. The
session asks Spark's Ivy resolver for them (``spark.jars.packages``), which reads its cache
(``~/.ivy2.5.2`` unless ``spark.jars.ivy`` says otherwise) before Maven Central; ``python -m
jobs.core.session fetch`` (run by ``make install``) fills that cache once so later runs work
offline. A package that cannot be had stops the session with :class:`PackageUnavailableError` naming
it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import SparkSession

from jobs.core.config import LakeSettings, SparkSettings


@dataclass(frozen=True)
class JvmPackage:
    """An optional JVM package: pinned Maven coordinates and a class that proves it loaded."""

    coordinates: tuple[str, ...]
    probe_class: str
    purpose: str


# Versions follow the installed Python packages: hadoop-aws is the Hadoop that PySpark 4.3.0
# ships (hadoop-client-api-3.5.0.jar) with the AWS SDK bundle its POM names; GraphFrames is the
# JVM side of graphframes-py 0.12.3. tests/jobs/core/test_session.py checks both pairings.
JVM_PACKAGES: dict[str, JvmPackage] = {
    "s3a": JvmPackage(
        ("org.apache.hadoop:hadoop-aws:3.5.0", "software.amazon.awssdk:bundle:2.35.4"),
        "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "input tables and run intermediates on s3a://",
    ),
    "graphframes": JvmPackage(
        ("io.graphframes:graphframes-spark4_2.13:0.12.3",),
        "org.graphframes.GraphFrame",
        "the graphframes components backend",
    ),
}


class PackageUnavailableError(RuntimeError):
    """A JVM package named in ``spark.packages`` is not on the session's classpath."""


def package_coordinates(names: Iterable[str]) -> list[str]:
    """Maven coordinates of the named packages, in order, without repeats."""
    coordinates: list[str] = []
    for name in names:
        if name not in JVM_PACKAGES:
            raise ValueError(f"unknown JVM package {name!r}; known: {sorted(JVM_PACKAGES)}")
        coordinates += [c for c in JVM_PACKAGES[name].coordinates if c not in coordinates]
    return coordinates


def ivy_home(conf: dict[str, str] | None = None) -> Path:
    """Spark's Ivy folder: ``spark.jars.ivy`` when set, else Spark 4's ``~/.ivy2.5.2``."""
    configured = (conf or {}).get("spark.jars.ivy")
    return Path(configured).expanduser() if configured else Path.home() / ".ivy2.5.2"


def uncached(names: Iterable[str], conf: dict[str, str] | None = None) -> list[str]:
    """The named packages with a jar missing from the Ivy cache (they need the network)."""
    cache = ivy_home(conf) / "cache"
    missing = []
    for name in names:
        for coordinate in JVM_PACKAGES[name].coordinates:
            group, artifact, version = coordinate.split(":")
            if not (cache / group / artifact / "jars" / f"{artifact}-{version}.jar").is_file():
                missing.append(name)
                break
    return missing


def is_connect(spark: SparkSession) -> bool:
    """True for a Spark Connect session (no JVM in this process)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def has_jvm_class(spark: SparkSession, class_name: str) -> bool:
    """True when a classic session's driver can load ``class_name``."""
    if is_connect(spark):
        return False
    try:
        jvm = spark.sparkContext._jvm  # noqa: SLF001 (py4j is the only way to ask the driver)
        loader = jvm.java.lang.Thread.currentThread().getContextClassLoader()
        jvm.java.lang.Class.forName(class_name, True, loader)
        return True
    except Exception:  # noqa: BLE001 (py4j raises its own error types)
        return False


def package_available(spark: SparkSession, name: str) -> bool:
    """True when the named optional package is on this (classic) session's classpath."""
    return has_jvm_class(spark, JVM_PACKAGES[name].probe_class)


def _describe(names: Iterable[str]) -> str:
    return "; ".join(
        f"{name} ({', '.join(JVM_PACKAGES[name].coordinates)}) for {JVM_PACKAGES[name].purpose}"
        for name in names
    )


def s3a_conf(lake: LakeSettings | None) -> dict[str, str]:
    """Hadoop S3A settings that point Spark at the lake's own endpoint and region, if any.

    Credentials are not set here: S3A's default chain reads the environment, then the instance
    or pod role, as boto3 and pyarrow do.
    """
    if lake is None or not lake.endpoint_url:
        return {}
    conf = {
        "spark.hadoop.fs.s3a.endpoint": lake.endpoint_url,
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": str(
            lake.endpoint_url.startswith("https://")
        ).lower(),
    }
    region = lake.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        conf["spark.hadoop.fs.s3a.endpoint.region"] = region
    return conf


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


def build_session(
    settings: SparkSettings, checkpoint_dir: Path | None = None, lake: LakeSettings | None = None
) -> SparkSession:
    """Create or reuse the Spark session described by the settings.

    Args:
        settings: master / remote URL, tuning and the optional JVM packages to add.
        checkpoint_dir: folder for DataFrame checkpoints of iterative graph algorithms.
        lake: the lake settings; an S3 endpoint there is given to Spark's S3A client too.

    Returns:
        The active Spark session.

    Raises:
        PackageUnavailableError: a package in ``settings.packages`` could not be put on the
            classpath (not in the Ivy cache and not downloadable, or a session without it was
            already running in this process).
        ValueError: packages were asked of a Spark Connect session (the server loads its own).
    """
    use_utc_clock()
    if settings.remote:
        if settings.packages:
            raise ValueError(
                "spark.packages applies to classic sessions; a Spark Connect server loads its "
                f"own packages (asked for: {_describe(settings.packages)})"
            )
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
            # the parallel collector: Spark's batch work wants throughput, not G1's short
            # pauses; 0.91x and 0.93x of G1's time in two pairs of 1M nightlies, the same list
            .config("spark.driver.extraJavaOptions", "-Dlog4j2.level=WARN -XX:+UseParallelGC")
        )
    builder = builder.appName(settings.app_name).config(
        "spark.sql.shuffle.partitions", str(settings.shuffle_partitions)
    )
    builder = builder.config("spark.sql.session.timeZone", "UTC").config(
        "spark.sql.autoBroadcastJoinThreshold", settings.broadcast_threshold
    )
    conf = {**s3a_conf(lake), **settings.conf} if not settings.remote else dict(settings.conf)
    if settings.packages:
        asked = [c for c in conf.get("spark.jars.packages", "").split(",") if c]
        conf["spark.jars.packages"] = ",".join(asked + package_coordinates(settings.packages))
    for key, value in conf.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:
        missing = uncached(settings.packages, settings.conf)
        if not missing:  # nothing to download: the failure is not about the packages
            raise
        raise PackageUnavailableError(
            f"Spark did not start: Ivy could not resolve {_describe(missing)}; they are not in "
            f"the cache {ivy_home(settings.conf)}. Run `make install` (python -m jobs.core.session "
            "fetch) where Maven Central is reachable, or drop them from spark.packages; Ivy's "
            "report is in the output above"
        ) from exc
    absent = [name for name in settings.packages if not package_available(spark, name)]
    if absent:
        raise PackageUnavailableError(
            f"spark.packages asks for {_describe(absent)}, but this process already runs a "
            "Spark session without it; start a new process"
        )
    if not settings.remote:
        spark.sparkContext.setLogLevel("WARN")
        if checkpoint_dir is not None:
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
            spark.sparkContext.setCheckpointDir(str(checkpoint_dir))
    return spark


def fetch(names: Iterable[str]) -> dict[str, str]:
    """Resolve each named package once into the Ivy cache, each in its own throwaway JVM.

    Returns:
        ``{name: "cached" | "fetched" | "unavailable: <reason>"}``; never raises, so an install
        without network (or without a package the registry serves) still finishes.
    """
    outcome = {}
    for name in names:
        if not uncached([name]):
            outcome[name] = "cached"
            continue
        probe = (
            "from jobs.core.config import SparkSettings; "
            "from jobs.core.session import build_session; "
            f"build_session(SparkSettings(master='local[1]', packages=[{name!r}])).stop()"
        )
        done = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=False
        )
        if done.returncode == 0:
            outcome[name] = "fetched"
            continue
        text = done.stderr + done.stdout
        unresolved = [line.strip() for line in text.splitlines() if "not found" in line]
        reason = unresolved[-1] if unresolved else _first_error_line(text)
        outcome[name] = f"unavailable: {reason}"
    return outcome


def _first_error_line(text: str) -> str:
    for line in reversed(text.splitlines()):
        if "Error" in line or "error" in line:
            return line.strip()[:300]
    return "the resolver failed (see `python -m jobs.core.session fetch`)"


def main(argv: list[str] | None = None) -> int:
    """``python -m jobs.core.session fetch [NAME ...]``: fill the Ivy cache with JVM packages."""
    parser = argparse.ArgumentParser(prog="python -m jobs.core.session")
    parser.add_argument("command", choices=["fetch"])
    parser.add_argument("names", nargs="*", default=sorted(JVM_PACKAGES))
    args = parser.parse_args(argv)
    try:
        check_java()
    except JavaMissingError as exc:
        print(f"JVM packages not fetched: {exc}")
        return 0
    for name, state in fetch(args.names).items():
        coordinates = ", ".join(JVM_PACKAGES[name].coordinates)
        print(f"JVM package {name} ({coordinates}): {state}; cache {ivy_home()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
