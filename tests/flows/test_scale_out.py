"""The same nightly job over Spark Connect on a standalone cluster, from an ``s3a://`` lake.

The shared small world (``tests/flows/conftest.py``: generated, a model trained and the nightly
run done in local mode on its Parquet folders, in this process) is the reference. Its lake is
copied to an S3-protocol server (moto), and ``farmwatch nightly`` runs as a separate process
through a Spark Connect server whose jobs run on a standalone cluster (a master and one 2-core
worker, all started by ``infra/spark-local-cluster.sh``; the server loads the ``s3a`` package
and points it at moto): the client speaks Spark Connect, every task, Python UDFs included, runs
in the worker's executor, not in the server's JVM, and reads the input tables and writes every
run intermediate on ``s3a://``. It must publish the same run id and a byte-identical ban list;
the fixtures stop everything they started. (One 2-core worker rather than two 1-core ones: it
takes one JVM off a 2-core machine; the test ran faster with it in every comparison made, but
by less than the spread between runs. Shuffles between two executors are what
``benchmarks/bench_scale_out.py``'s cluster runs, with a classic session whose
``spark.master`` is the cluster. A classic local session with ``spark.packages = ["s3a"]``
ingesting an ``s3a://`` lake is ``tests/flows/test_lake_formats.py``.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pyarrow import fs as pafs

from jobs.core.contracts import INPUT_TABLES

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_connect_on_a_cluster_from_an_s3a_lake_publishes_the_same_list_as_local(
    small_world, s3_server, spark_connect_server, harness_env
):
    home, reference = small_world.home, small_world.summary
    s3 = small_world.lake_on(s3_server.url)

    env = {
        **os.environ,
        "FARMWATCH_LAKE__HOME": str(home),
        "FARMWATCH_LAKE__LAKE": "s3://lake/tables",
        "FARMWATCH_LAKE__RUNS": "s3://lake/runs",
        "FARMWATCH_LAKE__ENDPOINT_URL": s3_server.url,
        "FARMWATCH_LAKE__REGION": "us-east-1",
        "FARMWATCH_SPARK__REMOTE": spark_connect_server,
        # every part file is a few requests to moto: fewer files
        "FARMWATCH_SPARK__SHUFFLE_PARTITIONS": "2",
        "FARMWATCH_PUBLISH__TARGET": str(home / "bucket-connect"),
        **harness_env,
    }
    env.pop("FARMWATCH_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "nightly", "--no-resume"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"accounts banned : {reference['banned']:,}" in done.stdout
    assert small_world.published(home / "bucket-connect") == (
        small_world.run_id,
        small_world.banlist,
    )

    run = f"lake/runs/dt={reference['run_date']}"
    written = {
        info.path.removeprefix(f"{run}/").rsplit("/", 1)[0]
        for info in s3.get_file_info(pafs.FileSelector(run, recursive=True))
        if info.path.endswith(".parquet") and "/part-" in info.path
    }
    tables = [c.name for c in INPUT_TABLES]
    expected = {f"accepted/{t}" for t in tables} | {f"quarantine/{t}" for t in tables}
    expected |= {"graph/communities", "graph/account_links", "features", "scores"}
    assert expected <= written, sorted(expected - written)
